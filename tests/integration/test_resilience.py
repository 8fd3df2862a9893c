"""One bad record must neither stall a partition nor take its neighbours with it, and a command
that fails for good must not leave its sender waiting (Faust acknowledges what an agent gives
up on). Run against the stack's real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from medialog import outcomes, tracking
from medialog.domain.commands import CommandMeta, RequestUpload
from medialog.envelope import encode_command, encode_event, make_event
from medialog.domain.events import UploadRequested
from medialog.tracking import Position
from projections.runner import apply_or_skip
from streams.actor import handle_or_give_up
from streams.asset_actor import spec as asset_spec

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
    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(), min_size=1, max_size=2)
    try:
        await apply_or_skip(pool, name, apply, batch)
        async with pool.acquire() as conn:
            stored = await tracking.stored_offset(conn, name, "test.topic", 0)
    finally:
        await pool.close()
    # The whole batch failed once (rolled back), then the good records applied one by one.
    assert seen[-2:] == [ids[0], ids[2]]
    assert stored == 2  # the position moved past the poison record


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

    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(), min_size=1, max_size=2)
    try:
        await handle_or_give_up(broken, pool, publish, position, raw)
        async with pool.acquire() as conn:
            outcome = await outcomes.fetch(conn, meta.command_id)
            stored = await tracking.stored_offset(conn, "actor.asset", position.topic, 0)
    finally:
        await pool.close()
    assert outcome.status == "rejected" and outcome.error_code == "COMMAND_FAILED"
    assert stored == 0
