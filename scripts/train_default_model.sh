#!/usr/bin/env bash
# The whole selection of the shipped default model (models/default/), on one machine:
#   1. every candidate of models/default-evidence/grid.json through the paper's slide-grouped
#      5-fold cross-validation on AMi-Br train (StratifiedGroupKFold, random_state=42),
#      resumable fold by fold in STATE (default: the committed models/default-evidence/cv.json);
#   2. the table of candidates, timed on this CPU beside the shipped model;
#   3. the best CV balanced accuracy among the candidates within 1.2x the shipped model's CPU
#      time and 60 MB (the table's timings, not a second measurement), trained on all of
#      AMi-Br train (threshold from out-of-fold predictions);
#   4. its one reading of the test sets, logged with its reason.
# No test crop or hidden label is read before step 4. Extra arguments go to every
# training.select call (e.g. `--limit 60 --epochs 1` for a smoke run, with STATE elsewhere).
# On a GPU machine, run step 1 in parts: see docs/models-and-training.md, "Choosing the default model".
#
# Usage: scripts/train_default_model.sh TRAIN_DIR_OR_NPZ RUNS_DIR [training.select options]
set -euo pipefail
TRAIN=${1:?training folder, packed .npz or dataset folder}
RUNS=${2:?runs directory}
shift 2
PY=${PYTHON:-python}
STATE=${STATE:-models/default-evidence/cv.json}
EVIDENCE=$(dirname "$STATE")
common=(--train "$TRAIN" --state "$STATE")

$PY -m training.select run "${common[@]}" "$@"
$PY -m training.select table "${common[@]}" --measure --out "$EVIDENCE/candidates" "$@"
$PY -m training.select final "${common[@]}" --table "$EVIDENCE/candidates.json" --out "$RUNS/final" "$@"
$PY -m evaluation.run_checkpoint "$RUNS/final/model" --json \
    --log-reading "$EVIDENCE/test_readings.json" \
    --reason "the selected recipe's final model, trained on all of AMi-Br train" \
    > "$EVIDENCE/test_scores.json"
echo "final model: $RUNS/final/model (copy it to models/default once its card is written)"
