"""The requests dataset's rows: what was submitted, as the board and the public queue show it.

``leaderboard.hub`` syncs them as ``requests/<submission_id>.json`` beside the results.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from store.clock import store_now
from store.entry import metadata_fields
from store.schema import OPEN_STATES, SCORED_KINDS, SOURCE_OF_KIND, Submission, utc_text
from submissions.jobs import public_row

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


def request_rows(session: Session, on_board: set[int]) -> list[dict]:
    """One row per submitted file that is on the board or in the queue, by submission id.

    Every row has every field of ``REQUEST_FIELDS`` (None where not shown): an entry on the
    board (its id in ``on_board``) shows its id, metadata and pinned Hub revision, as the
    board does; a submission still queued or running shows the public queue's anonymised row
    only (no id). Failed and cancelled submissions, which the Space shows their owner alone,
    are not listed.
    """
    submissions = session.scalars(
        select(Submission)
        .options(selectinload(Submission.jobs))
        .where(Submission.kind.in_(SCORED_KINDS))
        .order_by(Submission.id)
    ).all()
    rows, now = [], store_now(session)
    for submission in submissions:
        job = submission.jobs[-1] if submission.jobs else None
        listed = submission.id in on_board
        if job is None or not (listed or job.status in OPEN_STATES):
            continue
        queue = public_row(job, own=False, now=now)
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
            row["submitted_at"] = utc_text(submission.created_at)
        rows.append(row)
    return rows
