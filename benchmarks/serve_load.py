"""Load-test `python -m inference.serve`: p50/p95 latency, throughput, status counts.

    python benchmarks/serve_load.py                       # fake backend, 500 requests, c=16
    python benchmarks/serve_load.py --model-dir outputs/tiny_model --requests 100
    python benchmarks/serve_load.py --url http://127.0.0.1:8080 --requests 200   # a running one

Without --url it starts the service in a subprocess (its own process, as in production:
the client does not share its GIL), sends `--requests` requests at `--concurrency`,
`--malformed` of them malformed (bad base64, not an image, a 30000x30000 PNG bomb,
file:///etc/passwd, an oversize body), prints one JSON summary and stops the service.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.serving.loadgen import plan_requests, run_load  # noqa: E402


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(args: argparse.Namespace, max_body: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = {
        "host": "127.0.0.1",
        "port": port,
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
    if args.max_pixels:
        cfg["image"] = {
            "min_pixels": min(args.min_pixels, args.max_pixels),
            "max_pixels": args.max_pixels,
        }
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(REPO), "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference.serve", "--config", path, "--log-level", "warning"],
        cwd=REPO,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the service did not come up within 300 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running service (default: start one)")
    p.add_argument("--model-dir", help="serve this model with the paddlex backend (default: fake)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--malformed", type=float, default=0.1)
    p.add_argument("--fake-delay-s", type=float, default=0.005)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-body-bytes", type=int, default=4 << 20)
    p.add_argument(
        "--max-pixels",
        type=int,
        help="model input size cap (e.g. 50176 for the tiny model; default: the model's own)",
    )
    p.add_argument("--min-pixels", type=int, default=28 * 28 * 4)
    p.add_argument("--api-key")
    args = p.parse_args()

    proc = None
    url = args.url
    if url is None:
        proc, url = start_service(args, args.max_body_bytes)
    try:
        plans = plan_requests(
            invoice_like_png(),
            args.requests,
            malformed_ratio=args.malformed,
            max_body_bytes=args.max_body_bytes,
            api_key=args.api_key,
        )
        report = asyncio.run(run_load(url, plans, concurrency=args.concurrency))
        health = httpx.get(url + "/health", timeout=10).json()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    summary = report.summary()
    summary["backend"] = "paddlex:" + args.model_dir if args.model_dir else "fake"
    summary["concurrency"] = args.concurrency
    summary["healthy_after"] = health.get("status") == "ok"
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0 if summary["server_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
