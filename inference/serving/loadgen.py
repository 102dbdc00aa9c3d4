"""A load generator for the service: valid and malformed requests at a fixed concurrency.

Used by the service tests and `benchmarks/serve_load.py`. Valid requests mix the ways to
call the service (JSON with base64, multipart upload, OpenAI chat with a data: URL through
httpx and through the real `openai` client); malformed ones are the attacks and mistakes a
public endpoint sees: bad base64, a file that is not an image, a 30000x30000 decompression
bomb, ``file:///etc/passwd``, an oversize body, JSON nested thousands deep, a lone
surrogate, a prompt over the limit, a PPM header, a PNG whose text chunk inflates past
Pillow's limit, and a broken image through the `openai` client.
"""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

VALID_KINDS = ("json_fields", "json_request", "multipart", "chat", "openai_chat")
MALFORMED_KINDS = (
    "bad_base64",
    "not_image",
    "pixel_bomb",
    "file_url",
    "oversize_body",
    "deep_json",
    "lone_surrogate",
    "long_prompt",
    "ppm_image",
    "text_chunk_bomb",
    "openai_bad_image",
)


def text_chunk_bomb(image_png: bytes) -> bytes:
    """`image_png` with a zTXt chunk that inflates to 3 MB (past Pillow's 1 MB limit)."""
    data = b"k\x00\x00" + zlib.compress(b"a" * 3_000_000)
    crc = struct.pack(">I", zlib.crc32(b"zTXt" + data))
    return image_png[:33] + struct.pack(">I", len(data)) + b"zTXt" + data + crc + image_png[33:]


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1-bit PNG claiming width x height pixels (about 110 KB for 30000^2)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@dataclass
class Planned:
    kind: str
    valid: bool
    method: str
    path: str
    kwargs: dict[str, Any]
    via: str = "httpx"  # or "openai": kwargs are chat.completions.create arguments


@dataclass
class Outcome:
    kind: str
    valid: bool
    status: int  # 0: no HTTP answer (connection error)
    latency_s: float
    error: str = ""


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    wall_s: float
    by_status: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.by_status = Counter(o.status for o in self.outcomes)

    def latencies(self, valid: bool = True) -> list[float]:
        return sorted(o.latency_s for o in self.outcomes if o.valid == valid and o.status == 200)

    @staticmethod
    def percentile(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        return {
            "requests": len(self.outcomes),
            "wall_s": round(self.wall_s, 2),
            "throughput_rps": round(len(self.outcomes) / self.wall_s, 1) if self.wall_s else None,
            "status": dict(sorted(self.by_status.items())),
            "valid_ok": sum(1 for o in self.outcomes if o.valid and o.status == 200),
            "valid_total": sum(1 for o in self.outcomes if o.valid),
            "malformed_4xx": sum(1 for o in self.outcomes if not o.valid and 400 <= o.status < 500),
            "malformed_total": sum(1 for o in self.outcomes if not o.valid),
            "server_errors": sum(1 for o in self.outcomes if o.status >= 500 or o.status == 0),
            "p50_ms": round(self.percentile(lat, 50) * 1000, 1),
            "p95_ms": round(self.percentile(lat, 95) * 1000, 1),
        }


def plan_requests(
    image: bytes,
    n: int,
    *,
    malformed_ratio: float = 0.1,
    max_body_bytes: int = 1 << 20,
    api_key: str | None = None,
    seed: int = 0,
) -> list[Planned]:
    """`n` requests, `malformed_ratio` of them malformed (kinds in turn), shuffled."""
    rng = random.Random(seed)
    b64 = base64.b64encode(image).decode()
    data_url = "data:image/png;base64," + b64
    bomb_b64 = base64.b64encode(png_bomb()).decode()
    chunk_bomb_b64 = base64.b64encode(text_chunk_bomb(_small_png())).decode()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    prompt = 'OCR:{"发票号码":""}'

    def malformed(kind: str, headers: dict[str, str]) -> dict[str, Any]:
        f = ["发票号码"]
        if kind == "bad_base64":
            return {"json": {"image": "this is *not* base64!!", "fields": f}, "headers": headers}
        if kind == "not_image":
            junk = base64.b64encode(b"%PDF-1.4\n" * 50).decode()
            return {"json": {"image": junk, "fields": f}, "headers": headers}
        if kind == "pixel_bomb":
            return {"json": {"image": bomb_b64, "fields": f}, "headers": headers}
        if kind == "file_url":
            return {"json": {"image": "file:///etc/passwd", "fields": f}, "headers": headers}
        if kind == "oversize_body":
            return {
                "json": {"image": "A" * (max_body_bytes + 1024), "fields": f},
                "headers": headers,
            }
        if kind == "deep_json":
            text = '{"image": "' + b64 + '", "request": ' + "[" * 5000 + "]" * 5000 + "}"
            return {
                "content": text.encode(),
                "headers": {**headers, "content-type": "application/json"},
            }
        if kind == "lone_surrogate":
            text = '{"image": "' + b64 + '", "fields": ["\\ud800"]}'
            return {
                "content": text.encode(),
                "headers": {**headers, "content-type": "application/json"},
            }
        if kind == "long_prompt":
            return {"json": {"image": b64, "prompt": "OCR:" + "票" * 100_000}, "headers": headers}
        if kind == "ppm_image":
            ppm = base64.b64encode(b"P6\n99999 99999\n255\n" + b"\x00" * 64).decode()
            return {"json": {"image": ppm, "fields": f}, "headers": headers}
        if kind == "text_chunk_bomb":
            return {"json": {"image": chunk_bomb_b64, "fields": f}, "headers": headers}
        raise ValueError(f"unknown malformed kind {kind!r}")

    def openai_args(url: str, text: str) -> dict[str, Any]:
        content = [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": text},
        ]
        return {"model": "kie", "messages": [{"role": "user", "content": content}]}

    n_bad = round(n * malformed_ratio)
    plans: list[Planned] = []
    for i in range(n):
        if i < n_bad:
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            if kind == "openai_bad_image":
                plans.append(Planned(kind, False, "POST", "/v1/chat/completions",
                                     openai_args("data:image/png;base64,iVBORw0KGgo=", prompt),
                                     via="openai"))  # fmt: skip
                continue
            plans.append(Planned(kind, False, "POST", "/v1/extract", malformed(kind, headers)))
            continue
        kind = VALID_KINDS[i % len(VALID_KINDS)]
        if kind == "json_fields":
            kw = {"json": {"image": b64, "fields": ["发票号码", "开票日期"]}}
            path = "/v1/extract"
        elif kind == "json_request":
            kw = {"json": {"image": data_url, "request": {"购买方": {"名称": ""}}}}
            path = "/v1/extract"
        elif kind == "multipart":
            kw = {
                "files": {"image": ("invoice.png", image, "image/png")},
                "data": {"fields": "发票号码,价税合计（小写）"},
            }
            path = "/v1/extract"
        elif kind == "chat":
            kw = {"json": openai_args(data_url, prompt)}
            path = "/v1/chat/completions"
        else:  # openai_chat: through the openai client
            plans.append(
                Planned(
                    kind,
                    True,
                    "POST",
                    "/v1/chat/completions",
                    openai_args(data_url, prompt),
                    via="openai",
                )
            )
            continue
        kw["headers"] = headers
        plans.append(Planned(kind, True, "POST", path, kw))
    rng.shuffle(plans)
    return plans


def _small_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 250, 250)).save(buf, format="PNG")
    return buf.getvalue()


async def run_load(
    base_url: str,
    plans: list[Planned],
    concurrency: int = 16,
    timeout_s: float = 120.0,
    api_key: str | None = None,
) -> LoadReport:
    """Send `plans` with `concurrency` workers; record status and latency of each.

    Plans marked ``via="openai"`` go through one `openai.AsyncOpenAI` client (no retries),
    the others through one `httpx.AsyncClient`; both keep at most `concurrency`
    keep-alive connections.
    """
    queue: asyncio.Queue[Planned] = asyncio.Queue()
    for p in plans:
        queue.put_nowait(p)
    outcomes: list[Outcome] = []
    # connections are never expired by the client: every new one is then a connection the
    # server closed (a dropped keep-alive) or one more worker needing one
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=None
    )
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client,
        httpx.AsyncClient(timeout=timeout_s, limits=limits) as openai_http,
    ):
        oai = None
        if any(p.via == "openai" for p in plans):
            import openai

            oai = openai.AsyncOpenAI(
                base_url=base_url + "/v1",
                api_key=api_key or "unused",
                max_retries=0,
                timeout=timeout_s,
                http_client=openai_http,
            )

        async def send_openai(p: Planned) -> tuple[int, str]:
            import openai

            assert oai is not None
            try:
                r = await oai.chat.completions.create(**p.kwargs)
            except openai.APIStatusError as e:
                return e.status_code, str(e)[:200]
            except openai.APIConnectionError as e:
                return 0, f"{type(e).__name__}: {e}"
            if not isinstance(r.choices[0].message.content, str):
                return -1, "answer without content"
            return 200, ""

        async def worker() -> None:
            while True:
                try:
                    p = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                if p.via == "openai":
                    status, error = await send_openai(p)
                else:
                    try:
                        resp = await client.request(p.method, p.path, **p.kwargs)
                        status, error = resp.status_code, ""
                        if status >= 400:
                            error = resp.text[:200]
                    except httpx.HTTPError as e:
                        status, error = 0, f"{type(e).__name__}: {e}"
                outcomes.append(Outcome(p.kind, p.valid, status, time.perf_counter() - t0, error))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return LoadReport(outcomes, wall)
