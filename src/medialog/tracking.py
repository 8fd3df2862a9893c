"""Consumer positions kept with their effects (docs/architecture.md, rule 2).

A consumer (a projection or an actor) calls ``lock_positions`` inside its transaction, skips
records at or below the stored offset, applies the rest, then ``advance``s — all in the same
transaction. Re-delivery after a crash therefore changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, order=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Stored:
    """A partition's stored offset (-1 if none) and the version of its row (``None`` if none):
    the row is rewritten by every transaction that applies records of the partition, so an
    unchanged version means nothing was applied since."""

    offset: int
    version: str | None


_NONE = Stored(-1, None)
_LOCK = (
    'SELECT topic, partition, "offset", xmin::text FROM consumer_offsets '
    "WHERE consumer = $1 AND (topic, partition) IN "
    "(SELECT * FROM unnest($2::text[], $3::int[])) FOR UPDATE"
)


_CREATE = (
    'INSERT INTO consumer_offsets (consumer, topic, partition, "offset") '
    "SELECT $1, t, p, -1 FROM unnest($2::text[], $3::int[]) AS k(t, p) "
    "ON CONFLICT (consumer, topic, partition) DO NOTHING"
)


async def lock_positions(
    conn: asyncpg.Connection, consumer: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The stored offsets of ``partitions`` (-1 if none), row-locked until the transaction ends."""
    return {k: s.offset for k, s in (await lock_stored(conn, consumer, partitions)).items()}


async def lock_stored(
    conn: asyncpg.Connection, consumer: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], Stored]:
    """``lock_positions`` with each row's version.

    A partition without a row yet (its first batch) gets one at -1 first, so that there is
    always a row to lock: two consumers briefly owning the same new partition (a rebalance)
    then take turns instead of both applying its first batch. The insert waits for the other's
    uncommitted one; the second read sees it committed."""
    keys = sorted(set(partitions))
    topics, parts = [k[0] for k in keys], [k[1] for k in keys]
    rows = await conn.fetch(_LOCK, consumer, topics, parts)
    if len(rows) < len(keys):
        await conn.execute(_CREATE, consumer, topics, parts)
        rows = await conn.fetch(_LOCK, consumer, topics, parts)
    stored = {(r[0], r[1]): Stored(r[2], r[3]) for r in rows}
    return {k: stored.get(k, _NONE) for k in keys}


async def stored_offset(conn: asyncpg.Connection, consumer: str, topic: str, partition: int) -> int:
    """The stored offset (-1 if none), without locking: for a quick "already handled?" check."""
    value = await conn.fetchval(
        'SELECT "offset" FROM consumer_offsets '
        "WHERE consumer = $1 AND topic = $2 AND partition = $3",
        consumer, topic, partition,
    )
    return -1 if value is None else int(value)


def tops(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """Per partition, the highest offset among ``positions`` (sorted by partition: concurrent
    writers lock the offset rows in the same order)."""
    top: dict[tuple[str, int], int] = {}
    for p in positions:
        key = (p.topic, p.partition)
        if p.offset > top.get(key, -1):
            top[key] = p.offset
    return dict(sorted(top.items()))


def advance_statement(consumer: int, topics: int, partitions: int, offsets: int) -> str:
    """The upsert behind ``advance``, over the numbered parameters (consumer, then three arrays
    as from ``tops``), returning each row's topic, partition and new version: for a projection
    that stores its offsets in the statement writing its rows (one round trip fewer)."""
    return (
        'INSERT INTO consumer_offsets (consumer, topic, partition, "offset") '
        f"SELECT ${consumer}, t, p, o FROM unnest(${topics}::text[], ${partitions}::int[], "
        f"${offsets}::bigint[]) AS k(t, p, o) "
        "ON CONFLICT (consumer, topic, partition) DO UPDATE SET \"offset\" = "
        'GREATEST(consumer_offsets."offset", EXCLUDED."offset"), updated_at = now() '
        "RETURNING topic, partition, xmin::text"
    )


_ADVANCE = advance_statement(1, 2, 3, 4)


async def advance(conn: asyncpg.Connection, consumer: str, positions: Iterable[Position]) -> None:
    """Store, per partition, the highest offset among ``positions``."""
    top = tops(positions)
    if top:
        await conn.execute(_ADVANCE, consumer, [t for t, _ in top], [p for _, p in top],
                           list(top.values()))
