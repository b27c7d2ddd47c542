"""One app process of the quota race: ``python -m tests.submissions.race DIR WORKER THREADS``.

It prepares its prediction files, says it is ready (``DIR/ready-WORKER``), waits for
``DIR/go``, then submits from THREADS threads at once and prints one JSON line per attempt.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from settings import Settings
from store.engine import open_store
from store.entry import EntryMetadata
from submissions.errors import QuotaExceeded
from submissions.intake import Submissions


def main(folder: Path, worker: int, threads: int) -> None:
    settings = Settings.from_env()
    service = Submissions(settings, open_store(settings.database_url))
    manifest = pd.read_csv(settings.public_dir / "manifest.csv", dtype=str)
    files = []
    for t in range(threads):
        rng = np.random.default_rng(1000 * worker + t)
        frame = manifest[["image_id"]].assign(prob_atypical=rng.random(len(manifest)))
        files.append(frame.to_csv(index=False).encode())
    outcomes: list[dict] = []

    def submit(data: bytes) -> None:
        try:
            view = service.submit_predictions("alice", data, EntryMetadata("race"))
            outcomes.append({"outcome": "accepted", "job_id": view.job_id})
        except QuotaExceeded:
            outcomes.append({"outcome": "quota"})
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            outcomes.append({"outcome": "error", "error": repr(e)})

    (folder / f"ready-{worker}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    pool = [threading.Thread(target=submit, args=(data,)) for data in files]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
