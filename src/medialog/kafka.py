"""The topics and the aiokafka clients: the api's producer and the projections'
consumers. Faust roles get their own clients from ``streams.app``. Only ordinary client APIs,
so any Kafka client reads what these write."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from medialog.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    public: bool  # downstream systems subscribe; kept forever


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("commands.asset", public=False),
    TopicSpec("commands.engagement", public=False),
    TopicSpec("events.asset", public=True),
    TopicSpec("events.engagement", public=True),
    TopicSpec("events.views", public=True),
    TopicSpec("events.access", public=True),
    TopicSpec("jobs.transcode", public=False),
    TopicSpec("jobs.transcode.retry", public=False),
    TopicSpec("jobs.transcode.dead-letter", public=False),
)


def _bootstrap(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


@functools.lru_cache(maxsize=100_000)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioner — Kafka's murmur2 of the key, so a key lands where the Java
    client puts it — with each key's hash cached: keys repeat (an asset's playback reports) and
    the pure-Python hash is a noticeable cost on every message produced."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[_key_hash(key) % len(all_partitions)]


# Every producer's batches (the api's and Faust's): JSON events compress several times over, so
# requests are smaller and their round trips shorter. Every Kafka client reads lz4 (Python's
# aiokafka through cramjam, the ``aiokafka[lz4]`` extra).
COMPRESSION = "lz4"


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """The api's producer: acks=all (a 2xx means the record is on the log) and idempotent (a
    send retried after a lost acknowledgement is written once). ``kafka_linger_ms`` trades each
    write's latency for fewer, larger produce requests."""
    return AIOKafkaProducer(
        partitioner=partition_of,
        bootstrap_servers=_bootstrap(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        compression_type=COMPRESSION,
        max_batch_size=256 * 1024,  # view reports share batches (16 KiB capped them)
        request_timeout_ms=settings.kafka_request_timeout_ms,
        client_id="medialog-api",
    )


def new_consumer(settings: Settings, group: str, topics: Sequence[str]) -> AIOKafkaConsumer:
    """A consumer of ``topics`` (prefix applied) in ``group``, committing nothing by itself and
    starting a partition its group never committed from the earliest record; group timeouts as
    Faust's consumers have them (``streams.app``)."""
    return AIOKafkaConsumer(
        *(settings.topic(t) for t in topics),
        bootstrap_servers=_bootstrap(settings),
        group_id=group,
        client_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=_bootstrap(settings), request_timeout_ms=settings.kafka_request_timeout_ms
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def topic_configs(spec: TopicSpec, replication: int) -> dict[str, str]:
    """A new topic's configs: public topics kept forever; with 3 replicas or more, an acks=all
    write waits for 2 of them (``min.insync.replicas``), so losing one broker loses no
    acknowledged record and writes go on."""
    configs = {"retention.ms": "-1"} if spec.public else {}
    if replication >= 3:
        configs["min.insync.replicas"] = "2"
    return configs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; return the names created. Existing topics are left as they are."""
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(t.name),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=topic_configs(t, settings.topic_replication),
            )
            for t in TOPICS
            if settings.topic(t.name) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        return [t.name for t in wanted]


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (prefix applied), in topic and partition order."""
    names = [settings.topic(t) for t in topics]
    async with _admin(settings) as admin:
        described = await admin.describe_topics(names)
    found = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described
             if d["error_code"] == 0}
    return [TopicPartition(name, p) for name in names for p in found.get(name, ())]


async def missing_topics(settings: Settings) -> list[str]:
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
    return [settings.topic(t.name) for t in TOPICS if settings.topic(t.name) not in existing]


class Lags:
    """How far each consumer (a projection) is behind the end of the partitions it holds: the
    end offset minus the next offset it has yet to apply. A consumer registers with
    :meth:`track` and writes the next offset of each partition into the returned map after
    applying a batch; a partition it has not applied yet counts from its group's committed
    offset (0 when none)."""

    def __init__(self) -> None:
        self._tracked: dict[str, tuple[AIOKafkaConsumer, dict[TopicPartition, int]]] = {}

    def track(self, name: str, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        applied: dict[TopicPartition, int] = {}
        self._tracked[name] = (consumer, applied)
        return applied

    def forget(self, name: str) -> None:
        self._tracked.pop(name, None)

    async def report(self) -> dict[str, Any]:
        """Per consumer: ``{"total": n, "partitions": {"topic/partition": n}}``."""
        out: dict[str, Any] = {}
        for name, (consumer, applied) in list(self._tracked.items()):
            held = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
            ends = await consumer.end_offsets(held) if held else {}
            lags = {}
            for tp in held:
                done = applied.get(tp)
                if done is None:
                    done = await consumer.committed(tp) or 0
                lags[f"{tp.topic}/{tp.partition}"] = max(0, ends[tp] - done)
            out[name] = {"total": sum(lags.values()), "partitions": lags}
        return out
