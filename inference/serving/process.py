"""The service in a process of its own, as production runs it (``python -m inference.serve``).

For the load tests and the serving benchmarks: the client must not share the service's
GIL, and the service's memory must be its own to measure.

    from inference.serving.process import service_process

    with service_process({"backend": {"backend": "fake"}}) as (proc, url):
        httpx.get(url + "/health")

``wait_healthy`` is the one readiness poll (``/health`` answering 200), also for other
servers started by hand (``benchmarks/serve_overhead.py``'s minimal app).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    proc: subprocess.Popen, url: str, *, timeout_s: float = 300.0, poll_s: float = 0.1
) -> float:
    """Poll ``url/health`` until it answers 200; the seconds it took.

    Raises RuntimeError naming ``url`` when the process exits first or the time runs out.
    """
    import httpx

    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode} before ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{url}: not ready within {timeout_s:.0f} s")
        time.sleep(poll_s)


def stop(proc: subprocess.Popen, *, grace_s: float = 30.0) -> None:
    """SIGTERM (the service drains and exits), then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def service_process(
    config: Mapping[str, Any],
    *,
    root: Path = REPO,
    timeout_s: float = 300.0,
    log_level: str = "warning",
) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m inference.serve`` on ``config`` (a serve config as a dict; host and port
    are set here) with the code of checkout ``root``; yields ``(process, base URL)`` once
    ``/health`` answers, and stops the process and removes its config file afterwards."""
    port = free_port()
    fd, path = tempfile.mkstemp(prefix="serve-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({**config, "host": "127.0.0.1", "port": port}, f)  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(root), "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True"}
    url = f"http://127.0.0.1:{port}"
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference.serve", "--config", path, "--log-level", log_level],
            cwd=root,
            env=env,
        )
        wait_healthy(proc, url, timeout_s=timeout_s)
        yield proc, url
    finally:
        if proc is not None:
            stop(proc)
        os.unlink(path)
