"""ClickHouse access. The same code talks to a server (``http(s)://``) or to chDB in-process
(``chdb:///path``; sync client only, one process per path). The client is
synchronous, so every call goes through ``Analytics.run`` on one dedicated thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from medialog.domain.errors import Unavailable

T = TypeVar("T")


class Analytics:
    """One ClickHouse client used from one worker thread."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    @property
    def is_embedded(self) -> bool:
        return self._dsn.startswith("chdb:")

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def open(self) -> None:
        self._client = await self._in_thread(lambda: clickhouse_connect.get_client(dsn=self._dsn))

    async def close(self) -> None:
        if self._client is not None:
            await self.run(lambda c: c.close())
            self._client = None
        self._pool.shutdown(wait=True)

    async def run(self, fn: Callable[[Client], T]) -> T:
        """``fn(client)`` on the client's thread. A server out of reach (refused, timed out) is
        ``Unavailable`` ``ANALYTICS_UNAVAILABLE``: the api answers 503, the projection retries."""
        client = self._client
        if client is None:
            raise RuntimeError("the ClickHouse client is not open")
        try:
            return await self._in_thread(lambda: fn(client))
        except OperationalError as exc:
            raise Unavailable("the analytics store did not answer",
                              code="ANALYTICS_UNAVAILABLE") from exc

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = await self.run(lambda c: c.query(sql, parameters=parameters))
        return [tuple(row) for row in result.result_rows]

    async def insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        await self.run(lambda c: c.insert(table, rows, column_names=columns))

    async def command(self, sql: str) -> None:
        await self.run(lambda c: c.command(sql))
