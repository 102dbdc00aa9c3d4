#!/usr/bin/env bash
# make setup-train-gpu: the GPU training environment for PaddleOCR-VL SFT, in its own venv.
#
#   paddlepaddle-gpu 3.x   from PaddlePaddle's package index (not PyPI)
#   ERNIEKit               a pinned checkout of github.com/PaddlePaddle/ERNIE, pip install -e .
#                          (PyPI erniekit 1.3.0 lacks ernie/, data_processor/ and OCR-VL-SFT)
#   PaddleFormers          as ERNIEKit's requirements pin it (paddleformers-cli for the
#                          PaddleFormers recipes)
#   this repo              pip install -e . (python -m training.train, summary)
#
# Needs: Linux x86_64, an NVIDIA GPU with compute capability >= 8.0 for bf16 (A100/A800/
# H100/H200; 80 GB for the 16k recipes), a driver for CUDA >= 12.6 (cu126 wheels), git,
# Python 3.11 (3.10 works too), internet access to github.com and paddlepaddle.org.cn.
#
# Settings (environment variables):
#   PYTHON=python3.11         interpreter for the venv
#   VENV=.venv-train-gpu      where the venv goes (kept apart from .venv: ERNIEKit pins
#                             opencv-python, PaddleX pins opencv-contrib-python)
#   CUDA=cu126                PaddlePaddle wheel flavour: cu118 | cu126 | cu129
#   PADDLE_VERSION=3.2.0      paddlepaddle-gpu version (ERNIEKit v1.4 was released on 3.2.0)
#   ERNIE_REF=release/v1.4    branch, tag or commit of PaddlePaddle/ERNIE (v1.4 added
#                             PaddleOCR-VL SFT; pass a commit SHA to pin it exactly)
#   ERNIE_DIR=third_party/ERNIE   where the checkout goes
#   PADDLEFORMERS_VERSION=    set to force a PaddleFormers version over ERNIEKit's pin
# The commit actually checked out is written to $VENV/ERNIE_COMMIT and printed.
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-train-gpu}
CUDA=${CUDA:-cu126}
PADDLE_VERSION=${PADDLE_VERSION:-3.2.0}
ERNIE_REPO=${ERNIE_REPO:-https://github.com/PaddlePaddle/ERNIE.git}
ERNIE_REF=${ERNIE_REF:-release/v1.4}
ERNIE_DIR=${ERNIE_DIR:-third_party/ERNIE}
PADDLEFORMERS_VERSION=${PADDLEFORMERS_VERSION:-}
PADDLE_INDEX="https://www.paddlepaddle.org.cn/packages/stable/${CUDA}/"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

say "checking the machine"
[ "$(uname -s)" = Linux ] || die "Linux only (paddlepaddle-gpu wheels)"
command -v git >/dev/null || die "git not found"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; pass PYTHON=/path/to/python3.11"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=index,name,memory.total,compute_cap --format=csv,noheader
driver_cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\.[0-9]*\).*/\1/p' | head -1)
need_cuda=$(case "$CUDA" in cu118) echo 11.8 ;; cu126) echo 12.6 ;; cu129) echo 12.9 ;; *) die "CUDA=$CUDA: use cu118, cu126 or cu129" ;; esac)
if [ -n "$driver_cuda" ] && ! awk -v a="$driver_cuda" -v b="$need_cuda" 'BEGIN { exit !(a + 0 >= b + 0) }'; then
  die "the driver supports CUDA $driver_cuda but CUDA=$CUDA needs $need_cuda: update the driver or pass CUDA=cu118"
fi
min_cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sort -n | head -1)
if ! awk -v c="$min_cc" 'BEGIN { exit !(c + 0 >= 8.0) }'; then
  echo "warning: compute capability $min_cc < 8.0: the recipes train in bf16, which needs A100/A800/H100-class GPUs" >&2
fi

say "venv $VENV ($PYTHON)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

say "paddlepaddle-gpu==$PADDLE_VERSION from $PADDLE_INDEX"
"$PY" -m pip install -q "paddlepaddle-gpu==$PADDLE_VERSION" -i "$PADDLE_INDEX"

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
# servers), and numpy 1.26 (paddleformers' fast_dataindex is built against it).
"$PY" -m pip install -q tensorboard tensorboardX opencv-python-headless "numpy==1.26.4"
echo "$commit" >"$VENV/ERNIE_COMMIT"

say "this repo (python -m training.train / summary)"
"$PY" -m pip install -q -e .

say "checking the result"
"$PY" - <<'EOF'
import importlib.metadata as md
import paddle

assert paddle.is_compiled_with_cuda(), "paddlepaddle is the CPU build"
paddle.utils.run_check()
import data_processor  # noqa: F401  (only in the ERNIE checkout, not PyPI erniekit)
import ernie  # noqa: F401
import erniekit  # noqa: F401

for dist in ("paddlepaddle-gpu", "paddleformers", "erniekit", "numpy"):
    print(f"{dist:18} {md.version(dist)}")
EOF
"$PY" -m training.train --config configs/train/erniekit_ocr_vl_sft_16k.yaml --dry-run | sed -n '/== preflight/,/== erniekit/p'

cat <<EOF

GPU training environment ready: $VENV (ERNIE commit $commit, recorded in $VENV/ERNIE_COMMIT)
  source $VENV/bin/activate
  make train CONFIG=configs/train/erniekit_ocr_vl_sft_16k.yaml TRAIN_PY=$PY ARGS="model_dir=/path/to/PaddleOCR-VL data_dir=/path/to/sft"
Export and check the result in the main environment (PaddleX): make export ...
EOF
