"""What Python 3.10 lacks and the project uses, in one place (nothing else belongs here).

The project supports Python 3.10-3.12 (Paddle 3.2's images run 3.10). Everything else
it needs exists in 3.10; this module closes the one gap:

- `async_timeout(delay)`: `asyncio.timeout` (3.11+). On 3.10 it is aio-libs'
  `async-timeout` (the backport asyncio.timeout was taken from), with its
  `asyncio.TimeoutError` raised as the builtin `TimeoutError`, as on 3.11, so callers
  write `except TimeoutError` on every version.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["async_timeout"]


@contextlib.asynccontextmanager
async def _backport_timeout(delay: float | None) -> AsyncIterator[Any]:
    from async_timeout import timeout

    try:
        async with timeout(delay) as cm:
            yield cm
    except asyncio.TimeoutError as e:  # a distinct class before 3.11
        raise TimeoutError(f"timed out after {delay} s") from e


if sys.version_info >= (3, 11):
    from asyncio import timeout as async_timeout
else:  # pragma: no cover - exercised on Python 3.10 only
    async_timeout = _backport_timeout
