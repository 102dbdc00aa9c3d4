"""Slow and idle connections, and the concurrency cap that holds through timeouts."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import httpx

from inference.backends import Backend, Generation, GenerationOptions
from inference.extractor import Extractor
from inference.imaging import ImageOptions
from tests.hostile.servers import SMALL, make_service, png_bytes, serving

B64 = base64.b64encode(png_bytes()).decode()
FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keepalive_timeout_s": 5.0}


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _drain(sock: socket.socket, within_s: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``within_s``, and whether it closed the connection
    (an orderly close or a reset) in that time."""
    sock.settimeout(within_s)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionResetError:
        pass
    return b"".join(chunks), True


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    return _drain(sock, within_s)[1]


def test_idle_connections_cannot_starve_health_or_new_requests() -> None:
    app, _ = make_service(limits={**FAST, "max_connections_per_client": 50})
    with serving(app) as s:
        idle = [_connect(s.port, "127.0.0.2") for _ in range(200)]  # well over the old 132
        try:
            time.sleep(0.2)
            t0 = time.perf_counter()
            with httpx.Client(base_url=s.url, timeout=10) as c:
                assert c.get("/health").status_code == 200
                r = c.post("/v1/extract", json={"image": B64, "fields": ["发票号码"]})
                assert r.status_code == 200, r.text
            assert time.perf_counter() - t0 < 2.0
            refused = app.guard.refused_total
            assert refused == 150  # one client address holds at most 50
            # idle connections are closed after the header timeout
            assert all(_closed_by_server(sock, 3.0) for sock in idle[:5])
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert app.guard.open == 0


def test_slow_headers_are_cut_off_even_when_dripping() -> None:
    app, _ = make_service(limits=FAST)
    with serving(app) as s:
        sock = _connect(s.port)
        request = b"POST /v1/extract HTTP/1.1\r\nhost: x\r\n"
        t0 = time.monotonic()
        closed = False
        for byte in request:  # one byte every 0.1 s: the keep-alive timer alone never fires
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        closed = closed or _closed_by_server(sock, 2.0)
        assert closed and time.monotonic() - t0 < 6.0
        sock.close()
        assert app.guard.header_timeouts_total >= 1


def test_slow_body_is_408_and_frees_its_budget() -> None:
    app, _ = make_service(limits=FAST)
    with serving(app) as s:
        sock = _connect(s.port)
        sock.sendall(
            b"POST /v1/extract HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n" + b'{"image": "'
        )
        answer, _ = _drain(sock, within_s=5.0)  # headers and body may come apart
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer
        sock.close()
        with httpx.Client(base_url=s.url, timeout=10) as c:
            health = c.get("/health").json()
        assert health["body_bytes_buffered"] == 0 and health["admitted"] == 0


class Stuck(Backend):
    """A local model that takes long: blocks until released."""

    name = "stuck"

    def __init__(self) -> None:
        super().__init__(GenerationOptions())
        self.release = threading.Event()
        self.running = 0

    def _generate(self, image, prompt):  # type: ignore[no-untyped-def]
        self.running += 1
        try:
            self.release.wait(20)
        finally:
            self.running -= 1
        return Generation('{"发票号码": "1"}', "stop")


def test_a_timed_out_call_keeps_its_slot_until_it_really_ends() -> None:
    stuck = Stuck()
    ex = Extractor(stuck, image_options=ImageOptions(**SMALL))
    app, _ = make_service(
        extractor=ex, limits={"max_concurrency": 1, "max_queue": 1, "request_timeout_s": 0.5}
    )
    body = {"image": B64, "fields": ["发票号码"]}
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        assert c.post("/v1/extract", json=body).status_code == 504
        health = c.get("/health").json()
        # the model still works on it: the slot, the ticket and the thread are all taken
        assert stuck.running == 1
        assert (health["in_flight"], health["abandoned"], health["admitted"]) == (1, 1, 1)
        assert health["decode_pixels_in_use"] > 0  # the image the model still holds
        # the next request waits for the slot, then times out too (not a second model call)
        assert c.post("/v1/extract", json=body).status_code == 504
        assert stuck.running == 1
        # with the ticket of the stuck call taken and max_queue=1, a third concurrent one is 503

        async def two() -> list[int]:
            async with httpx.AsyncClient(base_url=s.url, timeout=10) as ac:
                rs = await asyncio.gather(
                    ac.post("/v1/extract", json=body), ac.post("/v1/extract", json=body)
                )
                return sorted(r.status_code for r in rs)

        assert asyncio.run(two()) == [503, 504]
        stuck.release.set()
        deadline = time.monotonic() + 5
        while c.get("/health").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = c.get("/health").json()
        assert (health["in_flight"], health["abandoned"], health["admitted"]) == (0, 0, 0)
        assert health["decode_pixels_in_use"] == 0 and health["body_bytes_buffered"] == 0
        assert c.post("/v1/extract", json=body).status_code == 200


def test_health_answers_while_huge_bodies_are_handled() -> None:
    app, _ = make_service()
    huge = {"image": B64, "prompt": "OCR:" + "票" * 2_500_000}  # 7.5 MB of UTF-8

    async def scenario() -> tuple[list[int], float]:
        async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
            done = asyncio.Event()
            slowest = 0.0

            async def poll() -> None:
                nonlocal slowest
                async with httpx.AsyncClient(base_url=s.url, timeout=30) as h:
                    while not done.is_set():
                        t0 = time.perf_counter()
                        assert (await h.get("/health")).status_code == 200
                        slowest = max(slowest, time.perf_counter() - t0)
                        await asyncio.sleep(0.02)

            poller = asyncio.create_task(poll())
            rs = await asyncio.gather(*(c.post("/v1/extract", json=huge) for _ in range(6)))
            done.set()
            await poller
            return [r.status_code for r in rs], slowest

    with serving(app) as s:
        statuses, slowest = asyncio.run(scenario())
    print(f"\n/health slowest while 6 x 7.5 MB bodies were handled: {slowest:.3f} s")
    assert statuses == [413] * 6
    assert slowest < 2.0, slowest  # the event loop was never blocked for long
