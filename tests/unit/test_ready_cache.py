"""``health.ReadyCache``: one readiness check per ``READY_CACHE_S`` however many ask, with a fake
clock and a fake check (the real checks: tests/integration/test_health.py)."""

from __future__ import annotations

import asyncio

import pytest

from medialog.api import health
from medialog.api.health import Answer, ReadyCache

N = 50


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Check:
    """A check that counts its runs and ends when ``release`` is set."""

    def __init__(self, *, fails: bool = False) -> None:
        self.runs = 0
        self.fails = fails
        self.release = asyncio.Event()

    async def __call__(self) -> Answer:
        self.runs += 1
        await self.release.wait()
        if self.fails:
            raise RuntimeError("broken check")
        return {"run": self.runs}, 503


async def test_concurrent_calls_run_the_check_once_and_share_its_answer() -> None:
    cache, check = ReadyCache(Clock()), Check()
    waiting = [asyncio.create_task(cache.answer(check)) for _ in range(N)]
    await asyncio.sleep(0)
    check.release.set()
    answers = await asyncio.gather(*waiting)
    assert check.runs == 1
    assert answers == [({"run": 1}, 503)] * N


async def test_an_answer_is_reused_until_a_second_after_its_check_ended() -> None:
    clock = Clock()
    cache, check = ReadyCache(clock), Check()
    check.release.set()
    assert await cache.answer(check) == ({"run": 1}, 503)
    clock.now += health.READY_CACHE_S - 0.01
    assert await cache.answer(check) == ({"run": 1}, 503)
    clock.now += 0.01
    assert await cache.answer(check) == ({"run": 2}, 503)
    assert check.runs == 2


async def test_a_check_that_raised_is_not_kept() -> None:
    cache, check = ReadyCache(Clock()), Check(fails=True)
    check.release.set()
    for runs in (1, 2):
        with pytest.raises(RuntimeError):
            await cache.answer(check)
        assert check.runs == runs


async def test_a_caller_going_away_does_not_cancel_the_shared_check() -> None:
    cache, check = ReadyCache(Clock()), Check()
    leaving = asyncio.create_task(cache.answer(check))
    staying = asyncio.create_task(cache.answer(check))
    await asyncio.sleep(0)
    leaving.cancel()
    check.release.set()
    assert await staying == ({"run": 1}, 503)
    assert check.runs == 1

