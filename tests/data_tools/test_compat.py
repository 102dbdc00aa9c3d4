"""data_tools.compat: `async_timeout` raises the builtin TimeoutError on every Python."""

from __future__ import annotations

import asyncio
import time

import pytest

from data_tools import compat


@pytest.mark.parametrize("kind", ["current", "backport"])
def test_async_timeout_raises_builtin_timeout_error(kind: str) -> None:
    if kind == "backport":
        pytest.importorskip("async_timeout")  # installed on Python 3.10 (pyproject marker)
        timeout = compat._backport_timeout
    else:
        timeout = compat.async_timeout

    async def run() -> float:
        async with timeout(10):
            await asyncio.sleep(0)  # no timeout: passes through
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with timeout(0.05):
                await asyncio.sleep(5)
        return time.monotonic() - t0

    assert asyncio.run(run()) < 2
