"""What the board shows: display tables, filters, the in- vs out-of-domain plot, entry details.

Pure functions of the ranked entries (or of ``export.board_rows``); text stays text (the app's
table renders it as plain strings, never as HTML or Markdown).
"""

from __future__ import annotations

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
    "AtNorM-Br AUROC",
    "AtNorM-MD AUROC",
    "AtNorM-Br sens / spec",
    "AtNorM-MD sens / spec",
    "id",
]


def _ba(row: dict, split: str) -> str:
    ba, low, high, std = (row[f"{split}_{k}"] for k in ("ba", "ba_low", "ba_high", "ba_std"))
    if ba is None:
        return ""
    if low is not None:
        return f"{ba:.4f} [{low:.4f}, {high:.4f}]"
    return f"{ba:.4f} ± {std:.4f}" if std is not None else f"{ba:.4f}"


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}"


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
                row["rank"],
                row["model_name"],
                row["team"],
                row["source"],
                row["method_type"],
                row["backbone"],
                row["tied_with_first"],
                _number(row["hidden_mean_ba"]),
                *(_ba(row, s.name) for s in TEST_SPLITS),
                _number(row["atnorm_br_auroc"]),
                _number(row["atnorm_md_auroc"]),
                _sens_spec(row, "atnorm_br"),
                _sens_spec(row, "atnorm_md"),
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
                "amibr_test_ba": e.results["amibr_test"].ba,
                "hidden_mean_ba": e.hidden_mean_ba,
            }
            for e in entries
            if "amibr_test" in e.results
        ]
    )


def entry_details(entries: list[Entry], submission_id: int) -> dict:
    """Every metric and the provenance of one entry (aggregates only)."""
    for entry, row in zip(entries, board_rows(entries), strict=True):
        if entry.submission_id == submission_id:
            return {k: v for k, v in row.items() if v is not None and v != ""}
    raise ValueError(f"No entry with id {submission_id} on the board.")
