"""``medialog verify analytics``: the ClickHouse read model (``events``, ``views`` and the rule
recorded in ``view_rule``) compared with a fresh fold of the log. Why: as for PostgreSQL
(``projections.postgres.verify``), a bug, a hand edit or a restore makes a model drift silently.

**Where it runs.** chDB is in-process and one process per path, so the work here takes the
``Analytics`` of the process that owns ClickHouse: ``medialog dev`` (or the api and analytics
roles) runs it as a job of its admin routes, which the CLI calls when the store is in use; with a
ClickHouse server, or a chDB path nobody holds, the CLI runs it itself.

Procedure (correct while the live projection writes; it writes nothing outside its shadow):

1. A shadow database ``verify_<12 hex>`` gets empty copies (``CREATE TABLE … AS``) of the
   projection's tables, and a second client whose default database it is. Databases such runs
   left (a process killed mid-run) are dropped first: one run at a time per store.
2. The live projection's stored positions P are read. Every partition of its topics is read
   from offset 0 up to P by a consumer in no group and applied by the projection's own code
   (``ClickHouseProjection.apply``) through the shadow client: the real fold, which names its
   tables unqualified and so cannot touch a live one.
3. Per table, count and an order-independent checksum (the sum, mod 2⁶⁴, of ``cityHash64`` of
   each row's columns), read with FINAL, live against shadow; on a difference, the first
   differing sort keys (a full outer join on them). ``view_rule``: the latest record, which must
   say "derived with the configured rule".
4. The shadow database is dropped at the end, on error or cancellation too.

**Rows above the stored positions.** Positions are written after their rows, at most every
``POSITIONS_EVERY_S``, and live goes on writing while this runs: live may hold rows past P, never
lack one at or below it. So both sides are compared over the rows at or below P of their
partition (the ``offset`` column). One more case: an event re-published on the log (a producer's
retry) has one ``events`` row per id, the copy inserted last; if live holds a copy past P, its
copy at or below P is gone from FINAL. Such ids (any copy past P, on either side) are left out of
both sides of ``events``: what live writes past P is checked by the next run. ``views`` keeps a
report's first copy only, so it needs no such rule.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import clickhouse_connect
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client

from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.domain.views import ViewRule
from medialog.kafka import partitions_of
from medialog.tracking import Position
from projections.clickhouse.projection import BATCH_SIZE, NAME, TOPICS, ClickHouseProjection
from projections.clickhouse.rederive import rule_json
from projections.postgres.verify import (
    FIRST_KEYS,
    TableResult,
    VerifyError,
    VerifyReport,
    batches_up_to,
)

log = logging.getLogger(__name__)
COPIED = ("events", "views", "projection_positions", "view_rule")  # a shadow's tables
LEFTOVER = re.compile(r"(verify|replay)_[0-9a-f]{12}")  # the shadow databases of runs

Positions = dict[tuple[str, int], int]  # stored offset by (topic, partition)


class Meter(Protocol):
    """How far a fold is: ``medialog.runtime.progress.Progress``, or a job's counter."""

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Table:
    """A compared table and its sort key (what a row is named by)."""

    name: str
    key: tuple[str, ...]


TABLES = (Table("events", ("type", "subject", "id")),
          Table("views", ("asset_id", "viewer_key", "session_id", "id")))


def rule_of(settings: Settings) -> ViewRule:
    return ViewRule(threshold_s=settings.view_threshold_s, window_s=settings.view_window_s)


# -- the shadow database (sync: on the Analytics thread) --------------------------------------


@dataclass(frozen=True)
class Shadow:
    """A run's shadow database, the live one, and a client whose default database is the
    shadow (the fold's)."""

    name: str
    live: str
    client: Client


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def drop_leftovers(client: Client) -> list[str]:
    """Drop the shadow databases runs left; their names."""
    names = [r[0] for r in client.query("SELECT name FROM system.databases").result_rows
             if LEFTOVER.fullmatch(r[0])]
    for name in names:
        client.command(f"DROP DATABASE IF EXISTS {quoted(name)} SYNC")
    if names:
        log.info("dropped shadow databases left by runs that ended: %s", names)
    return names


def create_shadow(client: Client, dsn: str, name: str) -> Shadow:
    """A shadow database ``name`` with empty copies of ``COPIED``, and its client."""
    drop_leftovers(client)
    live = str(client.query("SELECT currentDatabase()").result_rows[0][0])
    client.command(f"CREATE DATABASE {quoted(name)}")
    for table in COPIED:
        client.command(f"CREATE TABLE {quoted(name)}.{table} AS {quoted(live)}.{table}")
    return Shadow(name, live, clickhouse_connect.get_client(dsn=dsn, database=name))


def drop_shadow(client: Client, shadow: Shadow) -> None:
    shadow.client.close()
    client.command(f"DROP DATABASE IF EXISTS {quoted(shadow.name)} SYNC")


@asynccontextmanager
async def shadow_run(analytics: Analytics, settings: Settings,
                     prefix: str) -> AsyncIterator[Shadow]:
    """A new shadow database ``<prefix><12 hex>``, dropped when the block ends, however it ends
    (the drop runs to its end even if the run is cancelled meanwhile)."""
    name = prefix + secrets.token_hex(6)
    shadow = await analytics.run(partial(create_shadow, dsn=settings.clickhouse_dsn, name=name))
    try:
        yield shadow
    finally:
        await asyncio.shield(analytics.run(partial(drop_shadow, shadow=shadow)))


def stored_positions(client: Client, database: str) -> Positions:
    """The positions the projection stored in ``database``."""
    rows = client.query(f"SELECT topic, partition, max(offset) FROM {quoted(database)}."
                        "projection_positions WHERE consumer = {name:String} "
                        "GROUP BY topic, partition", parameters={"name": NAME}).result_rows
    return {(str(t), int(p)): int(o) for t, p, o in rows}


# -- the fold ---------------------------------------------------------------------------------


@asynccontextmanager
async def log_reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer in no group (it commits nothing, moves no live reader)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=[h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()],
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        client_id="medialog-fold", request_timeout_ms=settings.kafka_request_timeout_ms)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def targets(settings: Settings, consumer: AIOKafkaConsumer,
                  stored: Positions | None) -> dict[TopicPartition, int]:
    """Per partition of the projection's topics, the offset to fold up to (exclusive): past its
    ``stored`` position, or (None) the end offset now. Raises ``VerifyError`` if the log does
    not hold every record below it."""
    tps = await partitions_of(settings, TOPICS)
    if not tps:
        return {}
    starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    wanted = {}
    for tp in tps:
        target = ends[tp] if stored is None else stored.get((tp.topic, tp.partition), -1) + 1
        if target > 0 and starts[tp] > 0:
            raise VerifyError(f"{tp.topic}/{tp.partition} starts at offset {starts[tp]}: the "
                              "records before it are gone, the log cannot be folded again")
        if target > ends[tp]:
            raise VerifyError(f"{NAME} stored offset {target - 1} on {tp.topic}/{tp.partition}, "
                              f"past its end ({ends[tp]}): another log?")
        if target > 0:
            wanted[tp] = target
    return wanted


async def fold(analytics: Analytics, shadow: Shadow, projection: ClickHouseProjection,
               consumer: AIOKafkaConsumer, upto: Mapping[TopicPartition, int],
               meter: Meter | None, stall_s: float,
               since: Mapping[TopicPartition, int] | None = None) -> int:
    """Apply each partition of ``upto`` from its offset in ``since`` (default 0) up to its
    offset in ``upto`` into the shadow, in batches of the live projection's size, each one call
    on the ``Analytics`` thread (the api's queries get it between two); then store the
    positions. The records read."""
    total = 0
    async for batch in batches_up_to(consumer, upto, BATCH_SIZE, stall_s, since):
        await analytics.run(partial(_apply, projection, shadow.client, batch))
        total += len(batch)
        if meter is not None:
            meter.advance(len(batch))
    if not total:
        return 0
    await analytics.run(lambda _: projection.flush(shadow.client))
    return total


def _apply(projection: ClickHouseProjection, client: Client,
           batch: Sequence[tuple[Position, bytes]], _live: Client) -> None:
    """A batch into the shadow (``client``), on the Analytics thread."""
    projection.apply(client, batch)


# -- the comparison (sync: on the Analytics thread) -------------------------------------------


def _covered(alias: str = "") -> str:
    """The condition "at or below the bound of its partition" (parameters ``parts``, ``tops``)."""
    at = f"concat({alias}topic, '/', toString({alias}partition))"
    return (f"(has({{parts:Array(String)}}, {at}) AND "
            f"{alias}offset <= arrayElement({{tops:Array(UInt64)}}, "
            f"indexOf({{parts:Array(String)}}, {at})))")


def _where(table: str, live: str, shadow: str) -> str:
    """The rows of ``table`` compared: covered, and for ``events`` not of an id with a copy
    past the bound on either side (see the module doc)."""
    if table != "events":
        return _covered()
    past = f"NOT {_covered()}"
    return (f"{_covered()} AND id NOT IN (SELECT id FROM {quoted(live)}.events WHERE {past} "
            f"UNION ALL SELECT id FROM {quoted(shadow)}.events WHERE {past})")


def columns_of(client: Client, database: str, table: str) -> list[str]:
    return [r[0] for r in client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position", parameters={"db": database, "t": table}).result_rows]


def compare_table(client: Client, shadow: Shadow, table: Table, bound: Positions
                  ) -> TableResult:
    """``table`` live against the shadow over the rows at or below ``bound``."""
    columns = columns_of(client, shadow.live, table.name)
    row_hash = f"cityHash64(tuple({', '.join(quoted(c) for c in columns)}))"
    key = f"arrayStringConcat([{', '.join(f'toString({quoted(k)})' for k in table.key)}], '/')"
    where = _where(table.name, shadow.live, shadow.name)
    params: dict[str, Any] = {"parts": [f"{t}/{p}" for t, p in bound],
                              "tops": list(bound.values())}
    sums = {}
    for side in (shadow.live, shadow.name):
        count, total = client.query(
            f"SELECT count(), sum({row_hash}) FROM {quoted(side)}.{table.name} FINAL "
            f"WHERE {where}", parameters=params).result_rows[0]
        sums[side] = (int(count), int(total or 0))
    (live_rows, live_sum), (log_rows, log_sum) = sums[shadow.live], sums[shadow.name]
    if (live_rows, live_sum) == (log_rows, log_sum):
        return TableResult(table.name, live_rows, log_rows, True)
    side = f"SELECT {key} AS k, {row_hash} AS h FROM __DB__.{table.name} FINAL WHERE {where}"
    rows = client.query(
        f"SELECT k, l.h IS NULL, r.h IS NULL FROM ({side.replace('__DB__', quoted(shadow.live))}) "
        f"AS l FULL OUTER JOIN ({side.replace('__DB__', quoted(shadow.name))}) AS r USING (k) "
        f"WHERE l.h IS DISTINCT FROM r.h ORDER BY k LIMIT {FIRST_KEYS}",
        parameters=params, settings={"join_use_nulls": 1}).result_rows
    first = tuple((str(k), "only in log" if only_log else "only live" if only_live
                   else "differs") for k, only_log, only_live in rows)
    return TableResult(table.name, live_rows, log_rows, False, first)


def compare_rule(client: Client, database: str, rule: ViewRule) -> TableResult:
    """``view_rule``: its latest record must say "every row derived with ``rule``"."""
    rows = client.query(f"SELECT rule, derived FROM {quoted(database)}.view_rule "
                        "ORDER BY step DESC LIMIT 1").result_rows
    wanted = rule_json(rule)
    if rows and rows[0][0] == wanted and rows[0][1]:
        return TableResult("view_rule", 1, 1, True)
    how = "only in log" if not rows else "differs"
    return TableResult("view_rule", len(rows), 1, False, ((wanted, how),))


def compare(client: Client, shadow: Shadow, bound: Positions, rule: ViewRule
            ) -> tuple[TableResult, ...]:
    """Every compared table, live against the shadow, over the rows at or below ``bound``."""
    return (*(compare_table(client, shadow, t, bound) for t in TABLES),
            compare_rule(client, shadow.live, rule))


# -- the run ----------------------------------------------------------------------------------


async def verify(analytics: Analytics, settings: Settings, *, stall_s: float = 60.0,
                 progress: Callable[[int], Meter] | None = None) -> VerifyReport:
    """Compare the live ClickHouse model with a fresh fold of the log up to its stored
    positions; see the module doc. ``progress`` is called with the number of records to fold;
    the ``Meter`` it returns is advanced, and closed. Raises ``VerifyError`` when the fold
    cannot be made."""
    began = time.monotonic()
    rule = rule_of(settings)
    async with shadow_run(analytics, settings, "verify_") as shadow:
        stored = await analytics.run(partial(stored_positions, database=shadow.live))
        async with log_reader(settings) as consumer:
            upto = await targets(settings, consumer, stored)
            meter = None if progress is None else progress(sum(upto.values()))
            try:
                records = await fold(analytics, shadow, ClickHouseProjection(rule), consumer,
                                     upto, meter, stall_s)
            finally:
                if meter is not None:
                    meter.close()
        results = await analytics.run(partial(compare, shadow=shadow, bound=stored, rule=rule))
    return VerifyReport(results, records, time.monotonic() - began)


def report_json(tables: Sequence[TableResult], lines: Sequence[str], **more: object
                ) -> dict[str, Any]:
    """A report as the api's read-model jobs answer it (``responses.ReadModelReport``)."""
    return {"tables": [{"table": t.table, "live_rows": t.live_rows, "log_rows": t.log_rows,
                        "equal": t.equal,
                        "first_differing": [{"key": k, "how": how} for k, how in t.first]}
                       for t in tables],
            "equal": all(t.equal for t in tables), "lines": list(lines), **more}
