#!/usr/bin/env bash
# The GPU steps of scripts/train_default_model.sh on a borrowed GPU machine, one per session.
#
# Here (once per part): pack the crops and the part's ImageNet weights into .gpu/carry
# (ignored by git; it refuses a carry that would not fit the 64 MiB that travels):
#   .venv/bin/python -m training.select pack --only CANDIDATE... --out .gpu/carry
# There (the device's `run`, carry [".gpu/carry"], timeout_s 600):
#   bash scripts/select_on_gpu.sh cv CANDIDATE...
#       cross-validates the candidates until its budget (BUDGET_S, default 500 s) and leaves
#       the updated state in $OUT/cv.json: copy it over models/default-evidence/cv.json and
#       commit it; the next session resumes after the last finished fold.
#   bash scripts/select_on_gpu.sh final CANDIDATE   (chosen here: training.select table --measure)
#   bash scripts/select_on_gpu.sh folds CANDIDATE
#       the candidate trained on all of AMi-Br train (final), or its five cross-validation
#       models (folds), as $OUT/<mode>.tar.part-*: at most 15 MiB a file, as $OUT returns them.
#       Here: cat <files_at>/<mode>.tar.part-* | tar -x -C runs/
set -euo pipefail
: "${OUT:?run this on the device machine, where OUT is set}"
MODE=${1:?cv, final or folds}
shift
STATE=${STATE:-models/default-evidence/cv.json}  # STATE, GRID, DEVICE, PYTHON: for dry runs
select=("${PYTHON:-python3}" -m training.select --grid "${GRID:-models/default-evidence/grid.json}"
        --train .gpu/carry/train.npz --imagenet-dir .gpu/carry/weights --device "${DEVICE:-cuda}")
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/device.txt" 2>&1 || true
case "$MODE" in
  cv)
    "${select[@]}" run --state "$STATE" --budget-s "${BUDGET_S:-500}" --only "$@" 2>&1 \
        | tee "$OUT/select.log"
    cp "$STATE" "$OUT/cv.json"
    ;;
  final|folds)
    name=${1:?the candidate}
    run=/tmp/select-$MODE
    if [ "$MODE" = final ]; then
      "${select[@]}" final --state "$STATE" --name "$name" --out "$run" 2>&1 | tee "$OUT/select.log"
      rm -rf "$run/members" "$run/teacher"  # only the assembled model comes back
    else
      "${select[@]}" folds --name "$name" --out "$run" 2>&1 | tee "$OUT/select.log"
    fi
    tar -C "$(dirname "$run")" -cf - "$(basename "$run")" | split -b 15m - "$OUT/$MODE.tar.part-"
    ;;
  *) echo "unknown mode $MODE: cv, final or folds" >&2; exit 2 ;;
esac
