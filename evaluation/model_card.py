"""The shipped model's card, generated where it states numbers: ``python -m evaluation.model_card``.

The results table comes from the scorer (``score_predictions`` on the model's committed
predictions, ``tests/data/default_model_predictions.csv``), and the evidence table says which of
the card's claims have a committed file behind them. Both live between ``<!-- generated:NAME
-->`` and ``<!-- end generated:NAME -->`` markers in ``models/default/README.md``; the rest of
the card is prose. ``--check`` exits 1 when the committed card differs from what the scorer and
the evidence folder give (a test runs it), so the card cannot drift from the numbers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from evaluation.bundle import PublicBundle
from evaluation.prediction_file import read_predictions
from evaluation.scoring import SplitScore, load_labels, score_predictions
from settings import REPO_ROOT, Settings, command_settings

SPLITS = ("amibr_test", "atnorm_br", "atnorm_md")
PREDICTIONS = REPO_ROOT / "tests" / "data" / "default_model_predictions.csv"
EVIDENCE = REPO_ROOT / "models" / "default-evidence"
# the card's claims beyond the results table, and the committed file that backs each
CLAIMS = (
    ("results table", "tests/data/default_model_predictions.csv", "scored by this generator"),
    ("how the recipe was chosen (CV table)", "models/default-evidence/cv.json", ""),
    ("JPEG q95 training vs lossless testing", "models/default-evidence/jpeg_vs_png.json", ""),
    ("candidate grid for the next selection", "models/default-evidence/grid.json", ""),
)


def results_section(scores: dict[str, SplitScore], label_set_hash: str, resamples: int) -> str:
    """The results table, every number from the scorer."""
    lines = [
        f"## Results (measured once; threshold 0.5; 95 % stratified bootstrap CIs, "
        f"{resamples:,} resamples)",
        "",
        "| split | crops (atypical) | balanced accuracy [95 % CI] | sensitivity | specificity "
        "| AUROC [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        s = scores[split]
        ba, auc = s.balanced_accuracy, s.auroc
        lines.append(
            f"| {split} | {s.n} ({s.n_atypical}) | {ba.estimate:.4f} [{ba.low:.4f}, "
            f"{ba.high:.4f}] | {s.sensitivity:.4f} | {s.specificity:.4f} | {auc.estimate:.4f} "
            f"[{auc.low:.4f}, {auc.high:.4f}] |"
        )
    lines += ["", f"Label-set hash `{label_set_hash}`."]
    return "\n".join(lines)


def evidence_section(root: Path = REPO_ROOT) -> str:
    """Which claims of the card have committed evidence, checked on disk."""
    lines = [
        "## Which claims have committed evidence",
        "",
        "| claim | evidence | committed |",
        "|---|---|---|",
    ]
    for claim, path, note in CLAIMS:
        there = (root / path).is_file()
        state = (
            ("yes" + (f", {note}" if note else "")) if there else "**no**: not reproducible here"
        )
        lines.append(f"| {claim} | `{path}` | {state} |")
    return "\n".join(lines)


def render(card: str, sections: dict[str, str]) -> str:
    """``card`` with each generated section replaced (the markers must be there)."""
    for name, body in sections.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} -->\n).*?(\n<!-- end generated:{name} -->)", re.DOTALL
        )
        if not pattern.search(card):
            raise ValueError(f"The card has no '<!-- generated:{name} -->' section to fill.")
        card = pattern.sub(lambda m, body=body: m[1] + body + m[2], card)
    return card


def generated_card(settings: Settings, card_path: Path, predictions: Path = PREDICTIONS) -> str:
    """The card at ``card_path`` with its numbers and evidence regenerated."""
    bundle = PublicBundle(settings.public_dir)
    labels, label_hash = load_labels(bundle, settings.labels_dir, SPLITS)
    resamples = 2000
    scores = score_predictions(
        read_predictions(predictions, bundle.manifest), labels, n_resamples=resamples
    )
    return render(
        card_path.read_text(),
        {"results": results_section(scores, label_hash, resamples), "evidence": evidence_section()},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.model_card", description=__doc__)
    parser.add_argument("--card", type=Path, default=None, help="default: the shipped model's")
    parser.add_argument("--predictions", type=Path, default=PREDICTIONS)
    parser.add_argument("--check", action="store_true", help="exit 1 if the card is not current")
    args = parser.parse_args(argv)
    settings = command_settings("python -m evaluation.model_card")
    card = args.card or settings.default_checkpoint / "README.md"
    text = generated_card(settings, card, args.predictions)
    if args.check:
        if text != card.read_text():
            print(f"{card} is not what the scorer gives; run python -m evaluation.model_card")
            return 1
        print(f"{card} is current.")
        return 0
    card.write_text(text)
    print(f"wrote {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
