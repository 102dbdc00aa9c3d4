"""The service's admission pieces on their own: the shared budget and the model slots."""

from __future__ import annotations

import asyncio

import pytest

from inference.serving.admission import Admission, Budget, BudgetTimeout


def test_budget_waits_in_order_times_out_and_never_leaks() -> None:
    async def scenario() -> None:
        b = Budget(10, "units")
        await b.acquire(6, 1)
        order: list[str] = []

        async def take(name: str, n: int, timeout: float) -> None:
            await b.acquire(n, timeout)
            order.append(name)

        big = asyncio.create_task(take("big", 8, 5))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(take("small", 2, 5))  # would fit, but waits its turn
        await asyncio.sleep(0.05)
        assert order == [] and b.used == 6
        with pytest.raises(BudgetTimeout, match="units: 6 of 10"):
            await b.acquire(1, 0.05)
        b.release(6)
        await asyncio.gather(big, small)
        assert order == ["big", "small"] and b.used == 10
        b.release(10)
        assert b.used == 0
        with pytest.raises(ValueError, match="over the whole units budget"):
            await b.acquire(11, 1)
        # a waiter cancelled while waiting leaves nothing behind
        await b.acquire(10, 1)
        waiter = asyncio.create_task(b.acquire(5, 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        b.release(10)
        assert b.used == 0
        await b.acquire(10, 0.1)  # the cancelled waiter did not keep a share

    asyncio.run(scenario())


def test_admission_holds_ticket_and_slot_until_the_call_ends() -> None:
    async def scenario() -> None:
        changes: list[int] = []
        a = Admission(1, 1, lambda: changes.append(1))
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "done"

        t1 = a.try_enter()
        assert t1 is not None
        with pytest.raises(TimeoutError):
            await a.run_model(t1, slow, 0.05)
        t1.drop()  # the request is answered (504) ...
        assert a.snapshot()["in_flight"] == 1 and a.admitted == 1 and a.abandoned == 1
        t2 = a.try_enter()
        assert t2 is not None and a.try_enter() is None  # ... but its ticket is still out
        with pytest.raises(TimeoutError):  # waits for the slot, which the call still holds
            await a.run_model(t2, slow, 0.05)
        t2.drop()
        release.set()
        await asyncio.sleep(0.01)
        assert a.snapshot() == {
            "admitted": 0,
            "in_flight": 0,
            "queued": 0,
            "abandoned": 0,
            "max_concurrency": 1,
            "max_queue": 1,
        }
        t3 = a.try_enter()
        assert t3 is not None
        assert await a.run_model(t3, slow, 1) == "done"
        t3.drop()
        assert a.admitted == 0 and changes

    asyncio.run(scenario())
