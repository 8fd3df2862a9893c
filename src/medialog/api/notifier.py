"""Wake waiting requests when PostgreSQL says something changed (LISTEN/NOTIFY).

One listening connection per process; each notification wakes every waiter, which re-checks
its own condition. Cheap at the scale of ``Prefer: wait`` requests, and never misses a change:
waiters check before they sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from medialog.outcomes import NOTIFY_CHANNEL

T = TypeVar("T")


class Notifier:
    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._changed = asyncio.Condition()

    async def start(self, dsn: str) -> None:
        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener(NOTIFY_CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _on_notify(self, *_: Any) -> None:
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(
        self, check: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float
    ) -> T:
        """Re-run ``check`` on every change until ``done(result)`` or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self._changed:
                result = await check()
                remaining = deadline - loop.time()
                if done(result) or remaining <= 0:
                    return result
                try:
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
                except TimeoutError:
                    pass
