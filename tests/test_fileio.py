"""Helpers every package uses to read, write and echo what users send."""

from __future__ import annotations

from fileio import PUBLIC, atomic_write, quoted


def test_an_echo_is_quoted_escaped_and_short():
    assert quoted("lab/model") == "'lab/model'"
    assert quoted("a\u202eb\nc\u200b") == "'a\\u202eb\\nc\\u200b'"  # reorders, breaks, hides
    long = "x" * 1_000_000
    shown = quoted(long)
    assert shown == f"{'x' * 80!r}… (1,000,000 characters)" and len(shown) < 120
    assert quoted("y" * 81, limit=80).endswith("… (81 characters)")
    assert quoted("y" * 80, limit=80) == repr("y" * 80)
    assert quoted(3.5) == "'3.5'"


def test_an_atomic_write_is_private_unless_public(tmp_path):
    atomic_write(tmp_path / "upload.csv", lambda tmp: tmp.write_text("a"))
    atomic_write(tmp_path / "board.csv", lambda tmp: tmp.write_text("b"), mode=PUBLIC)
    assert (tmp_path / "upload.csv").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "board.csv").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.csv", "upload.csv"]
