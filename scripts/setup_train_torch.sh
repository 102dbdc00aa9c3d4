#!/usr/bin/env bash
# make setup-train-torch: the PyTorch (transformers) route on a GPU box, in .venv-torch.
#
#   torch 2.13.0 (CUDA)   from PyTorch's index for the CUDA flavour
#   everything else       requirements/torch.txt (transformers 5.3.0 with PaddleOCR-VL,
#                         accelerate, peft, tensorboard, ...), the same pins as the CPU
#                         `make setup-torch`
#   this repo             pip install -e .
# On a CPU machine use `make setup-torch` (torch CPU wheel, offline from /opt/wheels when there).
#
# Needs: Linux x86_64, NVIDIA GPU (cc >= 8.0 for bf16), a driver for the CUDA flavour,
# Python 3.10-3.12, internet access to download.pytorch.org and PyPI.
#
# Settings: PYTHON=python3.11  VENV=.venv-torch  CUDA=cu128  TORCH_VERSION=2.13.0
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_train_common.sh

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-torch}
CUDA=${CUDA:-cu128}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

say "checking the machine"
check_python "$PYTHON"
check_gpu "$CUDA"

say "venv $VENV ($PYTHON)"
make_venv "$PYTHON" "$VENV"
PY="$VENV/bin/python"

say "torch==$TORCH_VERSION ($CUDA)"
"$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url "https://download.pytorch.org/whl/${CUDA}"

say "requirements/torch.txt (without its CPU torch pin)"
grep -v '^torch==' requirements/torch.txt >"$VENV/requirements-gpu.txt"
"$PY" -m pip install -q -r "$VENV/requirements-gpu.txt"

say "this repo"
"$PY" -m pip install -q --no-deps -e .

say "checking the result: the trainer imports"
"$PY" - <<'PY'
import importlib.metadata as md

import torch

assert torch.cuda.is_available(), "torch sees no CUDA device"
import training.torch_sft  # noqa: F401
from transformers.models.paddleocr_vl import PaddleOCRVLForConditionalGeneration  # noqa: F401

for dist in ("torch", "transformers", "accelerate", "peft"):
    print(f"{dist:14} {md.version(dist)}")
print(f"GPU            {torch.cuda.get_device_name(0)}")
PY
dry_run "$PY" configs/train/transformers_full_16k.yaml
touch "$VENV/.setup-done"

cat <<MSG

PyTorch environment ready: $VENV
  make train CONFIG=configs/train/transformers_full_16k.yaml TRAIN_PY=$PY ARGS="model_dir=/path/to/PaddleOCR-VL data_dir=/path/to/sft"
  $PY benchmarks/gpu_throughput.py --out outputs/gpu_throughput.jsonl
MSG
