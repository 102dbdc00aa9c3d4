"""Dataset-builder speed: 10 variants for 10,000 synthetic labels, image checks off.

    python benchmarks/build_dataset.py [--labels 10000] [--variants 10] [--profile]

Target: under 10 s on the 2-core development machine. Prints the time of each phase;
`--profile` adds the top functions of a cProfile run of the build (cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.build_dataset import BuildConfig, build
from data_tools.records import write_labels
from data_tools.synth import record_rng, synth_record

TARGET_S = 10.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=10_000)
    p.add_argument("--variants", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="print where the build spends its time")
    args = p.parse_args()

    t0 = time.perf_counter()
    records = [synth_record(record_rng(args.seed, i), i) for i in range(args.labels)]
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.jsonl"
        write_labels(labels, records)
        t1 = time.perf_counter()
        cfg = BuildConfig(variants_per_image=args.variants, val_ratio=0.1, check_images=False)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        stats = build([labels], Path(tmp) / "sft", cfg)
        if profiler:
            profiler.disable()
        t2 = time.perf_counter()
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "sft").iterdir()) / 1e6
    n = stats["records"]["train"] + stats["records"]["val"]
    build_s = t2 - t1
    print(f"synthetic labels: {args.labels} in {t1 - t0:.2f} s (drawn and written)")
    print(
        f"build: {n} records ({size_mb:.0f} MB) in {build_s:.2f} s ({n / build_s:,.0f} records/s)"
    )
    note = " (under cProfile: slower than a plain run)" if profiler else ""
    print(f"build_s={build_s:.2f} target_s={TARGET_S:.0f} ok={build_s < TARGET_S}{note}")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
