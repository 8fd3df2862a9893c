"""Rebuild the engagement projection from the log (``medialog rebuild engagement``).

The live reader resumes from its group's committed offsets (``projections.reader``), so it cannot
be asked to re-read a topic; the rebuild therefore reads ``events.views`` and
``events.engagement`` itself, with a consumer that joins no group (manual assignment, seek to
offset 0), and applies them through the same ``apply_batch`` and the same tracking rows as the
live projection.

Procedure (safe while the live projection runs; it need not be stopped):

1. take the projection's advisory lock exclusively: it waits for the live batch in flight, and
   live batches wait (each takes it shared in its transaction) until the rebuild is done;
2. remember the stored offsets T (per partition: everything live applied so far), then, in one
   transaction, empty ``asset_stats``, ``likes``, ``view_sessions`` and the projection's
   ``consumer_offsets`` rows;
3. read every partition from offset 0 up to its end offset at the start (at or past T);
4. release the lock. The live projection resumes where it was: what the rebuild already applied
   is at or below the tracking offsets and is skipped, the rest is applied — nothing lost,
   nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from medialog.config import Settings
from medialog.kafka import partitions_of
from medialog.runtime.progress import Progress
from medialog.tracking import Position
from projections.postgres.engagement import GATE_LOCK, NAME, TOPICS, make_apply, rule_of
from projections.runner import Apply, apply_batch

log = logging.getLogger(__name__)


class RebuildStalled(Exception):
    """The log did not deliver up to its end offsets taken at the start."""


@dataclass(frozen=True)
class RebuildReport:
    records: int  # records read from the log
    applied: int  # records applied (duplicates by offset excluded; none expected)
    seconds: float


async def rebuild(settings: Settings, pool: asyncpg.Pool, *, stall_s: float = 60.0,
                  progress: Callable[[int], Progress] | None = None) -> RebuildReport:
    """Empty the engagement projection and fold it again from the log; see the module doc.
    ``progress`` is called with the number of records to read (end minus beginning offsets)
    once known; the ``Progress`` it returns is advanced by each batch read, and closed.

    Raises ``RebuildStalled`` when no record arrives for ``stall_s`` before the end offsets are
    reached (the tables are then partial: run it again)."""
    began = time.monotonic()
    apply = make_apply(rule_of(settings))
    async with pool.acquire() as gate:
        await gate.execute("SELECT pg_advisory_lock($1)", GATE_LOCK)
        try:
            async with gate.transaction():
                rows = await gate.fetch(
                    'SELECT topic, partition, "offset" FROM consumer_offsets WHERE consumer = $1',
                    NAME)
                await gate.execute("TRUNCATE asset_stats, likes, view_sessions")
                await gate.execute("DELETE FROM consumer_offsets WHERE consumer = $1", NAME)
            targets = {TopicPartition(r["topic"], r["partition"]): r["offset"] for r in rows}
            log.info("rebuilding %s up to %s", NAME, {f"{k.topic}/{k.partition}": v
                                                      for k, v in targets.items()})
            records, applied = await _replay(settings, pool, apply, stall_s, progress)
        finally:
            await gate.execute("SELECT pg_advisory_unlock($1)", GATE_LOCK)
    report = RebuildReport(records, applied, time.monotonic() - began)
    log.info("rebuilt %s: %s", NAME, report)
    return report


async def _replay(settings: Settings, pool: asyncpg.Pool, apply: Apply, stall_s: float,
                  progress: Callable[[int], Progress] | None) -> tuple[int, int]:
    tps = await partitions_of(settings, TOPICS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=[h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()],
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        client_id="medialog-rebuild", request_timeout_ms=settings.kafka_request_timeout_ms)
    await consumer.start()
    shown: Progress | None = None
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if progress is not None:
            starts = await consumer.beginning_offsets(tps)
            shown = progress(sum(end - starts[tp] for tp, end in ends.items()))
        for tp in tps:
            consumer.seek(tp, 0)
        last = {tp: -1 for tp in tps}
        total = applied = 0
        quiet_since = time.monotonic()
        while any(last[tp] + 1 < end for tp, end in ends.items()):
            fetched = await consumer.getmany(timeout_ms=500, max_records=2000)
            batch = [(Position(m.topic, m.partition, m.offset), m.value or b"")
                     for tp, msgs in fetched.items() for m in msgs if m.offset < ends[tp]]
            if batch:
                applied += await apply_batch(pool, NAME, apply, batch)
                total += len(batch)
                if shown is not None:
                    shown.advance(len(batch))
                for tp, msgs in fetched.items():
                    last[tp] = msgs[-1].offset
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= stall_s:
                missing = {f"{tp.topic}/{tp.partition}": (last[tp], end - 1)
                           for tp, end in ends.items() if last[tp] + 1 < end}
                raise RebuildStalled(f"stopped before the end of the log (read, wanted): "
                                     f"{missing}; run the rebuild again")
        return total, applied
    finally:
        if shown is not None:
            shown.close()
        await consumer.stop()


async def rebuild_with_settings(settings: Settings, *,
                                progress: Callable[[int], Progress] | None = None
                                ) -> RebuildReport:
    """``medialog rebuild engagement``: the same against the configured services."""
    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=2,
                                     max_size=2)
    try:
        return await rebuild(settings, pool, progress=progress)
    finally:
        await pool.close()
