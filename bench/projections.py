"""Benchmark of the projections against a raw insert of the same rows, measured in the same run.

    .venv/bin/python bench/projections.py [--events N] [--batch B] [--repeats R]

**ClickHouse half.** Our path is ``ClickHouseProjection.apply`` — exactly what the projection
runs on the ClickHouse thread for each batch its reader takes (``projections.reader``): read the
stored positions, decode the CloudEvents, take the touched sessions' states and already-stored
report ids (from the projection's session cache when the batch continues where it left off, else
read from ClickHouse), fold the view reports through the counting rule, insert ``views`` then
``events``, then (at most every ``POSITIONS_EVERY_S``) the positions. Each repeat starts a new
projection (cold, as a restarted one: its first batch reads the positions). It is fed pre-encoded
CloudEvents batches (a mix of the four public topics; view reports in sessions of several
reports) against chDB in a temporary directory. The RAW BASELINE inserts exactly the rows our
path writes (built beforehand) with clickhouse-connect, batch by batch, into tables of
identical structure (no reads, no positions), each table through one insert context made
once, as ours does (without one, every insert first asks for the table's column types). Both
start from empty tables each repeat; the best repeat counts. Printed: both rates in events/s
and ours ÷ raw (goal ≥ 0.5; exit status 1 when it is not met).

**PostgreSQL half.** Our counters projection
(``projections.postgres.engagement.EngagementProjection``) on the view and like events of the
same workload vs a raw asyncpg ``COPY`` of one row per event; see ``postgres_half``.

Both halves cut the log into batches as large as their reader takes at most (ClickHouse
``BATCH_SIZE``, PostgreSQL ``BATCH_MAX``), the raw side into the same batches.

Not measured: reading the log, which ``bench/consume.py`` measures (~5 µs of CPU a record).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

# This file is named like the ``projections`` package: keep its own directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
try:
    import medialog  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path[:0] = [str(_HERE.parent / "src"), str(_HERE.parent)]

import asyncpg
import clickhouse_connect
from clickhouse_connect.driver.client import Client

from medialog.cli import tune_gc
from medialog.domain import events as e
from medialog.domain.views import Report, ViewRule, replay
from medialog.envelope import decode_event, encode_event, make_event, payload_json
from medialog.migrate import statements
from medialog.resources import schemas_dir
from medialog.tracking import Position
from projections.clickhouse.projection import BATCH_SIZE as CH_BATCH
from projections.clickhouse.projection import ClickHouseProjection
from projections.clickhouse.rows import (
    EVENT_COLUMNS,
    VIEW_COLUMNS,
    ViewFold,
    ViewRecord,
    event_row,
)
from projections.postgres.engagement import BATCH_MAX as PG_BATCH

GOAL = 0.5
PARTITIONS = 4
T0 = datetime(2025, 3, 1, tzinfo=UTC)


# -- the workload ---------------------------------------------------------------------------


def workload(n: int, seed: int = 7) -> list[tuple[Position, bytes]]:
    """``n`` encoded events in log order: 70 % view reports (sessions of 6 reports of 3 s),
    10 % asset events, 10 % likes, 10 % playback issued, over 200 assets."""
    rng = random.Random(seed)
    assets = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(200)]
    offsets = {(t, p): 0 for t in ("events.views", "events.asset", "events.engagement",
                                   "events.access") for p in range(PARTITIONS)}
    sessions: dict[str, tuple[str, int]] = {}
    out: list[tuple[Position, bytes]] = []
    for i in range(n):
        asset = rng.choice(assets)
        at = T0 + timedelta(seconds=i)
        roll = rng.random()
        if roll < 0.7:
            topic, seq = "events.views", None
            session, left = sessions.get(asset) or (uuid.uuid4().hex, 6)
            sessions[asset] = (session, left - 1) if left > 1 else (uuid.uuid4().hex, 6)
            payload: Any = e.ViewReported(
                asset_id=asset, owner_id="creator", viewer_key=f"viewer-{session[:6]}",
                signed_in=True, session_id=session, watch_seconds=3.0, duration_s=120.0,
                position=float(6 - left) * 3, device="web", country="DE")
        elif roll < 0.8:
            topic, seq = "events.asset", i + 1
            payload = e.MetadataUpdated(asset_id=asset, title=f"title {i}")
        elif roll < 0.9:
            topic, seq = "events.engagement", 1
            payload = e.Liked(asset_id=asset, user_id=f"user-{i}", owner_id="creator")
        else:
            topic, seq = "events.access", None
            payload = e.PlaybackIssued(asset_id=asset, owner_id="creator", user_id=f"user-{i}",
                                       expires_at=at + timedelta(hours=1), ip_bound=False,
                                       key_id="k1", download=False)
        key = (topic, zlib.crc32(asset.encode()) % PARTITIONS)
        event = make_event(payload, subject=asset, event_id=str(uuid.uuid4()), time=at,
                           sequence=seq)
        out.append((Position(topic, key[1], offsets[key]), encode_event(event)))
        offsets[key] += 1
    return out


def batches(records: list[Any], size: int) -> list[list[Any]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


# -- ClickHouse half --------------------------------------------------------------------------


def migrate(client: Client) -> None:
    for path in sorted((schemas_dir() / "migrations" / "clickhouse").glob("*.sql")):
        for sql in statements(path.read_text()):
            client.command(sql)
    for table in ("events", "views"):  # the raw side: same structure, nothing attached
        client.command(f"CREATE TABLE raw_{table} AS {table}")


def truncate(client: Client, *tables: str) -> None:
    for table in tables:
        client.command(f"TRUNCATE TABLE {table}")


def raw_rows(work: list[list[tuple[Position, bytes]]], rule: ViewRule
             ) -> list[tuple[list[list[Any]], list[list[Any]]]]:
    """Per batch, the (views rows, events rows) our path writes: built once, outside timing."""
    fold = ViewFold(rule, {}, {})
    out = []
    for batch in work:
        before = len(fold.rows)
        events = []
        for position, raw in batch:
            event, payload = decode_event(raw)
            events.append(event_row(position, event))
            if isinstance(payload, e.ViewReported):
                fold.add(ViewRecord(position, event, payload))
        out.append((fold.rows[before:], events))
    return out


def best_of(runs: list[tuple[Callable[[], None], Callable[[], None]]], repeats: int) -> list[float]:
    """Best wall time of each ``(run, reset)``, the runs alternating within each repeat so that
    both sides see the same background load (the machine may be shared)."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, (fn, reset) in enumerate(runs):
            reset()
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def clickhouse_half(n: int, batch: int, repeats: int) -> tuple[float, float]:
    rule = ViewRule(threshold_s=10, window_s=3600)
    work = batches(workload(n), batch)
    rows = raw_rows(work, rule)
    with tempfile.TemporaryDirectory(prefix="bench-chdb-") as tmp:
        client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/chdb")
        try:
            migrate(client)
            def ours() -> None:
                projection = ClickHouseProjection(rule)  # as a (re)started projection: cold
                for b in work:
                    projection.apply(client, b)

            def raw() -> None:
                contexts = {table: client.create_insert_context(table, columns)
                            for table, columns in (("raw_views", VIEW_COLUMNS),
                                                   ("raw_events", EVENT_COLUMNS))}
                for views, events in rows:
                    for table, data in (("raw_views", views), ("raw_events", events)):
                        if data:  # (the insert empties its context again)
                            client.insert(table, data, context=contexts[table])

            ours_s, raw_s = best_of([
                (ours, lambda: truncate(client, "events", "views", "projection_positions")),
                (raw, lambda: truncate(client, "raw_events", "raw_views")),
            ], repeats)
            # Same rows on both sides (the check that the comparison is fair).
            for table in ("events", "views"):
                mine = client.query(f"SELECT count(), sum(cityHash64(id)) FROM {table} FINAL")
                theirs = client.query(f"SELECT count(), sum(cityHash64(id)) FROM raw_{table}")
                assert mine.result_rows == theirs.result_rows, table
        finally:
            client.close()
    return n / ours_s, n / raw_s


# -- PostgreSQL half --------------------------------------------------------------------------


def postgres_half(n: int, batch: int, repeats: int) -> tuple[float, float]:
    """Our PostgreSQL counters projection — ``EngagementProjection.apply_batch``, exactly what
    the projection runs per batch its reader takes: read the records (the fold's tolerant reader),
    lock positions, take the touched sessions'
    and likes' rows (from the projection's row cache when it can vouch for them, else read),
    fold each session through the counting rule, upsert sessions, likes and ``asset_stats`` and
    advance positions in one statement, commit; each repeat starts a new projection (cold, as a
    restarted projection) — against the RAW BASELINE: an asyncpg ``COPY`` of one row per event (the
    same events, already decoded, the cheapest way to land them in PostgreSQL) into a plain
    table, one transaction per batch, same batches.
    Afterwards the counters ours wrote are checked against the pure rule's fold of the log.
    PostgreSQL is started with ``medialog.embedded.postgres`` in a temporary directory."""
    return asyncio.run(_postgres_half(n, batch, repeats))


async def _postgres_half(n: int, batch: int, repeats: int) -> tuple[float, float]:
    from medialog.embedded.postgres import Postgres
    from medialog.embedded.processes import free_port
    from medialog.migrate import migrate_postgres
    from projections.postgres.engagement import NAME, TOPICS, EngagementProjection

    work = [(pos, raw) for pos, raw in workload(n) if pos.topic in TOPICS]
    chunks = batches(work, batch)
    decoded = [[(pos, decode_event(raw)[0]) for pos, raw in chunk] for chunk in chunks]
    rows = [[(ev.id, ev.type, ev.subject, pos.partition, pos.offset, ev.time, payload_json(ev))
             for pos, ev in chunk] for chunk in decoded]
    root = Path(tempfile.mkdtemp(prefix="medialog-bench-pg-"))
    root.chmod(0o755)
    pg = Postgres(root / "pg", free_port(), root / "pg.log")
    await pg.start()
    try:
        pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            await migrate_postgres(conn)
            await conn.execute(
                "CREATE TABLE raw_events (id text PRIMARY KEY, type text, subject text, "
                "partition int, \"offset\" bigint, time timestamptz, data jsonb)")
        rule = ViewRule(threshold_s=10.0, window_s=3600.0)
        ours_best = raw_best = float("inf")
        for _ in range(repeats):
            async with pool.acquire() as conn:
                await conn.execute("TRUNCATE view_sessions, likes, asset_stats, raw_events")
                await conn.execute("DELETE FROM consumer_offsets WHERE consumer = $1", NAME)
            began = time.perf_counter()
            projection = EngagementProjection(rule)  # as a (re)started projection: cold
            for chunk in chunks:
                await projection.apply_batch(pool, chunk)
            ours_best = min(ours_best, time.perf_counter() - began)
            began = time.perf_counter()
            async with pool.acquire() as conn:
                for chunk_rows in rows:
                    async with conn.transaction():
                        await conn.copy_records_to_table("raw_events", records=chunk_rows)
            raw_best = min(raw_best, time.perf_counter() - began)
        async with pool.acquire() as conn:  # ours folded right (the check that it is a fair race)
            stored = {r[0]: (r[1], r[2], r[3]) for r in await conn.fetch(
                "SELECT asset_id, view_count, like_count, watch_seconds_total FROM asset_stats")}
        assert stored == expected_stats(work, rule), "the projection's counters are wrong"
        await pool.close()
    finally:
        await pg.stop()
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
    return len(work) / ours_best, len(work) / raw_best


def expected_stats(work: list[tuple[Position, bytes]], rule: ViewRule
                   ) -> dict[str, tuple[int, int, Decimal]]:
    """Per asset (views, likes, watch seconds) by the pure rule, session by session."""
    sessions: dict[tuple[str, str, str], list[Report]] = defaultdict(list)
    likes: Counter[str] = Counter()
    for _, raw in work:
        event, payload = decode_event(raw)
        if isinstance(payload, e.ViewReported):
            sessions[(payload.asset_id, payload.viewer_key, payload.session_id)].append(Report(
                report_id=event.id, at=event.time, watch_seconds=payload.watch_seconds,
                duration_s=payload.duration_s))
        elif isinstance(payload, e.Liked):  # one like per user in this workload
            likes[payload.asset_id] += 1
    views: Counter[str] = Counter()
    watched: Counter[str] = Counter()
    for (asset, _, _), reports in sessions.items():
        done = replay(rule, reports)
        views[asset] += done.state.views
        watched[asset] += done.watched_ms
    return {a: (views[a], likes[a], Decimal(watched[a]) / 1000)
            for a in set(views) | set(likes) | set(watched)}


def report(name: str, ours: float, raw: float) -> bool:
    ratio = ours / raw
    print(f"{name}: ours {ours:,.0f} events/s, raw insert {raw:,.0f} events/s, "
          f"ratio {ratio:.2f} (goal >= {GOAL})")
    return ratio >= GOAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per repeat")
    parser.add_argument("--batch", type=int, default=None,
                        help="events per batch (default: what each reader takes at most, "
                        f"{CH_BATCH} for ClickHouse, {PG_BATCH} for PostgreSQL)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    args = parser.parse_args(argv)
    tune_gc()  # as `medialog run`/`dev` do at start-up: same process settings on both sides
    repeats = max(1, args.repeats)
    ok = report("clickhouse", *clickhouse_half(args.events, args.batch or CH_BATCH, repeats))
    pg = postgres_half(args.events, args.batch or PG_BATCH, repeats)
    ok = report("postgresql", *pg) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
