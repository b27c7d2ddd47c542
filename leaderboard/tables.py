"""What the board shows: display tables, filters, the in- vs out-of-domain plot, entry details.

Pure functions of the ranked entries (or of ``export.board_rows``), so they show released
numbers only, with the digits that were released (two decimals for a hidden split); text stays
text (the app's table renders it as plain strings, never as HTML or Markdown).
"""

from __future__ import annotations

import json

import pandas as pd

from evaluation.splits import TEST_SPLITS
from leaderboard.export import board_rows
from leaderboard.ranking import Entry

SOURCES = ("verified", "self-reported", "paper")
COLUMNS = [
    "rank",
    "model",
    "team",
    "source",
    "method",
    "backbone",
    "tied with #1",
    "hidden mean BA",
    "AMi-Br test BA",
    "AtNorM-Br BA",
    "AtNorM-MD BA",
    "AMi-Br test AUROC",
    "AMi-Br test sens / spec",
    "id",
]
WITHHELD = "withheld"


def _number(value) -> str:
    """A released number with the digits it was released with (at least two, at most four)."""
    if value is None:
        return ""
    text = f"{value:.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.split(".")[1]))


def _ba(row: dict, split: str) -> str:
    ba, low, high, std = (row[f"{split}_{k}"] for k in ("ba", "ba_low", "ba_high", "ba_std"))
    if ba is None:
        return WITHHELD if row["hidden_withheld"] and split != "amibr_test" else ""
    if low is not None:
        return f"{_number(ba)} [{_number(low)}, {_number(high)}]"
    return f"{_number(ba)} ± {_number(std)}" if std is not None else _number(ba)


def _sens_spec(row: dict, split: str) -> str:
    sens, spec = row[f"{split}_sensitivity"], row[f"{split}_specificity"]
    return "" if sens is None else f"{sens:.3f} / {spec:.3f}"


def display_table(
    entries: list[Entry],
    *,
    search: str = "",
    method: str = "all",
    sources: tuple[str, ...] | list[str] = SOURCES,
) -> pd.DataFrame:
    """The board as display strings, filtered by a search text, method type and sources."""
    rows = []
    needle = search.strip().lower()
    for row in board_rows(entries):
        if row["source"] not in sources or (method != "all" and row["method_type"] != method):
            continue
        text = " ".join(str(row[k]) for k in ("model_name", "team", "backbone", "pretraining"))
        if needle and needle not in text.lower():
            continue
        rows.append(
            [
                "" if row["rank"] is None else row["rank"],
                row["model_name"],
                row["team"],
                row["source"],
                row["method_type"],
                row["backbone"],
                row["tied_with_first"],
                WITHHELD if row["hidden_withheld"] else _number(row["hidden_mean_ba"]),
                *(_ba(row, s.name) for s in TEST_SPLITS),
                _number(row["amibr_test_auroc"]),
                _sens_spec(row, "amibr_test"),
                row["submission_id"],
            ]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def domain_plot_frame(entries: list[Entry]) -> pd.DataFrame:
    """In-domain (AMi-Br test) against out-of-domain (hidden mean) BA, one point an entry."""
    return pd.DataFrame(
        [
            {
                "model": e.model_name,
                "source": e.source,
                "amibr_test_ba": e.scores["amibr_test"]["ba"],
                "hidden_mean_ba": e.hidden_mean_ba,
            }
            for e in entries
            if "amibr_test" in e.scores and e.hidden_mean_ba is not None
        ]
    )


def entry_details(entries: list[Entry], submission_id: int) -> dict:
    """Every released number and the provenance of one entry."""
    for entry, row in zip(entries, board_rows(entries), strict=True):
        if entry.submission_id == submission_id:
            return {k: v for k, v in row.items() if v is not None and v != ""}
    raise ValueError(f"No entry with id {submission_id} on the board.")


def submissions_table(reports: list[dict]) -> pd.DataFrame:
    """A user's jobs (``leaderboard.results.job_report``), the released BA per split in one cell."""
    return pd.DataFrame(
        [
            {
                **{k: v for k, v in report.items() if k != "scores"},
                "balanced_accuracy": json.dumps(
                    {split: (s or {}).get("ba") for split, s in report["scores"].items()}
                ),
            }
            for report in reports
        ]
    )
