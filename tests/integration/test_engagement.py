"""Engagement on the real embedded stack: playback reports → events.views → the engagement
projection's counters; likes through the engagement actor; duplicates on the log, re-delivered
batches and a rebuild from the log change nothing; engagement is refused, as GET is, on assets
the caller may not see, and reports on assets with nothing to play.

The counting tests need assets that are ready and of their own (exact figures): ``ready_asset``
appends the asset actor's events straight to ``events.asset`` (no media, no transcode, no
duration: the 10 s rule). The access tests PATCH and DELETE, which the asset actor decides, so
they use a real upload the real pipeline transcoded (``uploaded_clip``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from medialog.domain.events import (
    Liked,
    TranscodeCompleted,
    Unliked,
    UploadRequested,
    ViewReported,
)
from medialog.domain.views import Report, replay
from medialog.envelope import decode_event, encode_event, make_event
from medialog.tracking import Position
from projections.postgres.engagement import NAME, EngagementProjection, make_apply, rule_of
from projections.postgres.engagement_rebuild import rebuild
from projections.runner import apply_batch
from tests.kafka_log import read_topic

pytestmark = pytest.mark.integration
READY_TIMEOUT_S = 180  # a real transcode on a shared 2-core machine: generous


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def sid() -> str:
    return "s_" + uuid.uuid4().hex[:16]


@pytest.fixture
async def pg(stack: Any) -> Any:
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    yield conn
    await conn.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """The first truthy result of ``check``, polling; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, f"not true within {timeout}s"
            return result
        await asyncio.sleep(0.1)


async def awaiting_upload(http: Any, stack: Any, owner: str) -> str:
    """An asset whose upload was requested and never made: only its owner and admins see it."""
    payload = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 1000}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload,
                         headers=auth(stack.token(owner, "creator"), Prefer="wait=20")) as r:
        body = await r.json()
    assert r.status == 202 and body["command"]["projected"], body
    return str(body["asset_id"])


async def uploaded_clip(http: Any, stack: Any, owner: str, clip: Path) -> str:
    """A real upload of ``clip``, completed, promoted and transcoded: ``ready`` once this
    returns."""
    headers = auth(stack.token(owner, "creator"), Prefer="wait=20")
    payload = {"filename": clip.name, "content_type": "video/mp4",
               "size_bytes": clip.stat().st_size}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload, headers=headers) as r:
        up = await r.json()
    assert r.status == 202, up
    async with http.put(up["upload_url"], data=clip.read_bytes(), headers=up["headers"]) as r:
        assert r.status == 200, await r.text()
    async with http.post(f"{stack.base_url}/v1/assets/{up['asset_id']}/complete",
                         headers=headers) as r:
        done = await r.json()
    assert r.status == 202 and done["command"]["status"] == "accepted", done

    async def ready() -> bool:
        async with http.get(f"{stack.base_url}/v1/assets/{up['asset_id']}",
                            headers=auth(stack.token(owner, "creator"))) as r:
            status = (await r.json())["status"]
        assert status in ("uploaded", "promoted", "processing", "ready"), status
        return bool(status == "ready")
    await eventually(ready, READY_TIMEOUT_S)
    return str(up["asset_id"])


async def report(http: Any, stack: Any, asset_id: str, body: dict[str, Any],
                 user: str | None = None) -> tuple[int, Any]:
    headers = auth(stack.token(user, "viewer")) if user else {}
    async with http.post(f"{stack.base_url}/v1/assets/{asset_id}/views", json=body,
                         headers=headers) as r:
        return r.status, await r.json()


async def stats_row(pg: Any, asset_id: str) -> dict[str, Any]:
    row = await pg.fetchrow("SELECT view_count, like_count, watch_seconds_total FROM asset_stats "
                            "WHERE asset_id = $1", asset_id)
    return dict(row) if row else {"view_count": 0, "like_count": 0, "watch_seconds_total": 0}


async def settled_reports(pg: Any, asset_id: str, n: int) -> bool:
    """True once ``n`` reports of the asset are folded into its sessions."""
    total = await pg.fetchval("SELECT coalesce(sum(reports), 0) FROM view_sessions "
                              "WHERE asset_id = $1", asset_id)
    return bool(total == n)


# -- the view rule through the whole flow ------------------------------------------------------


async def test_sessions_count_once_past_the_threshold(http, stack, pg):
    asset = await ready_asset(stack, pg)
    counted = [(sid(), None) for _ in range(4)] + [(sid(), f"viewer{i}") for i in range(3)]
    below = [(sid(), None), (sid(), "viewer9")]
    sent = 0
    # Several reports each (3 s deltas): 3, 6, 9 then 12 ≥ 10 s counts on the fourth.
    for round_ in range(4):
        for session, user in counted:
            status, body = await report(http, stack, asset,
                                        {"session_id": session, "watch_seconds": 3,
                                         "position": 3 * round_, "device": "web",
                                         "country": "de"}, user)
            assert status == 202 and uuid.UUID(body["report_id"]), body
            sent += 1
    for session, user in below:
        for _ in range(3):
            assert (await report(http, stack, asset,
                                 {"session_id": session, "watch_seconds": 3}, user))[0] == 202
            sent += 1
    await eventually(lambda: settled_reports(pg, asset, sent))
    stats = await stats_row(pg, asset)
    assert stats["view_count"] == len(counted)
    assert float(stats["watch_seconds_total"]) == 3.0 * sent

    # More reports in counted sessions change no count (already counted in this window).
    for session, user in counted[:3]:
        assert (await report(http, stack, asset,
                             {"session_id": session, "watch_seconds": 30}, user))[0] == 202
        sent += 1
    await eventually(lambda: settled_reports(pg, asset, sent))
    assert (await stats_row(pg, asset))["view_count"] == len(counted)

    rows = await pg.fetch("SELECT session_id, viewer_key, signed_in, counted_at, views, "
                          "watched_ms FROM view_sessions WHERE asset_id = $1", asset)
    by_session = {r["session_id"]: r for r in rows}
    assert len(rows) == len(counted) + len(below)
    for session, user in counted:
        row = by_session[session]
        assert row["views"] == 1 and row["counted_at"] is not None
        assert row["signed_in"] is (user is not None)
        assert row["viewer_key"] == user if user else row["viewer_key"].startswith("anon:")
    for session, _ in below:
        assert by_session[session]["views"] == 0 and by_session[session]["watched_ms"] == 9000

    async with http.get(f"{stack.base_url}/v1/assets/{asset}/stats") as r:
        body = await r.json()
    assert r.status == 200 and body["view_count"] == len(counted)
    assert "liked_by_me" not in body

    # ClickHouse, fed by the same log through its own projection, counts the same sessions.
    totals = await eventually(lambda: analytics_totals(http, stack, asset, reports=sent), 45)
    assert totals["views"] == len(counted)
    assert totals["sessions"] == len(counted) + len(below)
    assert totals["watch_seconds"] == float((await stats_row(pg, asset))["watch_seconds_total"])


async def analytics_totals(http: Any, stack: Any, asset: str, reports: int,
                           owner: str = "creator1") -> dict[str, Any] | None:
    """The asset's ClickHouse totals (default range: the last 7 days) once they hold
    ``reports`` reports; None before."""
    async with http.get(f"{stack.base_url}/v1/analytics/assets/{asset}",
                        headers=auth(stack.token(owner, "creator"))) as r:
        body = await r.json()
    assert r.status == 200, body
    totals: dict[str, Any] = body["totals"]
    return totals if totals["reports"] == reports else None


async def ready_asset(stack: Any, pg: Any, duration_s: float | None = None,
                      owner: str = "creator1") -> str:
    """A fresh ready asset: its upload request and a completed transcode appended to
    ``events.asset`` as the asset actor appends them (no media, no transcode runs), once
    projected. Without ``duration_s`` a view takes the 10 s threshold. Nothing has asked the api
    about it yet, so its asset cache holds nothing stale. The asset actor never saw it: only
    for tests that send it no command."""
    settings, asset, now = stack.settings(), str(uuid.uuid4()), datetime.now(UTC)
    events = [
        UploadRequested(asset_id=asset, owner_id=owner, kind="video", filename="a.mp4",
                        content_type="video/mp4", size_bytes=1000, title="short clip",
                        staging_key=f"uploads/{owner}/{asset}/original.mp4",
                        upload_expires_at=now + timedelta(minutes=15)),
        TranscodeCompleted(asset_id=asset, job_id=str(uuid.uuid4()), renditions=[],
                           master_playlist_key=None, thumbnail_key=None, duration_s=duration_s,
                           width=None, height=None, probe={}),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for seq, payload in enumerate(events, 1):
            event = make_event(payload, subject=asset, event_id=str(uuid.uuid4()), time=now,
                               sequence=seq)
            await producer.send_and_wait(settings.topic("events.asset"), encode_event(event),
                                         key=asset.encode())
    finally:
        await producer.stop()

    async def projected() -> bool:
        return bool(await pg.fetchval(
            "SELECT duration_s IS NOT DISTINCT FROM $2 AND status = 'ready' FROM assets "
            "WHERE asset_id = $1", asset, duration_s))
    await eventually(projected)
    return asset


async def test_short_assets_and_the_duration_cap(http, stack, pg):
    asset = await ready_asset(stack, pg, 12.0)
    status, body = await report(http, stack, asset, {"session_id": sid(), "watch_seconds": 42.5})
    assert status == 400 and body["error"]["details"][0]["max"] == 42.0
    session = sid()
    for _ in range(2):  # half of 12 s makes the view
        assert (await report(http, stack, asset, {"session_id": session, "watch_seconds": 3}))[0] \
            == 202
    await eventually(lambda: settled_reports(pg, asset, 2))
    assert (await stats_row(pg, asset))["view_count"] == 1


# -- re-delivery and duplicates ----------------------------------------------------------------


def event_id(raw: bytes) -> str | None:
    try:
        return str(json.loads(raw)["id"])
    except (ValueError, TypeError, KeyError):
        return None


async def republish(settings: Any, records: list[Any]) -> dict[tuple[str, int], int]:
    """Append the same records again (as a retrying producer would); their new offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        top: dict[tuple[str, int], int] = {}
        for m in records:
            meta = await producer.send_and_wait(m.topic, m.value, key=m.key,
                                                headers=list(m.headers))
            top[(meta.topic, meta.partition)] = max(top.get((meta.topic, meta.partition), -1),
                                                    meta.offset)
        return top
    finally:
        await producer.stop()


async def projected_up_to(pg: Any, offsets: dict[tuple[str, int], int]) -> bool:
    for (topic, partition), offset in offsets.items():
        stored = await pg.fetchval(
            'SELECT "offset" FROM consumer_offsets WHERE consumer = $1 AND topic = $2 '
            "AND partition = $3", NAME, topic, partition)
        if stored is None or stored < offset:
            return False
    return True


async def test_duplicates_and_redelivered_batches_change_nothing(http, stack, pg):
    settings = stack.settings()
    asset = await ready_asset(stack, pg)
    sessions, ids = [sid() for _ in range(3)], set()
    for _ in range(3):
        for session in sessions:
            status, body = await report(http, stack, asset,
                                        {"session_id": session, "watch_seconds": 4})
            assert status == 202
            ids.add(body["report_id"])
    user = "fan1"
    async with http.put(f"{stack.base_url}/v1/assets/{asset}/like",
                        headers=auth(stack.token(user, "viewer"), Prefer="wait=20")) as r:
        body = await r.json()
    assert r.status == 200 and body["like_count"] == 1, body
    await eventually(lambda: settled_reports(pg, asset, 9))
    before = await stats_row(pg, asset)
    assert before["view_count"] == 3 and before["like_count"] == 1
    sessions_before = await pg.fetch("SELECT * FROM view_sessions WHERE asset_id = $1 "
                                     "ORDER BY session_id", asset)

    views = [m for m in await read_topic(settings, "events.views")
             if event_id(m.value) in ids]
    likes = [m for m in await read_topic(settings, "events.engagement")
             if m.key == f"{asset}/{user}".encode()]
    assert len(views) == 9 and len(likes) == 1

    # 1. The same records appended to the log again (at-least-once producer retry).
    new_offsets = await republish(settings, views + likes)
    await eventually(lambda: projected_up_to(pg, new_offsets))
    assert await stats_row(pg, asset) == before
    assert await pg.fetch("SELECT * FROM view_sessions WHERE asset_id = $1 ORDER BY session_id",
                          asset) == sessions_before

    # 2. A batch delivered again at its original positions (consumer re-delivery): through the
    # runner (as the rebuild applies), and through a fresh EngagementProjection, what the live
    # agent runs after a restart (its row cache empty) when it re-reads old offsets.
    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=1,
                                     max_size=2)
    try:
        batch = [(Position(m.topic, m.partition, m.offset), m.value) for m in views + likes]
        assert await apply_batch(pool, NAME, make_apply(rule_of(settings)), batch) == 0
        assert await stats_row(pg, asset) == before
        restarted = EngagementProjection(rule_of(settings))
        assert await restarted.apply_batch(pool, batch) == 0
    finally:
        await pool.close()
    assert await stats_row(pg, asset) == before
    assert await pg.fetch("SELECT * FROM view_sessions WHERE asset_id = $1 ORDER BY session_id",
                          asset) == sessions_before


async def test_the_row_cache_yields_to_whoever_applied_records_since(stack, pg):
    """The live projection remembers the rows it committed; records applied by anyone else in
    between (another worker, a reset of the offsets) make it read them back instead. Private
    topics: the live agent never sees these records."""
    settings, rule = stack.settings(), rule_of(stack.settings())
    views, likes = f"test.views.{uuid.uuid4().hex[:8]}", f"test.likes.{uuid.uuid4().hex[:8]}"
    asset, session, t0 = str(uuid.uuid4()), sid(), datetime(2025, 3, 1, tzinfo=UTC)
    seconds = [0, 3, 6, 9, 7200, 7203, 7206, 7209]  # two windows, each counting on its 4th

    def report(i: int) -> bytes:
        return encode_event(make_event(
            ViewReported(asset_id=asset, owner_id="creator1", viewer_key="v", signed_in=False,
                         session_id=session, watch_seconds=3.0, duration_s=120.0),
            subject=asset, event_id=str(uuid.uuid4()), time=t0 + timedelta(seconds=seconds[i]),
            sequence=None))

    def like(seq: int, liked: bool) -> bytes:
        event = (Liked if liked else Unliked)(asset_id=asset, user_id="u", owner_id="creator1")
        return encode_event(make_event(event, subject=f"{asset}/u", event_id=str(uuid.uuid4()),
                                       time=t0 + timedelta(seconds=seq), sequence=seq))

    log = [(Position(views, 0, i), report(i)) for i in range(len(seconds))]
    log.append((Position(views, 0, len(log)), log[2][1]))  # the same record again on the log
    likes_log = [(Position(likes, 0, i), like(i + 1, i % 2 == 0)) for i in range(3)]
    expected_views = replay(rule, [Report(report_id=e.id, at=e.time, watch_seconds=3.0,
                                          duration_s=120.0)
                                   for e, _ in (decode_event(raw) for _, raw in log)]).state
    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=1,
                                     max_size=2)
    try:
        live = EngagementProjection(rule)
        assert await live.apply_batch(pool, log[:3] + likes_log[:1]) == 4  # cache warm
        assert await live.apply_batch(pool, log[:3]) == 0  # re-delivered: nothing new
        other = make_apply(rule)  # another worker applies the next records of both partitions
        assert await apply_batch(pool, NAME, other, log[3:5] + likes_log[1:2]) == 3
        # The live projection continues after them (re-delivered record 4 first): it must not
        # continue from the states it remembers, which are three records old.
        assert await live.apply_batch(pool, log[4:] + likes_log[2:]) == 5
        assert await stats_row(pg, asset) == {
            "view_count": expected_views.views, "like_count": 1,
            "watch_seconds_total": Decimal(3 * len(seconds))}
        assert expected_views.views == 2

        # Offsets reset and rows gone (as by hand): the projection counts all again, once.
        await forget(pg, asset, [views, likes])
        assert await live.apply_batch(pool, log + likes_log) == len(log) + len(likes_log)
        assert (await stats_row(pg, asset))["view_count"] == 2
        row = await pg.fetchrow("SELECT reports, views FROM view_sessions WHERE asset_id = $1",
                                asset)
        assert tuple(row) == (expected_views.reports, expected_views.views) == (8, 2)
    finally:
        await pool.close()
        await forget(pg, asset, [views, likes])


async def test_spent_sessions_are_pruned_by_log_time_and_counts_stay(stack, pg):
    """Sessions whose window ended ``keep_s`` before the newest report of their partition are
    deleted (and forgotten by the row cache); the counters do not move, and a later report of a
    pruned session opens a new window, as it would have anyway. Private topic, 2025 times."""
    rule = rule_of(stack.settings())
    views = f"test.views.{uuid.uuid4().hex[:8]}"
    asset, t0, keep = str(uuid.uuid4()), datetime(2025, 3, 1, tzinfo=UTC), 600
    spent = timedelta(seconds=rule.window_s + keep)

    def report(offset: int, session: str, at: datetime, watched: float) -> tuple[Position, bytes]:
        return Position(views, 0, offset), encode_event(make_event(
            ViewReported(asset_id=asset, owner_id="creator1", viewer_key="v", signed_in=False,
                         session_id=session, watch_seconds=watched, duration_s=120.0),
            subject=asset, event_id=str(uuid.uuid4()), time=at, sequence=None))

    async def sessions() -> dict[str, int]:
        rows = await pg.fetch("SELECT session_id, reports FROM view_sessions WHERE asset_id = $1",
                              asset)
        return {r["session_id"]: r["reports"] for r in rows}

    pool = await asyncpg.create_pool(stack.settings().postgres_dsn.get_secret_value(),
                                     min_size=1, max_size=2)
    try:
        live = EngagementProjection(rule, keep_s=keep, prune_every_s=0)
        await live.apply_batch(pool, [report(0, "a", t0, 12.0), report(1, "b", t0, 3.0)])
        await live.apply_batch(pool, [report(2, "c", t0 + spent, 3.0)])  # a, b: not yet spent
        assert set(await sessions()) == {"a", "b", "c"}
        await live.apply_batch(pool, [report(3, "c", t0 + spent + timedelta(seconds=1), 3.0)])
        assert await sessions() == {"c": 2}
        assert await stats_row(pg, asset) == {"view_count": 1, "like_count": 0,
                                              "watch_seconds_total": Decimal(21)}
        # a again, after its row went: a new window from nothing (the cache forgot it too)
        await live.apply_batch(pool, [report(4, "a", t0 + spent + timedelta(seconds=2), 12.0)])
        assert await sessions() == {"a": 1, "c": 2}
        assert (await stats_row(pg, asset))["view_count"] == 2
    finally:
        await pool.close()
        await forget(pg, asset, [views])


async def forget(pg: Any, asset: str, topics: list[str]) -> None:
    """Delete the projection's rows of ``asset`` and its offsets on ``topics``."""
    await pg.execute("DELETE FROM consumer_offsets WHERE consumer = $1 AND topic = ANY($2)",
                     NAME, topics)
    for table in ("view_sessions", "likes", "asset_stats"):
        await pg.execute(f"DELETE FROM {table} WHERE asset_id = $1", asset)


# -- likes ---------------------------------------------------------------------------------------


async def set_like(http: Any, stack: Any, asset: str, user: str, like: bool,
                   wait: bool = True) -> tuple[int, Any]:
    headers = auth(stack.token(user, "viewer"), Prefer="wait=20" if wait else "wait=0")
    method = http.put if like else http.delete
    async with method(f"{stack.base_url}/v1/assets/{asset}/like", headers=headers) as r:
        return r.status, await r.json()


async def test_like_twice_is_one_like_and_unlike_removes_it(http, stack, pg):
    asset = await ready_asset(stack, pg)
    first = await set_like(http, stack, asset, "liker", True)
    second = await set_like(http, stack, asset, "liker", True)
    for status, body in (first, second):
        assert status == 200 and body["liked"] is True and body["like_count"] == 1, body
    assert len(first[1]["command"]["events"]) == 1 and second[1]["command"]["events"] == []

    async with http.get(f"{stack.base_url}/v1/assets/{asset}/stats",
                        headers=auth(stack.token("liker", "viewer"))) as r:
        assert (await r.json())["liked_by_me"] is True

    status, body = await set_like(http, stack, asset, "liker", False)
    assert status == 200 and body["liked"] is False and body["like_count"] == 0
    # On the log: one liked, then the unliked (same key: one partition, in this order).
    unliked = body["command"]["events"]
    assert len(unliked) == 1
    records = await read_topic(stack.settings(), "events.engagement")
    key = f"{asset}/liker".encode()
    assert [event_id(m.value) for m in records if m.key == key] == [
        *first[1]["command"]["events"], *unliked]
    status, body = await set_like(http, stack, asset, "never-liked", False)  # a no-op
    assert status == 200 and body["liked"] is False and body["command"]["projected"] is True
    row = await pg.fetchrow("SELECT liked, version FROM likes WHERE engagement_key = $1",
                            f"{asset}/liker")
    assert row["liked"] is False and row["version"] == 2

    # With Prefer: wait=0 the answer is 202 with the command id; the outcome follows.
    status, body = await set_like(http, stack, asset, "liker", True, wait=False)
    assert status == 202 and body["liked"] is True
    async with http.get(f"{stack.base_url}/v1/commands/{body['command_id']}",
                        headers=auth(stack.token("liker", "viewer"), Prefer="wait=20")) as r:
        outcome = await r.json()
    assert outcome["status"] == "accepted" and outcome["projected"] is True
    # Without Prefer, a like waits for its outcome too: a repeat is a no-op answering 200.
    async with http.put(f"{stack.base_url}/v1/assets/{asset}/like",
                        headers=auth(stack.token("liker", "viewer"))) as r:
        body = await r.json()
    assert r.status == 200 and body["liked"] is True and body["command"]["events"] == [], body
    assert "Preference-Applied" not in r.headers


async def test_likes_by_many_users_are_counted(http, stack, pg):
    asset = await ready_asset(stack, pg)
    users = [f"crowd{i}" for i in range(8)]
    results = await asyncio.gather(*(set_like(http, stack, asset, u, True) for u in users))
    assert all(status == 200 and len(body["command"]["events"]) == 1
               for status, body in results), results
    # Each answer waited for its own projection: after all of them, every like is counted.
    status, body = await set_like(http, stack, asset, users[0], False)
    assert status == 200 and len(body["command"]["events"]) == 1, body
    assert body["liked"] is False and body["like_count"] == len(users) - 1
    status, body = await set_like(http, stack, asset, users[1], True)  # liked already
    assert status == 200 and body["command"]["events"] == [], body
    assert body["liked"] is True and body["like_count"] == len(users) - 1
    assert (await stats_row(pg, asset))["like_count"] == len(users) - 1
    async with http.get(f"{stack.base_url}/v1/assets/{asset}/stats") as r:
        assert (await r.json())["like_count"] == len(users) - 1


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, fields", [
    ({"watch_seconds": 5}, ["session_id"]),
    ({"session_id": "short", "watch_seconds": 5}, ["session_id"]),
    ({"session_id": "session-0001", "watch_seconds": -1}, ["watch_seconds"]),
    ({"session_id": "session-0001", "watch_seconds": 601}, ["watch_seconds"]),
    ({"session_id": "session-0001", "watch_seconds": "5"}, ["watch_seconds"]),
    ({"session_id": "session-0001", "watch_seconds": 5, "country": "ZZ"}, ["country"]),
    ({"session_id": "session-0001", "watch_seconds": 5, "position": -1}, ["position"]),
    ({"session_id": "session-0001", "watch_seconds": 5, "device": "x" * 65}, ["device"]),
    ({"session_id": "session-0001", "watch_seconds": 5, "viewer_key": "me"}, ["viewer_key"]),
    ([], [None]),
])
async def test_bad_reports_are_refused_and_append_nothing(http, stack, pg, body, fields):
    asset = await ready_asset(stack, pg)
    status, answer = await report(http, stack, asset, body)
    assert status == 400 and answer["error"]["code"] == "INVALID_VIEW_REPORT"
    assert [d["field"] for d in answer["error"]["details"]] == fields
    # A good report after it: once it is folded, nothing before it was (same key, same order).
    sentinel = sid()
    assert (await report(http, stack, asset, {"session_id": sentinel, "watch_seconds": 1}))[0] \
        == 202
    await eventually(lambda: settled_reports(pg, asset, 1))
    rows = await pg.fetch("SELECT session_id FROM view_sessions WHERE asset_id = $1", asset)
    assert [r["session_id"] for r in rows] == [sentinel]


async def test_malformed_requests(http, stack, pg):
    asset = await ready_asset(stack, pg)
    url = f"{stack.base_url}/v1/assets/{asset}/views"
    async with http.post(url, data=b"{nope") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "MALFORMED_JSON"
    async with http.post(url, json={"session_id": sid(), "watch_seconds": 1},
                         headers={"Authorization": "Bearer not.a.token"}) as r:
        assert r.status == 401  # a bad token is refused, never downgraded to anonymous
    async with http.put(f"{stack.base_url}/v1/assets/{asset}/like") as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "TOKEN_MISSING"


@pytest.mark.parametrize("asset_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_assets_are_404(http, stack, asset_id):
    base = f"{stack.base_url}/v1/assets/{asset_id}"
    token = auth(stack.token("someone", "viewer"))
    calls = [http.post(f"{base}/views", json={"session_id": sid(), "watch_seconds": 1}),
             http.put(f"{base}/like", headers=token), http.delete(f"{base}/like", headers=token),
             http.get(f"{base}/stats")]
    for call in calls:
        async with call as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "ASSET_NOT_FOUND"


async def test_an_asset_others_may_not_see_is_404_and_one_with_nothing_to_play_takes_no_report(
        http, stack, pg):
    """An upload that was never made: GET shows it to its owner and admins only, and so do the
    engagement routes (404 as GET's, not 403); nobody may report a view of it (409
    ASSET_NOT_PLAYABLE for those who see it), it has nothing to play."""
    asset = await awaiting_upload(http, stack, owner="unfinished")
    base = f"{stack.base_url}/v1/assets/{asset}"
    stranger = auth(stack.token("stranger", "viewer"))
    good = {"session_id": sid(), "watch_seconds": 1}
    async with http.get(base, headers=stranger) as r:  # what GET answers: the same, below
        assert r.status == 404 and (await r.json())["error"]["code"] == "ASSET_NOT_FOUND"
    refused = [http.post(f"{base}/views", json=good),
               http.post(f"{base}/views", json=good, headers=stranger),
               http.put(f"{base}/like", headers=stranger),
               http.delete(f"{base}/like", headers=stranger),
               http.get(f"{base}/stats"), http.get(f"{base}/stats", headers=stranger)]
    for call in refused:
        async with call as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "ASSET_NOT_FOUND"
    for who in (auth(stack.token("unfinished", "creator")), auth(stack.token("root", "admin"))):
        async with http.post(f"{base}/views", json=good, headers=who) as r:
            body = await r.json()
        assert r.status == 409 and body["error"]["code"] == "ASSET_NOT_PLAYABLE", body
        async with http.get(f"{base}/stats", headers=who) as r:
            assert r.status == 200 and (await r.json())["view_count"] == 0

    # Every answer came after any append it made (acks=all): the log up to its end offsets
    # holds nothing for this asset, and nothing was folded.
    settings = stack.settings()
    for topic in ("events.views", "commands.engagement"):
        assert [r for r in await read_topic(settings, topic)
                if r.key.decode().startswith(asset)] == []
    assert await pg.fetchval("SELECT count(*) FROM view_sessions WHERE asset_id = $1", asset) == 0
    assert await pg.fetchval("SELECT count(*) FROM command_outcomes WHERE aggregate_id = $1",
                             f"{asset}/stranger") == 0


async def test_private_and_deleted_assets_are_refused(http, stack, pg, clip):
    """Issue #3: a viewer of a private asset is refused; its owner and admins are not. Deleted,
    it takes engagement from no one. A real upload: the asset actor decides the PATCH and the
    DELETE."""
    asset = await uploaded_clip(http, stack, "secretive", clip)
    owner = auth(stack.token("secretive", "creator"), Prefer="wait=20")
    good = {"session_id": sid(), "watch_seconds": 1}
    public_session = sid()
    status, _ = await report(http, stack, asset, {"session_id": public_session,
                                                  "watch_seconds": 1}, user="stranger")
    assert status == 202  # public and ready: anyone may
    async with http.patch(f"{stack.base_url}/v1/assets/{asset}", json={"visibility": "private"},
                          headers=owner) as r:
        assert r.status == 202 and (await r.json())["command"]["projected"] is True
    await eventually(lambda: _stats_status_is(http, stack, asset, "stranger", 404))
    assert (await report(http, stack, asset, good))[1]["error"]["code"] == "ASSET_NOT_FOUND"
    assert (await report(http, stack, asset, good, user="stranger"))[0] == 404
    assert (await set_like(http, stack, asset, "stranger", True))[0] == 404
    assert (await set_like(http, stack, asset, "stranger", False))[0] == 404

    # The owner and an admin may; their reports are the sentinels of the refused ones (same
    # key: once they are folded, nothing refused before them was), and the log holds no like
    # command of the stranger's.
    owners_session, admins_session = sid(), sid()
    status, _ = await report(http, stack, asset,
                             {"session_id": owners_session, "watch_seconds": 1}, "secretive")
    assert status == 202
    async with http.post(f"{stack.base_url}/v1/assets/{asset}/views",
                         json={"session_id": admins_session, "watch_seconds": 1},
                         headers=auth(stack.token("root", "admin"))) as r:
        assert r.status == 202
    status, body = await set_like(http, stack, asset, "secretive", True)
    assert status == 200 and body["like_count"] == 1, body
    await eventually(lambda: settled_reports(pg, asset, 3))
    rows = await pg.fetch("SELECT session_id, viewer_key FROM view_sessions WHERE asset_id = $1 "
                          "ORDER BY viewer_key", asset)
    assert [tuple(r) for r in rows] == [(admins_session, "root"), (owners_session, "secretive"),
                                        (public_session, "stranger")]
    assert [r["user_id"] for r in await pg.fetch("SELECT user_id FROM likes WHERE asset_id = $1",
                                                 asset)] == ["secretive"]
    assert await pg.fetchval("SELECT count(*) FROM command_outcomes WHERE aggregate_id = $1",
                             f"{asset}/stranger") == 0
    assert [r for r in await read_topic(stack.settings(), "commands.engagement")
            if r.key == f"{asset}/stranger".encode()] == []

    async with http.delete(f"{stack.base_url}/v1/assets/{asset}", headers=owner) as r:
        assert r.status == 202 and (await r.json())["command"]["projected"] is True
    await eventually(lambda: _stats_status_is(http, stack, asset, "secretive", 404))
    assert (await report(http, stack, asset, good, user="secretive"))[0] == 404
    assert (await set_like(http, stack, asset, "secretive", False))[0] == 404


async def _stats_status_is(http: Any, stack: Any, asset: str, user: str, status: int) -> bool:
    """Whether ``GET /stats`` answers ``status`` to ``user`` (the api caches asset facts for a
    short while: a deletion takes effect within that time)."""
    async with http.get(f"{stack.base_url}/v1/assets/{asset}/stats",
                        headers=auth(stack.token(user, "creator"))) as r:
        return r.status == status


# -- rebuild from the log (it empties and refills the whole projection) --------------------------


async def test_rebuild_from_the_log_gives_the_same_read_model(http, stack, pg):
    """The rebuild refolds every asset; the comparison covers this test's asset, whose records
    are all known to be applied (other rows depend on what ran before, and on live pruning)."""
    settings = stack.settings()
    asset = await ready_asset(stack, pg)
    for session in (sid(), sid()):
        for _ in range(3):
            assert (await report(http, stack, asset,
                                 {"session_id": session, "watch_seconds": 5}))[0] == 202
    for user, like in (("rebuilder", True), ("fickle", True), ("fickle", False)):
        assert (await set_like(http, stack, asset, user, like))[0] == 200
    await eventually(lambda: settled_reports(pg, asset, 6))

    async def snapshot() -> tuple[list[Any], ...]:
        return (
            [tuple(r) for r in await pg.fetch(
                "SELECT view_count, like_count, watch_seconds_total FROM asset_stats "
                "WHERE asset_id = $1", asset)],
            [tuple(r) for r in await pg.fetch(
                "SELECT engagement_key, liked, version, liked_at FROM likes WHERE asset_id = $1 "
                "ORDER BY 1", asset)],
            [tuple(r) for r in await pg.fetch(
                "SELECT viewer_key, session_id, window_start, watched_ms, counted_at, reports, "
                "views, recent_ids FROM view_sessions WHERE asset_id = $1 ORDER BY 1, 2", asset)],
        )

    before = await snapshot()
    assert before[0] == [(2, 1, Decimal(30))] and len(before[1]) == 2 and len(before[2]) == 2
    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=2,
                                     max_size=3)
    try:
        result = await rebuild(settings, pool)
    finally:
        await pool.close()
    assert result.records >= 8 and result.applied == result.records
    assert await snapshot() == before

    # The live projection carries on after the rebuild.
    assert (await report(http, stack, asset, {"session_id": sid(), "watch_seconds": 11}))[0] \
        == 202
    await eventually(lambda: settled_reports(pg, asset, 7))
    assert (await stats_row(pg, asset))["view_count"] == 3


async def test_a_rebuild_under_another_rule_rederives_the_counts(http, stack, pg):
    """The rule is configuration: folding the log again under another one (``medialog rebuild
    engagement`` with other ``MEDIALOG_VIEW_*``) re-derives every count; the raw reports stay
    as they were, and the configured rule brings the counts back."""
    settings = stack.settings()
    asset = await ready_asset(stack, pg)
    # 3 × 5 s: a view under a 10 s threshold, none under 20 s; 2 × 12 s: a view under either.
    for session, seconds, times in ((sid(), 5, 3), (sid(), 12, 2)):
        for _ in range(times):
            assert (await report(http, stack, asset,
                                 {"session_id": session, "watch_seconds": seconds}))[0] == 202
    await eventually(lambda: settled_reports(pg, asset, 5))
    assert settings.view_threshold_s == 10
    assert await stats_row(pg, asset) == {"view_count": 2, "like_count": 0,
                                          "watch_seconds_total": Decimal(39)}
    pool = await asyncpg.create_pool(settings.postgres_dsn.get_secret_value(), min_size=2,
                                     max_size=3)
    try:
        await rebuild(settings.model_copy(update={"view_threshold_s": 20.0}), pool)
        assert await stats_row(pg, asset) == {"view_count": 1, "like_count": 0,
                                              "watch_seconds_total": Decimal(39)}
        await rebuild(settings, pool)
    finally:
        await pool.close()
    assert (await stats_row(pg, asset))["view_count"] == 2


async def test_a_retried_report_with_its_idempotency_key_counts_once(http, stack, pg):
    asset = await ready_asset(stack, pg)
    session = sid()

    async def send(key: str, seconds: float) -> str:
        async with http.post(f"{stack.base_url}/v1/assets/{asset}/views",
                             json={"session_id": session, "watch_seconds": seconds},
                             headers={"Idempotency-Key": key}) as r:
            body = await r.json()
        assert r.status == 202, body
        return str(body["report_id"])

    first = await send("r1", 4)
    second = await send("r2", 4)
    assert await send("r2", 4) == second != first  # the client retried after a lost answer
    await send("r3", 1)  # same partition: folded after the retry
    await eventually(lambda: _watch_total_is(pg, asset, 9.0))
    # 4 + 4 + 1 = 9 s < 10 s: had the retry counted, 13 s would have made a view.
    assert (await stats_row(pg, asset))["view_count"] == 0


async def _watch_total_is(pg: Any, asset: str, seconds: float) -> bool:
    return float((await stats_row(pg, asset))["watch_seconds_total"]) == seconds
