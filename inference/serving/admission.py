"""Admission: what the service lets in, and the memory it lets requests hold at once.

* `Admission` hands out *tickets* (at most `max_concurrency + max_queue` requests inside
  the service, body reading included; beyond: 503) and *model slots* (at most
  `max_concurrency` model calls at once). A ticket and a slot are held until the model
  call has really ended: a request answered 504 leaves its call running in a worker
  thread (a thread cannot be stopped), so the call keeps both, `/health` counts it as
  ``in_flight`` and ``abandoned``, and the backlog stays visible instead of hiding in the
  thread pool.
* `Budget` is a counted resource shared by concurrent requests: the bytes of request
  bodies held in memory, the pixels being decoded. A request reserves what it will hold
  *before* reading or decoding, waits (up to its deadline) while others hold it, and gets
  413 when it could never fit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BudgetTimeout(Exception):
    """The budget stayed taken until the request's deadline."""


class Budget:
    """An async counted resource with FIFO waiters (no starvation of large requests)."""

    def __init__(self, total: int, name: str) -> None:
        self.total = total
        self.name = name
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.total:
                return
            self.used += n
            fut.set_result(None)
            self._waiters.popleft()

    async def acquire(self, n: int, timeout_s: float) -> None:
        """Take `n` units, waiting at most `timeout_s` (then `BudgetTimeout`)."""
        if n > self.total:
            raise ValueError(f"{n} is over the whole {self.name} budget of {self.total}")
        if not self._waiters and self.used + n <= self.total:
            self.used += n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout_s))
        except TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the last moment
                self.release(n)
            fut.cancel()
            self._wake()
            raise BudgetTimeout(f"{self.name}: {self.used} of {self.total} in use") from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(n)
            fut.cancel()
            self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()


class Ticket:
    """One admitted request; freed when the request *and* its model call are over."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._holders = 1
        self.admitted_at = time.monotonic()

    def hold(self) -> None:
        self._holders += 1

    def drop(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._admission._leave()


class Admission:
    """Tickets (requests inside the service) and model slots; see the module docstring."""

    def __init__(self, max_concurrency: int, max_queue: int, on_change: Callable[[], None]) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_admitted = max_concurrency + max_queue
        self.admitted = 0  # tickets out
        self.active = 0  # model calls running (abandoned ones included)
        self.waiting = 0  # requests waiting for a model slot
        self.abandoned = 0  # model calls whose request was answered 504, still running
        self._slots = asyncio.Semaphore(max_concurrency)
        self._on_change = on_change
        self._tasks: set[asyncio.Task[Any]] = set()

    def try_enter(self) -> Ticket | None:
        if self.admitted >= self.max_admitted:
            return None
        self.admitted += 1
        self._on_change()
        return Ticket(self)

    def _leave(self) -> None:
        self.admitted -= 1
        self._on_change()

    async def run_model(
        self, ticket: Ticket, work: Callable[[], Awaitable[T]], timeout_s: float
    ) -> T:
        """Run `work` in a model slot within `timeout_s` (waiting for the slot included).

        On timeout raises `TimeoutError` *without* cancelling the call: it keeps its slot
        and the ticket until it returns.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.waiting += 1
        self._on_change()
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - loop.time()))
        finally:
            self.waiting -= 1
            self._on_change()
        self.active += 1
        self._on_change()
        ticket.hold()

        async def call() -> T:
            try:
                return await work()
            finally:
                self.active -= 1
                self._slots.release()
                self._on_change()
                ticket.drop()

        task = asyncio.ensure_future(call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.abandoned += 1
            self._on_change()

            def done(t: asyncio.Task[Any]) -> None:
                self.abandoned -= 1
                self._on_change()
                if not t.cancelled():
                    t.exception()  # retrieved: no "exception never retrieved" noise

            task.add_done_callback(done)
            raise

    def snapshot(self) -> dict[str, int]:
        return {
            "admitted": self.admitted,
            "in_flight": self.active,
            "queued": self.waiting,
            "abandoned": self.abandoned,
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
        }
