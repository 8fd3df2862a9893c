"""Three Kafka brokers (``medialog dev --brokers 3``, a stack of its own: slow): the topics are
replicated to all three with ``min.insync.replicas=2``, and when the broker leading an asset's
partition is SIGKILLed in the middle of a flood of view reports, the api keeps answering (at
worst a short burst of 503 LOG_UNAVAILABLE while a new leader is elected) and every report it
answered 202 is on ``events.views`` exactly once: acks=all with two replicas in sync loses
nothing acknowledged, and the idempotent producer's retries duplicate nothing. A data dir keeps
the broker count it was made with."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from medialog.embedded.processes import EmbeddedError
from medialog.embedded.stack import EmbeddedStack
from medialog.envelope import decode_event
from medialog.kafka import partition_of
from tests.conftest import DevStack, running_stack
from tests.integration.test_engagement import ready_asset
from tests.kafka_log import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPORTS = 2000  # view reports in the flood
CLIENTS = 16  # concurrent sessions sending them
KILL_AFTER = 400  # reports answered before the leader is killed


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevStack]:
    with running_stack("medialog-3brokers-", args=("--brokers", "3")) as dev:
        yield dev


def broker_pid(cluster: DevStack, node: int) -> int:
    """The pid of Kafka node ``node``, from the pid file the embedded broker writes."""
    root = cluster.data_dir / ("kafka" if node == 1 else f"kafka-{node}")
    return int((root / "kafka.pid").read_text())


async def leader_of(settings: Any, topic: str, key: bytes) -> tuple[int, int, list[int]]:
    """The partition ``key`` goes to, its leader's node id and its replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([settings.topic(topic)])
    finally:
        await admin.close()
    partitions = {p["partition"]: p for p in described["partitions"]}
    ids = sorted(partitions)
    chosen = partition_of(key, ids, ids)
    return chosen, partitions[chosen]["leader"], list(partitions[chosen]["replicas"])


async def test_topics_are_replicated_three_times(cluster):
    settings = cluster.settings()
    assert cluster.state()["kafka_brokers"] == 3
    assert len(settings.kafka_bootstrap.split(",")) == 3
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(
            [settings.topic("events.views"), settings.topic("jobs.transcode")])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic("events.views"))])
    finally:
        await admin.close()
    for topic in described:
        assert topic["error_code"] == 0, topic
        assert all(len(p["replicas"]) == 3 for p in topic["partitions"]), topic
    entries = {name: value for name, value, *_ in configs[0].resources[0][4]}
    assert entries["min.insync.replicas"] == "2"
    assert entries["retention.ms"] == "-1"


async def test_a_data_dir_keeps_its_broker_count(tmp_path):
    data = tmp_path / "made-with-3"
    data.mkdir()
    (data / "stack.json").write_text(json.dumps(
        {"ports": {"s3": 1, "kafka": 2, "postgres": 3}, "kafka_cluster_id": "x",
         "kafka_brokers": 3}))
    with pytest.raises(EmbeddedError, match="made with 3 Kafka broker"):
        await EmbeddedStack(data, kafka_brokers=1).start()
    assert not (data / "kafka").exists()


async def test_killing_a_broker_loses_no_acknowledged_report(cluster):
    settings = cluster.settings()
    pg = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        asset = await ready_asset(cluster, pg)
    finally:
        await pg.close()
    partition, leader, replicas = await leader_of(settings, "events.views", asset.encode())
    assert sorted(replicas) == [1, 2, 3]
    victim = broker_pid(cluster, leader)

    url = f"{cluster.base_url}/v1/assets/{asset}/views"
    accepted: list[str] = []
    refused: collections.Counter[tuple[int, str]] = collections.Counter()
    accepted_after_kill = 0
    killed_at: float | None = None
    sent = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal sent, killed_at, accepted_after_kill
        session = "s_" + uuid.uuid4().hex[:16]
        while sent < REPORTS:
            sent += 1
            async with http.post(url, json={"session_id": session, "watch_seconds": 1}) as r:
                try:
                    body = await r.json(content_type=None)
                except ValueError:  # not the api's JSON: counted under "?"
                    body = {}
            if r.status == 202:
                accepted.append(body["report_id"])
                accepted_after_kill += killed_at is not None
            else:
                refused[(r.status, body.get("error", {}).get("code", "?"))] += 1
            if killed_at is None and len(accepted) >= KILL_AFTER:
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)

    began = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    flood_s = time.monotonic() - began
    assert killed_at is not None

    records = await read_topic(settings, "events.views")
    on_log = collections.Counter(decode_event(r.value)[0].id for r in records)
    lost = [i for i in accepted if on_log[i] == 0]
    duplicated = [i for i in accepted if on_log[i] > 1]
    summary = (f"sent {sent}, 202 {len(accepted)} ({accepted_after_kill} after killing node "
               f"{leader}, the leader of partition {partition}), refused {dict(refused)}, "
               f"found on the log {sum(on_log[i] > 0 for i in accepted)}, lost {len(lost)}, "
               f"duplicated {len(duplicated)}, flood {flood_s:.1f}s, "
               f"{flood_s - (killed_at - began):.1f}s after the kill")
    print(summary)
    assert len(accepted) + sum(refused.values()) == sent == REPORTS, summary
    assert set(refused) <= {(503, "LOG_UNAVAILABLE")}, summary
    assert accepted_after_kill > 0, summary
    assert len(set(accepted)) == len(accepted), summary
    assert not lost and not duplicated, summary
    assert await one_more_report(url) == 202, "the api stopped taking reports"


async def one_more_report(url: str) -> int:
    """The status of one more report once the flood is over: writes go on on two brokers."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.post(url, json={"session_id": "s_" + uuid.uuid4().hex[:16],
                                         "watch_seconds": 1}) as r:
            return r.status
