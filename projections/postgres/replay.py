"""``medialog replay``: rebuild PostgreSQL read models from the log while everything runs, into a
shadow schema, and swap them in atomically once built and checked. Why: a damaged read model
(a projection bug, a hand edit, a bad restore) is replaced without stopping the projections and
without ever serving a half-built table — unlike ``rebuild engagement``, which empties the live
tables first.

Procedure (the building blocks are ``verify``'s):

1. A shadow schema ``replay_<12 hex>`` gets empty copies of the projections' tables (``LIKE …
   INCLUDING ALL``, storage parameters, grants) and of ``consumer_offsets``; the run holds the
   advisory lock of its name while it lives.
2. Every partition of the projections' topics is folded from offset 0 up to its end offset E
   read at the start, by the projections' own code on connections whose ``search_path`` is the
   shadow schema, with a ``Progress``; then the shadow tables are analyzed.
3. Once the live projections have reached E (at most ``live_wait_s``: a stopped projection is
   not waited for), the projections' gate locks are taken exclusively: live batches pause
   (each takes its gate shared in its transaction), the batch in flight ends first. Under the
   gates the live positions P stand still; the shadow folds the records from E up to P, so it
   holds exactly what live holds, and ``verify``'s comparison runs between the live tables and
   the shadow's (a difference is reported: it is what the replay repairs).
4. In one transaction: each live table moves to ``replay_<hex>_old``, its shadow table to the
   live schema (its indexes renamed to the live ones' names), and the live offsets rows are
   set to the shadow's positions (only those that differ for ``assets``, whose live batches
   lock their rows before the gate; all for ``engagement``, which also invalidates its live row
   cache). Commit, release the gates, drop both schemas. Live batches resume on the new tables
   from the positions they hold: nothing applied twice, nothing skipped.

Interrupted or failed before the commit, nothing live changed: the run's sessions end and its
schemas are dropped (one a killed run left is dropped by the next run). Nothing else refers to
the tables (no foreign keys, views or sequences: ``schemas/migrations/postgres``); the new
tables belong to the role running the replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import TopicPartition

from medialog.config import Settings
from medialog.runtime.progress import Progress
from projections.postgres.verify import (
    Fold,
    Newest,
    Stored,
    TableResult,
    VerifyError,
    chosen,
    compare,
    create_shadow,
    fold_log,
    fold_partitions,
    positions,
    quoted,
    shadow_reader,
    shadow_run,
    write_cutoffs,
)

log = logging.getLogger(__name__)
SCHEMA_PREFIX = "replay_"
SWAP_LOCK_TIMEOUT = "5s"  # at most this long the swap waits for a live table's lock
_INDEXES = (  # a table's indexes: name, and what they index (the definition after the name)
    "SELECT c.relname, i.indisunique, substring(pg_get_indexdef(i.indexrelid) from ' USING .*') "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass")
_GRANTS = (  # the privileges granted on a table to others than its owner, as GRANT's words
    "SELECT a.privilege_type, coalesce(quote_ident(r.rolname), 'PUBLIC') "
    "FROM pg_class c CROSS JOIN aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
    "WHERE c.oid = $1::regclass AND a.grantee <> c.relowner")


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: the comparison of the live tables with the fold (at the same
    positions), the records folded, whether it swapped, the partitions where the live
    projection was behind the fold (not running?), and how long it took."""

    tables: tuple[TableResult, ...]
    records: int
    swapped: bool
    behind: tuple[str, ...]
    seconds: float

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    def lines(self) -> list[str]:
        """One line per table, a line on a lagging live projection, then the verdict."""
        names = ", ".join(t.table for t in self.tables)
        fold = f"a fold of {self.records:,} records ({self.seconds:.1f}s)"
        lines = [t.line() for t in self.tables]
        if self.behind:
            lines.append(f"the live projection had not applied the log up to the fold on "
                         f"{', '.join(self.behind)}: differences include those records")
        if not self.swapped:
            verdict = "equal" if self.equal else "DIFFERENT"
            return [*lines, f"{verdict}: {names} compared with {fold}; not swapped (check only)"]
        if self.equal:
            return [*lines, f"replaced {names} with {fold}; they were equal"]
        differ = sum(not t.equal for t in self.tables)
        return [*lines, f"REPAIRED: {differ} of {len(self.tables)} tables differed from the "
                        f"log; replaced {names} with {fold}"]


async def replay(settings: Settings, which: str, *, check_only: bool = False,
                 stall_s: float = 60.0, live_wait_s: float = 30.0,
                 progress: Callable[[int], Progress] | None = None) -> ReplayReport:
    """Rebuild ``which`` (a key of ``verify.FOLDS`` or ``all``) in a shadow schema and swap it
    in (``check_only``: compare only); see the module doc. ``progress`` is called with the
    number of records to fold up to the end offsets; the ``Progress`` it returns is advanced,
    and closed. Raises ``VerifyError`` when the fold cannot be made or the live tables not be
    locked for the swap (nothing live changed)."""
    began = time.monotonic()
    folds = chosen(which)
    tables = [t.name for f in folds for t in f.tables]
    async with shadow_run(settings, SCHEMA_PREFIX) as run:
        await create_shadow(run.conn, run.live, run.shadow, tables)
        await _grant_as_live(run.conn, run.live, run.shadow, tables)
        newest: Newest = {}
        async with shadow_reader(settings, run) as (pool, consumer):
            records = await fold_log(settings, consumer, pool, folds, None, newest, progress,
                                     stall_s)
            for name in tables:
                await run.conn.execute(f"ANALYZE {quoted(run.shadow)}.{quoted(name)}")
            folded = await positions(run.conn, run.shadow, folds)
            await _live_reaches(run.conn, run.live, folds, folded, live_wait_s)
            gates = sorted({f.gate for f in folds})
            for gate in gates:  # live batches finish the one in flight, then wait
                await run.conn.execute("SELECT pg_advisory_lock($1)", gate)
            # Past here, an error ends the run's session (``shadow_run``): its locks with it.
            at = await positions(run.conn, run.live, folds)
            for fold in folds:  # the shadow catches up with live, where live is ahead
                since = _after(fold, folded)
                upto = {tp: o for tp, o in _after(fold, at).items() if o > since.get(tp, 0)}
                records += await fold_partitions(consumer, pool, fold,
                                                 fold.apply(settings, newest), upto, None,
                                                 stall_s, since)
        behind = tuple(f"{t}/{p}" for (c, t, p), o in sorted(folded.items())
                       if o > at.get((c, t, p), -1))
        await write_cutoffs(run.conn, run.shadow, settings, newest)
        results = tuple([await compare(run.conn, f"{quoted(run.live)}.{quoted(t.name)}",
                                       run.shadow, t, run.live)
                         for f in folds for t in f.tables])
        if not check_only:
            await _swap(run.conn, run.live, run.shadow, folds)
        for gate in gates:
            await run.conn.execute("SELECT pg_advisory_unlock($1)", gate)
    report = ReplayReport(results, records, not check_only, behind, time.monotonic() - began)
    log.info("replay %s: %s", which, report.lines()[-1])
    return report


def _after(fold: Fold, stored: Stored) -> dict[TopicPartition, int]:
    """Per partition of ``fold``, the offset after its ``stored`` position."""
    return {TopicPartition(t, p): o + 1 for (c, t, p), o in stored.items() if c == fold.consumer}


async def _grant_as_live(conn: asyncpg.Connection, live: str, shadow: str,
                         tables: Sequence[str]) -> None:
    """Grant on the shadow tables what is granted on the live ones (LIKE copies no grants)."""
    for name in tables:
        for privilege, grantee in await conn.fetch(_GRANTS, f"{quoted(live)}.{quoted(name)}"):
            await conn.execute(f"GRANT {privilege} ON {quoted(shadow)}.{quoted(name)} "
                               f"TO {grantee}")


async def _live_reaches(conn: asyncpg.Connection, live: str, folds: Sequence[Fold],
                        folded: Stored, wait_s: float) -> None:
    """Wait (at most ``wait_s``) until the live positions are at or past ``folded``, so that
    the gates pause live where the shadow can catch up to it."""
    deadline = time.monotonic() + wait_s
    while True:
        at = await positions(conn, live, folds)
        if all(at.get(k, -1) >= o for k, o in folded.items()) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def _swap(conn: asyncpg.Connection, live: str, shadow: str, folds: Sequence[Fold]) -> None:
    """In one transaction: the live tables to ``<shadow>_old``, the shadow's to ``live`` under
    the live indexes' names, the live offsets rows to the shadow's positions."""
    try:
        await _swap_tables(conn, live, shadow, folds)
    except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as exc:
        raise VerifyError(f"the live tables could not be locked for the swap ({exc}): nothing "
                          "changed; run the replay again") from exc


async def _swap_tables(conn: asyncpg.Connection, live: str, shadow: str,
                       folds: Sequence[Fold]) -> None:
    lv, s, old = quoted(live), quoted(shadow), quoted(shadow + "_old")
    async with conn.transaction():
        # Waiting for a long query on a live table would stall every reader queued behind.
        await conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        await conn.execute(f"CREATE SCHEMA {old}")
        for name in (t.name for f in folds for t in f.tables):
            await conn.execute(f"ALTER TABLE {lv}.{quoted(name)} SET SCHEMA {old}")
            await conn.execute(f"ALTER TABLE {s}.{quoted(name)} SET SCHEMA {lv}")
            before = {(r[1], r[2]): r[0] for r in
                      await conn.fetch(_INDEXES, f"{old}.{quoted(name)}")}
            for index, unique, what in await conn.fetch(_INDEXES, f"{lv}.{quoted(name)}"):
                wanted = before.get((unique, what))
                if wanted is not None and wanted != index:
                    await conn.execute(f"ALTER INDEX {lv}.{quoted(index)} "
                                       f"RENAME TO {quoted(wanted)}")
        for fold in folds:
            await conn.execute(
                f'UPDATE {lv}.consumer_offsets c SET "offset" = f."offset", updated_at = now() '
                f"FROM {s}.consumer_offsets f WHERE c.consumer = $1 AND f.consumer = $1 "
                "AND c.topic = f.topic AND c.partition = f.partition "
                'AND ($2 OR c."offset" <> f."offset")', fold.consumer, fold.cached)
            await conn.execute(
                f'INSERT INTO {lv}.consumer_offsets (consumer, topic, partition, "offset") '
                f'SELECT consumer, topic, partition, "offset" FROM {s}.consumer_offsets f '
                f"WHERE consumer = $1 AND NOT EXISTS (SELECT 1 FROM {lv}.consumer_offsets c "
                "WHERE c.consumer = $1 AND c.topic = f.topic AND c.partition = f.partition) "
                "ON CONFLICT DO NOTHING", fold.consumer)

