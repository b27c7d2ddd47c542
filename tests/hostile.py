"""A red-team corpus of uploads, generated on the spot, each with the message it must get.

Files that would run code if loaded (pickles) create ``marker`` when unpickled, so a test can
prove that nothing was executed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    """One hostile upload: the endpoint it goes to, the file, and the message it must get."""

    endpoint: str  # /classify, /submit_predictions or /submit_checkpoint
    path: Path
    match: str  # a regex the error message must match
    meta: dict = field(default_factory=dict)  # metadata fields to override


class Payload:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0"))
    )


def _png(size: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def zip_of(
    entries: dict[str, bytes], links: tuple[str, ...] = (), compression=zipfile.ZIP_STORED
) -> bytes:
    """A zip of ``entries``, stored unless asked (deflating 45 MB of weights costs seconds)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def corpus(folder: Path, marker: Path, checkpoint: Path, predictions: bytes) -> list[Case]:
    """Every case, written under ``folder``; ``checkpoint`` is a valid checkpoint folder and
    ``predictions`` a valid prediction file, from which the hostile variants are made."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((checkpoint / "config.json").read_text())
    weights = (checkpoint / "model.safetensors").read_bytes()
    good_config = json.dumps(config).encode()
    evil = pickle.dumps(Payload(marker))
    gzip_tar = io.BytesIO()
    with tarfile.open(fileobj=gzip_tar, mode="w:gz") as archive:
        info = tarfile.TarInfo("config.json")
        info.size = len(good_config)
        archive.addfile(info, io.BytesIO(good_config))
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("config.json", good_config)
        with archive.open("model.safetensors", "w", force_zip64=True) as member:
            for _ in range(16):
                member.write(bytes(2**24))  # 256 MB of zeros in about 1 MB
    first_line, rest = predictions.split(b"\n", 1)
    first_id = rest.split(b",", 1)[0]
    files = {
        # images for /classify
        ("/classify", "empty.png", "empty.png is empty .0 bytes."): b"",
        ("/classify", "text.png", "text.png is not an image: it looks like text"): b"hi there\n",
        ("/classify", "archive.png", "is not an image: it looks like a zip archive"): zip_of(
            {"a.txt": b"x"}
        ),
        ("/classify", "pickle.png", "is not an image: it looks like a Python pickle"): evil,
        ("/classify", "doc.png", "is not an image: it looks like a PDF document"): b"%PDF-1.7\n",
        ("/classify", "page.png", "is not an image: it looks like markup"): (
            b"<html><script>alert(1)</script></html>"
        ),
        ("/classify", "drawing.svg", "is not an image: it looks like markup"): (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
        ),
        ("/classify", "truncated.png", "truncated.png could not be decoded: it is truncated"): (
            _png()[:-40]
        ),
        ("/classify", "bomb.png", "bomb.png is too large to decode safely"): png_header_only(
            40000, 40000
        ),
        ("/classify", "huge.png", "huge.png is 8000x8000 pixels, over the limit of 50 mega"): (
            png_header_only(8000, 8000)
        ),
        ("/classify", "tiny.png", "tiny.png is 8x8 pixels; crops must be at least 16 px"): _png(8),
        # prediction files
        ("/submit_predictions", "empty.csv", "The file is empty"): b"",
        ("/submit_predictions", "binary.csv", "The file is not valid UTF-8"): bytes(
            range(128, 256)
        ),
        ("/submit_predictions", "utf16.csv", "The file is UTF-16-encoded"): (
            "image_id,prob_atypical\n".encode("utf-16")
        ),
        ("/submit_predictions", "pickle.csv", "The file is a Python pickle, not a CSV"): evil,
        ("/submit_predictions", "archive.csv", "The file is a zip archive"): zip_of(
            {"p.csv": predictions}
        ),
        ("/submit_predictions", "formula.csv", "not in the public test manifest"): (
            first_line + b"\n=cmd|' /C calc'!A0,0.5\n" + rest.split(b"\n", 1)[1]
        ),  # in place of the first row: one row per crop, the formula among them
        ("/submit_predictions", "script.csv", "prob_atypical on line 2 is .<script>"): (
            first_line + b"\n" + first_id + b",<script>alert(1)</script>\n"
        ),
        ("/submit_predictions", "semicolons.csv", "separated by semicolons"): (
            predictions.replace(b",", b";")
        ),
        (
            "/submit_predictions",
            "big.csv",
            r"The file is 6 MB; prediction files may be at most 5",
        ): (b"x" * (6 * 2**20)),
        # checkpoints
        ("/submit_checkpoint", "pickle.zip", "contains 'model.pt'.*never loaded"): zip_of(
            {"config.json": good_config, "model.pt": evil}
        ),
        ("/submit_checkpoint", "bin.zip", "contains 'pytorch_model.bin'"): zip_of(
            {"config.json": good_config, "pytorch_model.bin": evil}
        ),
        ("/submit_checkpoint", "slip.zip", "'../../evil/README.md' points outside"): zip_of(
            {"config.json": good_config, "../../evil/README.md": b"x"}
        ),
        ("/submit_checkpoint", "absolute.zip", "'/etc/README.md' points outside"): zip_of(
            {"config.json": good_config, "/etc/README.md": b"x"}
        ),
        ("/submit_checkpoint", "link.zip", "'README.md' is a symbolic link"): zip_of(
            {"config.json": good_config}, links=("README.md",)
        ),
        ("/submit_checkpoint", "nested.zip", "the archive 'inner.zip'; nested archives"): zip_of(
            {"config.json": good_config, "inner.zip": zip_of({"model.safetensors": weights})}
        ),
        (
            "/submit_checkpoint",
            "header.zip",
            "model.safetensors has an invalid safetensors",
        ): zip_of(
            {"config.json": good_config, "model.safetensors": struct.pack("<Q", 8) + b"garbage!"}
        ),
        ("/submit_checkpoint", "shape.zip", r"'fc.weight' has the shape \[4611686018427387904"): (
            zip_of(
                {
                    "config.json": good_config,
                    "model.safetensors": _safetensors(
                        {
                            "fc.weight": {
                                "dtype": "F32",
                                "shape": [2**62, 2**62],
                                "data_offsets": [0, 4],
                            }
                        },
                        bytes(4),
                    ),
                }
            )
        ),
        ("/submit_checkpoint", "remote.zip", "asks for code to run .'trust_remote_code'."): zip_of(
            {
                "config.json": json.dumps({**config, "trust_remote_code": True}).encode(),
                "model.safetensors": weights,
            }
        ),
        ("/submit_checkpoint", "hub.zip", "no hf-hub: ids"): zip_of(
            {
                "config.json": json.dumps(
                    {**config, "mitosis": {**config["mitosis"], "model": "hf-hub:evil/net"}}
                ).encode(),
                "model.safetensors": weights,
            }
        ),
        ("/submit_checkpoint", "deep.zip", "config.json .*nested too deeply"): zip_of(
            {"config.json": b"[" * 200_000 + b"]" * 200_000, "model.safetensors": weights}
        ),
        ("/submit_checkpoint", "text.zip", "not a valid zip archive"): b"not a zip at all\n",
        ("/submit_checkpoint", "empty.zip", "not a valid zip archive"): b"",
        ("/submit_checkpoint", "tarball.zip", "not a valid zip archive"): gzip_tar.getvalue(),
        ("/submit_checkpoint", "model.pt", "model.pt is not a .zip"): evil,
        ("/submit_checkpoint", "many.zip", "holds 40 entries; a checkpoint has at most 5"): zip_of(
            {f"README{i}.md": b"" for i in range(40)}
        ),
    }
    cases = []
    for (endpoint, name, match), data in files.items():
        path = folder / endpoint.strip("/") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(endpoint, path, match))
    cases.append(
        Case("/submit_checkpoint", bomb, "model.safetensors has no valid safetensors header")
    )
    valid = folder / "metadata" / "valid.csv"
    valid.parent.mkdir(parents=True, exist_ok=True)
    valid.write_bytes(predictions)
    for fields, match in (
        ({"name": '=HYPERLINK("http://evil","x")'}, "'Model name' starts with '='"),
        ({"team": "<script>alert(1)</script>"}, "'Team' contains markup"),
        ({"about": "@SUM(A1:A9)"}, "'Description' starts with '@'"),
        ({"backbone": "+cmd|' /C calc'!A0"}, "'Backbone' starts with '\\+'"),
        ({"code": "javascript:alert(1)"}, "'Code link' contains markup or a script link"),
        ({"paper": 'http://x" onmouseover="alert(1)'}, "'Paper link' must be an http.s. link"),
        ({"name": "evil\u202egpj.exe"}, "'Model name' contains a control or text-direction"),
        ({"name": ""}, "Give the entry a model name"),
    ):
        cases.append(Case("/submit_predictions", valid, match, fields))
    return cases
