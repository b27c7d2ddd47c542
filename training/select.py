"""``python -m training.select``: run the candidate grid, tabulate it, train the chosen recipe.

    pack   write what a GPU machine needs into --out (ignored by git, named in `carry`): the
           training crops as a JPEG .npz and the grid's ImageNet weights in half precision,
           and check that it fits the 64 MiB that travels with the working tree
    run    cross-validate the grid's candidates (resumable; --budget-s stops between folds)
    table  candidates with every fold done: CV BA, out-of-fold threshold, size and CPU speed
           next to the shipped model's, measured side by side in this run
    folds  train and save a candidate's five cross-validation models (--name, --out), to score
           their mean ± std on the test sets, the quantity the paper's rows are
    final  train a candidate on all of AMi-Br train (its members, its teacher first) and save
           the checkpoint, with the out-of-fold threshold when it is not 0.5; without --name,
           the best CV BA among those within 1.2x the shipped model's CPU time and 60 MB

Everything here reads AMi-Br train only (``--train``: a training folder, a packed ``.npz`` or
the release's dataset folder). The test sets are read once, by the final model, elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fileio import PUBLIC, atomic_write
from models._registry import get_model_cfg
from models.checkpoint import load_checkpoint
from models.factory import Ensemble, create_model
from models.inference import resolve_device
from models.pretrained import export_imagenet_offline
from settings import REPO_ROOT, at_least, command_settings
from training.candidates import Candidate, fold_models, read_grid, run_grid, summarise
from training.runs import git_sha, save_run_model
from training.train import train_members
from training.trainset import load_train_set, pack_train_set

log = logging.getLogger("training.select")
LATENCY_BATCH = 16
DEFAULT_STATE = Path("models/default-evidence/cv.json")


def forward_ms(model: torch.nn.Module, size: int, repeats: int = 5) -> float:
    """Median milliseconds per crop of a forward pass on a batch of 16, on the CPU."""
    x = torch.rand(LATENCY_BATCH, 3, size, size)
    model = model.eval()
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000 / LATENCY_BATCH


def network(candidate: Candidate) -> torch.nn.Module:
    """The candidate's deployed network (its members; a student alone), randomly initialised."""
    return Ensemble.of(
        [
            create_model(
                candidate.recipe.model, strategy=candidate.recipe.strategy, pretrained=False
            )
            for _ in range(candidate.members)
        ]
    )


def efficiency(candidates: list[Candidate], shipped: Path) -> dict[str, dict]:
    """Weights (MB) and CPU ms per crop of each candidate and of the shipped model, one run."""
    reference = load_checkpoint(shipped)
    ship_size = int(reference.config["pretrained_cfg"]["input_size"][-1])
    rows = {"shipped": {"ms_per_crop": forward_ms(reference.model, ship_size)}}
    rows["shipped"]["mb"] = sum(p.numel() for p in reference.model.parameters()) * 4 / 2**20
    for candidate in candidates:
        net = network(candidate)
        rows[candidate.name] = {
            "ms_per_crop": forward_ms(net, candidate.size),
            "mb": sum(p.numel() for p in net.parameters()) * 4 / 2**20,
        }
    base = rows["shipped"]["ms_per_crop"]
    for row in rows.values():
        row["vs_shipped"] = row["ms_per_crop"] / base
    return rows


def table(grid, state, trainset, shipped: Path, measure: bool) -> dict:
    """The candidates' table (``summarise``), with their efficiency when ``measure``."""
    rows = summarise(grid, state, trainset)
    measured = {}
    if measure:
        measured = efficiency([grid[r["name"]] for r in rows if "cv_ba_mean" in r], shipped)
        for row in rows:
            row.update(measured.get(row["name"], {}))
    return {
        "threads": torch.get_num_threads(),
        "shipped": measured.get("shipped"),
        "candidates": sorted(rows, key=lambda r: -r.get("cv_ba_mean", -1)),
    }


def measured_table(path: Path, current: dict) -> dict:
    """The table ``table --measure --out`` wrote, if it holds ``current``'s CV results.

    ``final`` then chooses from the timings that were written (and committed as evidence),
    not from a second measurement that noise may order differently.
    """
    try:
        report = json.loads(path.read_text())
        written = {r["name"]: r.get("cv_ba_mean") for r in report["candidates"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--table {path} is not a table written by table --out ({e}).") from e
    if written != {r["name"]: r.get("cv_ba_mean") for r in current["candidates"]}:
        raise ValueError(
            f"--table {path} holds other cross-validation results than --state: build it "
            "again with table --measure --out."
        )
    return report


MAX_SLOWDOWN = 1.2  # the default model's CPU forward time, relative to today's shipped model
MAX_MB = 60


def choose(report: dict) -> dict[str, str | None]:
    """The best CV BA among candidates fast and small enough for the default, and overall.

    ``fast``: within ``MAX_SLOWDOWN`` of the shipped model's CPU time and ``MAX_MB`` of weights
    (measured side by side in the table's run); ``accurate``: the best of all, to ship beside it
    when it is another one.
    """
    done = [r for r in report["candidates"] if "cv_ba_mean" in r]
    if done and "vs_shipped" not in done[0]:
        raise ValueError("Choosing needs the CPU timings: build the table with --measure.")
    fast = [r for r in done if r["vs_shipped"] <= MAX_SLOWDOWN and r["mb"] <= MAX_MB]
    best = max(done, key=lambda r: r["cv_ba_mean"], default=None)
    best_fast = max(fast, key=lambda r: r["cv_ba_mean"], default=None)
    return {
        "fast": best_fast["name"] if best_fast else None,
        "accurate": best["name"] if best else None,
    }


def markdown(report: dict) -> str:
    """The table as Markdown, best CV BA first."""
    lines = [
        "| candidate | model | px | members | teacher | CV BA (mean ± std) | OOF BA | OOF AUROC "
        "| OOF threshold | MB | CPU ms/crop | vs shipped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["candidates"]:
        if "cv_ba_mean" not in r:
            lines.append(f"| {r['name']} | {r['folds_done']} of 5 folds done |" + " |" * 10)
            continue
        speed = (
            f"{r['mb']:.1f} | {r['ms_per_crop']:.2f} | {r['vs_shipped']:.2f}×"
            if "mb" in r
            else "| |"
        )
        lines.append(
            f"| {r['name']} | {r['model']} | {r['input_size']} | {r['members']} | "
            f"{r['teacher'] or '—'} | {r['cv_ba_mean']:.4f} ± {r['cv_ba_std']:.4f} | "
            f"{r['oof_ba']:.4f} | {r['oof_auroc']:.4f} | {r['oof_threshold']:.2f} | {speed} |"
        )
    return "\n".join(lines) + "\n"


def final(grid, row: dict, trainset, device, out: Path, imagenet_dir: Path | None) -> Path:
    """Train a candidate (its ``table`` row) on all of AMi-Br train and save it.

    The checkpoint's threshold is the candidate's out-of-fold one.
    """
    name = row["name"]
    if "cv_ba_mean" not in row:
        raise ValueError(f"'{name}' has {row['folds_done']} of 5 folds: finish them first.")
    candidate = grid[name]
    common = {"progress": False, "imagenet_dir": imagenet_dir}
    teacher_dirs = []
    if candidate.teacher:
        parent = grid[candidate.teacher]
        teacher_dirs = train_members(
            parent.recipe, trainset, device, out / "teacher", members=parent.members, **common
        )
    student = dataclasses.replace(candidate.recipe, teacher=candidate.teacher)
    member_dirs = train_members(
        student,
        trainset,
        device,
        out,
        members=candidate.members,
        teacher_dirs=teacher_dirs,
        **common,
    )
    model = Ensemble.of([load_checkpoint(d).model for d in member_dirs])
    extra = {"selected": name, "cv": {k: v for k, v in row.items() if k != "name"}}
    return save_run_model(model, student, out / "model", extra, threshold=row["oof_threshold"])


CARRY_LIMIT = 64 * 2**20  # what may travel to a GPU machine: the working tree and the carry


def tracked_bytes() -> int:
    """Bytes of the files git tracks: they travel to a GPU machine with every call."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum((REPO_ROOT / name.decode()).stat().st_size for name in listed if name)


def pack(grid, names: list[str], train: Path, out: Path, quality: int, weights: Path | None):
    """The carry for cross-validating ``names`` on a GPU machine; refuses one over the limit."""
    out.mkdir(parents=True, exist_ok=True)
    packed = out / "train.npz"
    if train.suffix == ".npz":
        shutil.copyfile(train, packed)
    else:
        pack_train_set(train, packed, quality=quality)
    (out / "weights").mkdir(exist_ok=True)
    chosen = [grid[n] for n in names] + [grid[grid[n].teacher] for n in names if grid[n].teacher]
    for name in sorted({c.recipe.model for c in chosen if c.recipe.pretrained}):
        cfg = get_model_cfg(name)
        if cfg.weights == "imagenet_offline":
            path = out / "weights" / f"{cfg.architecture}.safetensors"
            export_imagenet_offline(cfg, path, torch.float16, weights)
    carried = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    total = tracked_bytes() + carried
    report = {"carry_mb": carried / 2**20, "with_tree_mb": total / 2**20, "limit_mb": 64}
    if total > CARRY_LIMIT:
        raise SystemExit(
            f"The carry ({carried / 2**20:.1f} MiB) and the tracked tree make {total / 2**20:.1f} "
            "MiB, over the 64 MiB that may travel: pack fewer candidates' backbones (--only) "
            "or a lower --quality."
        )
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    settings = command_settings("python -m training.select")
    p = argparse.ArgumentParser(
        prog="python -m training.select",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=["pack", "run", "table", "folds", "final"])
    p.add_argument("--grid", type=Path, default=Path("models/default-evidence/grid.json"))
    p.add_argument("--state", type=Path, default=DEFAULT_STATE)
    p.add_argument("--train", type=Path, default=settings.public_dir / "amibr_train")
    p.add_argument("--only", nargs="*", help="run only these candidates (and in this order)")
    p.add_argument("--budget-s", type=float, default=float("inf"), help="stop between folds")
    p.add_argument(
        "--limit", type=at_least(0), default=0, help="use only the first N crops (smoke runs)"
    )
    p.add_argument(
        "--epochs", type=at_least(0), default=0, help="override every recipe's (smoke runs)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--imagenet-dir", type=Path, default=settings.imagenet_weights_dir)
    p.add_argument("--measure", action="store_true", help="table: time every candidate on CPU")
    p.add_argument("--shipped", type=Path, default=settings.default_checkpoint)
    p.add_argument("--name", help="final: the candidate to train (default: the table's best)")
    p.add_argument(
        "--table",
        type=Path,
        help="final: choose from this table (table --measure --out's .json) instead of timing "
        "every candidate again",
    )
    p.add_argument(
        "--out", type=Path, help="pack: the carry folder; final: run directory; table: its file"
    )
    p.add_argument(
        "--quality", type=at_least(1, below=101), default=92, help="pack: JPEG quality of the crops"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if (args.limit or args.epochs) and args.state == DEFAULT_STATE and args.command != "pack":
        p.error("--limit and --epochs make smoke runs: give them their own --state")
    try:
        grid, _ = read_grid(args.grid)
    except (ValueError, OSError, KeyError) as e:  # KeyError: an entry without a name
        p.error(f"--grid {args.grid}: {e}")
    named = {"--only": args.only or [], "--name": [args.name] if args.name else []}
    for option, names in named.items():
        if unknown := [name for name in names if name not in grid]:
            p.error(f"{option} names {', '.join(unknown)}: not candidates of {args.grid}")
    if args.command == "pack":
        if not args.out:
            p.error("pack needs --out")
        names = args.only or list(grid)
        report = pack(grid, names, args.train, args.out, args.quality, args.imagenet_dir)
        print(json.dumps(report))
        return 0
    if args.epochs:
        grid = {
            n: dataclasses.replace(c, recipe=dataclasses.replace(c.recipe, epochs=args.epochs))
            for n, c in grid.items()
        }
    try:
        device = resolve_device(args.device)
        trainset = load_train_set(args.train, limit=args.limit)
    except (ValueError, OSError) as e:  # ModelError is a ValueError
        p.error(str(e))
    if args.command == "folds":
        if not (args.name and args.out):
            p.error("folds needs --name and --out")
        paths = fold_models(
            grid, args.name, trainset, device, args.out, imagenet_dir=args.imagenet_dir
        )
        print("\n".join(map(str, paths)))
        return 0
    state = json.loads(args.state.read_text()) if args.state.is_file() else {}
    if args.command == "run":
        state = run_grid(
            grid,
            trainset,
            args.state,
            device,
            only=args.only,
            budget_s=args.budget_s,
            imagenet_dir=args.imagenet_dir,
        )
        pending = [n for n in (args.only or grid) if len(state["candidates"][n]["folds"]) < 5]
        print(json.dumps({"git_sha": git_sha(), "pending": pending}))
        return 0
    if args.command == "final" and args.table and not args.name:
        try:
            report = measured_table(args.table, table(grid, state, trainset, args.shipped, False))
        except ValueError as e:
            p.error(str(e))
    else:
        report = table(grid, state, trainset, args.shipped, args.measure or not args.name)
    if args.command == "table":
        text = json.dumps(report, indent=1)
        if args.out:
            atomic_write(
                args.out.with_suffix(".json"), lambda tmp: tmp.write_text(text), mode=PUBLIC
            )
            atomic_write(
                args.out.with_suffix(".md"),
                lambda tmp: tmp.write_text(markdown(report)),
                mode=PUBLIC,
            )
        print(markdown(report))
        return 0
    if not args.out:
        p.error("final needs --out")
    try:
        chosen = choose(report) if not args.name else {"fast": args.name}
    except ValueError as e:  # a --table written without --measure
        p.error(f"{e} (--table {args.table})" if args.table else str(e))
    print(json.dumps({"chosen": chosen}))
    if chosen["fast"] is None:
        raise SystemExit("No candidate with every fold done is fast and small enough.")
    row = next(r for r in report["candidates"] if r["name"] == chosen["fast"])
    print(final(grid, row, trainset, device, args.out, args.imagenet_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
