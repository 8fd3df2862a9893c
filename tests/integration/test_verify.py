"""``medialog verify`` against the running embedded stack: after real activity (an upload
request through the api, view reports, likes through the actor) the read models equal a fresh
fold of the log; a tampered live row is reported by table and key, with exit 1; no shadow
schema outlives a run, whether it ends, is interrupted (SIGINT) or is killed (the next run
drops it)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import Any

import asyncpg
import pytest

from medialog.outcomes import NOTIFY_CHANNEL
from tests import medialog_cli
from tests.integration.test_engagement import (
    auth,
    awaiting_upload,
    eventually,
    ready_asset,
    report,
    set_like,
    settled_reports,
    sid,
)

pytestmark = pytest.mark.integration
SHADOWS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'verify\\_%'"
TABLES = ("assets", "asset_events", "asset_stats", "likes", "view_sessions")


def _env(stack: Any) -> dict[str, str]:
    s = stack.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
    env.update(MEDIALOG_POSTGRES_DSN=s.postgres_dsn.get_secret_value(),
               MEDIALOG_KAFKA_BOOTSTRAP=s.kafka_bootstrap, MEDIALOG_DATA_DIR=str(stack.data_dir))
    return env


def _start(stack: Any, *args: str) -> subprocess.Popen[str]:
    return medialog_cli.start(["verify", *args], _env(stack))


async def verify(stack: Any, *args: str) -> tuple[int, list[str], str]:
    """Run ``medialog verify ARGS``: exit status, stdout lines, stderr."""
    return await medialog_cli.run(["verify", *args], _env(stack))


@pytest.fixture
async def pg(stack: Any) -> Any:
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    yield conn
    await conn.close()


async def activity(http: Any, stack: Any, pg: Any) -> str:
    """An upload requested through the api, and a ready asset of this test's own with views
    (through the api) and likes (through the engagement actor); the ready asset's id."""
    await awaiting_upload(http, stack, "verifier")
    asset = await ready_asset(stack, pg, owner="verifier")
    sessions = [sid() for _ in range(3)]
    for _ in range(4):
        for session in sessions:
            assert (await report(http, stack, asset,
                                 {"session_id": session, "watch_seconds": 3}))[0] == 202
    for user in ("vfan1", "vfan2", "vfan3"):
        status, body = await set_like(http, stack, asset, user, True)
        assert status == 200 and body["liked"] is True, body
    status, body = await set_like(http, stack, asset, "vfan3", False)
    assert status == 200 and body["liked"] is False, body
    await eventually(lambda: settled_reports(pg, asset, 12))
    async with http.get(f"{stack.base_url}/v1/assets/{asset}/stats",
                        headers=auth(stack.token("vfan1", "viewer"))) as r:
        stats = await r.json()
    assert stats["view_count"] == 3 and stats["like_count"] == 2, stats
    return asset


async def test_the_read_models_equal_the_fold_and_a_tampered_row_is_named(http, stack, pg):
    asset = await activity(http, stack, pg)
    heard: list[str] = []

    def hear(*args: Any) -> None:
        heard.append(args[-1])
    await pg.add_listener(NOTIFY_CHANNEL, hear)
    try:
        code, lines, err = await verify(stack, "all")
        await asyncio.sleep(0.2)
    finally:
        await pg.remove_listener(NOTIFY_CHANNEL, hear)
    assert code == 0, (lines, err)
    assert asset not in heard  # the fold's pg_notify is the shadow schema's no-op
    for table in TABLES:
        assert any(line.startswith(f"{table}: ") and line.endswith(", equal")
                   for line in lines), lines
    # PostgreSQL's five, and ClickHouse's events, views and view_rule (all includes analytics)
    assert lines[-1].startswith("equal: 8 tables match a fresh fold of "), lines
    assert "verify all: " in err and "records to go" in err  # the progress, on stderr
    assert await pg.fetch(SHADOWS) == []

    # A counter moved by hand: asset_stats differs (same row count), at this asset's key.
    await pg.execute("UPDATE asset_stats SET view_count = view_count + 1 WHERE asset_id = $1",
                     asset)
    try:
        code, lines, err = await verify(stack, "engagement")
    finally:
        await pg.execute("UPDATE asset_stats SET view_count = view_count - 1 "
                         "WHERE asset_id = $1", asset)
    assert code == 1, (lines, err)
    stats_line = next(line for line in lines if line.startswith("asset_stats: "))
    assert " in both, checksums differ; first differing keys: " in stats_line
    assert f"{asset} (differs)" in stats_line
    assert any(line.startswith("likes: ") and line.endswith(", equal") for line in lines)
    assert lines[-1].startswith("DIFFERENT: 1 of 3 tables differ from a fresh fold of "), lines

    # A like row lost: likes has one row fewer live than in the fold.
    key = f"{asset}/vfan2"
    row = await pg.fetchrow("SELECT * FROM likes WHERE engagement_key = $1", key)
    await pg.execute("DELETE FROM likes WHERE engagement_key = $1", key)
    try:
        code, lines, err = await verify(stack, "engagement")
    finally:
        await pg.execute(f"INSERT INTO likes ({', '.join(row.keys())}) VALUES "
                         f"({', '.join(f'${i}' for i in range(1, len(row) + 1))})", *row.values())
    assert code == 1, (lines, err)
    likes_line = next(line for line in lines if line.startswith("likes: "))
    assert " vs log " in likes_line and f"{key} (only in log)" in likes_line, likes_line

    # An asset's title changed by hand: only assets differs.
    await pg.execute("UPDATE assets SET title = title || '!' WHERE asset_id = $1", asset)
    try:
        code, lines, err = await verify(stack, "assets")
    finally:
        await pg.execute("UPDATE assets SET title = rtrim(title, '!') WHERE asset_id = $1", asset)
    assert code == 1, (lines, err)
    assert lines[0].startswith("assets: ") and f"{asset} (differs)" in lines[0], lines
    assert lines[1].startswith("asset_events: ") and lines[1].endswith(", equal"), lines

    code, lines, err = await verify(stack, "all")  # restored: equal again
    assert code == 0, (lines, err)
    assert await pg.fetch(SHADOWS) == []


async def _shadow_appears(pg: Any, proc: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [r[0] for r in await pg.fetch(SHADOWS)]
        if names:
            return names
        assert proc.poll() is None, proc.communicate()
        await asyncio.sleep(0.005)
    raise AssertionError("no shadow schema appeared")


async def _no_sessions_of(pg: Any, shadow: str) -> bool:
    return not await pg.fetchval("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = $1", f"medialog verify {shadow}")


async def test_an_interrupted_run_drops_its_shadow_schema(stack, pg):
    proc = _start(stack, "all")
    try:
        shadow = await _shadow_appears(pg, proc)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    assert [r[0] for r in await pg.fetch(SHADOWS)] == [], (shadow, err)


async def test_a_killed_runs_shadow_schema_is_dropped_by_the_next_run(stack, pg):
    proc = _start(stack, "all")
    try:
        shadow = await _shadow_appears(pg, proc)
        proc.kill()
        await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The schema stays; its run's sessions (and advisory lock) end once PostgreSQL notices
    # the closed sockets.
    assert [r[0] for r in await pg.fetch(SHADOWS)] == shadow
    await eventually(lambda: _no_sessions_of(pg, shadow[0]))
    code, lines, err = await verify(stack, "assets")
    assert code == 0, (lines, err)
    assert await pg.fetch(SHADOWS) == []
