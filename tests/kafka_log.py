"""Reading a topic the way a downstream subscriber would: every record from the beginning up to
the end offsets at the call (the broker's end offsets are exact)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from medialog.kafka import partitions_of

READ_TIMEOUT_S = 60


async def read_topic(settings: Any, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` (prefix applied), each partition's in log order, up to the end
    offsets read when called: whatever was acknowledged before the call is in the list."""
    partitions = await partitions_of(settings, [topic])
    assert partitions, f"no topic {settings.topic(topic)}"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp, start in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(tp, start)  # explicit: seek_to_beginning races assign's own reset
        deadline = time.monotonic() + READ_TIMEOUT_S
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                assert time.monotonic() < deadline, f"{tp} not read up to {ends[tp]}"
                batch = await consumer.getmany(tp, timeout_ms=500)
                records += [r for r in batch.get(tp, []) if r.offset < ends[tp]]
    finally:
        await consumer.stop()
    return records
