"""Wake waiters when PostgreSQL says something changed (LISTEN/NOTIFY): requests waiting for an
outcome (``Prefer: wait``), the transcode runner waiting for the asset actor's decisions.

One listening connection per process. ``wait_until`` waiters (``Prefer: wait``) are woken by
every notification and re-check their own condition: cheap at their scale, and never misses a
change, since waiters check before they sleep. Long-lived watchers of one key (the SSE status
stream of an asset) use ``watch(key)`` instead: only a notification whose payload is that key
sets their event, so thousands of open streams do not all wake on every change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg

from medialog.outcomes import NOTIFY_CHANNEL

T = TypeVar("T")


class Notifier:
    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._changed = asyncio.Condition()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._wakeups: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    async def start(self, dsn: str) -> None:
        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener(NOTIFY_CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._watchers.get(payload, ()):
            event.set()
        task = asyncio.get_running_loop().create_task(self._wake())
        self._wakeups.add(task)
        task.add_done_callback(self._wakeups.discard)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever a notification names ``key``. Clear it *before* re-reading
        the state it guards, so a change between the read and the next wait is not lost."""
        event = asyncio.Event()
        self._watchers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]

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
