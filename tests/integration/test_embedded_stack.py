"""The embedded stack itself: S3 with real signatures, Kafka, PostgreSQL, restart durability, and
a start from a private (0700) parent directory.

Uses its own stack (module scope) in its own temp dir, not the suite's session stack, because
it stops and restarts it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from botocore.config import Config

from medialog.config import Settings
from medialog.embedded.processes import EmbeddedError
from medialog.embedded.stack import EmbeddedStack
from tests.faults.cluster import gone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[EmbeddedStack]:
    root = Path(tempfile.mkdtemp(prefix="medialog-embedded-"))
    root.chmod(0o755)  # mkdtemp makes it 0700; the postgres user must traverse it
    st = EmbeddedStack(root / "data")
    try:
        await st.start()
        yield st
    finally:
        await st.stop()
        shutil.rmtree(root, ignore_errors=True)


def s3_client(overrides: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=overrides["s3_endpoint"],
        region_name=overrides["s3_region"],
        aws_access_key_id=overrides["s3_access_key"],
        aws_secret_access_key=overrides["s3_secret_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def presign(overrides: dict[str, Any], method: str, key: str) -> str:
    url: str = s3_client(overrides).generate_presigned_url(
        method, Params={"Bucket": "staging", "Key": key}, ExpiresIn=300)
    return url


async def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, data=data) as r:
        return r.status, await r.read()


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, want: bytes, timeout: float = 20.0) -> bool:
    """Read ``topic`` from the earliest offset until ``want`` shows up or ``timeout`` passes."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            async for msg in consumer:
                if msg.value == want:
                    return True
    except TimeoutError:
        return False
    finally:
        await consumer.stop()
    return False


async def commit_offset(bootstrap: str, topic: str, group: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def committed_offset(bootstrap: str, topic: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(TopicPartition(topic, 0))
        return committed
    finally:
        await consumer.stop()


async def pg_connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, ssl=False)


async def test_overrides_build_settings(stack: EmbeddedStack) -> None:
    overrides = stack.settings_overrides()
    settings = Settings.from_env(**overrides)
    assert settings.kafka_bootstrap == stack.kafka_bootstrap
    assert settings.s3_endpoint == stack.s3_endpoint
    assert settings.clickhouse_url.get_secret_value() == f"chdb://{stack.data_dir / 'chdb'}"
    assert settings.signing_keys.get_secret_value().startswith("k1:")
    for private in ("stack.json", "s3-credentials"):
        assert stat.S_IMODE((stack.data_dir / private).stat().st_mode) == 0o600
    credentials = stack.s3_credentials_file.read_text()
    assert f"aws_access_key_id = {overrides['s3_access_key']}" in credentials
    assert f"aws_secret_access_key = {overrides['s3_secret_key']}" in credentials
    logs = {p.name for p in (stack.data_dir / "logs").iterdir()}
    assert {"seaweedfs.log", "kafka.log", "postgres.log"} <= logs


async def test_second_stack_on_same_dir_is_refused(stack: EmbeddedStack) -> None:
    with pytest.raises(EmbeddedError, match="in use"):
        await EmbeddedStack(stack.data_dir).start()


async def test_s3_presigned_urls_are_checked(stack: EmbeddedStack) -> None:
    overrides = stack.settings_overrides()
    key, body = f"probe/{uuid.uuid4().hex}", b"hello seaweed"
    status, _ = await http("PUT", presign(overrides, "put_object", key), body)
    assert status == 200
    get_url = presign(overrides, "get_object", key)
    assert await http("GET", get_url) == (200, body)
    sig_at = get_url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = "0" if get_url[sig_at] != "0" else "1"
    tampered = get_url[:sig_at] + flipped + get_url[sig_at + 1:]
    assert (await http("GET", tampered))[0] == 403
    assert (await http("GET", f"{overrides['s3_endpoint']}/staging/{key}"))[0] == 403  # anonymous


async def test_kafka_roundtrip(stack: EmbeddedStack) -> None:
    value = uuid.uuid4().bytes
    await produce(stack.kafka_bootstrap, "embedded-probe", value)
    assert await consume_all(stack.kafka_bootstrap, "embedded-probe", value)


async def test_postgres_answers(stack: EmbeddedStack) -> None:
    conn = await pg_connect(stack.postgres_dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_user") == "medialog"
    finally:
        await conn.close()


async def test_restart_keeps_data(stack: EmbeddedStack) -> None:
    """Last in the module: it leaves the fixture's stack stopped."""
    before = stack.settings_overrides()
    marker = uuid.uuid4().hex
    key = f"persist/{marker}"
    await asyncio.to_thread(
        s3_client(before).put_object, Bucket="staging", Key=key, Body=marker.encode())
    await produce(stack.kafka_bootstrap, "embedded-persist", marker.encode())
    await commit_offset(stack.kafka_bootstrap, "embedded-persist", f"g-{marker}", 1)
    conn = await pg_connect(stack.postgres_dsn)
    try:
        await conn.execute("create table if not exists probe (marker text primary key)")
        await conn.execute("insert into probe values ($1)", marker)
    finally:
        await conn.close()

    await stack.stop()
    again = EmbeddedStack(stack.data_dir)  # a new object: secrets and ports come from stack.json
    await again.start()
    try:
        after = again.settings_overrides()
        assert after == before
        obj = await asyncio.to_thread(s3_client(after).get_object, Bucket="staging", Key=key)
        assert obj["Body"].read() == marker.encode()
        assert await consume_all(again.kafka_bootstrap, "embedded-persist", marker.encode())
        assert await committed_offset(again.kafka_bootstrap, "embedded-persist",
                                      f"g-{marker}") == 1
        conn = await pg_connect(again.postgres_dsn)
        try:
            assert await conn.fetchval("select count(*) from probe where marker = $1", marker) == 1
        finally:
            await conn.close()
        pids = [pid for pid in again.pids().values() if pid]
        assert len(pids) == 3
    finally:
        await again.stop()
    await gone(pids, timeout=10)  # all stopped: pg_ctl's wait ends as the server exits


async def test_starts_from_a_private_parent() -> None:
    """A checkout under a 0700 folder (as /root is): as root, PostgreSQL's user cannot enter it,
    so its cluster lives where that user can reach it; the stack starts either way."""
    parent = Path(tempfile.mkdtemp(prefix="medialog-private-"))
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    private = EmbeddedStack(parent / "checkout" / ".medialog")
    outside: Path | None = None
    try:
        await private.start()
        conn = await pg_connect(private.postgres_dsn)
        try:
            assert await conn.fetchval("select current_user") == "medialog"
        finally:
            await conn.close()
        value = uuid.uuid4().bytes
        await produce(private.kafka_bootstrap, "embedded-private", value)
        assert await consume_all(private.kafka_bootstrap, "embedded-private", value)
        pointer = private.data_dir / "postgres.location"
        if os.geteuid() == 0:
            outside = Path(pointer.read_text().strip())
            assert (outside / "data" / "PG_VERSION").is_file()
            assert parent not in outside.parents
        else:
            assert not pointer.exists()
    finally:
        await private.stop()
        shutil.rmtree(parent, ignore_errors=True)
        if outside is not None:
            shutil.rmtree(outside, ignore_errors=True)


async def test_a_data_dir_of_the_previous_embedded_log_is_refused(tmp_path: Path) -> None:
    """Its read models hold positions in a log Kafka does not have: starting on it would skip
    the new log's first records, so it is refused before anything starts."""
    data = tmp_path / "old"
    data.mkdir()
    (data / "stack.json").write_text('{"ports": {"s3": 1, "kafka": 2, "postgres": 3}}')
    with pytest.raises(EmbeddedError, match="make clean"):
        await EmbeddedStack(data).start()
    assert not (data / "kafka").exists() and not (data / "postgres").exists()
