"""Apply a batch of log records to PostgreSQL exactly once (docs/architecture.md, rule 2).

The runner opens one transaction, locks the projection's stored offsets for the batch's
partitions, drops records at or below them (re-delivery), decodes the rest, hands them to the
projection's ``apply`` and advances the offsets — commit or nothing. A ``Projection`` that does
all of that itself (to keep state between batches) gets the same retries and fallbacks from
``project_or_skip``."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol, TypeVar

import asyncpg

from medialog import tracking
from medialog.domain.events import DomainEvent
from medialog.envelope import CloudEvent, decode_event
from medialog.runtime.handle_once import advance, batch_or_skip
from medialog.tracking import Position, Stored

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Record:
    position: Position
    event: CloudEvent
    payload: DomainEvent | None  # None: a type this reader does not know (skipped by apply)


Apply = Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]]
Batch = Sequence[tuple[Position, bytes]]


class Projection(Protocol):
    """A projection applying whole batches itself, with ``apply_batch``'s contract: one
    transaction storing its effects with the batch's offsets; records at or below the stored
    offsets change nothing; returns how many records were applied."""

    name: str

    async def apply_batch(self, pool: asyncpg.Pool, batch: Batch) -> int: ...


class PartitionCache(Generic[K, V]):
    """Rows a ``Projection`` committed, per partition, so that its next batches need not read
    them back. A row is remembered with the partition whose record wrote it (each key's records
    are on one partition: the log is keyed by it) and is valid only while that partition's
    offsets row is still the version this projection's own commit left: every transaction that
    applies a record of the partition rewrites that row, so an unchanged version means the
    stored rows are still the ones remembered. A batch first ``check``s the versions it read
    under lock (any other version — another worker, a rebuild, a passed-over record, a commit
    whose outcome was lost — forgets the partition), reads what ``get`` does not answer and,
    only once it has committed, ``commit``s its rows with the new versions. At most ``max_rows``
    rows are kept, the least recently committed forgotten first."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._parts: dict[tuple[str, int], tuple[str, int]] = {}  # → (version, epoch)
        self._rows: dict[K, tuple[int, V]] = {}  # → (epoch of the partition, value)
        self._epochs = itertools.count()

    def check(self, stored: Mapping[tuple[str, int], Stored]) -> None:
        """Forget the partitions whose stored version is not the one this cache committed."""
        for part, s in stored.items():
            mine = self._parts.get(part)
            if mine is not None and mine[0] != s.version:
                del self._parts[part]

    def get(self, part: tuple[str, int], key: K) -> V | None:
        """The row of ``key`` as committed from ``part``, if still valid (after ``check``)."""
        mine, row = self._parts.get(part), self._rows.get(key)
        return row[1] if mine is not None and row is not None and row[0] == mine[1] else None

    def split(self, keys: Mapping[K, tuple[str, int]]) -> tuple[dict[K, V], list[K]]:
        """For ``keys`` (each with the partition of its records): the rows still valid, and the
        keys of the others (to read)."""
        known: dict[K, V] = {}
        missing: list[K] = []
        for key, part in keys.items():
            value = self.get(part, key)
            if value is None:
                missing.append(key)
            else:
                known[key] = value
        return known, missing

    def forget(self, part: tuple[str, int], stale: Callable[[V], bool]) -> None:
        """Drop the rows committed from ``part`` that are ``stale`` (e.g. deleted since)."""
        mine = self._parts.get(part)
        if mine is None:
            return
        for key in [k for k, (epoch, value) in self._rows.items()
                    if epoch == mine[1] and stale(value)]:
            del self._rows[key]

    def commit(self, versions: Mapping[tuple[str, int], str],
               rows: Iterable[tuple[tuple[str, int], K, V]]) -> None:
        """After the commit that left ``versions``: remember ``rows`` (partition, key, value);
        the partitions' other rows stay valid if they were."""
        epochs = {}
        for part, version in versions.items():
            mine = self._parts.get(part)
            epochs[part] = next(self._epochs) if mine is None else mine[1]
            self._parts[part] = (version, epochs[part])
        table = self._rows
        for part, key, value in rows:
            table.pop(key, None)  # to the end: the least recently committed go first
            table[key] = (epochs[part], value)
        for key in list(itertools.islice(table, max(0, len(table) - self.max_rows))):
            del table[key]


async def overlapped(query: Awaitable[T], work: Callable[[], U]) -> tuple[T, U]:
    """Send ``query`` (one statement on a connection) and run ``work`` (Python, no I/O) while
    the server answers: a round trip fewer to wait for. The query is awaited even when
    ``work`` fails, so that the connection is free again whatever happens."""
    sent = asyncio.ensure_future(query)
    await asyncio.sleep(0)  # the task sends the statement, then waits for the answer
    try:
        done = work()
    finally:
        answer = await sent
    return answer, done


async def apply_batch(pool: asyncpg.Pool, name: str, apply: Apply, batch: Batch) -> int:
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


async def apply_or_skip(pool: asyncpg.Pool, name: str, apply: Apply, batch: Batch) -> None:
    """What projections call (their reader moves on past whatever a batch gives up on, so
    nothing may escape). Transient failures — database or network — are retried for as long as
    they last: the batch is idempotent. A batch that fails for good is applied record by record,
    and a record that still fails is logged and passed over with its position stored, so one
    poison record neither stalls its partition nor takes the rest of the batch with it."""
    await _or_skip(pool, name, partial(apply_batch, pool, name, apply), batch)


async def project_or_skip(pool: asyncpg.Pool, projection: Projection, batch: Batch) -> None:
    """``apply_or_skip`` for a ``Projection``."""
    await _or_skip(pool, projection.name, partial(projection.apply_batch, pool), batch)


async def _or_skip(
    pool: asyncpg.Pool, name: str, run: Callable[[Batch], Awaitable[int]], batch: Batch
) -> None:
    await batch_or_skip(f"projection {name}", run, batch, partial(advance, pool, name))
