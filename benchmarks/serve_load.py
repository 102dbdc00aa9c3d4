"""Load-test `python -m inference.serve`: p50/p95 latency, throughput, status counts, memory.

    python benchmarks/serve_load.py                       # fake backend, 500 requests, c=16
    python benchmarks/serve_load.py --model-dir outputs/tiny_model --requests 100
    python benchmarks/serve_load.py --url http://127.0.0.1:8080 --requests 200   # a running one
    python benchmarks/serve_load.py --scenario big-uploads      # 16 x 8000x8000 PNG at once
    python benchmarks/serve_load.py --scenario long-prompt --model-dir TINY   # longest prompt
    python benchmarks/serve_load.py --scenario big-uploads --root /tmp/old    # another checkout

Without --url it starts the service in a subprocess (its own process, as in production:
the client does not share its GIL) and samples that process's RSS every 20 ms. Scenario
``mixed`` (the default) sends `--requests` requests at `--concurrency`, `--malformed` of
them malformed (see `inference.serving.loadgen`); ``big-uploads`` sends 16 concurrent
multipart uploads of an 8000x8000 PNG; ``long-prompt`` sends the longest prompt the
service accepts (`limits.max_prompt_chars`, or `--prompt-chars`) to the model. Each prints
one JSON summary with ``rss_peak_mb`` and stops the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.serving.loadgen import plan_requests, run_load  # noqa: E402
from inference.serving.process import service_process  # noqa: E402


def invoice_like_png(size: tuple[int, int] = (1600, 1000)) -> bytes:
    """A page with rows of dark 'characters' (the service's work depends on size, not content)."""
    im = Image.new("RGB", size, (250, 248, 240))
    d = ImageDraw.Draw(im)
    for y in range(40, size[1] - 40, 36):
        for x in range(40, size[0] - 40, 22):
            if (x * 7 + y * 3) % 11:
                d.rectangle([x, y, x + 14, y + 18], outline=(30, 30, 30), width=2)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def service_config(args: argparse.Namespace, max_body: int, extra: dict | None = None) -> dict:
    """The serve config the benchmark runs (host and port are set by ``service_process``)."""
    cfg: dict = {
        "backend": (
            {
                "backend": "paddlex",
                "model_dir": args.model_dir,
                "max_new_tokens": args.max_new_tokens,
            }
            if args.model_dir
            else {"backend": "fake", "fake_delay_s": args.fake_delay_s}
        ),
        "limits": {
            "max_body_bytes": max_body,
            "max_concurrency": 1 if args.model_dir else 8,
            "max_queue": 4 * args.concurrency,
        },
        "auth": {"api_key_env": None},
    }
    for section, values in (extra or {}).items():
        cfg.setdefault(section, {}).update(values)
    if args.max_pixels:
        cfg["image"] = {
            "min_pixels": min(args.min_pixels, args.max_pixels),
            "max_pixels": args.max_pixels,
        }
    return cfg


class RssSampler:
    """Peak RSS of a process, sampled every `interval_s` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        import threading

        import psutil

        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = self.proc.memory_info().rss
        self.start_rss = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:  # the process ended
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict:
        return {
            "rss_start_mb": round(self.start_rss / 2**20),
            "rss_peak_mb": round(self.peak / 2**20),
            "rss_end_mb": round(self.proc.memory_info().rss / 2**20),
        }


def big_png(size: int = 8000) -> bytes:
    """An 8000x8000 page-like PNG (rows of boxes; about 0.3 MB)."""
    im = Image.new("L", (size, size), 250)
    d = ImageDraw.Draw(im)
    for y in range(100, size - 100, 90):
        for x in range(100, size - 100, 60):
            if (x * 7 + y * 3) % 11:
                d.rectangle([x, y, x + 36, y + 50], outline=20, width=4)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


async def _concurrent_uploads(url: str, data: bytes, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:

        async def one() -> int:
            r = await c.post(
                "/v1/extract",
                files={"image": ("page.png", data, "image/png")},
                data={"fields": "发票号码"},
            )
            return r.status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


def long_prompt(chars: int) -> str:
    """A raw prompt of exactly `chars` characters: many distinct keys (OCR:{"k…":"",…})."""
    keys, body = [], "OCR:{}"
    i = 0
    while True:
        keys.append(f"字段{i:05d}")
        candidate = "OCR:{" + ",".join(f'"{k}":""' for k in keys) + "}"
        if len(candidate) > chars:
            break
        body = candidate
        i += 1
    return body


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running service (default: start one)")
    p.add_argument("--root", help="serve the code of this checkout (default: this one)")
    p.add_argument("--scenario", choices=("mixed", "big-uploads", "long-prompt"), default="mixed")
    p.add_argument("--model-dir", help="serve this model with the paddlex backend (default: fake)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--malformed", type=float, default=0.1)
    p.add_argument("--fake-delay-s", type=float, default=0.005)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-body-bytes", type=int, default=4 << 20)
    p.add_argument("--prompt-chars", type=int, default=2000, help="long-prompt: its length")
    p.add_argument(
        "--max-pixels",
        type=int,
        help="model input size cap (e.g. 50176 for the tiny model; default: the model's own)",
    )
    p.add_argument("--min-pixels", type=int, default=28 * 28 * 4)
    p.add_argument("--api-key")
    args = p.parse_args()

    extra: dict = {}
    if args.scenario == "long-prompt":
        extra = {"limits": {"request_timeout_s": 600}}
    with contextlib.ExitStack() as stack:
        proc = None
        url = args.url
        if url is None:
            root = Path(args.root).resolve() if args.root else REPO
            proc, url = stack.enter_context(
                service_process(service_config(args, args.max_body_bytes, extra), root=root)
            )
        summary = measure(args, url, proc)
    summary["backend"] = "paddlex:" + args.model_dir if args.model_dir else "fake"
    summary["concurrency"] = args.concurrency
    summary["root"] = args.root or "."
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0 if summary.get("server_errors", 0) == 0 else 1


def measure(args: argparse.Namespace, url: str, proc: subprocess.Popen | None) -> dict:
    """Run the scenario against ``url``; the summary, with the peak RSS of ``proc`` if given."""
    sampler = RssSampler(proc.pid) if proc is not None else None
    summary: dict
    try:
        if sampler:
            sampler.__enter__()
        if args.scenario == "big-uploads":
            data = big_png()
            t0 = time.perf_counter()
            statuses = asyncio.run(_concurrent_uploads(url, data, 16))
            summary = {
                "scenario": "16 concurrent 8000x8000 PNG uploads",
                "png_bytes": len(data),
                "status": {str(s): statuses.count(s) for s in sorted(set(statuses))},
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        elif args.scenario == "long-prompt":
            prompt = long_prompt(args.prompt_chars)
            img = invoice_like_png((560, 400))
            t0 = time.perf_counter()
            r = httpx.post(
                url + "/v1/extract",
                files={"image": ("a.png", img, "image/png")},
                data={"prompt": prompt},
                timeout=900,
            )
            summary = {
                "scenario": f"prompt of {len(prompt)} characters",
                "status": r.status_code,
                "answer": r.text[:200] if r.status_code != 200 else "ok",
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        else:
            plans = plan_requests(
                invoice_like_png(),
                args.requests,
                malformed_ratio=args.malformed,
                max_body_bytes=args.max_body_bytes,
                api_key=args.api_key,
            )
            report = asyncio.run(
                run_load(url, plans, concurrency=args.concurrency, api_key=args.api_key)
            )
            summary = report.summary()
        health = httpx.get(url + "/health", timeout=30).json()
        summary["healthy_after"] = health.get("status") == "ok"
    finally:
        memory = {}
        if sampler:
            sampler.__exit__()
            memory = sampler.summary()
    return summary | memory


if __name__ == "__main__":
    sys.exit(main())
