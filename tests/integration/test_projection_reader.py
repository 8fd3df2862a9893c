"""The projections' reader (``projections.reader.read``) on the stack's broker: every record once,
each partition in log order, batches no larger than asked; stopped and started again in the same
group, it resumes after what it committed to Kafka, which is only what it had handed over; two
readers of one projection share its partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from medialog.config import Settings
from medialog.kafka import Lags
from medialog.tracking import Position
from projections.reader import group_of, read

pytestmark = pytest.mark.integration
BATCH_MAX = 7


async def _create(settings: Settings, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic(topic), partitions, 1)])
    finally:
        await admin.close()


async def _produce(settings: Settings, topic: str, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(values):
            await producer.send_and_wait(settings.topic(topic), value, partition=n % 2)
    finally:
        await producer.stop()


async def _committed(settings: Settings, name: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=group_of(settings, name), enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(settings.topic(topic), p))
                for p in range(2)}
    finally:
        await consumer.stop()


class Handed:
    """What the reader handed over, batch by batch, until ``want`` records."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.batches: list[list[tuple[Position, bytes]]] = []
        self.enough = asyncio.Event()

    async def __call__(self, batch: Sequence[tuple[Position, bytes]]) -> None:
        self.batches.append(list(batch))
        if sum(map(len, self.batches)) >= self.want:
            self.enough.set()

    def by_partition(self) -> dict[int, list[tuple[int, bytes]]]:
        out: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
        for batch in self.batches:
            for position, value in batch:
                out[position.partition].append((position.offset, value))
        return out


async def test_the_reader_hands_over_each_record_once_and_resumes_after_its_commits(stack):
    settings = stack.settings()
    topic, name = f"test.reader.{uuid.uuid4().hex[:8]}", f"test.reader.{uuid.uuid4().hex[:8]}"
    await _create(settings, topic, 2)
    first = [f"r{n}".encode() for n in range(30)]
    await _produce(settings, topic, first)

    handed = Handed(len(first))
    task = asyncio.create_task(read(settings, name, (topic,), BATCH_MAX, 0.2, handed, Lags()))
    await asyncio.wait_for(handed.enough.wait(), 60)
    for _ in range(100):  # commits follow within about a second
        if await _committed(settings, name, topic) == {0: 15, 1: 15}:
            break
        await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert max(map(len, handed.batches)) <= BATCH_MAX
    assert handed.by_partition() == {p: [(n, first[2 * n + p]) for n in range(15)] for p in (0, 1)}
    assert await _committed(settings, name, topic) == {0: 15, 1: 15}

    more = [f"s{n}".encode() for n in range(6)]
    await _produce(settings, topic, more)
    again = Handed(len(more))
    task = asyncio.create_task(read(settings, name, (topic,), BATCH_MAX, 0.2, again, Lags()))
    await asyncio.wait_for(again.enough.wait(), 60)
    await asyncio.sleep(0.5)  # anything re-delivered beyond the new records would show by now
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert again.by_partition() == {p: [(15 + n, more[2 * n + p]) for n in range(3)]
                                    for p in (0, 1)}


async def test_a_reader_cancelled_while_handling_commits_nothing_of_that_batch(stack):
    """Kafka's offsets never run ahead of what a projection applied: a batch interrupted (a
    shutdown while it is applied) is read again by the next reader of the group."""
    settings = stack.settings()
    topic, name = f"test.reader.{uuid.uuid4().hex[:8]}", f"test.reader.{uuid.uuid4().hex[:8]}"
    await _create(settings, topic, 2)
    values = [f"r{n}".encode() for n in range(4)]
    await _produce(settings, topic, values)

    started = asyncio.Event()

    async def never_done(batch: Sequence[tuple[Position, bytes]]) -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(read(settings, name, (topic,), BATCH_MAX, 0.2, never_done, Lags()))
    await asyncio.wait_for(started.wait(), 60)
    await asyncio.sleep(1.5)  # past the commit interval: nothing was handed back, nothing commits
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await _committed(settings, name, topic) == {0: None, 1: None}

    handed = Handed(len(values))
    task = asyncio.create_task(read(settings, name, (topic,), BATCH_MAX, 0.2, handed, Lags()))
    await asyncio.wait_for(handed.enough.wait(), 60)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert handed.by_partition() == {p: [(n, values[2 * n + p]) for n in range(2)]
                                     for p in (0, 1)}


async def test_two_readers_of_one_projection_share_its_partitions(stack):
    """As two processes running the same projection: once both are in the group, each partition
    is read by one of them, and every record reaches one of them once."""
    settings = stack.settings()
    topic, name = f"test.reader.{uuid.uuid4().hex[:8]}", f"test.reader.{uuid.uuid4().hex[:8]}"
    await _create(settings, topic, 2)
    readers = (Handed(10**9), Handed(10**9))
    tasks = [asyncio.create_task(read(settings, name, (topic,), BATCH_MAX, 0.2, h, Lags()))
             for h in readers]
    values = [f"r{n}".encode() for n in range(40)]
    try:
        for n in range(30):  # until the group has settled: a partition each
            await _produce(settings, topic, [f"settle{n}-{p}".encode() for p in (0, 1)])
            await asyncio.sleep(1)
            last = [{pos.partition for pos, _ in h.batches[-1]} if h.batches else set()
                    for h in readers]
            if len(last[0]) == len(last[1]) == 1 and last[0] != last[1]:
                break
        else:
            pytest.fail("the two readers never held a partition each")
        await _produce(settings, topic, values)
        for _ in range(100):
            handed = [[(p, v) for p, records in h.by_partition().items()
                       for _, v in records if v in values] for h in readers]
            if sum(map(len, handed)) >= len(values):
                break
            await asyncio.sleep(0.1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    partitions = [{p for p, _ in h} for h in handed]
    assert sorted(map(len, partitions)) == [1, 1] and partitions[0] != partitions[1]
    by_partition = {p: [v for h in handed for q, v in h if q == p] for p in (0, 1)}
    assert by_partition == {p: values[p::2] for p in (0, 1)}
