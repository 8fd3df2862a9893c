"""Reads of the asset facts that decide who may engage with or stream an asset (``AssetRef``:
``fetch_asset_ref``, and ``AssetLookup``, which caches them briefly for the engagement routes,
since reports are high volume) and of the engagement projection's counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from medialog.domain.errors import Unavailable
from medialog.domain.view_reports import AssetRef


class AssetLookup:
    """``AssetRef`` by id from the ``assets`` read model, cached for ``ttl_s`` (absent assets
    too), at most ``max_entries``; concurrent misses for one id share one query.

    Contract: an answer is at most ``ttl_s`` older than the read model (a visibility change or a
    deletion takes effect within that time)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 2.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, AssetRef | None]] = {}
        self._inflight: dict[str, asyncio.Future[AssetRef | None]] = {}

    async def get(self, asset_id: str) -> AssetRef | None:
        hit = self._cache.get(asset_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        pending = self._inflight.get(asset_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[AssetRef | None] = asyncio.get_running_loop().create_future()
        self._inflight[asset_id] = future
        try:
            ref = await self._fetch(asset_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(ref)
            if len(self._cache) >= self._max:
                self._evict()
            self._cache[asset_id] = (self._clock() + self._ttl_s, ref)
            return ref
        finally:
            del self._inflight[asset_id]

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[key]
        while len(self._cache) >= self._max:  # still full of fresh entries: drop the oldest
            del self._cache[next(iter(self._cache))]

    async def _fetch(self, asset_id: str) -> AssetRef | None:
        return await fetch_asset_ref(self._pool, asset_id)


async def fetch_asset_ref(pool: asyncpg.Pool, asset_id: str) -> AssetRef | None:
    """The asset's facts as the read model has them now (None: no such asset). A database that
    does not answer is ``Unavailable`` (``DB_UNAVAILABLE``)."""
    try:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT asset_id, owner_id, status, visibility, duration_s FROM assets "
                "WHERE asset_id = $1", asset_id)
    except (asyncpg.PostgresError, OSError) as exc:
        raise Unavailable("the read model did not answer", code="DB_UNAVAILABLE") from exc
    if row is None:
        return None
    return AssetRef(asset_id=row["asset_id"], owner_id=row["owner_id"], status=row["status"],
                    visibility=row["visibility"], duration_s=row["duration_s"])


@dataclass(frozen=True, kw_only=True)
class Stats:
    view_count: int = 0
    like_count: int = 0
    watch_seconds_total: Decimal = Decimal(0)
    liked_by_me: bool | None = None  # None: anonymous caller


async def fetch_stats(pool: asyncpg.Pool, asset_id: str, engagement_key: str | None) -> Stats:
    """The asset's counters (zeros before its first report) and, for a signed-in caller
    (``engagement_key`` given), whether they like it — read in one snapshot."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT s.view_count, s.like_count, s.watch_seconds_total, "
            "(SELECT liked FROM likes WHERE engagement_key = $2) AS liked "
            "FROM (SELECT $1::text AS asset_id) a LEFT JOIN asset_stats s USING (asset_id)",
            asset_id, engagement_key or "")
    assert row is not None
    return Stats(
        view_count=row["view_count"] or 0,
        like_count=row["like_count"] or 0,
        watch_seconds_total=row["watch_seconds_total"] or Decimal(0),
        liked_by_me=bool(row["liked"]) if engagement_key else None,
    )
