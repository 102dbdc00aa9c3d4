"""Start-up a user feels: each CLI's ``--help`` and argument error, and time to the first OCR line.

    python benchmarks/startup.py [--reps 3] [--skip-ocr]
    python benchmarks/startup.py --det-sizes      # OCR detection size: time and OCR ceiling
    python benchmarks/startup.py --serve [--python .venv-torch/bin/python]  # time to /health

1. Every CLI (``python -m MODULE --help``) against ``python -c pass``, interleaved, median
   wall time of ``--reps`` runs; then an unknown flag, which must exit 2 as fast.
2. Time to the first OCR line: a fresh process imports the OCR engine, loads the PP-OCRv6
   small ONNX models, reads one invoice photo and prints its first line, for both engines
   (``rapidocr``: RapidOCR's loader; ``paddleocr``: PaddleOCR/PaddleX), interleaved.
3. ``--det-sizes``: both engines and two detection sizes on the three real invoices of
   ``../shared/fixtures/vat_invoices``: OCR seconds per page, lines, and the OCR ceiling
   (gold values found in the OCR text, ``eval.ocr_ceiling``); asserts that the engines read
   the same lines at each size.
4. ``--serve``: ``python -m inference.serve`` on the tiny model (``backend: auto``) until
   ``/health`` answers, against the time the service itself logs ("ready in X s").

Run it on a quiet machine for absolute numbers; on a shared one read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PY = sys.executable
INVOICES = REPO.parent / "shared" / "fixtures" / "vat_invoices"
CLIS = (
    "data_tools.label",
    "data_tools.qa",
    "data_tools.label_lines",
    "data_tools.convert",
    "data_tools.build_dataset",
    "data_tools.synth",
    "training.train",
    "training.summary",
    "training.export",
    "training.tiny_model",
    "patches.paddlex_prompt",
    "inference.predict",
    "inference.serve",
    "eval.score",
    "eval.ocr_ceiling",
)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True"}

FIRST_LINE = """
import sys, time
t0 = time.perf_counter()
from data_tools.ppocr import create_ocr, ocr_lines
ocr = create_ocr(sys.argv[1])
t1 = time.perf_counter()
lines = ocr_lines(ocr, sys.argv[2])
print("FIRST", lines[0].text if lines else "", f"load={t1 - t0:.2f}", flush=True)
"""


def wall(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    return time.perf_counter() - t0, r.returncode


def bench_help(reps: int) -> None:
    import importlib.util

    missing = [m for m in CLIS if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"CLI modules not found: {missing} (update CLIS in {__file__})")
    base: list[float] = []
    helps: dict[str, list[float]] = {m: [] for m in CLIS}
    errs: dict[str, list[tuple[float, int]]] = {m: [] for m in CLIS}
    for _ in range(reps):
        base.append(wall([PY, "-c", "pass"])[0])
        for m in CLIS:
            dt, rc = wall([PY, "-m", m, "--help"])
            if rc != 0:
                raise SystemExit(f"{m} --help exited {rc}")
            helps[m].append(dt)
            errs[m].append(wall([PY, "-m", m, "--no-such-flag"]))
    b = statistics.median(base)
    print(f"python -c pass: {b:.2f} s (median of {reps})")
    print(f"{'command':28s} {'--help':>7s} {'- pass':>7s} {'bad flag':>9s} rc")
    for m in CLIS:
        h = statistics.median(helps[m])
        e = statistics.median(dt for dt, _ in errs[m])
        rcs = {rc for _, rc in errs[m]}
        print(f"{m:28s} {h:6.2f}s {h - b:6.2f}s {e:8.2f}s {','.join(map(str, sorted(rcs)))}")


def bench_first_line(reps: int, image: Path) -> None:
    times: dict[str, list[float]] = {"rapidocr": [], "paddleocr": []}
    loads: dict[str, list[float]] = {k: [] for k in times}
    first: dict[str, str] = {}
    for _ in range(reps):
        for engine in times:
            t0 = time.perf_counter()
            r = subprocess.run(
                [PY, "-c", FIRST_LINE, engine, str(image)],
                cwd=REPO,
                env=ENV,
                capture_output=True,
                text=True,
            )
            line = next((x for x in r.stdout.splitlines() if x.startswith("FIRST")), None)
            if r.returncode != 0 or line is None:
                raise SystemExit(f"{engine}: no OCR line (rc={r.returncode}): {r.stderr[-2000:]}")
            times[engine].append(time.perf_counter() - t0)
            *text, load = line.removeprefix("FIRST ").rsplit(" ", 1)
            loads[engine].append(float(load.removeprefix("load=")))
            first[engine] = " ".join(text)
    print(f"\ntime to first OCR line ({image.name}, fresh process, median of {reps}):")
    for engine, ts in times.items():
        print(
            f"  {engine:10s} {statistics.median(ts):6.2f} s  (import + load "
            f"{statistics.median(loads[engine]):.2f} s)  first line {first[engine]!r}"
        )
    ratio = statistics.median(times["paddleocr"]) / statistics.median(times["rapidocr"])
    print(f"  ratio paddleocr/rapidocr = {ratio:.2f}")


def bench_det_sizes() -> int:
    from data_tools.ppocr import DET_LIMIT_SIDE_LEN, DET_LIMIT_TYPE, create_ocr, ocr_lines
    from data_tools.records import read_labels, resolve_image
    from data_tools.schema import load_schema
    from eval.ocr_ceiling import ocr_ceiling

    gold = INVOICES / "ground_truth.jsonl"
    if not gold.is_file():
        raise SystemExit(f"{gold} not found: --det-sizes needs the shared invoice fixtures")
    records = read_labels(gold)
    images = [resolve_image(r.image, gold) for r in records]
    schema = load_schema("vat_invoice")
    sizes = [(DET_LIMIT_SIDE_LEN, DET_LIMIT_TYPE), (960, "max")]
    engines = {e: {s: create_ocr(e, limit_side_len=s[0], limit_type=s[1]) for s in sizes}
               for e in ("rapidocr", "paddleocr")}  # fmt: skip
    times: dict[tuple[str, tuple], list[float]] = {}
    lines: dict[tuple[str, tuple], list] = {}
    for img in images:  # interleaved: engine x size per page
        for size in sizes:
            for e, by_size in engines.items():
                t0 = time.perf_counter()
                got = ocr_lines(by_size[size], img)
                times.setdefault((e, size), []).append(time.perf_counter() - t0)
                lines.setdefault((e, size), []).append(got)
    ok = True
    print(f"\nOCR detection size on {len(images)} invoices ({', '.join(p.name for p in images)}):")
    for size in sizes:
        same = [
            [(ln.text, ln.box) for ln in a] == [(ln.text, ln.box) for ln in b]
            for a, b in zip(lines[("rapidocr", size)], lines[("paddleocr", size)], strict=True)
        ]
        ok &= all(same)
        for e in engines:
            rep = ocr_ceiling(list(zip(records, lines[(e, size)], strict=True)), schema)
            o = rep["overall"]
            n_lines = sum(len(x) for x in lines[(e, size)])
            print(
                f"  limit_side_len={size[0]:<4d} limit_type={size[1]:3s} {e:9s} "
                f"{statistics.mean(times[(e, size)]):6.2f} s/page  {n_lines:4d} lines  "
                f"ceiling {o['found']}/{o['n']}"
            )
        print(f"    same lines in both engines: {all(same)}")
    for e in engines:
        a = statistics.mean(times[(e, sizes[1])]) / statistics.mean(times[(e, sizes[0])])
        print(f"  {e}: {sizes[1][0]}/{sizes[1][1]} takes x{a:.2f} the time of the default")
    return 0 if ok else 1


def bench_serve(python: str, reps: int) -> None:
    import socket
    import urllib.request

    from training.tiny_model import build_tiny_model

    model = build_tiny_model(REPO / "outputs" / "bench" / "PaddleOCR-VL-0.9B-tiny")
    for _ in range(reps):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [python, "-m", "inference.serve", "--config", "configs/serve/default.yaml"]
        cmd += ["--model-dir", str(model), "--port", str(port)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(
                        f"serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
                    )
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            ready = time.perf_counter() - t0
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        said = next((ln for ln in err.splitlines() if "ready in" in ln), "")
        backend = said.split("'backend': '")[1].split("'")[0] if "'backend': '" in said else "?"
        logged = said.split("ready in ")[1].split(")")[0] if said else "?"
        print(f"serve ({Path(python).parent.parent.name}, backend auto -> {backend}): "
              f"/health after {ready:.1f} s; it logged ready in {logged}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip-ocr", action="store_true", help="only the CLIs")
    p.add_argument("--det-sizes", action="store_true", help="OCR detection size study")
    p.add_argument("--image", type=Path, default=INVOICES / "b0.jpg")
    p.add_argument("--serve", action="store_true", help="time until the service answers")
    p.add_argument("--python", default=PY, help="interpreter for --serve (.venv-torch/...)")
    args = p.parse_args(argv)
    if args.det_sizes:
        return bench_det_sizes()
    if args.serve:
        bench_serve(args.python, args.reps)
        return 0
    bench_help(args.reps)
    if not args.skip_ocr:
        if not args.image.is_file():
            p.error(f"{args.image}: no such image (pass --image or --skip-ocr)")
        bench_first_line(args.reps, args.image)
    print(json.dumps({"load_average": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
