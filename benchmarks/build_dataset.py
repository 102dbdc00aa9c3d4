"""Dataset-builder speed: 10 variants for 10,000 synthetic labels (100k records), image
checks off.

    python benchmarks/build_dataset.py [--labels 10000] [--variants 10] [--repeat 3] [--profile]
    python benchmarks/build_dataset.py --compare old_build_dataset.py   # A/B, interleaved

Target: 100k records in under 5 s on the 2-core development machine. Each repeat builds
into the same folder (an in-place rebuild, as users run it). `--compare FILE` loads another
version of `data_tools/build_dataset.py` (e.g. `git show REV:data_tools/build_dataset.py >
old.py`) and alternates the two builds run by run, so a busy machine slows both alike;
it prints the ratio of the medians. `--profile` adds the top functions of a cProfile run.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools import build_dataset as current
from data_tools.records import write_labels
from data_tools.synth import record_rng, synth_record

TARGET_S = 5.0


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dataset_compared", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _time_build(module: ModuleType, labels: Path, out: Path, variants: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one build; CPU time suffers less from a busy machine."""
    cfg = module.BuildConfig(variants_per_image=variants, val_ratio=0.1, check_images=False)
    t, c = time.perf_counter(), time.process_time()
    module.build([labels], out, cfg)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=10_000)
    p.add_argument("--variants", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="builds per version (median reported)")
    p.add_argument("--compare", type=Path, help="another build_dataset.py to A/B against")
    p.add_argument("--profile", action="store_true", help="print where the build spends its time")
    args = p.parse_args()

    t0 = time.perf_counter()
    records = [synth_record(record_rng(args.seed, i), i) for i in range(args.labels)]
    versions = {"current": current}
    if args.compare:
        versions["compared"] = _load(args.compare)
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.jsonl"
        write_labels(labels, records)
        print(
            f"synthetic labels: {args.labels} in {time.perf_counter() - t0:.2f} s (drawn and written)"
        )
        times: dict[str, list[float]] = {name: [] for name in versions}
        cpu: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(args.repeat):
            for name, module in versions.items():  # interleaved: A B A B ...
                wall, used = _time_build(module, labels, Path(tmp) / name, args.variants)
                times[name].append(wall)
                cpu[name].append(used)
        out = Path(tmp) / "current"
        stats_n = sum(1 for _ in (out / "train.jsonl").open()) + sum(
            1 for _ in (out / "val.jsonl").open()
        )
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        profiler = None
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            _time_build(current, labels, out, args.variants)
            profiler.disable()
    for name, ts in times.items():
        walls = " ".join(f"{t:.2f}" for t in ts)
        print(
            f"{name}: wall {walls} s (median {statistics.median(ts):.2f}); "
            f"CPU median {statistics.median(cpu[name]):.2f} s"
        )
    build_s = statistics.median(times["current"])
    print(
        f"build: {stats_n} records ({size_mb:.0f} MB) in {build_s:.2f} s "
        f"({stats_n / build_s:,.0f} records/s, median of {args.repeat})"
    )
    if args.compare:
        ratio = build_s / statistics.median(times["compared"])
        cpu_ratio = statistics.median(cpu["current"]) / statistics.median(cpu["compared"])
        print(f"ratio_current_vs_compared={ratio:.2f} (CPU time {cpu_ratio:.2f})")
    print(f"build_s={build_s:.2f} target_s={TARGET_S:.0f} ok={build_s < TARGET_S}")
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print("(under cProfile: slower than a plain run)\n" + text.getvalue())


if __name__ == "__main__":
    main()
