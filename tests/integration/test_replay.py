"""``medialog replay`` against the running embedded stack: a damaged live row is repaired by a
shadow fold swapped in while the projections run, and the live projections go on applying new
activity exactly once; an interrupted replay leaves the live tables as they were and no schema
behind; view reports sent during a replay are neither lost nor counted twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import pytest

from tests import medialog_cli
from tests.integration.test_engagement import (
    eventually,
    pg,
    ready_asset,
    report,
    set_like,
    settled_reports,
    sid,
    stats_row,
)
from tests.integration.test_verify import _env, verify

pytestmark = pytest.mark.integration
__all__ = ["pg"]  # the fixture
SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'replay\\_%'"
TABLES = ("assets", "asset_events", "asset_stats", "likes", "view_sessions")
LIVE = ("SELECT c.relname, c.oid::int, c.reloptions, "
        "array(SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = c.oid ORDER BY 1) "
        "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) "
        "ORDER BY 1")


def _start(stack: Any, *args: str) -> subprocess.Popen[str]:
    return medialog_cli.start(["replay", *args], _env(stack))


async def replay(stack: Any, *args: str) -> tuple[int, list[str], str]:
    """Run ``medialog replay ARGS``: exit status, stdout lines, stderr."""
    return await medialog_cli.run(["replay", *args], _env(stack))


async def checksums(pg: Any) -> dict[str, str]:
    """Per live table, the md5 of all its rows' text."""
    return {t: await pg.fetchval(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY "
                                 f"t::text), '')) FROM {t} t") for t in TABLES}


async def views(http: Any, stack: Any, asset: str, sessions: int) -> None:
    """``sessions`` new sessions of 4 reports of 3 s: a view each (10 s threshold)."""
    for session in [sid() for _ in range(sessions)]:
        for _ in range(4):
            assert (await report(http, stack, asset,
                                 {"session_id": session, "watch_seconds": 3}))[0] == 202


async def _counts_are(pg: Any, asset: str, views: int, likes: int) -> bool:
    row = await stats_row(pg, asset)
    return bool(row["view_count"] == views and row["like_count"] == likes)


async def test_a_damaged_model_is_repaired_and_live_applies_new_activity_once(http, stack, pg):
    asset = await ready_asset(stack, pg, owner="replayer")
    await views(http, stack, asset, 2)
    assert (await set_like(http, stack, asset, "rfan1", True))[0] == 200
    await eventually(lambda: settled_reports(pg, asset, 8))
    await eventually(lambda: _counts_are(pg, asset, 2, 1))
    before = await pg.fetch(LIVE, list(TABLES))

    await pg.execute("UPDATE asset_stats SET view_count = view_count + 5 WHERE asset_id = $1",
                     asset)
    await pg.execute("UPDATE assets SET title = 'damaged' WHERE asset_id = $1", asset)
    code, lines, err = await replay(stack, "all")
    assert code == 0, (lines, err)
    assert "replay all: " in err and "records to go" in err  # the progress, on stderr
    stats_line = next(line for line in lines if line.startswith("asset_stats: "))
    assert f"{asset} (differs)" in stats_line, lines
    assert f"{asset} (differs)" in lines[0], lines  # assets
    assert lines[-1].startswith("REPAIRED: ") and "tables differed from the log" in lines[-1], lines

    assert await _counts_are(pg, asset, 2, 1)  # repaired
    assert await pg.fetchval("SELECT title FROM assets WHERE asset_id = $1", asset) == "short clip"
    after = await pg.fetch(LIVE, list(TABLES))
    assert [r[1] for r in after] != [r[1] for r in before]  # other tables now
    # ... with the live ones' storage parameters (fillfactor) and index names
    assert [(r[0], r[2], r[3]) for r in after] == [(r[0], r[2], r[3]) for r in before]
    assert await pg.fetch(SCHEMAS) == []
    code, lines, err = await verify(stack, "all")
    assert code == 0, (lines, err)

    # New activity is applied once by the live projections, on the new tables.
    await views(http, stack, asset, 1)
    assert (await set_like(http, stack, asset, "rfan2", True))[0] == 200
    await eventually(lambda: settled_reports(pg, asset, 12))
    await eventually(lambda: _counts_are(pg, asset, 3, 2))
    await asyncio.sleep(1.0)  # nothing applied a second time meanwhile
    assert await _counts_are(pg, asset, 3, 2)
    assert await settled_reports(pg, asset, 12)


async def test_check_only_compares_and_swaps_nothing(stack, pg):
    before = await pg.fetch(LIVE, list(TABLES))
    code, lines, err = await replay(stack, "engagement", "--check-only")
    assert code == 0, (lines, err)
    assert lines[-1].startswith("equal: asset_stats, likes, view_sessions compared with "), lines
    assert await pg.fetch(LIVE, list(TABLES)) == before
    assert await pg.fetch(SCHEMAS) == []


async def _schema_appears(pg: Any, proc: subprocess.Popen[str]) -> None:
    """Returns as soon as the replay's shadow schema exists (it is folding, or about to)."""
    deadline = time.monotonic() + 60
    while not await pg.fetch(SCHEMAS):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        await asyncio.sleep(0.005)


async def _no_sessions(pg: Any) -> bool:
    return not await pg.fetchval("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'medialog replay %'")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
async def test_an_interrupted_replay_leaves_live_as_it_was(stack, pg, sig):
    before, sums = await pg.fetch(LIVE, list(TABLES)), await checksums(pg)
    proc = _start(stack, "all")
    try:
        await _schema_appears(pg, proc)
        proc.send_signal(sig)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    assert await pg.fetch(LIVE, list(TABLES)) == before  # the same tables
    assert await checksums(pg) == sums  # with the same rows
    if sig == signal.SIGINT:
        assert await pg.fetch(SCHEMAS) == [], err
    else:  # its schema stays until PostgreSQL notices the closed sockets (and frees its lock)
        assert len(await pg.fetch(SCHEMAS)) == 1
        await eventually(lambda: _no_sessions(pg))
    code, lines, err = await replay(stack, "assets", "--check-only")  # drops a killed run's
    assert code == 0, (lines, err)
    assert await pg.fetch(SCHEMAS) == []


async def reports_during(proc: subprocess.Popen[str], http: Any, stack: Any, asset: str,
                         watch_seconds: float) -> tuple[int, str, str]:
    """One-report sessions of ``watch_seconds`` (too short for a view) sent while ``proc`` (a
    replay) runs, at least 10; then its output, once it exited 0: (reports sent, out, err)."""
    sent = 0
    try:
        while proc.poll() is None or sent < 10:
            assert (await report(http, stack, asset, {"session_id": sid(),
                                                      "watch_seconds": watch_seconds}))[0] == 202
            sent += 1
            await asyncio.sleep(0.02)
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    return sent, out, err


async def test_reports_during_a_replay_are_counted_once(http, stack, pg):
    asset = await ready_asset(stack, pg, owner="replayer")
    sent, out, err = await reports_during(_start(stack, "engagement"), http, stack, asset, 1)
    await eventually(lambda: settled_reports(pg, asset, sent))
    await asyncio.sleep(1.0)
    assert await settled_reports(pg, asset, sent)
    row = await stats_row(pg, asset)
    assert row["watch_seconds_total"] == sent and row["view_count"] == 0, (row, sent)
    code, lines, err = await verify(stack, "engagement")
    assert code == 0, (lines, err)
