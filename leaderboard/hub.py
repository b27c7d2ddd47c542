"""The board and the requests as a Hugging Face dataset folder, synced to a Hub dataset repo.

Layout (the usual leaderboard one: one JSON per result, one per request)::

    README.md                      dataset card: the two configs and their column types
    board.csv, board.json          the whole board (released numbers only)
    results/<submission_id>.json   one entry: a row of ``export.board_rows``
    requests/<submission_id>.json  one request on the board (``submissions.requests.request_rows``)
    requests/queue-<n>.json        one queued or running request, anonymised, in queue order

``datasets.load_dataset(FOLDER_OR_REPO, "results")`` gives the board back: the card declares
each column's type, which the JSON loader cannot infer from a first file whose value is null
(``load_dataset("json", data_files=..., features=...)`` with those types works too). The worker
rewrites the folder after every job; when MITOSIS_HUB_RESULTS_REPO and HF_TOKEN are set, a
``huggingface_hub.CommitScheduler`` commits it every few minutes from a background thread. The
scheduler only adds and updates files, so files removed from the folder (a withdrawn entry) are
deleted from the repo by a commit of their own, and a sync's first write deletes any the repo
still holds that the folder does not.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from evaluation.hub_dataset import card
from fileio import PUBLIC, atomic_write
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.ranking import Entry
from settings import Settings

log = logging.getLogger(__name__)
SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # isoformat(timespec="seconds")
RESULTS_DIR = "results"
REQUESTS_DIR = "requests"


class HubSyncError(RuntimeError):
    """The Hub sync is configured but cannot run (offline, or the token is refused)."""


class HubSync:
    """Writes the board into a folder that a scheduler (a CommitScheduler) pushes to the Hub."""

    def __init__(self, folder: Path, scheduler) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler = scheduler
        self.deleting: threading.Thread | None = None

    def write(self, entries: list[Entry], requests: list[dict]) -> None:
        """Export the board and the requests into the synced folder, under its lock.

        Files it removed are deleted from the repo in the background; so, on a sync's first
        write, are any the repo holds that the folder does not (a deletion an earlier process
        did not finish: a command that exited, a worker killed).
        """
        with self.scheduler.lock:
            removed = write_folder(self.folder, entries, requests)
        if removed or self.deleting is None:
            self.deleting = threading.Thread(target=self._delete_stale, daemon=True)
            self.deleting.start()

    def flush(self, timeout_s: float = 120) -> None:
        """Finish the deletion under way and push the folder now (before a command exits)."""
        if self.deleting is not None:
            self.deleting.join(timeout_s)
        self.scheduler.trigger().result(timeout_s)

    def _delete_stale(self) -> None:
        """One commit deleting the repo's result and request files the folder no longer has."""
        from huggingface_hub import CommitOperationDelete

        s = self.scheduler
        try:
            prefix = f"{s.path_in_repo}/" if s.path_in_repo else ""
            with s.lock:
                here = {
                    p.relative_to(self.folder).as_posix()
                    for name in (RESULTS_DIR, REQUESTS_DIR)
                    for p in (self.folder / name).glob("*.json")
                }
            gone = [
                path
                for path in s.api.list_repo_files(s.repo_id, repo_type=s.repo_type)
                if path.startswith(prefix)
                and path.removeprefix(prefix).split("/")[0] in (RESULTS_DIR, REQUESTS_DIR)
                and path.endswith(".json")
                and path.removeprefix(prefix) not in here
            ]
            if gone:
                s.api.create_commit(
                    repo_id=s.repo_id,
                    repo_type=s.repo_type,
                    revision=s.revision,
                    operations=[CommitOperationDelete(path_in_repo=p) for p in gone],
                    commit_message=f"Remove {len(gone)} file(s) no longer on the board",
                )
        except Exception:
            log.exception("deleting stale files from %s", s.repo_id)


def write_folder(folder: Path, entries: list[Entry], requests: list[dict]) -> list[str]:
    """Write the results dataset folder: the board, one JSON per result and per request.

    Files of entries or requests no longer listed are removed, so the folder is the board;
    returns their paths, relative to the folder.
    """
    rows = board_rows(entries)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("board.csv", to_csv(rows)), ("board.json", to_json(rows))):
        atomic_write(folder / name, lambda tmp, text=text: tmp.write_text(text), mode=PUBLIC)
    card = results_card({RESULTS_DIR: rows, REQUESTS_DIR: requests})
    atomic_write(folder / "README.md", lambda tmp: tmp.write_text(card), mode=PUBLIC)
    removed = []
    for name, records in ((RESULTS_DIR, rows), (REQUESTS_DIR, requests)):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        queued = (f"queue-{n}.json" for n in range(1, len(records) + 1))
        wanted = {
            f"{r['submission_id']}.json" if r["submission_id"] is not None else next(queued): r
            for r in records
        }
        present = {p.name for p in target.glob("*.json") if not p.name.startswith(".")}
        for stale in sorted(present - set(wanted)):
            (target / stale).unlink()
            removed.append(f"{name}/{stale}")
        for file_name, record in wanted.items():
            text = json.dumps(record, default=str) + "\n"  # one line: JSON Lines too
            path = target / file_name
            if not path.is_file() or path.read_text() != text:  # unchanged files: no commit
                atomic_write(path, lambda tmp, text=text: tmp.write_text(text), mode=PUBLIC)
    return removed


RESULTS_CARD_BODY = """# Leaderboard results and requests

Written by the evaluation worker of the atypical-mitosis leaderboard after every job.
`results/`: one JSON per board entry, with released numbers only (hidden splits: the
balanced accuracy rounded to 0.01, no calibration numbers or curves). `requests/`: one
JSON per submission on the board, and one per queued or running job, anonymised.

```python
from datasets import load_dataset

board = load_dataset("OWNER/RESULTS_REPO", "results", split="train")
requests = load_dataset("OWNER/RESULTS_REPO", "requests", split="train")
```
"""


def results_card(configs: dict[str, list[dict]]) -> str:
    """The dataset card: one config per folder of JSON files, with every column's type."""
    front = {
        "configs": [
            {
                "config_name": name,
                **({"default": True} if name == RESULTS_DIR else {}),
                "data_files": [{"split": "train", "path": f"{name}/*.json"}],
            }
            for name in configs
        ],
        "dataset_info": [
            {
                "config_name": name,
                "features": [
                    {"name": column, "dtype": _dtype([r[column] for r in records])}
                    for column in (records[0] if records else ())
                ],
            }
            for name, records in configs.items()
        ],
    }
    return card(front, RESULTS_CARD_BODY)


def _dtype(values: list) -> str:
    """The ``datasets`` dtype of a column's JSON values (null where every value is null)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return "null"
    if kinds == {bool}:
        return "bool"
    if kinds == {int}:
        return "int64"
    if kinds <= {int, float}:
        return "float64"
    if kinds == {str} and all(SECONDS.fullmatch(v) for v in values if v is not None):
        return "timestamp[s]"  # what the JSON reader makes of them anyway
    return "string"


def check_hub_sync(settings: Settings) -> None:
    """``HubSyncError`` when a configured sync cannot run here, found without the network."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if settings.hub_results_repo and settings.hf_token and HF_HUB_OFFLINE:
        raise HubSyncError(
            "HF_HUB_OFFLINE is set: the results cannot be synced to "
            f"{settings.hub_results_repo}. Unset it to sync."
        )


def start_hub_sync(settings: Settings, *, every_minutes: float = 5) -> HubSync | None:
    """A running sync when configured, else None; ``HubSyncError`` when it cannot run."""
    if not (settings.hub_results_repo and settings.hf_token):
        return None
    check_hub_sync(settings)
    from huggingface_hub import CommitScheduler

    folder = settings.results_dataset_dir
    folder.mkdir(parents=True, exist_ok=True)
    try:  # creates the repo when it is not there: the token is tried here
        scheduler = CommitScheduler(
            repo_id=settings.hub_results_repo,
            repo_type="dataset",
            folder_path=folder,
            every=every_minutes,
            token=settings.hf_token,
            private=True,
        )
    except Exception as e:  # every Hub failure means the same here: no sync
        raise HubSyncError(
            f"Cannot sync the results to {settings.hub_results_repo} ({type(e).__name__}: {e}). "
            "Check that HF_TOKEN may write there, and MITOSIS_HUB_RESULTS_REPO."
        ) from e
    return HubSync(folder, scheduler)
