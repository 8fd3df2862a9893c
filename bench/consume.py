"""Reading the log as the projections do (``projections.reader``) against a bare aiokafka
consumer reading the same records, and through a Faust agent, measured in the same run.

Run: ``.venv/bin/python bench/consume.py [--records 100000] [--repeats 3]``.

A fresh embedded stack (SeaweedFS, Kafka, PostgreSQL) gets one topic with as many partitions as
the settings give medialog's own, filled with ``--records`` view reports encoded as the api
encodes them, appended by the api's producer (its batching and compression), keyed so that they
spread over every partition. Then, in turn, ``--repeats`` times each:

* **ours**: ``projections.reader.read`` with the PostgreSQL counters projection's batch size and
  wait, in a new consumer group each time (so from the start), handing each batch to a no-op
  projection: its consumer, its ``getmany`` batches, its positions, its commits;
* **raw baseline**: a bare aiokafka consumer (default fetch settings, as the reader's), assigned
  every partition, taking ``getmany(max_records=BATCH_MAX)`` batches and the same positions of
  each;
* **Faust**: a Faust app configured as medialog's actors and workers are
  (``streams.app.faust_app``) whose one agent takes the records with
  ``take_events(BATCH_MAX, within=BATCH_WITHIN_S)``, as the projections did until they got a
  reader of their own (why they did: compare its CPU a record with ours).

Each side is timed from its first batch to its last record (start-up and group join excluded),
and this process's CPU time meanwhile is divided by the records after that first batch (every
side runs here, Faust's consumer thread included). The best repeat counts. Prints the rates, ours
÷ raw and the CPU a record of each side. Goal: ours ÷ raw ≥ 0.8, because the reader must add
nothing that costs to the client it wraps; exit status 1 if the goal is missed or a side loses
or repeats a record.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # not ./projections.py
try:
    import medialog  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path[:0] = [str(_HERE.parent / "src"), str(_HERE.parent)]

from aiokafka import AIOKafkaConsumer, TopicPartition

from medialog.config import Settings
from medialog.embedded.stack import EmbeddedStack
from medialog.kafka import Lags, new_producer
from medialog.tracking import Position
from projections.postgres.engagement import BATCH_MAX, BATCH_WITHIN_S
from projections.reader import read
from streams.app import faust_app, position, raw_topic

sys.path.append(str(_HERE))  # after the ``projections`` package: bench/ingest.py's helpers
from ingest import create_topic, floor_events, temporary_data_dir

TOPIC = "bench.consume"
READ_LIMIT_S = 300.0
GOAL = 0.8
DISTINCT = 1024  # distinct view reports, appended in turn: what the projections read most


@dataclass
class Reading:
    """One side's read of the topic: checks that every offset comes once, in order."""

    total: int
    next_offset: dict[int, int] = field(default_factory=dict)
    count: int = 0
    first_batch: int = 0  # records in the batch that started the clock: not counted
    first: float | None = None
    cpu_first: float = 0.0
    last: float = 0.0
    cpu_last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, batch: Sequence[tuple[Position, bytes]]) -> None:
        if self.first is None:
            self.first, self.cpu_first = time.perf_counter(), time.process_time()
            self.first_batch = len(batch)
        for pos, _ in batch:
            expected = self.next_offset.get(pos.partition, 0)
            if pos.offset != expected:
                raise SystemExit(f"partition {pos.partition}: read offset {pos.offset}, "
                                 f"expected {expected}")
            self.next_offset[pos.partition] = expected + 1
        self.count += len(batch)
        if self.count >= self.total:
            self.last, self.cpu_last = time.perf_counter(), time.process_time()
            self.done.set()

    def result(self) -> tuple[float, float]:
        """Records/s and CPU µs per record, after the first batch until the last record."""
        assert self.first is not None
        records = self.count - self.first_batch or 1
        return records / (self.last - self.first), (self.cpu_last - self.cpu_first) / records * 1e6


async def fill(settings: Settings, records: int) -> None:
    """``records`` view reports on ``TOPIC``, through the api's producer, each under its own key
    (spread over every partition), the sends in flight together as the api's requests are."""
    topic = await create_topic(settings, TOPIC)
    events = [value for _, value in floor_events(DISTINCT)]
    producer = new_producer(settings)
    await producer.start()
    try:
        for n in range(0, records, DISTINCT):
            sent = [await producer.send(topic, events[i % DISTINCT], key=str(i).encode())
                    for i in range(n, min(n + DISTINCT, records))]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def through_reader(settings: Settings, records: int, run: int) -> Reading:
    reading = Reading(records)

    async def handle(batch: Sequence[tuple[Position, bytes]]) -> None:
        reading.take(batch)

    task = asyncio.create_task(read(settings, f"bench-consume-reader-{run}", (TOPIC,),
                                    BATCH_MAX, BATCH_WITHIN_S, handle, Lags()))
    try:
        await asyncio.wait_for(reading.done.wait(), READ_LIMIT_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return reading


async def through_faust(settings: Settings, records: int, run: int) -> Reading:
    reading = Reading(records)
    app = faust_app(settings, f"bench-consume-faust-{run}")
    topic = raw_topic(app, settings, TOPIC)

    @app.agent(topic, name="bench-consume")
    async def take(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            reading.take([(position(e), e.value) for e in batch])

    await app.start()
    try:
        await asyncio.wait_for(reading.done.wait(), READ_LIMIT_S)
    finally:
        await app.stop()
    return reading


async def through_aiokafka(settings: Settings, records: int) -> Reading:
    reading = Reading(records)
    topic = settings.topic(TOPIC)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.topic_partitions)])
        await consumer.seek_to_beginning()
        began = time.perf_counter()
        while not reading.done.is_set():
            if time.perf_counter() - began > READ_LIMIT_S:
                raise SystemExit(f"aiokafka read {reading.count} records in {READ_LIMIT_S:g} s")
            fetched = await consumer.getmany(timeout_ms=int(BATCH_WITHIN_S * 1000),
                                             max_records=BATCH_MAX)
            batch = [(Position(r.topic, r.partition, r.offset), r.value or b"")
                     for records_of in fetched.values() for r in records_of]
            if batch:
                reading.take(batch)
    finally:
        await consumer.stop()
    return reading


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, tuple[float, float]]:
    async with EmbeddedStack(data_dir) as stack:
        settings = Settings.from_env(**stack.settings_overrides())
        await fill(settings, args.records)
        sides: dict[str, Callable[[int], Any]] = {
            "ours": lambda n: through_reader(settings, args.records, n),
            "raw": lambda _: through_aiokafka(settings, args.records),
            "faust": lambda n: through_faust(settings, args.records, n),
        }
        best: dict[str, tuple[float, float]] = {}
        for n in range(args.repeats):
            for name, side in sides.items():
                rate, cpu = (await side(n)).result()
                print(f"  {name:5} repeat {n + 1}: {rate:9,.0f} records/s, "
                      f"{cpu:6.1f} µs CPU a record", flush=True)
                if name not in best or rate > best[name][0]:
                    best[name] = (rate, cpu)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.records = max(args.records, 2)
    args.repeats = max(args.repeats, 1)
    logging.basicConfig(level=logging.WARNING)
    print(f"{args.records:,} records, read in batches of {BATCH_MAX} within {BATCH_WITHIN_S} s",
          flush=True)
    with temporary_data_dir("medialog-consume-") as data_dir:
        best = asyncio.run(run(args, data_dir))
    for name, what in (("ours", "projections.reader"), ("raw", "bare aiokafka"),
                       ("faust", "Faust agent")):
        rate, cpu = best[name]
        print(f"{what:19} {rate:9,.0f} records/s, {cpu:6.1f} µs CPU a record")
    ratio = best["ours"][0] / best["raw"][0]
    print(f"ratio ours / raw: {ratio:.2f} (goal >= {GOAL}); Faust's CPU a record is "
          f"{best['faust'][1] / best['ours'][1]:.1f}x ours")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
