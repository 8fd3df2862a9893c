"""How projections read the log: one plain aiokafka consumer per projection, in the projection's
own consumer group, handing each ``getmany`` batch to the projection.

Why not a Faust agent, as the actors and workers are: Faust's consumer costs many times the CPU
per record read (per message, two tasks and an ``asyncio.wait``, its stream, its sensors) of
aiokafka's ``getmany``, and more than the PostgreSQL projection's whole apply (see
``bench/consume.py``). Projections read every event of their topics, so Faust was what bounded a
projections process, and how fast one caught up after a restart or a rebuild.

Exactly once as with Faust (docs/architecture.md, rule 2): a batch's effects and its offsets
commit in one transaction of the projection's store, and records at or below the stored offsets
change nothing. Kafka's committed offsets only say where to resume reading: they are committed
(at most every ``COMMIT_EVERY_S``) only for batches applied, so they trail ours and re-delivery
is the worst case. A partition the group never committed starts from its earliest record."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from medialog.config import Settings
from medialog.kafka import Lags, new_consumer
from medialog.runtime.metrics import PROJECTION_BATCH_SECONDS
from medialog.tracking import Position
from projections.runner import Batch

log = logging.getLogger(__name__)
RESTART_AFTER_S = 1.0
COMMIT_EVERY_S = 1.0  # Kafka commits, as Faust's (``broker_commit_interval``): a round trip each


def group_of(settings: Settings, name: str) -> str:
    """A projection's consumer group: every process running it shares its partitions."""
    return f"{settings.consumer_group}.{name}"


async def read(settings: Settings, name: str, topics: Sequence[str], batch_max: int,
               within_s: float, handle: Callable[[Batch], Awaitable[object]], lags: Lags) -> None:
    """Read ``topics`` in ``name``'s group until cancelled, handing ``handle`` each batch (at
    most ``batch_max`` records, what arrived within ``within_s``; each partition's in log
    order), keeping ``lags`` up to date and timing each batch (``PROJECTION_BATCH_SECONDS``).
    ``handle`` must not give up on a batch: the runner's ``*_or_skip`` never raise. Stopping
    (cancelled), it commits the offsets of the batches applied since the last commit; a batch
    cut off rolls back and is read again."""
    batch_seconds = PROJECTION_BATCH_SECONDS.labels(name)
    consumer = new_consumer(settings, group_of(settings, name), topics)
    await consumer.start()
    progress = lags.track(name, consumer)  # next offset per partition, applied
    applied: dict[TopicPartition, int] = {}  # next offset per partition, not yet committed
    committed_at = time.monotonic()
    try:
        while True:
            fetched = await _take(consumer, batch_max, within_s)
            if fetched:
                started = time.perf_counter()
                await handle([(Position(r.topic, r.partition, r.offset), r.value or b"")
                              for records in fetched.values() for r in records])
                batch_seconds.observe(time.perf_counter() - started)
                applied.update({tp: rs[-1].offset + 1 for tp, rs in fetched.items()})
                progress.update(applied)
            if applied and time.monotonic() - committed_at >= COMMIT_EVERY_S:
                await _commit(consumer, name, applied)
                applied, committed_at = {}, time.monotonic()
    finally:
        lags.forget(name)
        if applied:  # stopping: the batches applied since the last commit are not read again
            await _commit(consumer, name, applied)
        await consumer.stop()


async def _take(consumer: AIOKafkaConsumer, batch_max: int, within_s: float
                ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """The next batch: at most ``batch_max`` records, those arriving within ``within_s`` of the
    first (as Faust's ``take_events``: fewer, larger transactions and ClickHouse parts, for a
    latency of at most ``within_s``); nothing if none arrives within ``within_s``."""
    taken: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(
        timeout_ms=int(within_s * 1000), max_records=batch_max)
    count = sum(map(len, taken.values()))
    deadline = time.monotonic() + within_s
    while count and count < batch_max and (left := deadline - time.monotonic()) > 0:
        more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)),
                                      max_records=batch_max - count)
        for tp, records in more.items():
            taken.setdefault(tp, []).extend(records)
            count += len(records)
    return taken


async def _commit(consumer: AIOKafkaConsumer, name: str,
                  offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` to Kafka. Not committed (the partitions went to another member
    meanwhile, the broker is away): only more re-delivery, ours are stored. Cancelled (shutting
    down): the commit in flight ends first, so that it does not outlive the consumer."""
    commit = asyncio.ensure_future(consumer.commit(offsets))
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await asyncio.wait([commit])
        if not commit.cancelled() and commit.exception() is not None:
            log.info("projection %s: offsets not committed to Kafka at shutdown", name)
        raise
    except KafkaError as exc:
        log.info("projection %s: offsets not committed to Kafka (%s); ours are stored", name, exc)


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a projection's reader until cancelled, starting it again after anything unexpected
    (a broker gone for good, a bug): nothing is lost, it resumes from the committed offsets."""
    while True:
        try:
            await run()
        except Exception:
            log.exception("projection %s: reader failed; restarting in %.0fs",
                          name, RESTART_AFTER_S)
        await asyncio.sleep(RESTART_AFTER_S)

