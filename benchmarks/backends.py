"""Extraction latency per backend on the same model dir and image, outputs asserted identical.

    python benchmarks/backends.py [--model-dir DIR] [--image PATH] [--reps 2] [--max-new-tokens 16]

Each engine runs in the environment that has it, as a long-lived worker process:

- ``paddlex``        PaddleX DocVLM in ``.venv`` with our CPU attention patch (the default)
- ``paddlex-stock``  the same without it (PaddleX's own eager attention)
- ``transformers``   transformers + torch SDPA in ``.venv-torch`` (``make setup-torch``);
                     skipped with a note when that environment is absent

The workers load the model once, warm up, then answer the same requests in turn
(A/B/C interleaved, ``--reps`` rounds) at two image sizes: a small crop-sized budget and
PaddleOCR-VL's default pixel bounds (a full invoice photo, ~3,500 visual tokens). The
generated token ids of every backend must be identical at every size (the benchmark
fails otherwise); the last lines give each backend's median latency and its ratio to the
fastest. The model defaults to the tiny random-weight PaddleOCR-VL
(``training.tiny_model``): it has the real architecture, so attention over the image
costs what it costs, but the numbers are relative, not those of the 0.9B model.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_IMAGE = REPO.parent / "shared" / "fixtures" / "vat_invoices" / "b0.jpg"
PROMPT = 'OCR:{"发票号码":"","开票日期":""}'
SIZES = {  # name -> (min_pixels, max_pixels)
    "small": (28 * 28 * 4, 28 * 28 * 256),
    "default": (147384, 2822400),  # data_tools.paddleocr_vl.MIN_PIXELS / MAX_PIXELS
}
ENGINES = {  # name -> (environment python, backend, keep PaddleX's own attention)
    "paddlex": (REPO / ".venv" / "bin" / "python", "paddlex", False),
    "paddlex-stock": (REPO / ".venv" / "bin" / "python", "paddlex", True),
    "transformers": (REPO / ".venv-torch" / "bin" / "python", "transformers", False),
}


# ---------------------------------------------------------------- worker (one engine)
def _capture_ids(backend: Any) -> list[list[int]]:
    """Record the generated token ids as the backend decodes them (text alone is lossy:
    the two tokenizers render invalid UTF-8 byte tokens differently)."""
    seen: list[list[int]] = []
    if backend.name == "paddlex":
        processor = backend._model.processor
        post = processor.postprocess

        def postprocess(model_pred: Any, **kw: Any) -> Any:
            seen.append([int(t) for t in list(model_pred[0][0])])
            return post(model_pred, **kw)

        processor.postprocess = postprocess
    else:
        decode = backend.processor.decode

        def decode_ids(ids: Any, **kw: Any) -> Any:
            seen.append([int(t) for t in ids])
            return decode(ids, **kw)

        backend.processor.decode = decode_ids
    return seen


def worker(backend_name: str, model_dir: str, image: str, stock: bool, max_new: int) -> int:
    from inference.backends import BackendConfig, make_backend
    from inference.imaging import ImageOptions, prepare_image

    backend = make_backend(
        BackendConfig(backend=backend_name, model_dir=model_dir, max_new_tokens=max_new)
    )
    if stock:
        from inference.backends import paddlex_attention

        paddlex_attention.revert()
    ids = _capture_ids(backend)
    images = {
        name: prepare_image(image, ImageOptions(min_pixels=lo, max_pixels=hi)).image
        for name, (lo, hi) in SIZES.items()
    }
    backend.generate(images["small"], PROMPT)  # warm-up
    eos = {0, 1, 2}  # pad, bos, eos of PaddleOCR-VL's tokenizer
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        size = line.strip()
        if not size:
            continue
        ids.clear()
        t0 = time.perf_counter()
        gen = backend.generate(images[size], PROMPT)
        dt = time.perf_counter() - t0
        toks = [t for t in (ids[-1] if ids else []) if t not in eos]
        w, h = images[size].size
        out = {"size": size, "latency_s": dt, "ids": toks, "text": gen.text, "pixels": [w, h]}
        print(json.dumps(out, ensure_ascii=False), flush=True)
    backend.close()
    return 0


# ---------------------------------------------------------------- driver
class Worker:
    def __init__(self, name: str, python: Path, backend: str, stock: bool, args: Any) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(REPO), "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "1"}
        cmd = [str(python), __file__, "--worker", backend, "--model-dir", str(args.model_dir)]
        cmd += ["--image", str(args.image), "--max-new-tokens", str(args.max_new_tokens)]
        if stock:
            cmd.append("--stock")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not args.verbose else None,
            text=True,
            env=env,
            cwd=REPO,
        )
        self._read()  # "ready"

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"{self.name}: worker exited (rc={self.proc.wait()}); rerun with -v")

    def run(self, size: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(size + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, help="default: the tiny model, built once")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    p.add_argument("--reps", type=int, default=2, help="interleaved rounds per size")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    p.add_argument("-v", "--verbose", action="store_true", help="show the workers' stderr")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--stock", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(
            args.worker, str(args.model_dir), str(args.image), args.stock, args.max_new_tokens
        )

    if not args.image.is_file():
        p.error(f"{args.image}: no such image; pass --image PATH")
    if args.model_dir is None:
        from training.tiny_model import build_tiny_model

        args.model_dir = build_tiny_model(REPO / "outputs" / "bench" / "PaddleOCR-VL-0.9B-tiny")
    workers = []
    for name in args.engines.split(","):
        python, backend, stock = ENGINES[name]
        if not python.exists():
            print(f"{name}: skipped ({python} not found; `make setup-torch` builds it)")
            continue
        t0 = time.perf_counter()
        workers.append(Worker(name, python, backend, stock, args))
        print(f"{name}: loaded and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.reps):
        for size in SIZES:
            order = workers if rep % 2 == 0 else workers[::-1]
            for w in order:
                r = w.run(size)
                results.setdefault((w.name, size), []).append(r)
                print(f"  rep {rep} {size:8s} {w.name:14s} {r['latency_s']:7.2f} s", flush=True)
    for w in workers:
        w.close()

    ok = True
    print(f"\nimage {args.image.name}, prompt {PROMPT}, max_new_tokens {args.max_new_tokens}")
    for size in SIZES:
        rows = {w.name: results[(w.name, size)] for w in workers}
        ids = {name: [r["ids"] for r in rs] for name, rs in rows.items()}
        flat = {json.dumps(x) for v in ids.values() for x in v}
        same = len(flat) == 1
        ok &= same
        med = {name: statistics.median(r["latency_s"] for r in rs) for name, rs in rows.items()}
        fastest = min(med.values())
        w0, h0 = next(iter(rows.values()))[0]["pixels"]
        tokens = (w0 // 28) * (h0 // 28)
        print(f"{size}: {w0}x{h0} px, {tokens} visual tokens, identical token ids: {same}")
        for name, m in sorted(med.items(), key=lambda kv: kv[1]):
            print(f"  {name:14s} median {m:7.2f} s   x{m / fastest:5.2f} vs fastest")
        if not same:
            for name, v in ids.items():
                print(f"    {name}: {v[0][:24]}")
    if not ok:
        print("FAIL: the backends generated different tokens")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
