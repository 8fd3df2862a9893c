"""``medialog verify``: the log is the truth, checked — a fresh fold of the log compared with the
live PostgreSQL read models, table by table. Why: a projection bug, a hand edit or a restore
from backup makes a read model drift from the log silently; this says so, and where.

Procedure (correct while the projections run; it writes nothing outside its shadow schema):

1. A shadow schema ``verify_<12 hex>`` of the same database gets an empty copy (``LIKE …
   INCLUDING ALL``) of each verified table and of ``consumer_offsets``, and a no-op
   ``pg_notify`` (the fold wakes no live waiter). The run holds a session advisory lock on its
   schema's name while it lives.
2. One REPEATABLE READ transaction reads the projections' stored positions P and copies the live
   tables into the shadow schema (``live_<table>``): rows and positions are one snapshot, as
   every batch commits its rows with its offsets.
3. Every partition of the projections' topics is read from offset 0 up to exactly P (records
   after P are not in the snapshot) by a consumer in no group, and applied by the projection's
   own code (``runner.apply_or_skip`` with ``assets.apply`` / ``engagement.make_apply``, as the
   rebuild does) on connections whose ``search_path`` is the shadow schema: the real fold, which
   cannot touch a live table.
4. Per table, on the two static copies: row counts and an order-independent checksum (the sum
   of a 60-bit hash of each row's text); on a difference, the first differing primary keys (a
   full outer join on the key).
5. The shadow schema is dropped at the end, on error or interrupt too; one a crashed run left
   (its advisory lock is gone with its session) is dropped by the next run.

``medialog replay`` (``replay`` in this package) builds on the same blocks: ``shadow_run``,
``create_shadow``, ``shadow_reader``, ``fold_log``/``fold_partitions`` and ``compare``.

Left out of the comparison, because live and a fold legitimately differ there:

* ``updated_at`` of ``asset_stats`` and ``view_sessions``: written with ``now()``;
* ``asset_stats`` rows whose counters are all zero: a like and its unlike in one batch write no
  row, in two batches a row of zeros (the api reads a missing row as zeros);
* ``view_sessions`` the live projection may have pruned: those whose window started
  ``view_window_s + view_sessions_keep_s`` before the newest view report of their partition (up
  to P); the fold (like the rebuild) prunes nothing. A pruned session reported again later
  restarts from nothing live but continues in the fold: its row differs (its counts agree).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from medialog.config import Settings
from medialog.domain.events import ViewReported
from medialog.kafka import partitions_of
from medialog.runtime.progress import Progress
from medialog.tracking import Position
from projections.postgres import assets, engagement
from projections.runner import Apply, Record, apply_or_skip

log = logging.getLogger(__name__)
SCHEMA_PREFIX = "verify_"
LOCK_CLASS = 0x6D766572  # advisory lock (class, hashtext(schema)) held by the run owning it
FIRST_KEYS = 5  # differing keys reported per table
CUTOFFS = "spent_cutoffs"  # in the shadow schema: per partition, sessions older may be pruned

Newest = dict[tuple[str, int], datetime]  # per partition, the newest view report folded
Stored = dict[tuple[str, str, int], int]  # stored offset by (consumer, topic, partition)


class VerifyError(RuntimeError):
    """The fold could not be made (the log lacks records the positions name, or stalled)."""


@dataclass(frozen=True)
class Table:
    """A table as compared: its primary key, the columns left out, and the rows compared (an SQL
    condition on ``t``; ``{shadow}`` stands for the shadow schema)."""

    name: str
    key: tuple[str, ...]
    ignore: frozenset[str] = frozenset()
    where: str = "true"


@dataclass(frozen=True)
class Fold:
    """A projection verified (or replayed): its tracking name, topics, batch size, tables, its
    apply (given the settings and where to note the newest view reports), the advisory lock its
    live batches share (``gate``) and whether its live batches take it before locking their
    offsets rows and keep committed rows in memory while those rows are unchanged (``cached``:
    a replay then rewrites every offsets row, which it may, nobody holding one while waiting)."""

    name: str
    consumer: str
    topics: tuple[str, ...]
    batch_max: int
    tables: tuple[Table, ...]
    apply: Callable[[Settings, Newest], Apply]
    gate: int
    cached: bool


def _watching(apply: Apply, newest: Newest) -> Apply:
    """``apply``, noting per partition the time of the newest view report it applies (what the
    live projection prunes by)."""

    async def watched(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        for r in records:
            if isinstance(r.payload, ViewReported):
                part = (r.position.topic, r.position.partition)
                if part not in newest or r.event.time > newest[part]:
                    newest[part] = r.event.time
        await apply(conn, records)

    return watched


FOLDS: dict[str, Fold] = {
    "assets": Fold(
        "assets", assets.NAME, ("events.asset",), assets.BATCH_MAX,
        (Table("assets", ("asset_id",)), Table("asset_events", ("asset_id", "sequence"))),
        lambda settings, newest: assets.apply, assets.GATE_LOCK, False),
    "engagement": Fold(
        "engagement", engagement.NAME, engagement.TOPICS, engagement.BATCH_MAX,
        (Table("asset_stats", ("asset_id",), frozenset({"updated_at"}),
               "t.view_count <> 0 OR t.like_count <> 0 OR t.watch_seconds_total <> 0"),
         Table("likes", ("engagement_key",)),
         Table("view_sessions", ("asset_id", "viewer_key", "session_id"),
               frozenset({"updated_at"}),
               f"NOT EXISTS (SELECT 1 FROM {{shadow}}.{CUTOFFS} c WHERE c.topic = t.topic "
               "AND c.partition = t.partition AND t.window_start < c.cutoff)")),
        lambda settings, newest: _watching(
            engagement.make_apply(engagement.rule_of(settings)), newest),
        engagement.GATE_LOCK, True),
}
CHOICES = (*FOLDS, "all")


# -- the SQL (pure) ---------------------------------------------------------------------------


def quoted(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def row_hash(columns: Sequence[str]) -> str:
    """The md5 of a row's text (``t``'s ``columns``, in that order) as hex."""
    return f"md5(ROW({', '.join('t.' + quoted(c) for c in columns)})::text)"


def checksum_sql(relation: str, columns: Sequence[str], where: str) -> str:
    """Row count and an order-independent checksum of ``relation``'s rows matching ``where``:
    the sum (numeric: it cannot overflow) of each row's hash cut to 60 bits."""
    return (f"SELECT count(*), coalesce(sum(('x' || substr({row_hash(columns)}, 1, 15))"
            f"::bit(60)::bigint), 0) FROM {relation} AS t WHERE {where}")


def diff_sql(live: str, folded: str, key: Sequence[str], columns: Sequence[str], where: str,
             limit: int) -> str:
    """The first ``limit`` keys (in key order) whose rows differ between ``live`` and
    ``folded``: each key's columns, then whether it is only live, only in the fold."""
    keys = ", ".join(quoted(k) for k in key)
    side = (f"SELECT {', '.join('t.' + quoted(k) for k in key)}, {row_hash(columns)} "
            "AS verify_hash FROM {rel} AS t WHERE " + where)
    return (f"SELECT {keys}, g.verify_hash IS NULL AS only_live, "
            f"l.verify_hash IS NULL AS only_log "
            f"FROM ({side.format(rel=live)}) AS l FULL OUTER JOIN "
            f"({side.format(rel=folded)}) AS g USING ({keys}) "
            f"WHERE l.verify_hash IS DISTINCT FROM g.verify_hash ORDER BY {keys} LIMIT {limit}")


# -- the report (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableResult:
    """One table compared: row counts, whether equal, the first differing keys with how they
    differ (``only live``, ``only in log``, ``differs``)."""

    table: str
    live_rows: int
    log_rows: int
    equal: bool
    first: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        if self.equal:
            return f"{self.table}: {rows(self.live_rows)}, equal"
        keys = ", ".join(f"{k} ({how})" for k, how in self.first)
        if self.live_rows == self.log_rows:
            counts = f"{rows(self.live_rows)} in both, checksums differ"
        else:
            counts = f"live {self.live_rows:,} vs log {rows(self.log_rows)}"
        return f"{self.table}: {counts}; first differing keys: {keys}"


@dataclass(frozen=True)
class VerifyReport:
    tables: tuple[TableResult, ...]
    records: int  # records folded
    seconds: float

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    def lines(self) -> list[str]:
        """One line per table, then the verdict."""
        differ = sum(not t.equal for t in self.tables)
        fold = f"a fresh fold of {self.records:,} records ({self.seconds:.1f}s)"
        verdict = (f"equal: {len(self.tables)} tables match {fold}" if not differ else
                   f"DIFFERENT: {differ} of {len(self.tables)} tables differ from {fold}")
        return [t.line() for t in self.tables] + [verdict]


def rows(n: int) -> str:
    """``n`` rows, in words."""
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def key_text(values: Sequence[object]) -> str:
    """A primary key as reported: its columns joined by ``/``."""
    return "/".join(str(v) for v in values)


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowRun:
    """A run's session (holding its advisory lock), shadow schema, the live schema, the DSN
    and the ``application_name`` its sessions carry (how an interrupted run finds them)."""

    conn: asyncpg.Connection
    shadow: str
    live: str
    dsn: str
    application: str


def _leftover(prefix: str) -> re.Pattern[str]:
    """A run's schemas: ``<prefix><12 hex>``, and that with ``_old`` (a replay's swapped-out
    tables); group 1 is the name its advisory lock is taken on."""
    return re.compile(f"({re.escape(prefix)}[0-9a-f]{{12}})(?:_old)?")


async def drop_leftovers(conn: asyncpg.Connection, prefix: str = SCHEMA_PREFIX) -> list[str]:
    """Drop the schemas of ``prefix`` runs that are gone (their advisory lock is free); their
    names."""
    dropped = []
    pattern = _leftover(prefix)
    names = await conn.fetch("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                             prefix)
    for (name,) in names:
        found = pattern.fullmatch(name)
        if found is None:
            continue
        owner = found.group(1)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS,
                               owner):
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(name)} CASCADE")
                dropped.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS,
                                   owner)
    if dropped:
        log.info("dropped shadow schemas left by runs that ended: %s", dropped)
    return dropped


@asynccontextmanager
async def shadow_run(settings: Settings, prefix: str) -> AsyncIterator[ShadowRun]:
    """A session holding the advisory lock of a new shadow schema name (``<prefix><12 hex>``),
    after dropping what ended runs left. Its schemas are dropped when the block ends, however
    it ends (an error or an interrupt first ends the run's other sessions)."""
    dsn = settings.postgres_dsn.get_secret_value()
    shadow = prefix + secrets.token_hex(6)
    application = f"medialog {prefix.rstrip('_')} {shadow}"
    conn = await asyncpg.connect(dsn, server_settings={"application_name": application})
    try:
        await drop_leftovers(conn, prefix)
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS, shadow)
        live = str(await conn.fetchval("SELECT current_schema()"))
        yield ShadowRun(conn, shadow, live, dsn, application)
    except BaseException:
        conn.terminate()
        await _abandon(dsn, shadow, application)
        raise
    try:
        for name in (shadow, shadow + "_old"):
            await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(name)} CASCADE")
    finally:
        await conn.close()


async def create_shadow(conn: asyncpg.Connection, live: str, shadow: str,
                        tables: Sequence[str]) -> None:
    """The shadow schema: an empty copy of ``tables`` and of ``consumer_offsets`` (``LIKE …
    INCLUDING ALL``, with the live tables' storage parameters, e.g. ``fillfactor``, which LIKE
    does not copy), the cutoffs table and a no-op ``pg_notify`` (its fold wakes no waiter)."""
    s, lv = quoted(shadow), quoted(live)
    await conn.execute(f"CREATE SCHEMA {s}")
    for name in ("consumer_offsets", *tables):
        await conn.execute(f"CREATE TABLE {s}.{quoted(name)} (LIKE {lv}.{quoted(name)} "
                           "INCLUDING ALL)")
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass",
                                      f"{lv}.{quoted(name)}")
        if options:
            await conn.execute(f"ALTER TABLE {s}.{quoted(name)} SET ({', '.join(options)})")
    await conn.execute(f"CREATE TABLE {s}.{CUTOFFS} (topic text, partition integer, "
                       "cutoff timestamptz)")
    await conn.execute(f"CREATE FUNCTION {s}.pg_notify(text, text) RETURNS void "
                       "LANGUAGE sql AS 'SELECT NULL::void'")


async def _snapshot(conn: asyncpg.Connection, live: str, shadow: str,
                    folds: Sequence[Fold]) -> Stored:
    """Create the shadow tables, then copy the live ones and read the stored positions in one
    snapshot; the positions by (consumer, topic, partition)."""
    tables = [t.name for f in folds for t in f.tables]
    await create_shadow(conn, live, shadow, tables)
    async with conn.transaction(isolation="repeatable_read"):
        stored = await positions(conn, live, folds)
        for name in tables:
            await conn.execute(f"CREATE TABLE {quoted(shadow)}.{quoted('live_' + name)} AS "
                               f"SELECT * FROM {quoted(live)}.{quoted(name)}")
    return stored


async def positions(conn: asyncpg.Connection, schema: str, folds: Sequence[Fold]) -> Stored:
    """The positions ``schema``'s ``consumer_offsets`` stores for ``folds``."""
    rows = await conn.fetch(
        f'SELECT consumer, topic, partition, "offset" FROM {quoted(schema)}.consumer_offsets '
        "WHERE consumer = ANY($1::text[])", [f.consumer for f in folds])
    return {(r[0], r[1], r[2]): r[3] for r in rows}


async def targets(settings: Settings, consumer: AIOKafkaConsumer, fold: Fold,
                  stored: Stored | None) -> dict[TopicPartition, int]:
    """Per partition of ``fold``'s topics, the offset to read up to (exclusive): past the stored
    position, or (``stored`` None) the end offset now. Raises ``VerifyError`` if the log does
    not hold every record up to it."""
    tps = await partitions_of(settings, fold.topics)
    if not tps:
        return {}
    starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    wanted = {}
    for tp in tps:
        target = (ends[tp] if stored is None
                  else stored.get((fold.consumer, tp.topic, tp.partition), -1) + 1)
        if target > 0 and starts[tp] > 0:
            raise VerifyError(f"{tp.topic}/{tp.partition} starts at offset {starts[tp]}: the "
                              "records before it are gone, the log cannot be folded again")
        if target > ends[tp]:
            raise VerifyError(f"{fold.consumer} stored offset {target - 1} on "
                              f"{tp.topic}/{tp.partition}, past its end ({ends[tp]}): "
                              "another log?")
        if target > 0:
            wanted[tp] = target
    return wanted


async def batches_up_to(consumer: AIOKafkaConsumer, upto: Mapping[TopicPartition, int],
                        batch_max: int, stall_s: float,
                        since: Mapping[TopicPartition, int] | None = None,
                        ) -> AsyncIterator[list[tuple[Position, bytes]]]:
    """The records of each partition of ``upto`` from its offset in ``since`` (default 0) up to
    its offset in ``upto``, in batches of at most ``batch_max``. Raises ``VerifyError`` when the
    log delivers nothing for ``stall_s``."""
    todo = {tp: o for tp, o in upto.items() if o > (since or {}).get(tp, 0)}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, (since or {}).get(tp, 0))
    quiet_since = time.monotonic()
    while todo:
        fetched = await consumer.getmany(*todo, timeout_ms=500, max_records=batch_max)
        batch = [(Position(m.topic, m.partition, m.offset), m.value or b"")
                 for tp, msgs in fetched.items() for m in msgs if m.offset < todo.get(tp, 0)]
        for tp, msgs in fetched.items():
            if tp in todo and msgs and msgs[-1].offset + 1 >= todo[tp]:
                del todo[tp]
                consumer.pause(tp)
        if batch:
            yield batch
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= stall_s:
            raise VerifyError(f"the log delivered nothing for {stall_s:.0f}s before "
                              f"{ {f'{tp.topic}/{tp.partition}': o for tp, o in todo.items()} }")


async def fold_partitions(consumer: AIOKafkaConsumer, pool: asyncpg.Pool, fold: Fold,
                          apply: Apply, upto: dict[TopicPartition, int],
                          shown: Progress | None, stall_s: float,
                          since: Mapping[TopicPartition, int] | None = None) -> int:
    """Read each partition of ``upto`` from its offset in ``since`` (default 0) up to its offset
    in ``upto`` and apply the records; the records read."""
    total = 0
    async for batch in batches_up_to(consumer, upto, fold.batch_max, stall_s, since):
        await apply_or_skip(pool, fold.consumer, apply, batch)
        total += len(batch)
        if shown is not None:
            shown.advance(len(batch))
    return total


async def compare(conn: asyncpg.Connection, live_rel: str, shadow: str, table: Table,
                  columns_of: str) -> TableResult:
    """``live_rel`` (a relation) against the fold's ``table`` in ``shadow``; ``columns_of``:
    the schema whose ``table`` says which columns there are."""
    columns = [r[0] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
        "AND table_name = $2 ORDER BY ordinal_position", columns_of, table.name)
        if r[0] not in table.ignore]
    s = quoted(shadow)
    where = table.where.format(shadow=s)
    log_rel = f"{s}.{quoted(table.name)}"
    live_rows, live_sum = await conn.fetchrow(checksum_sql(live_rel, columns, where))
    log_rows, log_sum = await conn.fetchrow(checksum_sql(log_rel, columns, where))
    if (live_rows, live_sum) == (log_rows, log_sum):
        return TableResult(table.name, live_rows, log_rows, True)
    rows = await conn.fetch(diff_sql(live_rel, log_rel, table.key, columns, where, FIRST_KEYS))
    n = len(table.key)
    first = tuple((key_text(list(r.values())[:n]),
                   "only live" if r["only_live"] else "only in log" if r["only_log"]
                   else "differs") for r in rows)
    return TableResult(table.name, live_rows, log_rows, False, first)


async def write_cutoffs(conn: asyncpg.Connection, shadow: str, settings: Settings,
                        newest: Newest) -> None:
    """Per partition folded, the window start before which the live projection may have
    pruned a session (what ``Table.where`` of ``view_sessions`` reads)."""
    spent = timedelta(seconds=settings.view_window_s + settings.view_sessions_keep_s)
    await conn.executemany(f"INSERT INTO {quoted(shadow)}.{CUTOFFS} VALUES ($1, $2, $3)",
                           [(t, p, at - spent) for (t, p), at in newest.items()])


async def verify(settings: Settings, which: str, *, stall_s: float = 60.0,
                 progress: Callable[[int], Progress] | None = None) -> VerifyReport:
    """Compare ``which`` (a key of ``FOLDS`` or ``all``) with a fresh fold of the log; see the
    module doc. ``progress`` is called with the number of records to fold once known; the
    ``Progress`` it returns is advanced as they are applied, and closed. Raises
    ``VerifyError`` when the fold cannot be made."""
    began = time.monotonic()
    folds = chosen(which)
    async with shadow_run(settings, SCHEMA_PREFIX) as run:
        stored = await _snapshot(run.conn, run.live, run.shadow, folds)
        newest: Newest = {}
        async with shadow_reader(settings, run) as (pool, consumer):
            records = await fold_log(settings, consumer, pool, folds, stored, newest, progress,
                                     stall_s)
        await write_cutoffs(run.conn, run.shadow, settings, newest)
        results = [await compare(run.conn, f"{quoted(run.shadow)}.{quoted('live_' + t.name)}",
                                 run.shadow, t, run.live) for f in folds for t in f.tables]
    return VerifyReport(tuple(results), records, time.monotonic() - began)


def chosen(which: str) -> list[Fold]:
    """The folds ``which`` (a key of ``FOLDS`` or ``all``) names."""
    return list(FOLDS.values()) if which == "all" else [FOLDS[which]]


@asynccontextmanager
async def shadow_reader(settings: Settings, run: ShadowRun
                        ) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaConsumer]]:
    """A pool whose ``search_path`` is ``run``'s shadow schema (the projections' code applies
    there, and cannot touch a live table) and a consumer in no group."""
    pool = await asyncpg.create_pool(run.dsn, min_size=1, max_size=2, server_settings={
        "search_path": f"{quoted(run.shadow)}, pg_catalog",
        "application_name": run.application})
    consumer = AIOKafkaConsumer(
        bootstrap_servers=[h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()],
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        client_id="medialog-fold", request_timeout_ms=settings.kafka_request_timeout_ms)
    try:
        await consumer.start()
        yield pool, consumer
    except BaseException:
        pool.terminate()
        raise
    finally:
        await consumer.stop()
    await pool.close()


async def fold_log(settings: Settings, consumer: AIOKafkaConsumer, pool: asyncpg.Pool,
                   folds: Sequence[Fold], stored: Stored | None, newest: Newest,
                   progress: Callable[[int], Progress] | None, stall_s: float) -> int:
    """Fold every projection of ``folds`` into the shadow schema from offset 0 up to ``stored``
    (``targets``: None, the end offsets now); the records read."""
    shown: Progress | None = None
    try:
        wanted = [(f, await targets(settings, consumer, f, stored)) for f in folds]
        if progress is not None:
            shown = progress(sum(sum(t.values()) for _, t in wanted))
        records = 0
        for fold, upto in wanted:
            records += await fold_partitions(consumer, pool, fold, fold.apply(settings, newest),
                                             upto, shown, stall_s)
        return records
    finally:
        if shown is not None:
            shown.close()


async def _abandon(dsn: str, shadow: str, application: str) -> None:
    """After an error or an interrupt: end this run's sessions (a query of theirs may still
    run) and drop its schemas. If that fails too, the next run drops them."""
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                               "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                               application)
            for name in (shadow, shadow + "_old"):
                await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(name)} CASCADE")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError):
        log.exception("could not drop %s; the next run will", shadow)
