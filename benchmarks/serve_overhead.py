"""The service's own overhead: `inference.serve` (fake backend) against a minimal FastAPI app.

    python benchmarks/serve_overhead.py                     # concurrency 1 and 16, 3 rounds
    python benchmarks/serve_overhead.py --rounds 5 --requests 60

Both run the same way (one uvicorn process each, started here, one worker), get the same
images (the three VAT invoice photos of the shared fixtures, 2104x1560 JPEG, and a
1600x1000 PNG page) as the same JSON body (``{"image": base64, "fields": [...]}``), and
are measured interleaved: each round sends `--requests` requests to one, then to the
other, the order alternating between rounds. The minimal app does what any image
endpoint must, the cheapest way: parse the JSON, decode the base64, decode the image with
Pillow (converted only when not RGB already), answer a small JSON; on the event loop. The service does everything it does in production with the fake
backend (admission, limits, field checks, prompt, image header checks, decode, the fake
answer, parsing, the response).

Per concurrency it prints the median requests/s of each and their ratio; the last line is
``ratio_vs_minimal=X``, the worst (largest) ratio of minimal/service throughput over the
concurrencies measured (1.0: no overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = Path(os.environ.get("KIE_FIXTURES", REPO.parent / "shared" / "fixtures"))

from inference.serving.process import free_port, service_process, stop, wait_healthy  # noqa: E402

MINIMAL_APP = """
import base64, io, json, sys
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image
import uvicorn

app = FastAPI()

@app.post("/v1/extract")
async def extract(request: Request) -> Response:
    payload = json.loads(await request.body())
    data = base64.b64decode(payload["image"])
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode != "RGB":
        im = im.convert("RGB")
    return Response(json.dumps({"size": im.size, "fields": {k: "" for k in payload["fields"]}}),
                    media_type="application/json")

@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def images() -> list[bytes]:
    photos = sorted((FIXTURES / "vat_invoices").glob("*.jpg"))
    out = [p.read_bytes() for p in photos]
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (1600, 1000), (250, 248, 240))
    d = ImageDraw.Draw(im)
    for y in range(40, 960, 36):
        for x in range(40, 1560, 22):
            if (x * 7 + y * 3) % 11:
                d.rectangle([x, y, x + 14, y + 18], outline=(30, 30, 30), width=2)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out.append(buf.getvalue())
    return out


@contextlib.contextmanager
def minimal_process() -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", MINIMAL_APP, str(port)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, timeout_s=120)
        yield proc, url
    finally:
        stop(proc)


def service_config(max_body: int) -> dict:
    return {
        "backend": {"backend": "fake"},
        "limits": {"max_body_bytes": max_body, "max_concurrency": 16, "max_queue": 64},
        "auth": {"api_key_env": None},
    }


async def burst(url: str, bodies: list[bytes], n: int, concurrency: int) -> float:
    """Requests per second for `n` requests at `concurrency` (every answer must be 200)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
        todo = list(range(n))
        errors: list[str] = []

        async def worker() -> None:
            while todo:
                i = todo.pop()
                r = await c.post(
                    "/v1/extract",
                    content=bodies[i % len(bodies)],
                    headers={"content-type": "application/json"},
                )
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")

        await c.get("/health")  # warm connection
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{url}: {len(errors)} failed requests, e.g. {errors[0]}")
    return n / wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=40, help="per round and app")
    args = p.parse_args()

    imgs = images()
    bodies = [
        json.dumps(
            {"image": base64.b64encode(b).decode(), "fields": ["发票号码", "开票日期"]}
        ).encode()
        for b in imgs
    ]
    max_body = max(len(b) for b in bodies) * 2
    worst = 0.0
    with (
        minimal_process() as (_, mini_url),
        service_process(service_config(max_body), timeout_s=120) as (_, svc_url),
    ):
        for _ in range(2):  # warm-up: imports, first decodes
            asyncio.run(burst(mini_url, bodies, 8, 4))
            asyncio.run(burst(svc_url, bodies, 8, 4))
        for c in args.concurrency:
            rates: dict[str, list[float]] = {"service": [], "minimal": []}
            for r in range(args.rounds):
                order = [("service", svc_url), ("minimal", mini_url)]
                if r % 2:
                    order.reverse()
                for name, url in order:
                    rates[name].append(asyncio.run(burst(url, bodies, args.requests, c)))
            svc_rps = statistics.median(rates["service"])
            mini_rps = statistics.median(rates["minimal"])
            ratio = mini_rps / svc_rps
            worst = max(worst, ratio)
            print(
                json.dumps(
                    {
                        "concurrency": c,
                        "service_rps": round(svc_rps, 2),
                        "minimal_rps": round(mini_rps, 2),
                        "ratio": round(ratio, 3),
                        "service_rounds": [round(x, 2) for x in rates["service"]],
                        "minimal_rounds": [round(x, 2) for x in rates["minimal"]],
                    }
                ),
                flush=True,
            )
    print(f"ratio_vs_minimal={worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
