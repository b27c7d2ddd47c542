"""What the board shows: the table and its filters, the plot, the entry card, the legend.

Pure functions of the ranked entries (or of ``export.board_rows``), so they show released
numbers only, with the digits that were released (two decimals for a hidden split). Table
cells are plain strings (the app's table never renders them as HTML or Markdown); the entry
card is Markdown, so every submitter-written text in it is escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from evaluation.disclosure import WITHHELD, released_interval, released_number
from fileio import markdown_literal, quoted
from leaderboard.errors import UnknownFilter
from leaderboard.export import board_rows
from leaderboard.ranking import PAPER_NOTE, Entry, best_per_team
from store.entry import METHOD_TYPES
from store.schema import EntrySource

SOURCES = tuple(
    str(source) for source in EntrySource
)  # verified, self-reported, paper, pathologist
SOURCE_COLOURS = {  # fixed, so a source keeps its colour whatever the filters show
    "verified": "#1f77b4",
    "self-reported": "#ff7f0e",
    "paper": "#7f7f7f",
    "pathologist": "#2ca02c",
}
FOUNDATION_METHODS = ("linear probe", "LoRA")
SMALL_MODEL = 30_000_000
TRACKS = ("no foundation model", "≤ 30 M parameters")
NO_MATCH = "No entry matches the search and filters."
EMPTY_BOARD = (
    "Nothing on the board yet: the evaluation worker adds the paper's rows when it starts."
)


@dataclass(frozen=True)
class BoardFilter:
    """What the visitor asked to see: search text, method, sources, tracks, best per team."""

    search: str = ""
    method: str = "all"
    sources: tuple[str, ...] = SOURCES
    tracks: tuple[str, ...] = ()
    per_team: bool = False

    def __post_init__(self):
        """A value no entry can have is refused, not answered with an empty board."""
        _known("method", (self.method,), ("all", *METHOD_TYPES))
        _known("source", self.sources, SOURCES)
        _known("track", self.tracks, TRACKS)

    def keeps(self, entry: Entry) -> bool:
        """Whether ``entry`` passes the search, method, sources and tracks.

        ``per_team`` is about the entries kept, not one entry: see :func:`filter_entries`.
        """
        meta = entry.meta
        needle = self.search.strip().lower()
        text = " ".join((meta.model_name, meta.team, meta.backbone, meta.pretraining)).lower()
        if entry.source not in self.sources or (needle and needle not in text):
            return False
        if self.method != "all" and meta.method_type != self.method:
            return False
        if entry.source == "pathologist":  # readers, not models: the reference on every track
            return True
        if "no foundation model" in self.tracks and meta.method_type in FOUNDATION_METHODS:
            return False
        small = entry.parameters is not None and entry.parameters <= SMALL_MODEL
        return "≤ 30 M parameters" not in self.tracks or small


def _known(what: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    for value in values:
        if value not in allowed:
            choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
            raise UnknownFilter(f"Unknown {what} {quoted(value)}; use {choices}.")


def filter_entries(entries: list[Entry], board_filter: BoardFilter) -> list[Entry]:
    """The entries the filter keeps, in board order (the table, plot, details and API use it).

    "Each team's best entry" is taken among the entries the other parts keep: on the
    ≤ 30 M parameters track, a team's best small model.
    """
    kept = [e for e in entries if board_filter.keeps(e)]
    return best_per_team(kept) if board_filter.per_team else kept


def ba_cell(row: dict, split: str) -> str:
    ba, low, high, std = (row[f"{split}_{k}"] for k in ("ba", "ba_low", "ba_high", "ba_std"))
    if ba is None:
        return WITHHELD if row["hidden_withheld"] and split != "amibr_test" else ""
    if low is not None:
        return released_interval(ba, low, high)
    if std is not None and split != "amibr_test":  # a paper row, at the board's precision
        return f"{ba:.2f} ± {std:.2f}"
    if std is not None:
        return f"{released_number(ba)} ± {released_number(std)}"
    return released_number(ba)


def rank_range_cell(row: dict) -> str:
    """The simultaneous rank interval among tested entries, or why there is none."""
    if row["rank_low"] is None:
        if row["source"] == "paper":
            return "not tested (paper row)"
        if row["source"] == "pathologist":
            return "reference (pathologist)"
        return WITHHELD if row["hidden_withheld"] else "not tested yet"
    low, high = row["rank_low"], row["rank_high"]
    span = str(low) if low == high else f"{low}–{high}"
    return f"{span} of {row['ranked_among']} tested" + (" · top group" if row["top_group"] else "")


def _sens_spec(row: dict, split: str) -> str:
    sens, spec = row[f"{split}_sensitivity"], row[f"{split}_specificity"]
    if sens is None:
        return "not published" if row["source"] == "paper" else ""
    return f"{sens:.3f} / {spec:.3f}"


def _parameters(row: dict) -> str:
    return "" if row["parameters"] is None else f"{row['parameters'] / 1e6:.1f}"


@dataclass(frozen=True)
class Column:
    """One column of the board: its title, its cell, what it sorts by, where it is shown.

    Every list of columns (the table's, *More columns*, sorting) is derived from
    :data:`COLUMNS`, so a column is declared once.
    """

    title: str
    cell: Callable[[dict], str]  # an export row (``export.board_rows``) -> the cell's text
    sort_key: str  # the export row field the column orders by
    main: bool = True  # shown by default; else offered under "More columns"
    ascending_first: bool = False  # a first click sorts A-Z / smallest first (not best first)


COLUMNS = (  # the first four fit a phone's first screen: rank, model, hidden mean BA, kind
    Column("rank", lambda r: "" if r["rank"] is None else str(r["rank"]), "rank", True, True),
    Column("model", lambda r: r["model_name"], "model_name", True, True),
    Column(
        "hidden mean BA",
        lambda r: WITHHELD if r["hidden_withheld"] else released_number(r["hidden_mean_ba"]),
        "hidden_mean_ba",
    ),
    Column(
        "source",
        lambda r: r["source"] + (" · maintainer-run" if r.get("maintainer_run") else ""),
        "source",
        True,
        True,
    ),
    Column("AtNorM-Br BA", lambda r: ba_cell(r, "atnorm_br"), "atnorm_br_ba"),
    Column("AtNorM-MD BA", lambda r: ba_cell(r, "atnorm_md"), "atnorm_md_ba"),
    Column("AMi-Br test BA", lambda r: ba_cell(r, "amibr_test"), "amibr_test_ba"),
    Column("rank range (95 %)", lambda r: rank_range_cell(r), "rank_low", True, True),
    Column("team", lambda r: r["team"], "team", True, True),
    Column("method", lambda r: r["method_type"], "method_type", True, True),
    Column("backbone", lambda r: r["backbone"], "backbone", False, True),
    Column("pretraining", lambda r: r["pretraining"], "pretraining", False, True),
    Column("parameters (M)", lambda r: _parameters(r), "parameters", False, True),
    Column(
        "ms / crop",
        lambda r: "" if r["ms_per_crop"] is None else f"{r['ms_per_crop']:.1f}",
        "ms_per_crop",
        False,
        True,
    ),
    Column(
        "AMi-Br test AUROC",
        lambda r: released_number(r["amibr_test_auroc"]),
        "amibr_test_auroc",
        False,
    ),
    Column(
        "AMi-Br test sens / spec",
        lambda r: _sens_spec(r, "amibr_test"),
        "amibr_test_sensitivity",
        False,
    ),
    Column("trained on MIDOG++", lambda r: "yes" if r["uses_midog"] else "", "uses_midog", False),
    Column("scored", lambda r: (r.get("scored_at") or "")[:10], "scored_at", False),
)
BY_TITLE = {column.title: column for column in COLUMNS}
ASCENDING, DESCENDING = " ▲", " ▼"  # the sorted column's header ends with one
MAIN_COLUMNS = [c.title for c in COLUMNS if c.main]
EXTRA_COLUMNS = [c.title for c in COLUMNS if not c.main]


def next_sort(current: tuple[str, bool] | None, clicked: str) -> tuple[str, bool] | None:
    """The sort after a click on column ``clicked``: (column, descending), or None to reset.

    A first click sorts in the column's natural direction (best first for scores, A-Z for
    names, smallest first for ranks and costs); a second click reverses it; a third restores
    the board's order. One column at a time: sorts never stack.
    """
    clicked = clicked.removesuffix(ASCENDING).removesuffix(DESCENDING)  # the header's mark
    if clicked not in BY_TITLE:
        return current
    first = not BY_TITLE[clicked].ascending_first
    if current is None or current[0] != clicked:
        return clicked, first
    return (clicked, not first) if current[1] == first else None


def sort_note(sort: tuple[str, bool] | None) -> str:
    """How the table is ordered, in words."""
    if sort is None:
        return "Ordered by rank; click a column header to sort by it."
    column, descending = sort
    way = "high to low" if descending else "low to high"
    if column in ("model", "team", "method", "source", "backbone", "pretraining"):
        way = "Z to A" if descending else "A to Z"
    return f"Sorted by {column}, {way}; click it again to reverse, a third time for the rank order."


def sort_entries(entries: list[Entry], sort: tuple[str, bool] | None) -> list[Entry]:
    """``entries`` ordered by one column (blanks last either way); board order for None."""
    if sort is None:
        return entries
    column, descending = sort
    key = BY_TITLE[column].sort_key
    rows = board_rows(entries)
    present = [(e, r[key]) for e, r in zip(entries, rows, strict=True) if r[key] not in (None, "")]
    blank = [e for e, r in zip(entries, rows, strict=True) if r[key] in (None, "")]

    def order(pair):
        value = pair[1]
        return value.lower() if isinstance(value, str) else value

    present.sort(key=order, reverse=descending)
    return [e for e, _ in present] + blank


def display_table(
    entries: list[Entry],
    *,
    extra_columns=(),
    empty=NO_MATCH,
    sort: tuple[str, bool] | None = None,
) -> pd.DataFrame:
    """The entries as display strings: the main columns, then the chosen extra ones.

    The header of the column ``sort`` orders by ends with ▲ (low to high, A to Z) or ▼. With
    no entry, one row says why (``empty``), never a bare header.
    """
    columns = MAIN_COLUMNS + [c for c in EXTRA_COLUMNS if c in extra_columns]
    rows = [[BY_TITLE[c].cell(row) for c in columns] for row in board_rows(entries)]
    if not rows:
        rows = [["", empty, *([""] * (len(columns) - 2))]]
    titles = [
        c + (DESCENDING if sort[1] else ASCENDING) if sort and c == sort[0] else c for c in columns
    ]
    return pd.DataFrame(rows, columns=titles)


def best_line(entries: list[Entry]) -> str:
    """Who is best, in one line: the top group of the tested entries, named."""
    top = [e.model_name for e in entries if e.top_group]
    tested = sum(e.rank_range is not None for e in entries)
    papers = (
        " Paper rows are published numbers, not tested here."
        if any(e.source == "paper" for e in entries)
        else ""
    )
    if not top:
        return "**Best tested entry**: none yet; no entry has been tested." + papers
    names = "; ".join(f"**{markdown_literal(name)}**" for name in top)  # names hold commas
    if len(top) == 1:
        told = "" if tested == 1 else f", told apart from the other {tested - 1} tested"
        return f"**Best tested entry**: {names}{told}.{papers}"
    return (
        f"**Best tested entries**, not told apart by the hidden sets ({len(top)} of {tested} "
        f"tested): {names}.{papers}"
    )


def board_legend(entries: list[Entry]) -> str:
    """The glossary under the board, with the margin now in force (Markdown)."""
    tested = [e for e in entries if e.rank_range is not None]
    if len(tested) > 1:
        margin = tested[0].rank_margin
        apart = (
            f"more than {margin + 0.03:.2f} (the comparison's margin, {margin:.2f}, plus 0.03 "
            "for rounding and release offsets)"
            if margin >= 0.005
            else "more than 0.03 (for rounding and release offsets; the comparison's own "
            "margin is under 0.01)"
        )
        now = (
            f"Now {len(tested)} entries are tested; two are told apart when their hidden means "
            f"differ by {apart}."
        )
    elif tested:
        now = "Now one entry is tested: there is nothing to tell it apart from yet."
    else:
        now = "No entry has been tested yet."
    return f"""**How to read the board** (research use only, not for diagnosis)

- **rank**: by the **hidden mean BA**, the mean of the balanced accuracies on the two hidden
  sets, AtNorM-Br and AtNorM-MD (each released rounded to 0.01, so their mean may end in a
  5: 0.765). Balanced accuracy is the mean of the sensitivity on atypical figures and the
  specificity on normal ones; 0.5 is chance.
- **rank range (95 %)**: the ranks a submission could hold among the *tested* entries (every
  submission with per-crop predictions), with 95 % confidence for all of them at once, from
  one paired bootstrap over the hidden crops. **top group**: the tested entries not told apart
  from the best one, i.e. whose range includes 1. {now}
- **0.79 [0.74, 0.84]**: a submission's value and its 95 % confidence interval.
- **0.77 ± 0.01**, *paper* rows: {PAPER_NOTE} Their sensitivity and specificity were not
  published.
- *pathologist* rows: each of AtNorM-MD's five experts scored against the majority of the
  other four. Crops where those four split 2–2 (the hardest ones) are left out for the experts
  but not for the models, which are scored against the majority of all five on every crop, so
  the references differ; they place a model among human readers, not on the same scale
  exactly.{_tie_ranges(entries)}
- **withheld**: hidden-split scores that the release policy did not release (not 0.01 above
  the same account's best released hidden mean, or below 0.60); see the About tab.
- **maintainer-run**: an entry of the benchmark's maintainers, every scoring released.
- **verified**: a checkpoint the server ran itself; **self-reported**: a prediction file.
- **ms / crop**: a verified model's compute per crop on the evaluation worker that scored it:
  on a CPU one thread's CPU time, which a busy machine does not inflate; on a GPU the wall
  time; the median of 3 passes over 4 crops (device and load: in the entry card).
"""


def _tie_ranges(entries: list[Entry]) -> str:
    """How the experts' BAs move when the ties count as normal or atypical (released values)."""
    rows = [(e.scores.get("atnorm_md") or {}) for e in entries if e.source == "pathologist"]
    rows = [r for r in rows if "ba_ties_normal" in r]
    if not rows:
        return ""
    span = lambda key: f"{min(r[key] for r in rows):.2f}–{max(r[key] for r in rows):.2f}"  # noqa: E731
    shares = sorted(r["tied_percent"] for r in rows)
    return (
        f" The experts' ties are {shares[0]}–{shares[-1]} % of the crops; counting them as "
        f"normal gives {span('ba_ties_normal')}, as atypical {span('ba_ties_atypical')} "
        f"(left out: {span('ba')})."
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
        ],
        columns=["model", "source", "amibr_test_ba", "hidden_mean_ba"],
    )


def plot_limits(frame: pd.DataFrame, pad: float = 0.02) -> tuple[list[float], list[float]]:
    """Axis ranges that hold every point with a margin, on a 0.05 grid, within [0, 1]."""

    def limits(values: pd.Series) -> list[float]:
        if values.empty:
            return [0.5, 1.0]
        low = max(0.0, (values.min() - pad) // 0.05 * 0.05)
        high = min(1.0, -((-(values.max() + pad)) // 0.05) * 0.05)
        return [round(low, 2), round(high, 2)]

    return limits(frame["amibr_test_ba"]), limits(frame["hidden_mean_ba"])
