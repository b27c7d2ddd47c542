"""Benchmark refused uploads: ``python -m bench.uploads`` prints JSON.

The app (with its worker, as users run it) receives 10 refused bombs of each kind through its
public endpoints: a checkpoint zip holding 1 GiB of zeros (about 5 MB on the wire), a 300 MB
prediction file and a PNG that claims 1.6 gigapixels. Reported: the app's resident memory
before, after and at its peak, and the time per refusal. Beside it, in the same run, the
framework's floor: the same files uploaded to Gradio's upload route alone (no handler), so a
difference between the two is ours. Goal: RSS after the refusals within 100 MB of before.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from bench.common import machine, release_settings, start_app

ROUNDS = 10
META = ("bench", "bench", "end-to-end", "", "", "AMi-Br train", False, "", "", "")


def _memory_mb(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def _bombs(folder: Path, config: bytes) -> dict[str, Path]:
    zip_bomb = folder / "bomb.zip"
    with zipfile.ZipFile(zip_bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("config.json", config)
        with archive.open("model.safetensors", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(bytes(2**24))
    csv_bomb = folder / "big.csv"
    with open(csv_bomb, "wb") as f:
        for _ in range(300):
            f.write(b"0" * 2**20)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png_bomb = folder / "bomb.png"
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    png_bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    )
    return {"/submit_checkpoint": zip_bomb, "/submit_predictions": csv_bomb, "/classify": png_bomb}


def _refuse(client: Client, endpoint: str, path: Path) -> float:
    args = (
        (handle_file(str(path)), "Default model (shipped)", False, False)
        if endpoint == "/classify"
        else (handle_file(str(path)), *META)
    )
    start = time.perf_counter()
    try:
        client.predict(*args, api_name=endpoint)
    except AppError:
        return time.perf_counter() - start
    raise RuntimeError(f"{endpoint} accepted {path.name}")


def main() -> None:
    release = release_settings()
    work = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    app, url = start_app(
        release,
        GRADIO_TEMP_DIR=str(work / "gradio"),
        MITOSIS_START_WORKER="1",
        MITOSIS_DATABASE_URL=f"sqlite:///{work / 'board.db'}",
        MITOSIS_QUEUE_URL=f"sqlite:///{work / 'queue.db'}",
    )
    try:
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except (OSError, httpx.HTTPError, ValueError):
                time.sleep(0.2)
        crop = next((release.public_dir / "test_crops").glob("*.png"))
        client.predict(
            handle_file(str(crop)), "Default model (shipped)", False, True, api_name="/classify"
        )  # warm: the model is loaded
        client.predict("", "all", ["paper"], False, api_name="/leaderboard")
        config = (release.default_checkpoint / "config.json").read_bytes()
        bombs = _bombs(work, config)
        before = _memory_mb(app.pid)
        for _ in range(ROUNDS):  # the floor: Gradio's upload route alone, no handler
            for path in bombs.values():
                with open(path, "rb") as f:
                    httpx.post(
                        f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=300
                    ).raise_for_status()
        floor = _memory_mb(app.pid)
        names = {p.name for p in bombs.values()}
        for leftover in [p for p in (work / "gradio").rglob("*") if p.name in names]:
            leftover.unlink()  # the floor's copies: nobody handles them
        seconds = {endpoint: [] for endpoint in bombs}
        for _ in range(ROUNDS):
            for endpoint, path in bombs.items():
                seconds[endpoint].append(_refuse(client, endpoint, path))
        after = _memory_mb(app.pid)
        left = [p for p in (work / "gradio").rglob("*") if p.name in names]
        result = {
            "benchmark": "uploads",
            "refusals": ROUNDS * len(bombs),
            "bombs": {e: f"{p.name} ({p.stat().st_size / 2**20:.1f} MB)" for e, p in bombs.items()},
            "app_rss_before_mb": round(before["VmRSS"], 1),
            "app_rss_after_floor_uploads_mb": round(floor["VmRSS"], 1),
            "app_rss_after_refusals_mb": round(after["VmRSS"], 1),
            "app_rss_growth_from_refusals_mb": round(after["VmRSS"] - floor["VmRSS"], 1),
            "app_rss_growth_total_mb": round(after["VmRSS"] - before["VmRSS"], 1),
            "app_rss_peak_mb": round(after["VmHWM"], 1),
            "target_growth_mb": 100,
            "refusal_seconds_median": {
                e: round(float(np.median(s)), 3) for e, s in seconds.items()
            },
            "refused_uploads_left_in_gradio_cache": len(left),
            "machine": machine(),
        }
    finally:
        app.terminate()
        app.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
