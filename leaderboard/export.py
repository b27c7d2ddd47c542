"""The board as rows, CSV and JSON, with CIs and provenance: released numbers only.

CSV cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or carriage
return) are prefixed with an apostrophe.

The requests (submissions and their latest job) as rows too, with only what the Space shows
anyone: an entry's metadata and pinned Hub revision once it is on the board; before that, the
public queue's anonymised view (lane, size, state, progress), without even its submission id,
which would tie the queued job to its later entry or reveal that it failed.
"""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from evaluation.disclosure import PUBLIC_METRICS
from evaluation.splits import TEST_SPLITS
from leaderboard.ranking import Entry
from submissions.jobs import public_row
from submissions.metadata import metadata_fields
from submissions.tables import SCORED_KINDS, SOURCE_OF_KIND, JobStatus, Submission

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
METRICS = (*PUBLIC_METRICS, "ba_std")  # ba_std: the paper rows' spread over 5 fold models


def board_rows(entries: list[Entry]) -> list[dict]:
    """One flat dict per entry, in board order; every number is a released one."""
    rows = []
    for entry in entries:
        row = {
            "rank": entry.rank,
            "rank_low": entry.rank_range[0] if entry.rank_range else None,
            "rank_high": entry.rank_range[1] if entry.rank_range else None,
            "ranked_among": entry.ranked_among,
            "top_group": entry.top_group,
            "rank_margin": entry.rank_margin,
            "comparison": entry.comparison,
            "source": entry.source,
            **entry.meta.to_dict(),
            "hidden_mean_ba": entry.hidden_mean_ba,
            "hidden_withheld": entry.withheld,
            "maintainer_run": entry.maintainer_run,
        }
        for split in TEST_SPLITS:
            released = entry.scores.get(split.name) or {}
            for metric in METRICS:
                row[f"{split.name}_{metric}"] = released.get(metric)
        row.update(
            {
                "parameters": entry.parameters,
                "ms_per_crop": entry.ms_per_crop,
                "measured_on": entry.measured_on,
                "sha256": entry.sha256,
                "hub_model": entry.hub_ref or None,
                **entry.provenance,
                "submission_id": entry.submission_id,
            }
        )
        rows.append(row)
    return rows


REQUEST_FIELDS = (
    "submission_id",
    "status",
    "source",
    *metadata_fields(),
    "hub_model",
    "submitted_at",
    "lane",
    "size",
    "done",
    "total",
)
OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)


def request_rows(session: Session, entries: list[Entry]) -> list[dict]:
    """One row per submitted file that is on the board or in the queue, by submission id.

    Every row has every field of ``REQUEST_FIELDS`` (None where not shown): an entry on the
    board shows its id, metadata and pinned Hub revision, as the board does; a submission still
    queued or running shows the public queue's anonymised row only (no id). Failed and
    cancelled submissions, which the Space shows their owner alone, are not listed.
    """
    on_board = {e.submission_id for e in entries}
    submissions = session.scalars(
        select(Submission)
        .options(selectinload(Submission.jobs))
        .where(Submission.kind.in_(SCORED_KINDS))
        .order_by(Submission.id)
    ).all()
    rows = []
    for submission in submissions:
        job = submission.jobs[-1] if submission.jobs else None
        listed = submission.id in on_board
        if job is None or not (listed or job.status in OPEN):
            continue
        queue = public_row(job, own=False)
        row = dict.fromkeys(REQUEST_FIELDS)
        row.update(
            status=queue["state"],
            source=str(SOURCE_OF_KIND[submission.kind]),
            lane=queue["lane"],
            size=queue["size"],
            done=queue["done"],
            total=queue["total"],
        )
        if listed:
            row["submission_id"] = submission.id
            row.update(submission.entry.to_dict())
            row["hub_model"] = submission.hub_ref or None
            row["submitted_at"] = submission.created_at.isoformat(timespec="seconds")
        rows.append(row)
    return rows


def _safe(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: list[dict]) -> str:
    """CSV text, safe to open in a spreadsheet."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _safe(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_json(rows: list[dict]) -> str:
    """JSON text."""
    return json.dumps(rows, indent=2, default=str)
