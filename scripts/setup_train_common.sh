# Shared by scripts/setup_train_{erniekit,paddleformers,torch}.sh (sourced, not run).
# Each route gets its own venv: ERNIEKit needs a PaddleFormers that still has
# `tensor_parallel_degree` (renamed in 0.4.1), the PaddleFormers recipes need >= 1.0, and
# torch next to paddleformers breaks transformers' imports. One environment per route.

say() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# check_python PYTHON: the project supports Python 3.10-3.12
check_python() {
  command -v "$1" >/dev/null || die "$1 not found; pass PYTHON=/path/to/python3.10 (3.10-3.12 work)"
  "$1" - <<'PY' || die "$1 is not Python 3.10-3.12"
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY
}

# check_gpu CUDA_FLAVOUR: an NVIDIA driver new enough for the wheels' CUDA
check_gpu() {
  [ "$(uname -s)" = Linux ] || die "Linux only (GPU wheels)"
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"
  nvidia-smi --query-gpu=index,name,memory.total,compute_cap --format=csv,noheader
  local driver_cuda need_cuda min_cc
  driver_cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\.[0-9]*\).*/\1/p' | head -1)
  need_cuda=$(case "$1" in cu118) echo 11.8 ;; cu126) echo 12.6 ;; cu128) echo 12.8 ;; cu129) echo 12.9 ;; cu130) echo 13.0 ;; *) die "CUDA=$1: use cu118, cu126, cu128, cu129 or cu130" ;; esac)
  if [ -n "$driver_cuda" ] && ! awk -v a="$driver_cuda" -v b="$need_cuda" 'BEGIN { exit !(a + 0 >= b + 0) }'; then
    die "the driver supports CUDA $driver_cuda but CUDA=$1 needs $need_cuda: update the driver or pass an older CUDA="
  fi
  min_cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sort -n | head -1)
  if ! awk -v c="$min_cc" 'BEGIN { exit !(c + 0 >= 8.0) }'; then
    echo "warning: compute capability $min_cc < 8.0: the recipes train in bf16, which needs A100/A800/H100-class GPUs" >&2
  fi
}

# make_venv PYTHON VENV: create (or reuse) the venv with an up-to-date pip
make_venv() {
  [ -x "$2/bin/python" ] || "$1" -m venv "$2"
  "$2/bin/python" -m pip install -q --upgrade pip
}

# dry_run PY RECIPE: preflight of a shipped recipe in the new environment (keys checked
# against the installed tool's own dataclasses)
dry_run() {
  "$1" -m training.train --config "$2" --dry-run | sed -n '/== preflight/,/config ->/p'
}
