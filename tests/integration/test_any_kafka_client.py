"""Downstream systems subscribe to ``events.*`` with any Kafka client: a librdkafka-based one
(confluent-kafka) reads ``events.asset`` from the embedded broker and finds CloudEvents 1.0
envelopes, keyed by asset, in per-asset ``sequence`` order."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_engagement import auth, uploaded_clip

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 60.0


def read_with_librdkafka(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """(key, value, headers) of every record of ``topic``, up to the end offsets at the call."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        records = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending:
            assert time.monotonic() < deadline, f"partitions {pending} not read to their end"
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            if msg.offset() < ends[msg.partition()]:
                records.append((msg.key(), msg.value(), dict(msg.headers() or [])))
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        return records
    finally:
        consumer.close()


async def test_librdkafka_reads_cloudevents_in_sequence_order(http, stack, clip):
    owner = f"subscriber-{uuid.uuid4().hex[:8]}"
    asset = await uploaded_clip(http, stack, owner, clip)
    async with http.get(f"{stack.base_url}/v1/assets/{asset}/history",
                        headers=auth(stack.token(owner, "creator"))) as r:
        assert r.status == 200
        history = await r.json()
    s = stack.settings()
    records = await asyncio.to_thread(read_with_librdkafka, s.kafka_bootstrap,
                                      s.topic("events.asset"))
    mine = [(json.loads(value), headers) for key, value, headers in records
            if key == asset.encode()]
    events = [event for event, _ in mine]
    assert len(events) >= 4  # requested, completed, promoted, transcode …, ready
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    for event, headers in mine:
        assert headers["content-type"] == b"application/cloudevents+json"
        assert event["specversion"] == "1.0"
        assert event["subject"] == asset
        assert event["type"].startswith("medialog.asset.")
        assert event["source"].startswith("/medialog/")
        assert uuid.UUID(event["id"])
        assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).tzinfo is not None
        assert event["dataschema"].startswith(
            f"urn:medialog:events:{event['type'].removeprefix('medialog.')}:v")
        assert isinstance(event["data"], dict)
    assert events[0]["type"] == "medialog.asset.upload_requested"
    assert events[0]["actorid"] == owner
    assert events[-1]["type"] == "medialog.asset.transcode_completed"
    assert [e["id"] for e in events] == [e["id"] for e in history["events"]]
