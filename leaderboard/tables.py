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
    "rank range (95 %)",
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


def _rank_range(row: dict) -> str:
    """The simultaneous rank interval among tested entries, or why there is none."""
    if row["rank_low"] is None:
        if row["source"] == "paper":
            return "not tested (paper row)"
        return WITHHELD if row["hidden_withheld"] else "not tested yet"
    low, high = row["rank_low"], row["rank_high"]
    span = str(low) if low == high else f"{low}–{high}"
    return f"{span} of {row['ranked_among']}" + (" · top group" if row["top_group"] else "")


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
                _rank_range(row),
                WITHHELD if row["hidden_withheld"] else _number(row["hidden_mean_ba"]),
                *(_ba(row, s.name) for s in TEST_SPLITS),
                _number(row["amibr_test_auroc"]),
                _sens_spec(row, "amibr_test"),
                row["submission_id"],
            ]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def board_legend(entries: list[Entry]) -> str:
    """What the board's columns mean, in words, with the margin now in force (Markdown)."""
    tested = [e for e in entries if e.rank_range is not None]
    if tested:
        now = (
            f"Now: {len(tested)} tested entries; two are told apart when their hidden means "
            f"differ by more than {tested[0].rank_margin:.2f} + 0.01."
        )
    else:
        now = "No entry has been tested yet."
    return (
        "**rank**: by the hidden mean BA, the mean of the released AtNorM-Br and AtNorM-MD "
        "balanced accuracies (rounded to 0.01 by the release policy). "
        "**rank range (95 %)**: the ranks a submission could hold among the *tested* entries "
        "(those with per-crop predictions), with 95 % confidence for all entries at once: one "
        "paired bootstrap over the hidden crops gives the margin by which hidden means must "
        "differ, plus 0.01 for rounding. **top group**: the entries whose range includes 1, "
        "i.e. not told apart from the best tested entry. "
        "**[ ]**: a 95 % bootstrap CI of one submitted model. "
        "**paper rows**: the mean of 5 fold models, each trained on 80 % of AMi-Br train; ± is "
        "their spread (std). They have no per-crop predictions, hence no CI, no rank range and "
        "no top-group test, and they measure a different quantity from a submission (one model "
        f"trained on all of AMi-Br train). {now}"
    )


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
