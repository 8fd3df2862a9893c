"""Consumer positions kept with their effects (DESIGN.md rule 2).

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


async def lock_positions(
    conn: asyncpg.Connection, consumer: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The stored offsets of ``partitions`` (-1 if none), row-locked until the transaction ends."""
    keys = sorted(set(partitions))
    rows = await conn.fetch(
        'SELECT topic, partition, "offset" FROM consumer_offsets '
        "WHERE consumer = $1 AND (topic, partition) IN "
        "(SELECT * FROM unnest($2::text[], $3::int[])) FOR UPDATE",
        consumer,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    stored = {(r["topic"], r["partition"]): r["offset"] for r in rows}
    return {k: stored.get(k, -1) for k in keys}


async def stored_offset(conn: asyncpg.Connection, consumer: str, topic: str, partition: int) -> int:
    """The stored offset (-1 if none), without locking: for a quick "already handled?" check."""
    value = await conn.fetchval(
        'SELECT "offset" FROM consumer_offsets WHERE consumer = $1 AND topic = $2 AND partition = $3',
        consumer, topic, partition,
    )
    return -1 if value is None else int(value)


async def advance(conn: asyncpg.Connection, consumer: str, positions: Iterable[Position]) -> None:
    """Store, per partition, the highest offset among ``positions``."""
    top: dict[tuple[str, int], int] = {}
    for p in positions:
        key = (p.topic, p.partition)
        top[key] = max(top.get(key, -1), p.offset)
    if not top:
        return
    await conn.executemany(
        'INSERT INTO consumer_offsets (consumer, topic, partition, "offset") VALUES ($1, $2, $3, $4) '
        'ON CONFLICT (consumer, topic, partition) DO UPDATE SET "offset" = '
        'GREATEST(consumer_offsets."offset", EXCLUDED."offset"), updated_at = now()',
        [(consumer, t, p, o) for (t, p), o in top.items()],
    )
