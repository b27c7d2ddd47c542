#!/usr/bin/env bash
# Step 1 of scripts/train_default_model.sh on a borrowed GPU machine, one part per session.
#
# Here (once per part): pack the crops and the part's ImageNet weights into .gpu/carry
# (ignored by git; it refuses a carry that would not fit the 64 MiB that travels):
#   .venv/bin/python -m models.select pack --only CANDIDATE... --out .gpu/carry
# There (the device's `run`, carry [".gpu/carry"], timeout_s 600):
#   bash scripts/select_on_gpu.sh CANDIDATE...
# It cross-validates the named candidates until its budget (BUDGET_S, default 500 s) and
# leaves the updated state in $OUT/cv.json; copy that over models/default-evidence/cv.json and
# commit it: the next session resumes after the last finished fold.
set -euo pipefail
: "${OUT:?run this on the device machine, where OUT is set}"
STATE=models/default-evidence/cv.json
PYTHONUNBUFFERED=1 python3 -m models.select run --train .gpu/carry/train.npz \
    --imagenet-dir .gpu/carry/weights --state "$STATE" --device cuda \
    --budget-s "${BUDGET_S:-500}" --only "$@" 2>&1 | tee "$OUT/select.log"
cp "$STATE" "$OUT/cv.json"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/device.txt"
