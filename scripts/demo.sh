#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded default, on CPU, in a few minutes.
#
#   synthetic invoices ─▶ label QA ─▶ prompt-SFT dataset ─▶ PaddleFormers SFT of a tiny
#   random-weight PaddleOCR-VL ─▶ export ─▶ PaddleX prediction on the val split ─▶ report
#
# The model is tiny and random: it learns the JSON shape, not invoices, so its scores are
# near zero. The point is that every stage runs and hands a file to the next one; swap in
# real labels, the real base model and a GPU recipe for real numbers (README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/demo}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 train: tiny base model + synthetic invoices + SFT dataset (built when absent), PaddleFormers on CPU"
"$PY" -m training.train --config configs/train/cpu_tiny.yaml \
    data_root="$OUT/data" model_dir="$OUT/base_model" run_dir="$OUT/train"

step "2/6 label QA on the synthetic labels (arithmetic, IDs, amounts in words)"
"$PY" -m data_tools.qa --labels "$OUT/data/labels.jsonl" --schema vat_invoice --out "$OUT/data/labels.qa.jsonl"

step "3/6 training summary (loss curve, s/step)"
"$PY" -m training.summary "$OUT/train"

step "4/6 export a deployable model dir (checked by loading it in PaddleX)"
"$PY" -m training.export --ckpt "$OUT/train/checkpoints" --base-model "$OUT/base_model" \
    --out "$OUT/model" --force

step "5/6 predict the val split with PaddleX (prompts from the SFT file)"
rm -f "$OUT/predictions.jsonl"
"$PY" -m inference.predict --backend paddlex --model-dir "$OUT/model" \
    --input "$OUT/data/sft/val.jsonl" --out "$OUT/predictions.jsonl" \
    --excel "$OUT/predictions.xlsx" --system tiny-paddleocr-vl --no-progress

step "6/6 score against the val gold"
"$PY" -m eval.score --gold "$OUT/data/sft/val.labels.jsonl" --pred "$OUT/predictions.jsonl" \
    --name tiny-paddleocr-vl --schema vat_invoice --out-dir "$OUT/report"

printf '\nDone. Open %s/report/report.html; the trained model is in %s/model.\n' "$OUT" "$OUT"
