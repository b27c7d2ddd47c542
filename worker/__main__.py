"""``python -m worker``: the worker's command line.

Serves the queue, or does one thing and exits: ``--prepare``, ``--rescore``, ``--take-down``,
``--restore``, ``--status`` or ``--backup``.
"""

from __future__ import annotations

import argparse
import logging
import numbers
import os
import sys
from pathlib import Path

import pandas as pd
import torch

import worker
from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError, InvalidLabelStore
from leaderboard.board import shipped_model_status
from leaderboard.hub import HubSyncError
from settings import command_settings, configure_logging
from store.clock import check_clock
from store.engine import open_store
from store.errors import BackupRefused, StoreUnavailable
from submissions.errors import ModerationRefused, QueueUnavailable
from submissions.jobs import queue_table
from submissions.moderation import restore, take_down
from submissions.queue import LANES
from submissions.worker_registry import health_table
from worker.backup import backup
from worker.label_store import check_label_store, fetch_labels
from worker.runner import Worker
from worker.supervisor import follow_parent

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description=worker.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    once = parser.add_mutually_exclusive_group()  # maintenance: do one thing, then exit
    once.add_argument(
        "--rescore", action="store_true", help="queue every scored submission again, then exit"
    )
    once.add_argument(
        "--prepare",
        action="store_true",
        help="seed the store and evaluate the shipped model now (if it needs it), then exit",
    )
    once.add_argument(
        "--take-down",
        type=int,
        metavar="ENTRY_ID",
        help="take an entry off the board (its submitter reads --reason), then exit",
    )
    once.add_argument(
        "--restore", type=int, metavar="ENTRY_ID", help="put a taken-down entry back, then exit"
    )
    once.add_argument(
        "--status",
        action="store_true",
        help="print the queue (every job, with its entry and account) and the workers, then exit",
    )
    once.add_argument(
        "--backup",
        type=Path,
        metavar="FOLDER",
        help="copy the database (SQLite), the uploads and the label store into FOLDER, while "
        "the app and workers run, then exit",
    )
    parser.add_argument("--reason", default="", help="why an entry is taken down (plain text)")
    parser.add_argument(
        "--lanes",
        help=f"comma-separated lanes to serve ({', '.join(LANES)}; default: all on a GPU "
        "host, files and models elsewhere)",
    )
    args = parser.parse_args(argv)
    if args.reason and args.take_down is None:
        parser.error("--reason goes with --take-down ENTRY_ID.")
    if args.take_down is not None and not args.reason.strip():
        parser.error("--take-down needs --reason TEXT: its submitter reads why.")
    settings = command_settings("python -m worker")
    configure_logging(settings)
    parent = os.environ.get("MITOSIS_PARENT_PID", "")
    beside_app = parent.isdigit()
    if beside_app:  # the Space's own worker: die with it, and leave it the CPU it needs
        follow_parent(int(parent))
        os.nice(settings.worker_nice)
    cores = os.cpu_count() or 1
    torch.set_num_threads(settings.worker_threads or (max(1, cores - 1) if beside_app else cores))
    lanes = tuple(lane.strip() for lane in args.lanes.split(",")) if args.lanes else None
    if unknown := sorted(set(lanes or ()) - set(LANES)):
        parser.error(
            f"--lanes names {', '.join(map(repr, unknown))}, which is not a lane; the lanes are "
            f"{', '.join(LANES)} (comma-separated, e.g. --lanes files,models)."
        )
    if "gpu" in (lanes or ()) and not torch.cuda.is_available():
        parser.error(
            "--lanes gpu needs a CUDA GPU, and this host has none: that lane holds the "
            "checkpoints estimated too slow for a CPU. Serve --lanes files,models here."
        )
    if args.take_down is not None or args.restore is not None:
        return moderate(settings, args.take_down, args.restore, args.reason)
    if args.status:
        return status(settings)
    if args.backup is not None:
        try:
            print(backup(settings, args.backup))
        except (BackupRefused, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    fetch_labels(settings)
    try:  # a release, database, queue or label store it cannot use: one sentence
        running = Worker(settings, lanes=lanes)
        running.queue.check()
        check_clock(running.sessions)
        if args.prepare or args.rescore:
            check_label_store(settings)
        PublicBundle(settings.public_dir)  # jobs need the crops and the manifest
    except (EvaluationError, StoreUnavailable, QueueUnavailable, HubSyncError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.prepare and not settings.default_checkpoint.exists():
        print(
            f"error: no checkpoint at {settings.default_checkpoint} (MITOSIS_DEFAULT_CHECKPOINT).",
            file=sys.stderr,
        )
        return 2
    if args.prepare:
        running.maintenance.record_content_digests()
        running.maintenance.rescore_stale()
        job_id = running.maintenance.seed()
        if job_id is not None:
            running.run_job(job_id)  # the board shows the shipped model from its first view
        print(shipped_model_status(running.sessions) or "the shipped model is on the board")
        return 0
    if args.rescore:
        print(f"queued {running.maintenance.rescore_all()} submissions for re-scoring")
        return 0
    try:  # serving goes on: its jobs fail with a sentence, which tells their submitters
        check_label_store(settings)
    except InvalidLabelStore as e:
        log.error("%s Until then every job fails, and says so.", e)
    running.run()
    return 0


def status(settings) -> int:
    """``--status``: the queue and the workers as a maintainer sees them (the database only)."""
    try:
        sessions = open_store(settings.database_url)
    except StoreUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    queue, workers = queue_table(sessions, maintainer=True), health_table(sessions)
    print(f"queue: {len(queue)} job(s) queued or running")
    if len(queue):
        print(plain_table(queue))
    print(f"workers: {len(workers)}")
    if len(workers):
        print(plain_table(workers))
    return 0


def plain_table(frame: pd.DataFrame) -> str:
    """``frame`` as terminal text, each header over its column.

    Text is left-aligned and numbers right-aligned, two spaces apart (pandas right-aligns
    text, and its headers of several words run into each other); an empty cell is blank.
    """
    columns = []
    for name in frame.columns:
        values = ["" if pd.isna(v) else v for v in frame[name]]
        filled = [v for v in values if v != ""]
        numeric = bool(filled) and all(isinstance(v, numbers.Number) for v in filled)
        if numeric and all(float(v).is_integer() for v in filled):  # ids pandas made float
            values = ["" if v == "" else int(v) for v in values]
        cells = [str(name), *map(str, values)]
        width = max(map(len, cells))
        columns.append([c.rjust(width) if numeric else c.ljust(width) for c in cells])
    return "\n".join("  ".join(row).rstrip() for row in zip(*columns, strict=True))


def moderate(settings, take: int | None, back: int | None, reason: str) -> int:
    """``--take-down`` / ``--restore``: needs the database only, and says what it did."""
    try:
        running = Worker(settings)
        if take is not None:
            done = f"took entry {take} ({take_down(running.sessions, take, reason)}) off the board"
        else:
            done = f"put entry {back} ({restore(running.sessions, back)}) back on the board"
    except (StoreUnavailable, HubSyncError, ModerationRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    running.export_if_changed()  # standings and the results folder, now
    if running.hub is not None:
        running.hub.flush()  # the Hub copy too, before this process ends
    print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
