"""The Faust application hosting the actors and workers of the selected roles (projections read
the log with their own consumers: ``projections.reader``). Agents consume through Faust and
write through the process's one publisher (``medialog.runtime.publisher``).

Correctness never rests on Faust's committed offsets or tables (docs/architecture.md, rule 1):
every agent stores its own position in PostgreSQL with its effects and skips what it already
handled. Faust's offsets only say where to resume reading; they trail ours, so re-delivery is
the worst case."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable

import faust

from medialog.config import Settings
from medialog.kafka import COMPRESSION
from medialog.tracking import Position

log = logging.getLogger(__name__)

AGENT_FAILED_EXIT = 70  # EX_SOFTWARE: an agent's body raised
AgentBody = Callable[[faust.StreamT[bytes]], Awaitable[None]]


def faust_app(s: Settings, group: str) -> faust.App:
    """A Faust app configured from the settings, consumer group ``group``, with no agent."""
    return faust.App(
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


def raw_topic(app: faust.App, settings: Settings, name: str) -> faust.TopicT:
    """A topic of ours (prefix applied) whose keys and values reach agents as bytes: decoding
    is the envelope's job (``medialog.envelope``), not Faust's."""
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")


def position(event: faust.EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)


def agent(app: faust.App, channel: faust.TopicT, *, name: str,
          concurrency: int = 1) -> Callable[[AgentBody], AgentBody]:
    """``app.agent`` with one rule: an agent whose body raises ends the process (exit
    ``AGENT_FAILED_EXIT``) before Faust commits the record it was on. Why: Faust logs a crashed
    agent and commits that record, which would be lost silently; ended here, the process is
    started again by its supervisor and reads the record again (every effect is idempotent).
    Transient failures never get here: they are retried where they happen."""

    def register(body: AgentBody) -> AgentBody:
        @functools.wraps(body)
        async def guarded(stream: faust.StreamT[bytes]) -> None:
            try:
                await body(stream)
            except Exception:
                log.critical("agent %s failed: ending the process, whose restart reads the "
                             "record again", name, exc_info=True)
                logging.shutdown()
                os._exit(AGENT_FAILED_EXIT)

        app.agent(channel, name=name, concurrency=concurrency)(guarded)
        return guarded

    return register
