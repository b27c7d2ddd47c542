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

from evaluation.disclosure import PUBLIC_METRICS
from evaluation.splits import TEST_SPLITS
from fileio import spreadsheet_safe
from leaderboard.ranking import Entry

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


def to_csv(rows: list[dict]) -> str:
    """CSV text, safe to open in a spreadsheet."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_json(rows: list[dict]) -> str:
    """JSON text."""
    return json.dumps(rows, indent=2, default=str)
