"""The CI load test: 1,000 requests at concurrency 64, 20 % malformed, through httpx and the
real `openai` client, against the service in its own process (its RSS measured)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import psutil
import pytest

from inference.serving.loadgen import MALFORMED_KINDS, plan_requests, run_load
from inference.serving.process import service_process
from tests.hostile.servers import png_bytes

MAX_BODY = 1 << 20
RSS_LIMIT_MB = 600  # fake backend: peak 96 MB measured here (the printed summary)


async def _load_with_health_poller(url: str, plans: list, proc: psutil.Process) -> dict:
    health: list[tuple[int, float]] = []
    rss: list[int] = []
    done = asyncio.Event()

    async def poll() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    status = (await c.get("/health")).status_code
                except httpx.HTTPError:
                    status = 0
                health.append((status, time.perf_counter() - t0))
                rss.append(proc.memory_info().rss)
                await asyncio.sleep(0.1)

    poller = asyncio.create_task(poll())
    report = await run_load(url, plans, concurrency=64, timeout_s=120)
    done.set()
    await poller
    return {"report": report, "health": health, "rss": rss}


@pytest.mark.slow
def test_1000_requests_concurrency_64_20pct_malformed() -> None:
    config = {
        "backend": {"backend": "fake", "fake_delay_s": 0.005},
        "image": {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 256},
        "limits": {
            "max_body_bytes": MAX_BODY,
            "max_concurrency": 8,
            "max_queue": 128,
            # no idle closes during the run: every new connection is then a dropped one
            "keepalive_timeout_s": 300,
            "header_timeout_s": 300,
        },
        "auth": {"api_key_env": None},
    }
    plans = plan_requests(
        png_bytes((640, 480)), 1000, malformed_ratio=0.2, max_body_bytes=MAX_BODY, seed=12
    )
    assert {p.kind for p in plans if not p.valid} == set(MALFORMED_KINDS)
    with service_process(config) as (popen, url):
        proc = psutil.Process(popen.pid)
        rss_idle = proc.memory_info().rss
        out = asyncio.run(_load_with_health_poller(url, plans, proc))
        after = httpx.get(url + "/health", timeout=10).json()
        rss_after = proc.memory_info().rss
    report = out["report"]
    summary = report.summary()
    peak_mb = max(out["rss"]) / 2**20
    slowest_health = max(t for _, t in out["health"])
    summary |= {
        "rss_idle_mb": round(rss_idle / 2**20),
        "rss_peak_mb": round(peak_mb),
        "rss_after_mb": round(rss_after / 2**20),
        "health_polls": len(out["health"]),
        "health_slowest_s": round(slowest_health, 3),
        "connections_opened": after["connections"]["opened_total"],
    }
    print("\nCI load test:", json.dumps(summary, ensure_ascii=False))
    wrong = [
        o
        for o in report.outcomes
        if (o.valid and o.status != 200) or (not o.valid and not 400 <= o.status < 500)
    ]
    assert not wrong, wrong[:5]
    assert summary["valid_ok"] == 800 and summary["malformed_4xx"] == 200
    assert summary["server_errors"] == 0
    # /health answered throughout, every time
    assert out["health"] and all(status == 200 for status, _ in out["health"])
    assert slowest_health < 5.0
    # no dropped keep-alive: at most one connection per worker per client, plus the poller's
    # and the final /health (a 4xx that closed its connection would add one per request)
    assert after["connections"]["opened_total"] <= 64 + 64 + 2
    assert after["admitted"] == 0 and after["in_flight"] == 0 and after["abandoned"] == 0
    assert peak_mb < RSS_LIMIT_MB
