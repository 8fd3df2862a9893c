"""The api's short-lived cache of asset facts (``AssetLookup``), on an in-memory fake pool."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from medialog.api.engagement_queries import AssetLookup
from medialog.domain.errors import Unavailable
from medialog.domain.view_reports import AssetRef


class FakePool:
    def __init__(self, rows: dict[str, dict[str, Any]], delay: float = 0.0) -> None:
        self.rows = rows
        self.delay = delay
        self.queries = 0
        self.fail = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> Any:
        yield self

    async def fetchrow(self, sql: str, asset_id: str) -> dict[str, Any] | None:
        self.queries += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("connection refused")
        return self.rows.get(asset_id)


def row(asset_id: str, **kw: Any) -> dict[str, Any]:
    return {"asset_id": asset_id, "owner_id": "o", "status": "ready", "visibility": "public",
            "duration_s": None, **kw}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_cached_for_the_ttl_absent_ones_too():
    pool, clock = FakePool({"a": row("a", duration_s=12.5)}), Clock()
    lookup = AssetLookup(pool, ttl_s=2.0, clock=clock)  # type: ignore[arg-type]
    first = await lookup.get("a")
    assert first is not None and first.duration_s == 12.5
    assert await lookup.get("missing") is None
    pool.rows["missing"] = row("missing")
    pool.rows["a"] = row("a", visibility="private")
    clock.now = 1.9
    assert (await lookup.get("a")) == first and await lookup.get("missing") is None
    assert pool.queries == 2
    clock.now = 2.0
    assert (await lookup.get("a")).visibility == "private"  # type: ignore[union-attr]
    assert await lookup.get("missing") == AssetRef(
        asset_id="missing", owner_id="o", status="ready", visibility="public", duration_s=None)
    assert pool.queries == 4


async def test_concurrent_misses_share_one_query():
    pool = FakePool({"a": row("a")}, delay=0.01)
    lookup = AssetLookup(pool)  # type: ignore[arg-type]
    results = await asyncio.gather(*(lookup.get("a") for _ in range(50)))
    assert pool.queries == 1 and all(r == results[0] for r in results)


async def test_size_is_bounded():
    pool, clock = FakePool({}), Clock()
    lookup = AssetLookup(pool, max_entries=10, clock=clock)  # type: ignore[arg-type]
    for i in range(25):
        await lookup.get(str(i))
    assert len(lookup._cache) <= 10


async def test_database_errors_become_unavailable_and_are_not_cached():
    pool = FakePool({"a": row("a")})
    lookup = AssetLookup(pool)  # type: ignore[arg-type]
    pool.fail = True
    with pytest.raises(Unavailable):
        await lookup.get("a")
    pool.fail = False
    assert await lookup.get("a") == AssetRef(
        asset_id="a", owner_id="o", status="ready", visibility="public", duration_s=None)
