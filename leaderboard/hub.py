"""Optional sync of the board to a Hugging Face dataset repo (huggingface_hub CommitScheduler).

Enabled when MITOSIS_HUB_RESULTS_REPO and HF_TOKEN are set; the exported board.csv and
board.json are committed every few minutes by a background thread.
"""

from __future__ import annotations

from pathlib import Path

from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.ranking import Entry
from settings import Settings


class HubSyncError(RuntimeError):
    """The Hub sync is configured but cannot run (offline, or the token is refused)."""


class HubSync:
    """Writes the board into a folder that a scheduler (a CommitScheduler) pushes to the Hub."""

    def __init__(self, folder: Path, scheduler) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler = scheduler

    def write(self, entries: list[Entry]) -> None:
        """Export the board (released numbers only) into the synced folder, under its lock."""
        rows = board_rows(entries)
        with self.scheduler.lock:
            (self.folder / "board.csv").write_text(to_csv(rows))
            (self.folder / "board.json").write_text(to_json(rows))


def start_hub_sync(settings: Settings, *, every_minutes: float = 5) -> HubSync | None:
    """A running sync when configured, else None; ``HubSyncError`` when it cannot run."""
    if not (settings.hub_results_repo and settings.hf_token):
        return None
    from huggingface_hub import CommitScheduler
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise HubSyncError(
            "HF_HUB_OFFLINE is set: the results cannot be synced to "
            f"{settings.hub_results_repo}. Unset it to sync."
        )
    folder = Path(settings.data_dir) / "hub-sync"
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = CommitScheduler(
        repo_id=settings.hub_results_repo,
        repo_type="dataset",
        folder_path=folder,
        every=every_minutes,
        token=settings.hf_token,
        private=True,
    )
    return HubSync(folder, scheduler)
