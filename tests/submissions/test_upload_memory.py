"""Uploads are judged before they are read: memory stays flat whatever a file claims to hold.

Python's own allocations are traced (``tracemalloc``): every byte that intake reads or
decompresses is a Python ``bytes`` object, so the traced peak bounds what an upload costs.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from evaluation.errors import InvalidPredictionFile
from models.errors import CheckpointError, ImageError
from models.imaging import load_crop
from store.entry import EntryMetadata
from tests.backend import Backend
from tests.models.conftest import tiny_checkpoint
from tests.submissions.test_intake import nothing_stored

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

META = EntryMetadata("bomb")
LIMIT = 32 * 2**20  # bytes of Python allocations any refusal may cost


def peak_while(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def refused(action, error, match) -> int:
    def attempt():
        with pytest.raises(error, match=match):
            action()

    return peak_while(attempt)


def zeros_zip(path: Path, config: bytes, gib: float) -> Path:
    """A valid config and ``gib`` GiB of zeros as model.safetensors, deflated to a few MB."""
    chunk = bytes(2**24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("config.json", config)
        with archive.open("model.safetensors", "w", force_zip64=True) as member:
            for _ in range(int(gib * 2**30) // len(chunk)):
                member.write(chunk)
    return path


@pytest.fixture
def backend(tmp_path):
    return Backend(tmp_path / "backend")


@pytest.fixture
def config(tmp_path) -> bytes:
    return (tiny_checkpoint(tmp_path / "ckpt") / "config.json").read_bytes()


def test_a_gigabyte_of_zeros_is_refused_from_its_header(backend, tmp_path, config):
    bomb = zeros_zip(tmp_path / "bomb.zip", config, gib=1)
    assert bomb.stat().st_size < 8 * 2**20
    peak = refused(
        lambda: backend.service.submit_checkpoint("mallory", bomb, META),
        CheckpointError,
        "model.safetensors has no valid safetensors header",
    )
    print(
        f"\n1 GiB-of-zeros zip ({bomb.stat().st_size / 2**20:.1f} MB): peak {peak / 2**20:.1f} MB"
    )
    assert peak < LIMIT and nothing_stored(backend)


def test_an_entry_larger_than_it_declares_is_cut_at_its_declared_size(backend, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(checkpoint.iterdir()):
            archive.write(file, file.name)
        archive.writestr("README.md", bytes(256 * 2**20))
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02", 0, data.rfind(b"README.md"))  # its central record
    struct.pack_into("<L", data, entry + 24, 1024)  # declares 1 KB of 256 MB
    path.write_bytes(bytes(data))
    peak = refused(
        lambda: backend.service.submit_checkpoint("mallory", path, META),
        CheckpointError,
        "The zip entry 'README.md' is damaged .Bad CRC-32",
    )
    assert peak < LIMIT and nothing_stored(backend)


def test_a_zip_with_thousands_of_entries_is_refused_before_it_is_parsed(backend, tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(5000):
            archive.writestr(f"f{i:05d}.txt", b"")
    with pytest.raises(CheckpointError, match="table of contents is larger than a checkpoint"):
        backend.service.submit_checkpoint("mallory", path, META)
    assert nothing_stored(backend)


def test_an_oversized_prediction_file_is_never_read(backend, tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:
        f.truncate(300 * 2**20)
    peak = refused(
        lambda: backend.service.submit_predictions("mallory", path, META),
        InvalidPredictionFile,
        "The file is 300 MB; prediction files may be at most 5 MB",
    )
    assert peak < 2**20 and nothing_stored(backend)


def test_image_bombs_are_refused_before_decoding(tmp_path):
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)  # 1.6 gigapixels
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    )
    peak = refused(lambda: load_crop(bomb), ImageError, "bomb.png is .*decompression bomb")
    assert peak < LIMIT
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(2 * 2**30)
    peak = refused(
        lambda: load_crop(huge), ImageError, "huge.png is 2,048 MB; an image may be at most 64 MB"
    )
    assert peak < 2**20


def test_deeply_nested_and_absurd_configs_get_specific_messages(backend, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    weights = (checkpoint / "model.safetensors").read_bytes()
    config = json.loads((checkpoint / "config.json").read_text())

    def zipped(files: dict) -> bytes:
        path = tmp_path / "x.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return path.read_bytes()

    nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with pytest.raises(CheckpointError, match="config.json .*nested too deeply"):
        backend.service.submit_checkpoint("m", zipped({"config.json": nested}), META)
    header = json.dumps(
        {"fc.weight": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]}}
    ).encode()
    absurd = struct.pack("<Q", len(header)) + header + b"\0" * 4
    with pytest.raises(CheckpointError, match=r"'fc.weight' has the shape \[4611686018427387904"):
        backend.service.submit_checkpoint(
            "m", zipped({"config.json": json.dumps(config), "model.safetensors": absurd}), META
        )
    liar = json.dumps(
        {"fc.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4]}}
    ).encode()
    with pytest.raises(CheckpointError, match="declares the shape .1000, 1000. of F32 but holds 4"):
        backend.service.submit_checkpoint(
            "m",
            zipped(
                {
                    "config.json": json.dumps(config),
                    "model.safetensors": struct.pack("<Q", len(liar)) + liar + b"\0" * 4,
                }
            ),
            META,
        )
    remote = {**config, "auto_map": {"AutoModel": "evil.Model"}}
    with pytest.raises(CheckpointError, match="asks for code to run .'auto_map'."):
        backend.service.submit_checkpoint(
            "m", zipped({"config.json": json.dumps(remote), "model.safetensors": weights}), META
        )
    assert nothing_stored(backend)
