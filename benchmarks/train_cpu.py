"""A CPU tiny-model recipe end to end, with its numbers (default configs/train/cpu_tiny.yaml).

    python benchmarks/train_cpu.py [--keep DIR] [key=value ...]
    python benchmarks/train_cpu.py --config configs/train/transformers_cpu_tiny.yaml \
        --train-py .venv-torch/bin/python            # the PyTorch route

Builds the tiny PaddleOCR-VL model and the synthetic dataset in a temporary dir (or
--keep DIR), trains with `python -m training.train`, and prints steps, s/step,
tokens/s, the loss curve and the wall time of each phase. The last line reads
`steps=N s_per_step=S first_loss=A last_loss=B` (A/B: means of the first/last 10%).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="work dir to keep (default: a temp dir)")
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "configs/train/cpu_tiny.yaml",
        help="a CPU recipe with data_root/model_dir/run_dir variables",
    )
    parser.add_argument(
        "--train-py", default=sys.executable, help="the Python that trains (TRAIN_PY)"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. num_train_epochs=2")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from training.summary import format_text, summarize
    from training.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as td:
        work = args.keep or Path(td)
        t0 = time.monotonic()
        model = build_tiny_model(work / "model")
        t_model = time.monotonic() - t0
        cmd = [
            args.train_py,
            "-m",
            "training.train",
            "--config",
            str(args.config),
            f"model_dir={model}",
            f"data_root={work / 'data'}",
            f"run_dir={work / 'run'}",
            *args.overrides,
        ]
        t1 = time.monotonic()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        t_train = time.monotonic() - t1
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            return done.returncode
        s = summarize(work / "run")
        print(format_text(s, rows=12))
        print(
            f"wall: tiny model {t_model:.1f} s, dataset + training (incl. imports) {t_train:.1f} s"
        )
        print(
            f"steps={s.steps} s_per_step={s.s_per_step:.4f} "
            f"first_loss={s.first_loss_avg:.3f} last_loss={s.last_loss_avg:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
