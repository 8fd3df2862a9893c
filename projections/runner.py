"""Apply a batch of log records to PostgreSQL exactly once (DESIGN.md rule 2, STYLE.md §12).

The runner opens one transaction, locks the projection's stored offsets for the batch's
partitions, drops records at or below them (re-delivery), decodes the rest, hands them to the
projection's ``apply`` and advances the offsets — commit or nothing."""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import faust

from medialog import tracking
from medialog.envelope import CloudEvent, decode_event
from medialog.domain.events import DomainEvent
from medialog.tracking import Position

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    position: Position
    event: CloudEvent
    payload: DomainEvent | None  # None: a type this reader does not know (skipped by apply)


Apply = Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]]


async def apply_batch(
    pool: asyncpg.Pool, name: str, apply: Apply, batch: Sequence[tuple[Position, bytes]]
) -> int:
    """Apply what is new in ``batch``; return how many records were applied."""
    if not batch:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        stored = await tracking.lock_positions(
            conn, name, [(p.topic, p.partition) for p, _ in batch]
        )
        fresh: list[Record] = []
        for position, raw in batch:
            if position.offset <= stored[(position.topic, position.partition)]:
                continue
            try:
                event, payload = decode_event(raw)
            except ValueError:
                log.error("projection %s: skipping undecodable record at %s", name, position)
                continue
            fresh.append(Record(position, event, payload))
        if fresh:
            await apply(conn, fresh)
        await tracking.advance(conn, name, [p for p, _ in batch])
    return len(fresh)


async def apply_or_skip(
    pool: asyncpg.Pool, name: str, apply: Apply, batch: Sequence[tuple[Position, bytes]]
) -> None:
    """What projection agents call (Faust acknowledges whatever an agent gives up on, so
    nothing may escape). Transient failures — database or network — are retried for as long as
    they last: the batch is idempotent. A batch that fails for good is applied record by record,
    and a record that still fails is logged and passed over with its position stored, so one
    poison record neither stalls its partition nor takes the rest of the batch with it."""
    from streams.worker import retrying

    try:
        await retrying(f"projection {name}", lambda: apply_batch(pool, name, apply, batch))
        return
    except Exception:
        log.exception("projection %s: a batch of %d failed; applying it record by record",
                      name, len(batch))
    for item in batch:
        try:
            await retrying(f"projection {name} at {item[0]}",
                           partial(apply_batch, pool, name, apply, [item]))
        except Exception:
            log.exception("projection %s: passing over the record at %s", name, item[0])
            await retrying(f"projection {name} storing {item[0]}",
                           partial(_pass_over, pool, name, item[0]))


async def _pass_over(pool: asyncpg.Pool, name: str, position: Position) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await tracking.advance(conn, name, [position])


def events_of(batch: Sequence[faust.EventT[bytes]]) -> list[tuple[Position, bytes]]:
    from streams.app import position

    return [(position(e), e.value) for e in batch]
