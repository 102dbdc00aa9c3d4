"""Dataset-builder speed: 10 variants for 10,000 synthetic labels, image checks off.

    python benchmarks/build_dataset.py [--labels 10000] [--variants 10]

Target: under 10 s on the 2-core development machine. Prints the time of each phase.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.build_dataset import BuildConfig, build
from data_tools.records import write_labels
from data_tools.synth import synth_record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=10_000)
    p.add_argument("--variants", type=int, default=10)
    args = p.parse_args()
    rng = random.Random(0)
    t0 = time.perf_counter()
    records = [synth_record(rng, f"d{i:05d}", f"images/d{i:05d}.jpg") for i in range(args.labels)]
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.jsonl"
        write_labels(labels, records)
        t1 = time.perf_counter()
        cfg = BuildConfig(variants_per_image=args.variants, val_ratio=0.1, check_images=False)
        stats = build([labels], Path(tmp) / "sft", cfg)
        t2 = time.perf_counter()
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "sft").iterdir()) / 1e6
    n = stats["records"]["train"] + stats["records"]["val"]
    print(f"synthetic labels: {args.labels} in {t1 - t0:.2f} s")
    print(
        f"build: {n} records ({size_mb:.0f} MB) in {t2 - t1:.2f} s ({n / (t2 - t1):,.0f} records/s)"
    )
    print(f"build_s={t2 - t1:.2f} target_s=10 ok={t2 - t1 < 10}")


if __name__ == "__main__":
    main()
