#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded default, on CPU.
#
#   synthetic invoices ─▶ label QA ─▶ prompt-SFT dataset ─▶ PaddleFormers SFT of a tiny
#   random-weight PaddleOCR-VL ─▶ export ─▶ PaddleX prediction on the val split ─▶ report
#
# The model is tiny and random: it learns the JSON shape, not invoices, so its scores are
# near zero. The point is that every stage runs and hands a file to the next one; swap in
# real labels, the real base model and a GPU recipe for real numbers (README.md).
#
# The terminal shows each stage's progress and result; everything the tools print
# (PaddleFormers' and PaddleX's debug output included) goes to $OUT/demo.log. Run it again
# and it reuses the finished training run (DEMO_RETRAIN=1 trains again) and redoes the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/demo}
LOG="$OUT/demo.log"
mkdir -p "$OUT"
printf '# make demo %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" >>"$LOG"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; printf '\n== %s\n' "$*" >>"$LOG"; }
# quiet CMD...: run with its output in the log; on failure show the log's tail and stop
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    printf 'error: %s failed; the last lines of %s:\n' "$*" "$LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

step "1/6 train: tiny base model + synthetic invoices + SFT dataset (built when absent), PaddleFormers on CPU"
if [ "${DEMO_RETRAIN:-0}" = 1 ]; then rm -rf "$OUT/train"; fi
if grep -qs '"status": "finished"' "$OUT/train/launch/run.json"; then
  echo "  already trained in $OUT/train (DEMO_RETRAIN=1 make demo trains again)"
else
  rm -rf "$OUT/train"  # an unfinished run: start it over
  echo "  training (about 170 steps; every 20th shown, the full log in $LOG)"
  set +e
  "$PY" -m training.train --config configs/train/cpu_tiny.yaml \
    data_root="$OUT/data" model_dir="$OUT/base_model" run_dir="$OUT/train" 2>&1 \
    | tee -a "$LOG" \
    | awk '
        /\[ERROR|^error:/ { print "  " $0; fflush() }
        /global_step: [0-9]+,/ {
          match($0, /global_step: [0-9]+/); s = substr($0, RSTART + 13, RLENGTH - 13)
          if (s % 20 == 0) {
            loss = ""; if (match($0, /loss: [0-9.]+/)) loss = substr($0, RSTART, RLENGTH)
            printf "  step %4d  %s\n", s, loss; fflush()
          }
        }
        /^training finished/ { sub(/; next:.*/, ""); print "  " $0; fflush() }'
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    printf 'error: training exited with %s; the last lines of %s:\n' "$rc" "$LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
fi

step "2/6 label QA on the synthetic labels (arithmetic, IDs, amounts in words)"
quiet "$PY" -m data_tools.qa --labels "$OUT/data/labels.jsonl" --schema vat_invoice --out "$OUT/data/labels.qa.jsonl"
echo "  $OUT/data/labels.qa.jsonl"

step "3/6 training summary (loss curve, s/step)"
"$PY" -m training.summary "$OUT/train" 2>>"$LOG" | sed 's/^/  /'

step "4/6 export a deployable model dir (checked by loading it in PaddleX)"
quiet "$PY" -m training.export --ckpt "$OUT/train/checkpoints" --base-model "$OUT/base_model" \
  --out "$OUT/model" --force
grep -a "PaddleX loaded" "$LOG" | tail -n 1 | sed 's/^/  /'

step "5/6 predict the val split with PaddleX (prompts from the SFT file)"
rm -f "$OUT/predictions.jsonl" "$OUT/predictions.xlsx" "$OUT"/predictions.*.jsonl
quiet "$PY" -m inference.predict --backend paddlex --model-dir "$OUT/model" \
  --input "$OUT/data/sft/val.jsonl" --out "$OUT/predictions.jsonl" \
  --excel "$OUT/predictions.xlsx" --system tiny-paddleocr-vl --no-progress
echo "  $(wc -l <"$OUT/predictions.jsonl") predictions in $OUT/predictions.jsonl"

step "6/6 score against the val gold"
quiet "$PY" -m eval.score --gold "$OUT/data/sft/val.labels.jsonl" --pred "$OUT/predictions.jsonl" \
  --name tiny-paddleocr-vl --schema vat_invoice --out-dir "$OUT/report"
echo "  $OUT/report/report.html"

cat <<EOF

Done.
  report:       $OUT/report/report.html
  model:        $OUT/model
  full log:     $LOG
  serve it:     make serve ARGS="--backend paddlex --model-dir $OUT/model"
EOF
