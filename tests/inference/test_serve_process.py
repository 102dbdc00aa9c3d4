"""inference.serving.process: the service in its own process, and the readiness poll."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from inference.serving.process import free_port, service_process, wait_healthy


def test_wait_healthy_reports_a_server_that_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1.*exited with 3"):
        wait_healthy(proc, url, timeout_s=60)


def test_a_service_that_cannot_start_is_an_error_and_leaves_no_config_behind() -> None:
    before = set(Path(tempfile.gettempdir()).glob("serve-*.json"))
    bad = {"backend": {"backend": "no-such-backend"}}
    with pytest.raises(RuntimeError, match="exited with"), service_process(bad, timeout_s=120):
        pytest.fail("a service with an unknown backend came up")
    assert set(Path(tempfile.gettempdir()).glob("serve-*.json")) == before
