#!/usr/bin/env bash
# How the shipped default model (models/default/) was made, start to finish:
#   1. three candidate recipes, each measured by 5-fold slide-grouped cross-validation on
#      AMi-Br train (StratifiedGroupKFold, random_state=42);
#   2. the recipe with the best mean validation balanced accuracy trained MEMBERS times on all
#      of AMi-Br train (seeds 0..MEMBERS-1) and saved as one ensemble checkpoint.
# No test crop or hidden label is read at any step. Extra arguments go to every models.train
# call (e.g. `--limit 150 --epochs 1` for a smoke run).
#
# Usage: scripts/train_default_model.sh TRAIN_DIR_OR_NPZ RUNS_DIR [models.train options]
set -euo pipefail
TRAIN=${1:?training folder or packed .npz}
RUNS=${2:?runs directory}
shift 2
PY=${PYTHON:-python}
MEMBERS=${MEMBERS:-3}
common=(--train "$TRAIN" --no-progress --folds 5 --members 0)

$PY -m models.train --out "$RUNS/cv-mobilenetv2" --model mobilenetv2_100.imagenet_offline \
    "${common[@]}" "$@"
$PY -m models.train --out "$RUNS/cv-efficientnet-lite0" \
    --model tf_efficientnet_lite0.imagenet_offline "${common[@]}" "$@"
$PY -m models.train --out "$RUNS/cv-mobilenetv2-strong" --model mobilenetv2_100.imagenet_offline \
    --hed 0.1 --ema-decay 0.998 --epochs 50 "${common[@]}" "$@"

best=$($PY - "$RUNS" <<'PY'
import json, pathlib, sys
runs = sorted(pathlib.Path(sys.argv[1]).glob("cv-*/metrics.json"))
scores = {p.parent.name: json.loads(p.read_text())["cv"]["val_ba_mean"] for p in runs}
print(max(scores, key=scores.get))
for name, score in sorted(scores.items(), key=lambda kv: -kv[1]):
    print(f"{name}: cross-validation BA {score:.4f}", file=sys.stderr)
PY
)
echo "selected recipe: $best"
mkdir -p "$RUNS/final"
cp "$RUNS/$best/recipe.json" "$RUNS/final/recipe.json"
$PY -m models.train --out "$RUNS/final" --train "$TRAIN" --no-progress --folds 0 \
    --members "$MEMBERS" "$@"
