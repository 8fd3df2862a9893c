"""Analytics on the real embedded stack: view reports (through the api, or appended straight to
``events.views`` / ``events.access`` the way the api does when a test needs a past time or a
duplicate) → the ClickHouse projection → the analytics api. chDB belongs to the ``medialog dev``
process, so every figure is read through the api."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medialog.domain.events import (
    PlaybackIssued,
    TranscodeCompleted,
    UploadRequested,
    ViewReported,
)
from medialog.envelope import encode_event, make_event
from medialog.kafka import new_producer
from tests.integration.test_engagement import uploaded_clip

pytestmark = pytest.mark.integration
SUMMED = ("views", "reports", "below_threshold", "already_counted", "sessions", "watch_seconds")
ADMIN = ("admin-analytics", "admin")
CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4  # an upload's bytes, not a video


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def request_upload(http: Any, stack: Any, owner: str) -> dict[str, Any]:
    """An upload request, accepted before this returns (so its event time is in the past)."""
    body = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": len(CLIP),
            "title": "Analytics clip"}
    async with http.post(f"{stack.base_url}/v1/uploads", json=body,
                         headers=auth(stack.token(owner, "creator"), Prefer="wait=20")) as r:
        assert r.status == 202, await r.text()
        reply = await r.json()
    assert reply["command"]["status"] == "accepted", reply
    return dict(reply)


async def new_asset(http: Any, stack: Any, owner: str) -> str:
    """An asset awaiting its upload: its owner (and admins) see it and its figures, nobody else
    may engage with it."""
    return str((await request_upload(http, stack, owner))["asset_id"])


async def ready_asset(http: Any, stack: Any, owner: str) -> str:
    """A ready public asset anyone may report views of: its upload request and a completed
    transcode appended to ``events.asset`` as the asset actor appends them (no media, no
    transcode runs; no duration, so a view takes 10 s), once the api shows it. The asset actor
    never saw it: send it no command."""
    asset, now = str(uuid.uuid4()), datetime.now(UTC)
    events = [
        UploadRequested(asset_id=asset, owner_id=owner, kind="video", filename="clip.mp4",
                        content_type="video/mp4", size_bytes=len(CLIP), title="Analytics clip",
                        staging_key=f"uploads/{owner}/{asset}/original.mp4",
                        upload_expires_at=now + timedelta(minutes=15)),
        TranscodeCompleted(asset_id=asset, job_id=str(uuid.uuid4()), renditions=[],
                           master_playlist_key=None, thumbnail_key=None, duration_s=None,
                           width=None, height=None, probe={}),
    ]
    await append(stack, "events.asset", [
        (asset, encode_event(make_event(payload, subject=asset, event_id=str(uuid.uuid4()),
                                        time=now, sequence=seq)))
        for seq, payload in enumerate(events, 1)])

    async def status() -> Any:
        return (await get(http, stack, f"/v1/assets/{asset}", stack.token(owner, "creator")))[1]
    assert (await eventually(status, lambda a: a.get("status") == "ready"))["status"] == "ready"
    return asset


async def uploaded_asset(http: Any, stack: Any, owner: str) -> str:
    """An asset whose bytes are in and whose completion was accepted: listed for anyone, as
    trending requires (the bytes are no video, so it ends ``failed``, which is still listed)."""
    up = await request_upload(http, stack, owner)
    async with http.put(up["upload_url"], data=CLIP, headers=up["headers"]) as r:
        assert r.status == 200, await r.text()
    async with http.post(f"{stack.base_url}/v1/assets/{up['asset_id']}/complete",
                         headers=auth(stack.token(owner, "creator"), Prefer="wait=20")) as r:
        done = await r.json()
    assert r.status == 202 and done["command"]["status"] == "accepted", done
    return str(up["asset_id"])


async def report(http: Any, stack: Any, asset: str, viewer: str, session: str,
                 watch: float) -> None:
    async with http.post(f"{stack.base_url}/v1/assets/{asset}/views",
                         json={"session_id": session, "watch_seconds": watch},
                         headers=auth(stack.token(viewer, "viewer"))) as r:
        assert r.status == 202, await r.text()


def api_event(payload: Any, asset: str, at: datetime, actor: str | None) -> tuple[str, bytes]:
    """An event as the api appends it (keyed by the asset, the signed-in caller as its actor),
    but at a time of the test's choosing."""
    event = make_event(payload, subject=asset, event_id=str(uuid.uuid4()), time=at,
                       sequence=None)
    if actor:
        event = event.model_copy(update={"actorid": actor, "actorroles": "viewer"})
    return asset, encode_event(event)


def view_event(asset: str, owner: str, viewer: str, session: str, watch: float,
               at: datetime, signed_in: bool = True) -> tuple[str, bytes]:
    payload = ViewReported(asset_id=asset, owner_id=owner, viewer_key=viewer,
                           signed_in=signed_in, session_id=session, watch_seconds=watch,
                           duration_s=None)
    return api_event(payload, asset, at, viewer if signed_in else None)


async def append(stack: Any, topic: str, records: list[tuple[str, bytes]]) -> None:
    settings = stack.settings()
    producer = new_producer(settings)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic(topic), value, key=key.encode())
    finally:
        await producer.stop()


async def get(http: Any, stack: Any, path: str, token: str | None = None,
              **query: str) -> tuple[int, Any]:
    headers = auth(token) if token else {}
    async with http.get(f"{stack.base_url}{path}", params=query, headers=headers) as r:
        return r.status, await r.json()


async def eventually(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool],
                     timeout: float = 45.0) -> Any:
    """Poll ``read`` until ``ok`` (the projection applies batches every half second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.3)


def asset_figures(http: Any, stack: Any, asset: str, owner: str,
                  **query: str) -> Callable[[], Awaitable[Any]]:
    async def read() -> Any:
        status, body = await get(http, stack, f"/v1/analytics/assets/{asset}",
                                 stack.token(owner, "creator"), **query)
        assert status == 200, body
        return body
    return read


def assert_series_add_up(body: dict[str, Any]) -> None:
    for name in SUMMED:
        assert sum(b[name] for b in body["series"]) == pytest.approx(body["totals"][name]), name


async def test_counted_sessions_match_postgres_and_the_series_add_up(http, stack):
    """Sessions reaching the 10 s threshold over several reports count once each, in ClickHouse
    and in PostgreSQL alike; short sessions and reports after the count add no view."""
    owner = uid("creator")
    asset = await ready_asset(http, stack, owner)
    n = 4
    sessions = [(f"viewer-{i}", f"session-{i}-{asset[:8]}") for i in range(n)]
    for _ in range(4):  # 4 × 3 s per session, interleaved: each counts on its 4th report (12 s)
        for viewer, session in sessions:
            await report(http, stack, asset, viewer, session, 3)
    await report(http, stack, asset, *sessions[0], 5)  # already counted
    await report(http, stack, asset, "viewer-x", f"short-{asset[:8]}", 3)
    await report(http, stack, asset, "viewer-x", f"short-{asset[:8]}", 3)  # 6 s: still short

    reports, watch = 4 * n + 3, 12 * n + 5 + 6
    since = iso(datetime.now(UTC) - timedelta(hours=2))
    read = asset_figures(http, stack, asset, owner, interval="hour", **{"from": since})
    body = await eventually(read, lambda b: b["totals"]["reports"] == reports)
    totals = body["totals"]
    assert totals["reports"] == reports
    assert totals["views"] == n and totals["unique_viewers"] == n
    assert totals["below_threshold"] == 3 * n + 2 and totals["already_counted"] == 1
    assert totals["sessions"] == n + 1
    assert totals["watch_seconds"] == watch
    assert totals["avg_watch_seconds"] == pytest.approx(watch / (n + 1), abs=1e-3)
    assert body["owner_id"] == owner and body["interval"] == "hour"
    assert len(body["series"]) in (2, 3)  # the hours the two-hour range touches
    assert_series_add_up(body)

    async def stats() -> Any:
        return (await get(http, stack, f"/v1/assets/{asset}/stats"))[1]
    pg = await eventually(stats, lambda s: s.get("watch_seconds_total") == watch)
    assert pg["watch_seconds_total"] == watch  # PostgreSQL has folded every report
    assert pg["view_count"] == totals["views"] == n  # and its counter agrees


async def test_reports_land_in_their_hour_and_day(http, stack):
    """Reports are bucketed by their own time, by the hour and by the day."""
    owner = uid("creator")
    asset = await new_asset(http, stack, owner)
    now = datetime.now(UTC)
    # 10 minutes into an hour, so the reports a second later are in the same hour
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    three_h = this_hour - timedelta(hours=3) + timedelta(minutes=10)
    one_h = this_hour - timedelta(hours=1) + timedelta(minutes=10)
    records = [
        view_event(asset, owner, "v1", "past-session-1", 11, three_h),
        view_event(asset, owner, "v2", "past-session-2", 11, three_h + timedelta(seconds=1)),
        view_event(asset, owner, "v3", "past-session-3", 11, one_h),
        view_event(asset, owner, "v4", "past-session-4", 2, one_h + timedelta(seconds=1)),
    ]
    await append(stack, "events.views", records)
    read = asset_figures(http, stack, asset, owner, interval="hour",
                         **{"from": iso(now - timedelta(hours=4)), "to": iso(now)})
    body = await eventually(read, lambda b: b["totals"]["reports"] == 4)
    views = {b["start"]: b["views"] for b in body["series"] if b["reports"]}
    assert views == {iso(this_hour - timedelta(hours=3)): 2,
                     iso(this_hour - timedelta(hours=1)): 1}
    assert body["totals"]["views"] == 3 and body["totals"]["below_threshold"] == 1
    assert_series_add_up(body)

    by_day = await asset_figures(http, stack, asset, owner, interval="day",
                                 **{"from": iso(now - timedelta(days=2)), "to": iso(now)})()
    assert by_day["totals"]["views"] == 3 and len(by_day["series"]) == 3
    assert_series_add_up(by_day)


async def test_redelivered_reports_change_no_figure(http, stack):
    """The same reports appended to the log again leave every figure as it was."""
    owner = uid("creator")
    asset = await ready_asset(http, stack, owner)  # its /stats are read anonymously
    now = datetime.now(UTC) - timedelta(minutes=5)
    records = []
    for i in range(3):  # three sessions counting on their second report, one that never does
        records.append(view_event(asset, owner, f"v{i}", f"dup-session-{i}", 6, now))
        records.append(view_event(asset, owner, f"v{i}", f"dup-session-{i}", 6,
                                  now + timedelta(seconds=6)))
    records.append(view_event(asset, owner, "v9", "dup-session-9", 4, now))
    await append(stack, "events.views", records)
    read = asset_figures(http, stack, asset, owner)
    before = await eventually(read, lambda b: b["totals"]["reports"] == 7)
    assert before["totals"]["views"] == 3 and before["totals"]["below_threshold"] == 4
    assert before["totals"]["sessions"] == 4 and before["totals"]["watch_seconds"] == 40

    # The same records again (duplicates on the log, new offsets), twice, then one new report
    # on the same asset (so the same partition, read after the duplicates) as a marker.
    await append(stack, "events.views", records + records[::-1])
    await append(stack, "events.views",
                 [view_event(asset, owner, "v10", "dup-session-10", 1, now)])
    after = await eventually(read, lambda b: b["totals"]["reports"] == 8)
    expected = {**before["totals"], "reports": 8, "below_threshold": 5, "sessions": 5,
                "watch_seconds": 41}
    expected["avg_watch_seconds"] = round(expected["watch_seconds"] / expected["sessions"], 3)
    assert after["totals"] == expected
    assert_series_add_up(after)

    async def stats() -> Any:
        return (await get(http, stack, f"/v1/assets/{asset}/stats"))[1]
    assert (await eventually(stats, lambda s: s.get("view_count") == 3))["view_count"] == 3


async def trending(http: Any, stack: Any) -> list[dict[str, Any]]:
    status, body = await get(http, stack, "/v1/trending", window="1h", limit="100")
    assert status == 200, body
    assert [i["rank"] for i in body["items"]] == list(range(1, len(body["items"]) + 1))
    return list(body["items"])


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["asset_id"] for i in items]


def assert_listed(items: list[dict[str, Any]], *assets: str) -> None:
    """The list is global (the top 100 of the whole session): say so if an asset is not in it."""
    missing = [a for a in assets if a not in ids(items)]
    assert not missing, f"{missing} not among the {len(items)} trending assets"


async def test_trending_puts_the_hotter_asset_first_and_omits_private_and_deleted(http, stack):
    """Recent views and likes rank an asset above one with older views; private and deleted
    assets leave the list. The assets are real uploads (the asset actor decides the PATCH and
    the DELETE) of bytes that are no video, so they never play: their views are appended as the
    api appends reports."""
    owner = uid("creator")
    hot, cool, hidden, gone = [await uploaded_asset(http, stack, owner) for _ in range(4)]
    now = datetime.now(UTC)
    # cool: two views 50 minutes ago; hot: three views now and two likes
    await append(stack, "events.views", [
        view_event(cool, owner, f"c{i}", f"cool-session-{i}", 12, now - timedelta(minutes=50))
        for i in range(2)])
    await append(stack, "events.views", [
        view_event(hot, owner, f"fan-{i}", f"hot-session-{i}", 12, now) for i in range(3)])
    for fan in ("fan-0", "fan-1"):
        async with http.put(f"{stack.base_url}/v1/assets/{hot}/like",
                            headers=auth(stack.token(fan, "viewer"), Prefer="wait=20")) as r:
            assert r.status in (200, 202), await r.text()
    await append(stack, "events.views", [  # hotter than both while public
        view_event(asset, owner, f"x{i}", f"hide-session-{i}", 12, now)
        for asset in (hidden, gone) for i in range(5)])

    items = await eventually(lambda: trending(http, stack),
                             lambda it: {hot, cool, hidden, gone} <= set(ids(it))
                             and next(i for i in it if i["asset_id"] == hot)["likes"] == 2)
    assert_listed(items, hot, cool, hidden, gone)
    order = ids(items)
    assert order.index(hot) < order.index(cool)
    entry = next(i for i in items if i["asset_id"] == hot)
    assert entry["views"] == 3 and entry["likes"] == 2 and entry["owner_id"] == owner
    assert entry["title"] == "Analytics clip"
    assert items[order.index(hot)]["score"] > items[order.index(cool)]["score"] > 0

    token = stack.token(owner, "creator")
    async with http.patch(f"{stack.base_url}/v1/assets/{hidden}", json={"visibility": "private"},
                          headers=auth(token, Prefer="wait=20")) as r:
        assert r.status in (200, 202), await r.text()
    async with http.delete(f"{stack.base_url}/v1/assets/{gone}",
                           headers=auth(token, Prefer="wait=20")) as r:
        assert r.status in (200, 202), await r.text()
    items = await eventually(lambda: trending(http, stack),
                             lambda it: not {hidden, gone} & set(ids(it)))
    assert not {hidden, gone} & set(ids(items))
    assert_listed(items, hot, cool)
    assert ids(items).index(hot) < ids(items).index(cool)


async def test_access_control(http, stack):
    """Asset figures: owner or admin (404 for others); creator figures: that creator or an
    admin; the overview: admins; trending: anyone."""
    owner = uid("creator")
    asset = await new_asset(http, stack, owner)
    other = stack.token(uid("creator"), "creator")
    admin = stack.token(*ADMIN)
    mine = stack.token(owner, "creator")
    path = f"/v1/analytics/assets/{asset}"
    assert (await get(http, stack, path, mine))[0] == 200
    assert (await get(http, stack, path, admin))[0] == 200
    status, body = await get(http, stack, path, other)
    assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
    status, body = await get(http, stack, f"/v1/analytics/assets/{uuid.uuid4()}", admin)
    assert status == 404 and body["error"]["code"] == "ASSET_NOT_FOUND"
    status, body = await get(http, stack, path)
    assert status == 401 and body["error"]["code"] == "TOKEN_MISSING"

    creator_path = f"/v1/analytics/creators/{owner}"
    assert (await get(http, stack, creator_path, mine))[0] == 200
    assert (await get(http, stack, creator_path, admin))[0] == 200
    status, body = await get(http, stack, creator_path, other)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN_NOT_CREATOR"

    status, body = await get(http, stack, "/v1/analytics/overview", mine)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN_ROLE"
    assert (await get(http, stack, "/v1/analytics/overview", admin))[0] == 200
    assert (await get(http, stack, "/v1/trending"))[0] == 200  # anyone, no token


@pytest.mark.parametrize(
    "path, query, code",
    [
        ("asset", {"interval": "week"}, "INVALID_INTERVAL"),
        ("asset", {"from": "yesterday"}, "INVALID_TIME"),
        ("asset", {"to": "2025-01-01"}, "INVALID_TIME"),
        ("asset", {"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
         "INVALID_RANGE"),
        ("creator", {"from": "2023-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
         "RANGE_TOO_LONG"),
        ("creator", {"from": "2025-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z",
                     "interval": "hour"}, "RANGE_TOO_LONG"),
        ("overview", {"from": "2025-01-01T00:00:00"}, "INVALID_TIME"),
        ("trending", {"window": "2h"}, "INVALID_WINDOW"),
        ("trending", {"limit": "0"}, "INVALID_LIMIT"),
        ("trending", {"limit": "101"}, "INVALID_LIMIT"),
        ("trending", {"limit": "many"}, "INVALID_LIMIT"),
    ],
)
async def test_bad_parameters_get_a_coded_400(http, stack, path, query, code):
    """Each bad parameter is refused with its own error code and a message."""
    owner = "param-checker"
    paths = {"creator": f"/v1/analytics/creators/{owner}", "overview": "/v1/analytics/overview",
             "trending": "/v1/trending"}
    if path == "asset":
        paths["asset"] = f"/v1/analytics/assets/{await new_asset(http, stack, owner)}"
    token = stack.token(owner, "creator", "admin")
    status, body = await get(http, stack, paths[path], token, **query)
    assert status == 400 and body["error"]["code"] == code and body["error"]["message"]


async def test_overview_counts_uploads_playback_urls_and_users(http, stack):
    """The overview's figures, exact: over a past hour that only this test writes to (its
    playback URLs and view reports), and over the range since the test began (its upload)."""
    admin = stack.token(*ADMIN)
    started = datetime.now(UTC)
    owner, watcher, reader = uid("creator"), uid("watcher"), uid("reader")
    asset = await new_asset(http, stack, owner)

    def overview(since: datetime, **query: str) -> Callable[[], Awaitable[Any]]:
        async def read() -> Any:
            status, body = await get(http, stack, "/v1/analytics/overview", admin,
                                     interval="hour", **{"from": iso(since)}, **query)
            assert status == 200, body
            return body
        return read

    # Only the test's upload request is at or after ``started`` (earlier ones were accepted
    # before their new_asset returned), so the range since then holds exactly one upload.
    body = await eventually(overview(started), lambda b: b["totals"]["uploads"] >= 1)
    assert body["totals"]["uploads"] == 1 and body["totals"]["uploads_completed"] == 0
    assert sum(b["uploads"] for b in body["series"]) == 1
    status, creator = await get(http, stack, f"/v1/analytics/creators/{owner}", admin)
    assert status == 200 and creator["totals"]["uploads"] == 1, creator

    # An hour of its own, years back: nothing else in the session is that old.
    hour = datetime(2010, 1, 1, tzinfo=UTC) + timedelta(hours=uuid.uuid4().int % 80_000)
    at = hour + timedelta(minutes=10)
    issued = [(watcher, watcher), (watcher, watcher), (None, None)]  # (user_id, actor)
    await append(stack, "events.access", [
        api_event(PlaybackIssued(asset_id=asset, owner_id=owner, user_id=user,
                                 expires_at=at + timedelta(hours=1), ip_bound=False,
                                 key_id="k1", download=False), asset, at, actor)
        for user, actor in issued])
    await append(stack, "events.views", [
        view_event(asset, owner, reader, "overview-1", 12, at),  # counted
        view_event(asset, owner, watcher, "overview-2", 3, at),
        view_event(asset, owner, "anon-overview", "overview-3", 4, at, signed_in=False),
    ])
    read = overview(hour, to=iso(hour + timedelta(hours=2)))
    body = await eventually(read, lambda b: b["totals"]["playback_urls_issued"] == 3
                            and b["totals"]["reports"] == 3)
    totals = body["totals"]
    assert totals["playback_urls_issued"] == 3
    assert totals["unique_users"] == 2  # the watcher and the reader; anonymous ones are not users
    assert totals["uploads"] == 0 and totals["uploads_completed"] == 0
    assert (totals["views"], totals["unique_viewers"], totals["reports"]) == (1, 1, 3)
    assert (totals["below_threshold"], totals["already_counted"]) == (2, 0)
    assert totals["watch_seconds"] == 19
    assert [b["start"] for b in body["series"]] == [iso(hour), iso(hour + timedelta(hours=1))]
    first, second = body["series"]
    assert (first["playback_urls_issued"], first["unique_users"], first["views"]) == (3, 2, 1)
    assert (second["playback_urls_issued"], second["unique_users"], second["reports"]) == (0, 0, 0)

    assert set(body["storage"]) == {"stored_assets", "storage_used_bytes",
                                    "average_file_size_bytes"}
    assert [b["bucket"] for b in body["duration_distribution"]] == [
        "<30s", "30s-2m", "2m-10m", "10m-30m", "30m-60m", ">=60m"]


async def test_a_creators_completed_uploads_are_counted(http, stack, clip):
    """An upload_completed names no owner: the creator report finds it through the asset."""
    owner = uid("creator")
    await uploaded_clip(http, stack, owner, clip)

    async def read() -> Any:
        status, body = await get(http, stack, f"/v1/analytics/creators/{owner}",
                                 stack.token(*ADMIN))
        assert status == 200, body
        return body["totals"]
    totals = await eventually(read, lambda t: t["uploads_completed"] >= 1)
    assert (totals["uploads"], totals["uploads_completed"]) == (1, 1), totals
