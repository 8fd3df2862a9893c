"""Handling log records once per consumer: check the stored position, run the effect, advance.

Two shapes, one for each kind of effect:

* ``handle_once``: an effect outside PostgreSQL (S3 objects, records on the log) cannot share a
  transaction with its position, so every such effect is idempotent (conditional copies,
  deletes, deterministic ids) and the position is stored *after* it: a crash in between re-runs
  an effect that changes nothing the second time.
* ``batch_or_skip``: a batch whose effect stores its own positions (a projection's transaction)
  is retried while its failures are transient; one that fails for good is run record by record,
  and a record that still fails is logged and passed over, so one poison record neither stalls
  its partition nor takes the rest of the batch with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import asyncpg

from medialog import tracking
from medialog.runtime.retry import PermanentFailure, retrying
from medialog.tracking import Position

log = logging.getLogger(__name__)
R = TypeVar("R")
Item = tuple[Position, bytes]


async def already_handled(pool: asyncpg.Pool, consumer: str, position: Position) -> bool:
    """Whether ``consumer`` stored an offset at or past ``position`` (a re-delivery), retrying
    while the database is away: raising would end the agent, whose record then counts as
    consumed."""
    async def stored() -> int:
        async with pool.acquire() as conn:
            return await tracking.stored_offset(conn, consumer, position.topic,
                                                position.partition)

    return position.offset <= await retrying(f"{consumer} reading its position", stored)


async def advance(pool: asyncpg.Pool, consumer: str, *positions: Position) -> None:
    """Store ``positions`` for ``consumer`` (each partition's highest), retrying while the
    database is away."""
    async def store() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await tracking.advance(conn, consumer, positions)

    await retrying(f"{consumer} storing {positions[-1]}", store)


async def handle_once(
    pool: asyncpg.Pool, consumer: str, position: Position, effect: Callable[[], Awaitable[Any]]
) -> bool:
    """Run ``effect`` for a record unless ``consumer`` already handled its offset; then store the
    offset. ``PermanentFailure`` is logged as an error and the record is passed over (its offset
    stored): it needs an operator, not a retry loop. Returns whether the effect ran."""
    if await already_handled(pool, consumer, position):
        return False
    try:
        await retrying(f"{consumer} at {position}", effect)
    except PermanentFailure as exc:
        log.error("%s: giving up on the record at %s: %s", consumer, position, exc)
    await advance(pool, consumer, position)
    return True


async def batch_or_skip(
    name: str, run: Callable[[Sequence[Item]], Awaitable[R]], batch: Sequence[Item],
    pass_over: Callable[[Position], Awaitable[None]] | None = None,
) -> list[R]:
    """Run ``run(batch)`` (idempotent) until it succeeds or fails for good, then record by
    record; a record that fails for good is logged and handed to ``pass_over`` (which stores its
    position, where ``run`` would have). Returns the results of the runs that succeeded."""
    try:
        return [await retrying(f"{name}", partial(run, batch))]
    except Exception:
        log.exception("%s: a batch of %d failed; applying it record by record", name, len(batch))
    results = []
    for item in batch:
        try:
            results.append(await retrying(f"{name} at {item[0]}", partial(run, [item])))
        except Exception:
            log.exception("%s: passing over the record at %s", name, item[0])
            if pass_over is not None:
                await retrying(f"{name} storing {item[0]}", partial(pass_over, item[0]))
    return results
