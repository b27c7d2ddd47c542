"""The entry card: one entry of the board, readable (Markdown).

What it is and how it was compared, its released numbers per split with their intervals,
its efficiency, what the submitter says about it and where the numbers come from. Every
submitter-written text is escaped; links are shown as autolinks of validated URLs.
"""

from __future__ import annotations

import pandas as pd

from evaluation.disclosure import released_interval, released_number
from evaluation.splits import SPLIT_TITLES, TEST_SPLITS, get_split
from fileio import markdown_literal
from leaderboard.columns import ba_cell, rank_range_cell
from leaderboard.errors import EntryNotOnBoard
from leaderboard.export import board_rows
from leaderboard.ranking import Entry


def _split_row(entry: Entry, row: dict, split: str) -> str:
    """The split's line of the card's table: three short columns, readable on a phone."""
    released = entry.scores.get(split) or {}
    title = SPLIT_TITLES[split] + (" (hidden)" if get_split(split).hidden else "")
    crops = f"{released['n']} ({released['n_atypical']})" if released.get("n") is not None else ""
    return f"| {title} | {ba_cell(row, split) or '—'} | {crops or '—'} |"


def _public_details(released: dict) -> str:
    """What else is released for AMi-Br test, whose labels are public."""
    if released.get("sensitivity") is None:
        return f"AUROC {released_number(released['auroc'])}" if released.get("auroc") else ""
    return (
        f"sensitivity {released['sensitivity']:.3f} · specificity "
        f"{released['specificity']:.3f} · AUROC "
        + released_interval(released["auroc"], released["auroc_low"], released["auroc_high"])
        + f" · AP {released['average_precision']:.3f} · Brier {released['brier']:.3f} · ECE "
        f"{released['ece']:.3f}"
    )


def entry_card(entries: list[Entry], submission_id: int) -> str:
    """One entry, readable: what it is, its numbers per split, efficiency, provenance."""
    found = {e.submission_id: (e, r) for e, r in zip(entries, board_rows(entries), strict=True)}
    if submission_id not in found:
        raise EntryNotOnBoard(
            f"Entry {submission_id} is not on the board (any more): it was withdrawn or its "
            "scoring was replaced. Refresh the board and choose another entry."
        )
    entry, row = found[submission_id]
    meta = entry.meta
    table = [
        "| set | BA | crops (atypical) |",
        "|---|---|---|",
        *(
            _split_row(entry, row, s.name)
            for s in TEST_SPLITS
            if s.name in entry.scores or get_split(s.name).hidden
        ),
    ]
    public = _public_details(entry.scores.get("amibr_test") or {})
    if public:
        table.append(f"\n**{SPLIT_TITLES['amibr_test']}** (public labels): {public}")
    if entry.source in ("verified", "self-reported") and not entry.withheld:
        table.append("\nOn the hidden sets only the balanced accuracy is released, rounded.")
    blocks = [
        f"### {markdown_literal(meta.model_name)}"
        + (f" — {markdown_literal(meta.team)}" if meta.team else ""),
        f"*{entry.source}* · {meta.method_type} · rank {row['rank'] or '—'} · rank range "
        f"{rank_range_cell(row)} · entry {entry.submission_id}",
        entry.comparison,
        "\n".join(table),
    ]
    if entry.parameters is not None:
        speed = ""
        if entry.ms_per_crop is not None:
            speed = f" · {entry.ms_per_crop:.1f} ms per crop on {entry.measured_on}"
        blocks.append(f"**Efficiency**: {entry.parameters / 1e6:.1f} M parameters{speed}")
    about = [
        ("backbone", markdown_literal(meta.backbone)),
        ("pretraining", markdown_literal(meta.pretraining)),
        ("training data", markdown_literal(meta.training_data)),
        ("trained on MIDOG++", "yes" if meta.uses_midog else ""),
        # validated http(s) URLs without spaces, quotes or angle brackets: an autolink
        ("paper", f"<{meta.paper_url}>" if meta.paper_url else ""),
        ("code", f"<{meta.code_url}>" if meta.code_url else ""),
    ]
    described = " · ".join(f"{k}: {v}" for k, v in about if v)
    if described:
        blocks.append(f"**Entry**: {described}")
    if meta.description:
        blocks.append(f"> {markdown_literal(meta.description)}")
    if entry.provenance.get("scorer_version") and entry.source not in ("paper", "pathologist"):
        p = entry.provenance
        blocks.append(
            f"**Provenance**: file sha256 `{entry.sha256 or '—'}` · scorer {p['scorer_version']}"
            f" · label set `{(p['label_set_hash'] or '—')[:16]}` · scored {p['scored_at']} UTC"
            f" · {p['versions']}"
        )
    if entry.hub_ref:
        repo_id, commit = entry.hub_ref.split("@", 1)
        blocks.append(
            f"**Hub model**: [{repo_id}](https://huggingface.co/{repo_id}/tree/{commit}) at "
            f"commit `{commit[:12]}`"
        )
    return "\n\n".join(blocks)


def entry_curves(entries: list[Entry], submission_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and reliability points of one entry on AMi-Br test, whose labels are public.

    With the chance line and the perfectly calibrated line; empty frames for an entry
    without per-crop predictions (paper rows, pathologists). Never for a hidden split: its
    curves are not released.
    """
    columns = ["x", "y", "curve"]
    for entry in entries:
        if entry.submission_id == submission_id:
            curves = (entry.scores.get("amibr_test") or {}).get("curves")
            break
    else:
        raise EntryNotOnBoard(
            f"Entry {submission_id} is not on the board (any more): it was withdrawn or its "
            "scoring was replaced. Refresh the board and choose another entry."
        )
    if not curves:
        return pd.DataFrame(columns=columns), pd.DataFrame(columns=columns)
    diagonal = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})
    roc = pd.concat(
        [
            pd.DataFrame({"x": curves["roc"]["fpr"], "y": curves["roc"]["tpr"], "curve": "model"}),
            diagonal.assign(curve="chance"),
        ]
    )
    bins = curves["reliability"]
    reliability = pd.concat(
        [
            pd.DataFrame(
                {"x": bins["mean_prob"], "y": bins["fraction_atypical"], "curve": "model"}
            ),
            diagonal.assign(curve="perfectly calibrated"),
        ]
    )
    return roc[columns], reliability[columns]
