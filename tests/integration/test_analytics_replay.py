"""``medialog verify|replay analytics`` against a running ``medialog dev``: the CLI cannot open
the chDB store the stack holds, so the stack runs the work as an admin job (``/v1/admin/
read-models``). After real traffic the model equals a fresh fold; a damaged row is named and
repaired by a replay; an interrupted replay changes nothing and the next one runs; reports sent
during a replay are counted once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from medialog.clickhouse import Analytics
from tests import medialog_cli
from tests.conftest import running_stack
from tests.integration.test_engagement import (
    analytics_totals,
    eventually,
    pg,
    ready_asset,
)
from tests.integration.test_replay import reports_during, views
from tests.integration.test_verify import _env

pytestmark = pytest.mark.integration
__all__ = ["pg"]  # the fixture
TABLES = ("events", "views", "view_rule")


def env(stack: Any) -> dict[str, str]:
    """The CLI's environment: the stack's services and its api (which owns the chDB store)."""
    return {**_env(stack), "MEDIALOG_API_PORT": str(stack.port)}


async def cli(stack: Any, *args: str) -> tuple[int, list[str], str]:
    return await medialog_cli.run(list(args), env(stack))


def table_line(lines: list[str], table: str) -> str:
    return next(line for line in lines if line.startswith(f"{table}: "))


async def test_verify_after_traffic_is_equal_and_all_includes_analytics(http, stack, pg):
    asset = await ready_asset(stack, pg, owner="chverifier")
    await views(http, stack, asset, 2)
    await eventually(lambda: analytics_totals(http, stack, asset, 8, owner="chverifier"))
    code, lines, err = await cli(stack, "verify", "analytics")
    assert code == 0, (lines, err)
    for table in TABLES:
        assert table_line(lines, table).endswith(", equal"), lines
    assert lines[-1].startswith("equal: 3 tables match a fresh fold of "), lines
    assert "verify analytics: " in err and "records to go" in err  # progress, on stderr

    code, lines, err = await cli(stack, "verify", "all")
    assert code == 0, (lines, err)
    assert lines[-1].startswith("equal: 8 tables match a fresh fold of "), lines


def _start(stack: Any, *args: str) -> subprocess.Popen[str]:
    return medialog_cli.start(list(args), env(stack))


async def _folding(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Returns once the CLI's job is under way (its progress line is on stderr)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    line = await asyncio.to_thread(proc.stderr.readline)
    while "replay analytics: " not in line:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        line = await asyncio.to_thread(proc.stderr.readline)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
async def test_an_interrupted_replay_changes_nothing_and_the_next_runs(http, stack, pg, sig):
    asset = await ready_asset(stack, pg, owner="chinterrupt")
    await views(http, stack, asset, 1)
    await eventually(lambda: analytics_totals(http, stack, asset, 4, owner="chinterrupt"))
    proc = _start(stack, "replay", "analytics")
    try:
        await _folding(proc)
        proc.send_signal(sig)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    # SIGINT cancels the job at once; a killed CLI's job is cancelled when its lease runs out
    # (a replay started meanwhile is refused with 409 until then: retried here).
    deadline = time.monotonic() + 60
    while True:
        code, lines, err = await cli(stack, "replay", "analytics", "--check-only")
        if "READ_MODEL_JOB_RUNNING" not in err or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert code == 0, (lines, err)
    assert lines[-1].startswith("equal: events, views, view_rule compared with "), lines
    totals = await analytics_totals(http, stack, asset, 4, owner="chinterrupt")
    assert totals is not None and totals["views"] == 1, totals


async def test_reports_during_a_replay_are_counted_once(http, stack, pg):
    asset = await ready_asset(stack, pg, owner="chreplayer")
    sent, out, err = await reports_during(_start(stack, "replay", "analytics"), http, stack,
                                          asset, 3)
    assert out.splitlines()[-1].startswith("replaced events, views, view_rule with "), out
    totals = await eventually(lambda: analytics_totals(http, stack, asset, sent,
                                                       owner="chreplayer"))
    assert totals["below_threshold"] == sent and totals["views"] == 0, (totals, sent)
    await asyncio.sleep(1.5)
    assert await analytics_totals(http, stack, asset, sent, owner="chreplayer") is not None
    code, lines, err = await cli(stack, "verify", "analytics")
    assert code == 0, (lines, err)


async def _damage(chdb: str, asset: str) -> tuple[str, str]:
    """With the stack stopped: delete one ``views`` row of ``asset`` and insert a bogus
    ``events`` row (at offset 0 of a partition of the asset's events: covered by the stored
    positions); (the view's key, the bogus event's key)."""
    analytics = Analytics(f"chdb://{chdb}")
    await analytics.open()
    try:
        rows = await analytics.query(
            "SELECT asset_id, viewer_key, session_id, id FROM views FINAL "
            "WHERE asset_id = {a:String} ORDER BY id LIMIT 1", {"a": asset})
        view = "/".join(rows[0])
        await analytics.command(f"ALTER TABLE views DELETE WHERE id = '{rows[0][3]}' "
                                "SETTINGS mutations_sync = 1")
        (topic, partition), = await analytics.query(
            "SELECT topic, partition FROM events FINAL WHERE subject = {a:String} LIMIT 1",
            {"a": asset})
        bogus = ["bogus-id", "medialog.bogus", "test", asset, None, datetime.now(UTC), "", "",
                 "", "", "{}", topic, partition, 0]
        await analytics.insert("events", [bogus],
                               ["id", "type", "source", "subject", "sequence", "time",
                                "actor_id", "actor_roles", "causation_id", "correlation_id",
                                "data", "topic", "partition", "offset"])
    finally:
        await analytics.close()
    return view, f"medialog.bogus/{asset}/bogus-id"


@contextlib.contextmanager
def _stopped_on_failure(stack: Any) -> Iterator[None]:
    """``running_stack`` stops its stack only when the block ends normally."""
    try:
        yield
    except BaseException:
        if stack.proc is not None:
            stack.stop(signal.SIGKILL)
        raise


@pytest.mark.slow
async def test_a_damaged_model_is_named_and_repaired(http):
    with running_stack("medialog-chreplay-") as own, _stopped_on_failure(own):
        conn = await asyncpg.connect(own.settings().postgres_dsn.get_secret_value())
        try:
            asset = await ready_asset(own, conn, owner="chdamage")
        finally:
            await conn.close()
        await views(http, own, asset, 2)
        await eventually(lambda: analytics_totals(http, own, asset, 8, owner="chdamage"))
        await asyncio.sleep(1.5)  # positions stored
        own.stop()
        view, bogus = await _damage(str(own.data_dir / "chdb"), asset)
        own.start()
        code, lines, err = await cli(own, "verify", "analytics")
        assert code == 1, (lines, err)
        assert f"{view} (only in log)" in table_line(lines, "views"), lines
        assert f"{bogus} (only live)" in table_line(lines, "events"), lines
        assert lines[-1].startswith("DIFFERENT: 2 of 3 tables differ"), lines

        code, lines, err = await cli(own, "replay", "analytics")
        assert code == 0, (lines, err)
        assert lines[-1].startswith("REPAIRED: 2 of 3 tables differed from the log"), lines
        code, lines, err = await cli(own, "verify", "analytics")
        assert code == 0, (lines, err)
        totals = await analytics_totals(http, own, asset, 8, owner="chdamage")
        assert totals is not None and totals["views"] == 2, totals
