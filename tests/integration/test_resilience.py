"""One bad record must neither stall a partition nor take its neighbours with it, a command
that fails for good must not leave its sender waiting (Faust acknowledges what an agent gives
up on), and a command handled again after a crash publishes what it published before. Run
against the stack's real PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import boto3
import pytest

from medialog import outcomes, tracking
from medialog.domain.commands import CommandMeta, CompleteUpload, RequestUpload
from medialog.domain.events import UploadCompleted, UploadRequested
from medialog.envelope import decode_event, encode_command, encode_event, make_event
from medialog.storage import BlobStore
from medialog.tracking import Position
from projections.runner import apply_batch, apply_or_skip
from streams.actors.asset import spec as asset_spec
from streams.actors.runner import handle_command, handle_or_give_up

pytestmark = pytest.mark.integration
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def upload_event(asset_id: str) -> bytes:
    payload = UploadRequested(asset_id=asset_id, owner_id="o", kind="video", filename="f.mp4",
                              content_type="video/mp4", size_bytes=1, title="t",
                              staging_key="k", upload_expires_at=WHEN)
    return encode_event(make_event(payload, subject=asset_id, event_id=str(uuid.uuid4()),
                                   time=WHEN, sequence=1))


async def test_a_poison_record_is_passed_over_and_its_neighbours_applied(stack):
    name = f"test.resilience.{uuid.uuid4().hex[:8]}"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    poison = ids[1]
    seen: list[str] = []

    async def apply(conn, records):
        for r in records:
            if r.payload.asset_id == poison:
                raise RuntimeError("a record this projection cannot apply")
            seen.append(r.payload.asset_id)

    batch = [(Position("test.topic", 0, i), upload_event(a)) for i, a in enumerate(ids)]
    pool = await asyncpg.create_pool(
        stack.settings().postgres_dsn.get_secret_value(), min_size=1, max_size=2
    )
    try:
        await apply_or_skip(pool, name, apply, batch)
        async with pool.acquire() as conn:
            stored = await tracking.stored_offset(conn, name, "test.topic", 0)
    finally:
        await pool.close()
    # The whole batch failed once (rolled back), then the good records applied one by one.
    assert seen[-2:] == [ids[0], ids[2]]
    assert stored == 2  # the position moved past the poison record


async def test_two_consumers_of_a_new_partition_apply_its_first_batch_once(stack):
    """During a rebalance two workers may briefly get the same partition. Its first batch has no
    offsets row yet to lock: the second must wait for the first and then skip the batch, not
    apply it a second time (counters would move twice)."""
    name = f"test.first-batch.{uuid.uuid4().hex[:8]}"
    batch = [(Position("test.topic", 0, i), upload_event(str(uuid.uuid4()))) for i in range(3)]
    arrived = [asyncio.Event(), asyncio.Event()]

    def apply_as(me: int):
        async def apply(conn, records):
            arrived[me].set()
            with contextlib.suppress(TimeoutError):  # the other would be here already if it
                await asyncio.wait_for(arrived[1 - me].wait(), 2.0)  # were not kept waiting
            await conn.execute(
                "INSERT INTO test_applied (name, n) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET n = test_applied.n + EXCLUDED.n",
                name, len(records))
        return apply

    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=2, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS test_applied "
                               "(name text PRIMARY KEY, n integer NOT NULL)")
        applied = await asyncio.gather(
            *(apply_batch(pool, name, apply_as(i), batch) for i in (0, 1)))
        async with pool.acquire() as conn:
            total = await conn.fetchval("SELECT n FROM test_applied WHERE name = $1", name)
            stored = await tracking.stored_offset(conn, name, "test.topic", 0)
    finally:
        await pool.close()
    assert sorted(applied) == [0, 3] and total == 3
    assert stored == 2


async def test_a_command_that_fails_for_good_is_recorded_as_rejected(stack):
    actor = asset_spec("events.asset", blobs=None)
    broken = type(actor)(**{**{f: getattr(actor, f) for f in ("name", "events_topic", "initial",
                                                              "fold", "version", "prepare")},
                           "decide": lambda state, cmd: 1 / 0})
    asset_id = str(uuid.uuid4())
    meta = CommandMeta(command_id=str(uuid.uuid4()), issued_at=WHEN, actor_id="u",
                       actor_roles=("creator",), correlation_id="r")
    cmd = RequestUpload(asset_id=asset_id, owner_id="u", kind="video", filename="f.mp4",
                        content_type="video/mp4", size_bytes=1, title="ttt", staging_key="k",
                        upload_expires_at=WHEN)
    raw = encode_command(cmd, aggregate_id=asset_id, meta=meta)
    position = Position(f"test.commands.{uuid.uuid4().hex[:8]}", 0, 0)

    async def publish(topic, key, values):
        raise AssertionError("nothing may be published for a failed command")

    pool = await asyncpg.create_pool(
        stack.settings().postgres_dsn.get_secret_value(), min_size=1, max_size=2
    )
    try:
        await handle_or_give_up(broken, pool, publish, position, raw)
        async with pool.acquire() as conn:
            outcome = await outcomes.fetch(conn, meta.command_id)
            stored = await tracking.stored_offset(conn, "actor.asset", position.topic, 0)
    finally:
        await pool.close()
    assert outcome.status == "rejected" and outcome.error_code == "COMMAND_FAILED"
    assert stored == 0


async def test_a_command_decided_on_s3_and_published_before_a_crash_publishes_the_same_again(
        stack):
    """CompleteUpload is decided on a HeadObject of the staging object. The process dies after
    the events are on the log and before the snapshot is stored; by the time the command is
    handled again the object is gone (the promoter moved it). The same UploadCompleted must be
    published again, and the asset must be uploaded, not refused with UPLOAD_MISSING."""
    settings = stack.settings()
    blobs = BlobStore(settings)
    actor = asset_spec("events.asset", blobs)
    asset_id, key = str(uuid.uuid4()), f"test-crash/{uuid.uuid4()}"
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=settings.s3_access_key.get_secret_value(),
                      aws_secret_access_key=settings.s3_secret_key.get_secret_value())
    await asyncio.to_thread(s3.put_object, Bucket=settings.bucket_staging, Key=key,
                            Body=b"\x00" * 64, ContentType="video/mp4")
    topic = f"test.commands.{uuid.uuid4().hex[:8]}"
    owner = "u-crash"

    def command(offset: int, cmd: object) -> tuple[Position, bytes, str]:
        meta = CommandMeta(command_id=str(uuid.uuid4()), issued_at=WHEN, actor_id=owner,
                           actor_roles=("creator",), correlation_id="r")
        return (Position(topic, 0, offset), encode_command(cmd, aggregate_id=asset_id, meta=meta),
                meta.command_id)

    request = command(0, RequestUpload(
        asset_id=asset_id, owner_id=owner, kind="video", filename="f.mp4",
        content_type="video/mp4", size_bytes=64, title="ttt", staging_key=key,
        upload_expires_at=WHEN + timedelta(hours=1)))
    complete = command(1, CompleteUpload(requested_by=owner, is_admin=False, max_bytes=1 << 20,
                                         now=WHEN, grace_s=0))
    published: list[list[bytes]] = []

    async def publish(topic_name: str, key_: str, values: list[bytes]) -> None:
        published.append(values)

    async def publish_then_die(topic_name: str, key_: str, values: list[bytes]) -> None:
        published.append(values)
        raise RuntimeError("the process died after the broker acknowledged")

    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=1,
                                     max_size=2)
    try:
        await handle_command(actor, pool, publish, request[0], request[1])
        with pytest.raises(RuntimeError, match="died"):
            await handle_command(actor, pool, publish_then_die, complete[0], complete[1])
        await blobs.delete(settings.bucket_staging, key)
        assert await blobs.head(settings.bucket_staging, key) is None
        await handle_command(actor, pool, publish, complete[0], complete[1])
        await handle_command(actor, pool, publish, complete[0], complete[1])  # handled: skipped
        async with pool.acquire() as conn:
            outcome = await outcomes.fetch(conn, complete[2])
            state = await conn.fetchval("SELECT state->>'status' FROM actor_snapshots "
                                        "WHERE actor = 'asset' AND aggregate_id = $1", asset_id)
            left = await conn.fetchval("SELECT count(*) FROM actor_decisions "
                                       "WHERE command_id = $1", complete[2])
    finally:
        await pool.close()
    assert len(published) == 3, "request, complete (then the crash), complete again"
    assert published[2] == published[1]
    event, payload = decode_event(published[2][0])
    assert isinstance(payload, UploadCompleted) and payload.size_bytes == 64
    assert outcome.status == "accepted" and outcome.error_code is None
    assert outcome.event_ids == [event.id]
    assert state == "uploaded"
    assert left == 0
