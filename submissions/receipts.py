"""A submitter's receipts: each job's state with the scores the release policy published.

:func:`job_report` is what ``/submission_status`` returns; :func:`receipt_card` (Markdown) and
:func:`submissions_table` (one row a job) are how the Submit tab shows it. Only released
numbers are read (``results.published``); a withheld split says so.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from evaluation.disclosure import WITHHELD, released_interval, released_number
from evaluation.splits import SPLIT_TITLES
from fileio import markdown_literal
from store.schema import Result
from submissions.job_view import JobView


def released_scores(sessions: sessionmaker, job_id: int) -> dict[str, dict | None]:
    """What the release policy published of one job's results, by split (None: withheld)."""
    with sessions() as session:
        rows = session.execute(
            select(Result.split, Result.published).where(Result.job_id == job_id)
        ).all()
    return {split: published for split, published in sorted(rows)}


def job_report(sessions: sessionmaker, view: JobView) -> dict:
    """A job view with its released scores: what ``/submission_status`` returns."""
    return {**asdict(view), "scores": released_scores(sessions, view.job_id)}


def receipt_card(report: dict) -> str:
    """One job (:func:`job_report`), readable: its state and released scores."""
    status = report["status"] + (f" ({report['progress']})" if report.get("progress") else "")
    lines = [
        f"**Job {report['job_id']}** · {markdown_literal(report['model_name'])} · "
        f"{report['source']} · **{status}**",
    ]
    if report.get("hub_model"):
        repo_id, commit = report["hub_model"].split("@", 1)
        lines.append(f"Hub model {markdown_literal(repo_id)} at commit `{commit[:12]}`.")
    if report.get("notice"):
        lines.append(report["notice"])
    if report["status"] == "queued" and report["queue_position"]:
        lines.append(f"Position in the queue: {report['queue_position']}.")
    if report["reason"]:
        lines.append(f"Why: {markdown_literal(report['reason'])}")
    scores = report["scores"]
    if scores:
        cells = []
        for split, title in SPLIT_TITLES.items():
            released = scores.get(split)
            value = "withheld" if split in scores and released is None else ""
            if released:
                value = released_interval(released["ba"], released["ba_low"], released["ba_high"])
            cells.append(f"{title} BA: {value or '—'}")
        lines.append(" · ".join(cells))
    if report.get("disclosure") and report["disclosure"] != "released":
        lines.append(markdown_literal(report["disclosure"]))
    if report.get("taken_down"):
        reason = markdown_literal(report["taken_down"])
        lines.append(f"Taken off the public board by the maintainers: {reason}")
    elif report.get("withdrawn"):
        lines.append("Withdrawn from the public board by its submitter.")
    return "\n\n".join(lines)


def _released_ba(scores: dict, split: str) -> str:
    released = scores.get(split)
    if released is None:
        return WITHHELD if split in scores else ""
    return released_number(released.get("ba"))


def _notes(report: dict) -> tuple[str, ...]:
    disclosure = report["disclosure"] if report["disclosure"] != "released" else ""
    if report.get("taken_down"):
        return disclosure, f"taken down by the maintainers: {report['taken_down']}"
    return disclosure, "withdrawn" if report.get("withdrawn") else ""


def submissions_table(reports: list[dict]) -> pd.DataFrame:
    """A user's jobs (:func:`job_report`), readable: one row a job."""
    rows = []
    for report in reports:
        scores = report["scores"]
        status = report["status"]
        if report.get("progress"):
            status = f"{status} ({report['progress']})"
        rows.append(
            {
                "job": report["job_id"],
                "model": report["model_name"],
                "kind": report["source"],
                "status": status,
                "queue position": report["queue_position"] or "",
                **{f"{SPLIT_TITLES[s]} BA": _released_ba(scores, s) for s in SPLIT_TITLES},
                "note": "; ".join(note for note in _notes(report) if note),
                "reason": report["reason"],
                "submitted (UTC)": report["created_at"].replace("T", " ")[:16],
            }
        )
    columns = ["job", "model", "kind", "status", "queue position"]
    columns += [f"{t} BA" for t in SPLIT_TITLES.values()] + ["note", "reason", "submitted (UTC)"]
    return pd.DataFrame(rows, columns=columns)
