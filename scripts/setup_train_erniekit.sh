#!/usr/bin/env bash
# make setup-train-erniekit: the ERNIEKit route (OCR-VL-SFT) in its own venv.
#
#   paddlepaddle-gpu 3.2.0  from PaddlePaddle's package index (not PyPI); ERNIEKit v1.4 was
#                           released on it
#   ERNIEKit                a checkout of github.com/PaddlePaddle/ERNIE at ERNIE_REF,
#                           pip install -e . (PyPI erniekit 1.3.0 lacks ernie/, data_processor/
#                           and OCR-VL-SFT); the commit is recorded in $VENV/ERNIE_COMMIT
#   PaddleFormers           ERNIE's own pin, which must still have `tensor_parallel_degree`
#                           (renamed `tensor_model_parallel_size` in 0.4.1, which makes
#                           ERNIEKit die with an AttributeError): checked at the end
#   this repo               pip install -e . (python -m training.train, summary)
#
# Needs: Linux x86_64, NVIDIA GPU (cc >= 8.0 for bf16; 80 GB for the 16k recipe), a driver
# for CUDA >= 12.6 (cu126 wheels), git, Python 3.10-3.12, internet access to github.com and
# paddlepaddle.org.cn.
#
# Settings (environment variables):
#   PYTHON=python3.10           interpreter (3.10-3.12; Paddle's images run 3.10)
#   VENV=.venv-train-erniekit   the venv
#   CUDA=cu126                  paddlepaddle-gpu flavour: cu118 | cu126 | cu129
#   PADDLE_VERSION=3.2.0
#   ERNIE_REF=release/v1.4      branch, tag or commit (pass a SHA to pin it exactly)
#   ERNIE_DIR=third_party/ERNIE
#   PADDLEFORMERS_VERSION=      force a PaddleFormers version (<= 0.4.0) over ERNIE's pin
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_train_common.sh

PYTHON=${PYTHON:-python3.10}
VENV=${VENV:-.venv-train-erniekit}
CUDA=${CUDA:-cu126}
PADDLE_VERSION=${PADDLE_VERSION:-3.2.0}
ERNIE_REPO=${ERNIE_REPO:-https://github.com/PaddlePaddle/ERNIE.git}
ERNIE_REF=${ERNIE_REF:-release/v1.4}
ERNIE_DIR=${ERNIE_DIR:-third_party/ERNIE}
PADDLEFORMERS_VERSION=${PADDLEFORMERS_VERSION:-}

say "checking the machine"
command -v git >/dev/null || die "git not found"
check_python "$PYTHON"
check_gpu "$CUDA"

say "venv $VENV ($PYTHON)"
make_venv "$PYTHON" "$VENV"
PY="$VENV/bin/python"

say "paddlepaddle-gpu==$PADDLE_VERSION ($CUDA)"
"$PY" -m pip install -q "paddlepaddle-gpu==$PADDLE_VERSION" -i "https://www.paddlepaddle.org.cn/packages/stable/${CUDA}/"

say "ERNIEKit: $ERNIE_REPO @ $ERNIE_REF -> $ERNIE_DIR"
if [ ! -d "$ERNIE_DIR/.git" ]; then
  mkdir -p "$(dirname "$ERNIE_DIR")"
  git clone --quiet "$ERNIE_REPO" "$ERNIE_DIR"
fi
git -C "$ERNIE_DIR" fetch --quiet origin "$ERNIE_REF" || git -C "$ERNIE_DIR" fetch --quiet origin
git -C "$ERNIE_DIR" -c advice.detachedHead=false checkout --quiet FETCH_HEAD 2>/dev/null \
  || git -C "$ERNIE_DIR" -c advice.detachedHead=false checkout --quiet "$ERNIE_REF"
commit=$(git -C "$ERNIE_DIR" rev-parse HEAD)
[ -d "$ERNIE_DIR/erniekit/train/ocr_vl_sft" ] || die "$ERNIE_REF ($commit) has no erniekit/train/ocr_vl_sft: use release/v1.4 or newer"
"$PY" -m pip install -q -r "$ERNIE_DIR/requirements/gpu/requirements.txt"
"$PY" -m pip install -q -e "$ERNIE_DIR"
if [ -n "$PADDLEFORMERS_VERSION" ]; then
  "$PY" -m pip install -q "paddleformers==$PADDLEFORMERS_VERSION"
fi
# As ERNIEKit's PaddleOCR-VL guide: TensorBoard for the logs, headless OpenCV (no libGL on
# servers), numpy 1.26 (paddleformers' fast_dataindex is built against it).
"$PY" -m pip install -q tensorboard tensorboardX opencv-python-headless "numpy==1.26.4"
echo "$commit" >"$VENV/ERNIE_COMMIT"

say "this repo"
"$PY" -m pip install -q -e .

say "checking the result: the trainer imports and its arguments are the ones ERNIEKit reads"
"$PY" - <<'PY'
import dataclasses
import importlib.metadata as md
import sys

import paddle

assert paddle.is_compiled_with_cuda(), "paddlepaddle is the CPU build"
paddle.utils.run_check()
import data_processor  # noqa: F401  (only in the ERNIE checkout, not PyPI erniekit)
import ernie  # noqa: F401
from erniekit.hparams.parser import _TRAIN_ARGS

from paddleformers.trainer import TrainingArguments

names = {f.name for f in dataclasses.fields(TrainingArguments)}
if "tensor_parallel_degree" not in names:
    sys.exit(
        f"paddleformers {md.version('paddleformers')} renamed tensor_parallel_degree: ERNIEKit "
        "would die with an AttributeError; rerun with PADDLEFORMERS_VERSION=0.4.0"
    )
for dist in ("paddlepaddle-gpu", "paddleformers", "erniekit", "numpy"):
    print(f"{dist:18} {md.version(dist)}")
print(f"ERNIEKit train arguments: {sum(len(dataclasses.fields(c)) for c in _TRAIN_ARGS)}")
PY
command -v "$VENV/bin/erniekit" >/dev/null || die "no erniekit executable in $VENV/bin"
dry_run "$PY" configs/train/erniekit_ocr_vl_sft_16k.yaml

cat <<MSG

ERNIEKit environment ready: $VENV (ERNIE commit $commit, in $VENV/ERNIE_COMMIT)
  make train CONFIG=configs/train/erniekit_ocr_vl_sft_16k.yaml TRAIN_PY=$PY ARGS="model_dir=/path/to/PaddleOCR-VL data_dir=/path/to/sft"
Export and check the result in the main environment (PaddleX): make export ...
MSG
