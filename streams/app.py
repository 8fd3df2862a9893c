"""The Faust application hosting the actors and workers of the selected roles (projections read
the log with their own consumers: ``projections.reader``).

Correctness never rests on Faust's committed offsets or tables (DESIGN.md rule 1): every agent
stores its own position in PostgreSQL with its effects and skips what it already handled. Faust's
offsets only say where to resume reading; they trail ours, so re-delivery is the worst case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from medialog.clickhouse import Analytics
from medialog.config import Role, Settings
from medialog.kafka import COMPRESSION, Lags
from medialog.storage import BlobStore
from medialog.tracking import Position


@dataclass(frozen=True)
class StreamDeps:
    """What agents need, opened by the process before Faust starts."""

    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    analytics: Analytics | None
    lags: Lags  # the projections' lag, reported by /health/ready


class _IdempotentProducer(faust_aiokafka.Producer):
    """Faust's producer with the broker's idempotence on (Faust turns it on only inside
    transactions): a send retried after a lost acknowledgement is not written twice."""

    def _settings_extra(self) -> dict[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


class _Transport(faust_aiokafka.Transport):
    Producer = _IdempotentProducer


class _App(faust.App):
    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def faust_app(s: Settings, group: str) -> faust.App:
    """A Faust app configured from the settings, consumer group ``group``, with no agent; its
    producer is idempotent with acks=all."""
    return _App(
        group,
        broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap.split(",") if h.strip()],
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=str(s.data_dir / "faust"),
        producer_acks=-1,
        producer_compression_type=COMPRESSION,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=s.kafka_heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=s.kafka_rebalance_timeout_ms / 1000,
        broker_commit_interval=1.0,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        topic_allow_declare=False,
    )


def create_faust_app(deps: StreamDeps, roles: set[Role]) -> faust.App:
    app = faust_app(deps.settings, deps.settings.consumer_group_of(roles))
    if "actors" in roles:
        from streams import asset_actor, engagement_actor

        asset_actor.register(app, deps)
        engagement_actor.register(app, deps)
    if "workers" in roles:
        from streams import janitor, promoter, transcoder

        promoter.register(app, deps)
        janitor.register(app, deps)
        transcoder.register(app, deps)
    return app


def raw_topic(app: faust.App, settings: Settings, name: str) -> faust.TopicT:
    """A topic of ours (prefix applied) whose keys and values reach agents as bytes: decoding
    is the envelope's job (``medialog.envelope``), not Faust's."""
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")


def position(event: faust.EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)


async def publish(app: faust.App, topic: str, key: str, values: list[bytes]) -> None:
    """Send and wait for the broker's acknowledgement of each (acks=all), in order."""
    headers = [("content-type", b"application/cloudevents+json")]
    for value in values:
        await app.producer.send_and_wait(topic, key.encode(), value, None, None, headers)
