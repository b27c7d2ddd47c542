"""Reading user files with limits: every input is measured before a byte of it is read.

Uploads arrive as files on disk (Gradio writes them to its cache) or as bytes (tests, the API
of the packages). Both are measured first; only files within their limit are read, so a
300 MB "CSV" or a 2 GB "image" costs a ``stat`` call, not memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Source = Path | str | bytes


def source_size(source: Source) -> int:
    """Size in bytes of a file or of in-memory bytes (``OSError`` when the file is gone)."""
    return len(source) if isinstance(source, bytes) else Path(source).stat().st_size


def describe_sizes(size: int, limit: int) -> tuple[str, str]:
    """``size`` and ``limit`` as text, precise enough that the two never read the same.

    Example:
        >>> describe_sizes(5 * 2**20 + 1, 5 * 2**20)
        ('5,242,881 bytes', '5,242,880 bytes (5 MB)')
        >>> describe_sizes(300 * 2**20, 5 * 2**20)
        ('300 MB', '5 MB')
    """
    unit, scale = ("MB", 2**20) if limit >= 2**20 else ("KB", 2**10)
    if limit < 2**10:
        return f"{size:,} bytes", f"{limit:,} bytes"
    for decimals in (0, 1, 2):
        shown = f"{size / scale:,.{decimals}f}", f"{limit / scale:,.{decimals}f}"
        if shown[0] != shown[1]:
            return f"{shown[0]} {unit}", f"{shown[1]} {unit}"
    return f"{size:,} bytes", f"{limit:,} bytes ({limit / scale:,.0f} {unit})"


def read_bounded(source: Source, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """The whole of ``source`` if it holds at most ``limit`` bytes; else ``too_large(size)``.

    The size is checked before reading, and the read itself stops one byte past the limit,
    so a file that grows after the check is refused too.
    """
    size = source_size(source)
    if size > limit:
        raise too_large(size)
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        data = f.read(size + 1)  # a read buffer of the file's size, not of the limit
        if len(data) > size:  # it grew since it was measured
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise too_large(len(data))
    return data


def display_name(source: Source, default: str = "the file") -> str:
    """How a message names an input: its base name only, never a server path."""
    return default if isinstance(source, bytes) else (Path(source).name or default)
