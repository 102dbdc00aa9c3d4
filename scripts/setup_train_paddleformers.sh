#!/usr/bin/env bash
# make setup-train-paddleformers: the PaddleFormers route (VL-SFT, template paddleocr_vl) in
# its own venv, as PaddleFormers' own PaddleOCR-VL guide sets it up:
#
#   paddlepaddle-gpu 3.3.0            from PaddlePaddle's package index (not PyPI)
#   paddleformers[paddlefleet] 1.2.0  >= 1.0 is the first with the paddleocr_vl template and
#                                     VL-SFT; paddlefleet brings its GPU kernels
#   this repo                         pip install -e .
#
# Needs: Linux x86_64, NVIDIA GPU (cc >= 8.0 for bf16; 80 GB for the 16k recipes), a driver
# for CUDA >= 12.6, Python 3.10-3.12, internet access to paddlepaddle.org.cn and PyPI.
#
# Settings: PYTHON=python3.10  VENV=.venv-train-paddleformers  CUDA=cu126
#           PADDLE_VERSION=3.3.0  PADDLEFORMERS_VERSION=1.2.0
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_train_common.sh

PYTHON=${PYTHON:-python3.10}
VENV=${VENV:-.venv-train-paddleformers}
CUDA=${CUDA:-cu126}
PADDLE_VERSION=${PADDLE_VERSION:-3.3.0}
PADDLEFORMERS_VERSION=${PADDLEFORMERS_VERSION:-1.2.0}

say "checking the machine"
check_python "$PYTHON"
check_gpu "$CUDA"

say "venv $VENV ($PYTHON)"
make_venv "$PYTHON" "$VENV"
PY="$VENV/bin/python"

say "paddlepaddle-gpu==$PADDLE_VERSION ($CUDA)"
"$PY" -m pip install -q "paddlepaddle-gpu==$PADDLE_VERSION" -i "https://www.paddlepaddle.org.cn/packages/stable/${CUDA}/"

say "paddleformers[paddlefleet]==$PADDLEFORMERS_VERSION"
"$PY" -m pip install -q "paddleformers[paddlefleet]==$PADDLEFORMERS_VERSION" tensorboard tensorboardX

say "this repo"
"$PY" -m pip install -q -e .

say "checking the result: the trainer imports and knows VL-SFT / paddleocr_vl"
"$PY" - <<'PY'
import importlib.metadata as md

import paddle

assert paddle.is_compiled_with_cuda(), "paddlepaddle is the CPU build"
paddle.utils.run_check()
from paddleformers.cli.hparams.parser import _TRAIN_ARGS  # noqa: F401
from paddleformers.datasets.template.template import TEMPLATES

assert "paddleocr_vl" in TEMPLATES, "this PaddleFormers has no paddleocr_vl template (needs >= 1.0)"
for dist in ("paddlepaddle-gpu", "paddleformers", "numpy"):
    print(f"{dist:18} {md.version(dist)}")
PY
command -v "$VENV/bin/paddleformers-cli" >/dev/null || die "no paddleformers-cli in $VENV/bin"
dry_run "$PY" configs/train/paddleformers_lora_16k.yaml

cat <<MSG

PaddleFormers environment ready: $VENV
  make train CONFIG=configs/train/paddleformers_lora_16k.yaml TRAIN_PY=$PY ARGS="model_dir=/path/to/PaddleOCR-VL data_dir=/path/to/sft"
MSG
