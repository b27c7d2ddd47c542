"""Benchmark the Space: ``python -m bench.app`` prints JSON.

- start: ``python app.py`` launched -> first /classify answer through the HTTP API;
- crop -> answer through the two-step HTTP API (``POST /gradio_api/call/classify``, then the
  result stream), p50/p95 without and with TTA, and with the Grad-CAM overlay;
- the same through ``gradio_client`` (it adds its own overhead), for comparison.
The app runs on the configured release with the shipped model, without a worker.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
from gradio_client import Client, handle_file

from bench.common import machine, release_settings, start_app


def _upload(url: str, path: str) -> dict:
    boundary = "benchboundary"
    with open(path, "rb") as f:
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="crop.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + f.read()
            + f"\r\n--{boundary}--\r\n".encode()
        )
    request = urllib.request.Request(
        f"{url}gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    server_path = json.loads(urllib.request.urlopen(request).read())[0]
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}}


def _call(url: str, file: dict, tta: bool, explain: bool = False) -> float:
    payload = json.dumps({"data": [file, "Default model (shipped)", tta, explain]}).encode()
    request = urllib.request.Request(
        f"{url}gradio_api/call/classify", data=payload, headers={"Content-Type": "application/json"}
    )
    event_id = json.loads(urllib.request.urlopen(request).read())["event_id"]
    stream = urllib.request.urlopen(f"{url}gradio_api/call/classify/{event_id}").read().decode()
    if "event: complete" not in stream:
        raise RuntimeError(stream)
    return float(json.loads(stream.split("data: ")[-1])[0])


def _percentiles(times: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1),
    }


def main() -> None:
    settings = release_settings()
    crops = sorted((settings.public_dir / "test_crops").glob("*.png"))[:40]
    start = time.perf_counter()
    app, url = start_app(settings, MITOSIS_START_WORKER="0")
    try:
        file = None
        while True:
            try:
                file = file or _upload(url, str(crops[0]))
                _call(url, file, False)
                break
            except OSError:
                time.sleep(0.05)
        first_answer = time.perf_counter() - start
        files = [_upload(url, str(c)) for c in crops]
        result = {
            "benchmark": "app",
            "start_to_first_answer_s": round(first_answer, 2),
            "start_target_s": 15,
        }
        for name, tta, explain in (
            ("http", False, False),
            ("http_tta", True, False),
            ("http_with_gradcam", False, True),
        ):
            times = []
            for f in files:
                t = time.perf_counter()
                _call(url, f, tta, explain)
                times.append(time.perf_counter() - t)
            result[name] = _percentiles(times)
        result["http_target_p50_ms"] = 60
        client = Client(url, verbose=False)
        times = []
        for crop in crops[:20]:
            t = time.perf_counter()
            client.predict(
                handle_file(str(crop)), "Default model (shipped)", False, api_name="/classify"
            )
            times.append(time.perf_counter() - t)
        result["gradio_client"] = _percentiles(times)
    finally:
        app.terminate()
        app.wait(20)
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
