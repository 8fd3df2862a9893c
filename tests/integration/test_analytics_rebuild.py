"""Re-deriving the ClickHouse view verdicts after a rule change, against a real ClickHouse engine:
chDB on a temporary path per test (one path per process at a time, so each test closes its own),
and ``medialog rebuild analytics`` in a process of its own. The oracle is the pure rule
(``medialog.domain.views.replay``) over each session's reports in log order, with the times as
ClickHouse keeps them (to the millisecond); re-published copies of a report count nothing."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from medialog.analytics import queries
from medialog.analytics.params import TimeRange
from medialog.clickhouse import Analytics
from medialog.domain import events as e
from medialog.domain.views import Report, ViewRule, replay
from medialog.envelope import encode_event, make_event
from medialog.migrate import migrate_clickhouse
from medialog.tracking import Position
from projections.clickhouse.projection import ClickHouseProjection, derive_before_consuming
from projections.clickhouse.rederive import read_recorded, rederive
from projections.clickhouse.rows import VIEW_COLUMNS, utc

pytestmark = pytest.mark.integration
OLD = ViewRule(threshold_s=10, window_s=3600)
NEW = ViewRule(threshold_s=6, window_s=30)
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
EVERYTHING = TimeRange(start=NOW - timedelta(days=1), end=NOW + timedelta(days=1), interval="day")
OWNER = "creator-rebuild"
CHUNK = 16  # rows per chunk: many chunks, and sessions cut by their boundaries


async def open_store(path: Path) -> Analytics:
    analytics = Analytics(f"chdb://{path}")
    await analytics.open()
    await migrate_clickhouse(analytics)
    return analytics


@pytest.fixture
async def ch(tmp_path: Path) -> AsyncIterator[Analytics]:
    analytics = await open_store(tmp_path / "chdb")
    yield analytics
    await analytics.close()


class ViewLog:
    """View reports on ``events.views`` (3 partitions, keyed by asset), in log order: acceptance
    time order. ``reports``: per event id, the report as the oracle reads it."""

    def __init__(self) -> None:
        self.records: list[tuple[Position, bytes]] = []
        self.ids: list[str] = []  # of each record
        self.reports: dict[str, tuple[tuple[str, str, str], Report]] = {}
        self._next: dict[int, int] = {}

    def _append(self, partition: int, raw: bytes, event_id: str) -> None:
        offset = self._next.get(partition, 0)
        self._next[partition] = offset + 1
        self.records.append((Position("events.views", partition, offset), raw))
        self.ids.append(event_id)

    def report(self, asset: str, viewer: str, session: str, watch: float, at: datetime) -> None:
        event_id = str(uuid.uuid4())
        event = make_event(e.ViewReported(
            asset_id=asset, owner_id=OWNER, viewer_key=viewer, signed_in=True, session_id=session,
            watch_seconds=watch, duration_s=60.0, position=watch, device="web"),
            subject=asset, event_id=event_id, time=at, sequence=None)
        self._append(sum(asset.encode()) % 3, encode_event(event), event_id)
        ms = at.replace(microsecond=at.microsecond // 1000 * 1000)
        self.reports[event_id] = ((asset, viewer, session), Report(
            report_id=event_id, at=ms, watch_seconds=watch, duration_s=60.0))

    def republish(self, index: int) -> None:
        """The record at ``index`` again, later on its partition (a producer's retry)."""
        position, raw = self.records[index]
        self._append(position.partition, raw, self.ids[index])

    def consumed(self) -> list[tuple[Position, bytes]]:
        """As a consumer of every partition reads them: each partition in order, interleaved."""
        return sorted(self.records, key=lambda r: (r[0].offset, r[0].partition))


def view_log(seed: int, assets: Sequence[str]) -> ViewLog:
    """Sessions of 1-11 reports, some minutes apart (several windows of ``NEW``, one of
    ``OLD``), interleaved in time; microsecond times; a few reports re-published."""
    rng = random.Random(seed)
    planned: list[tuple[datetime, str, str, str, float]] = []
    for s in range(50):
        asset, viewer = rng.choice(assets), f"viewer-{rng.randrange(6)}"
        at = NOW - timedelta(hours=2, seconds=rng.randrange(3000),
                             microseconds=rng.randrange(10**6))
        for _ in range(rng.randrange(1, 12)):
            planned.append((at, asset, viewer, f"session-{s}", rng.choice([1.5, 2, 3, 4.25, 7])))
            at += timedelta(seconds=rng.choice([2, 5, 11, 40]), microseconds=rng.randrange(10**6))
    log = ViewLog()
    for at, asset, viewer, session, watch in sorted(planned):
        log.report(asset, viewer, session, watch, at)
        if rng.random() < 0.05:
            log.republish(rng.randrange(len(log.records)))
    return log


def oracle(log: ViewLog, rule: ViewRule) -> dict[str, str]:
    """Each report's verdict by the pure rule: per session, its reports in log order."""
    sessions: dict[tuple[str, str, str], list[Report]] = {}
    seen = set()
    for _, event_id in sorted(zip(log.records, log.ids, strict=True),
                              key=lambda r: (r[0][0].partition, r[0][0].offset)):
        if event_id not in seen:  # else a re-published copy: no row, no effect
            seen.add(event_id)
            key, report = log.reports[event_id]
            sessions.setdefault(key, []).append(report)
    verdicts = {}
    for reports in sessions.values():
        for report, verdict in zip(reports, replay(rule, reports).verdicts, strict=True):
            verdicts[report.report_id] = verdict.value
    return verdicts


async def feed(ch: Analytics, records: Sequence[tuple[Position, bytes]], size: int,
               projection: ClickHouseProjection) -> None:
    for i in range(0, len(records), size):
        batch = list(records[i:i + size])
        await ch.run(lambda c, b=batch: projection.apply(c, b))


async def verdicts(ch: Analytics) -> dict[str, str]:
    return dict(await ch.query("SELECT id, verdict FROM views FINAL"))


async def snapshot(ch: Analytics) -> list[list[Any]]:
    """Every column of every row, as a reader sees them (FINAL), by id."""
    rows = await ch.query(f"SELECT {', '.join(VIEW_COLUMNS)} FROM views FINAL ORDER BY id")
    at = VIEW_COLUMNS.index("time")
    return [[utc(v) if i == at else v for i, v in enumerate(row)] for row in rows]


async def figures(ch: Analytics, assets: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Per asset, the analytics route's views, below-threshold and already-counted reports."""
    out = {}
    for a in assets:
        t = (await queries.asset_report(ch, a, EVERYTHING))["totals"]
        out[a] = (t["views"], t["below_threshold"], t["already_counted"])
    return out


def expected_figures(log: ViewLog, want: dict[str, str], assets: Sequence[str]
                     ) -> dict[str, tuple[int, int, int]]:
    per = {a: Counter[str]() for a in assets}
    for event_id, verdict in want.items():
        per[log.reports[event_id][0][0]][verdict] += 1
    return {a: (c["counted"], c["below_threshold"], c["already_counted"]) for a, c in per.items()}


def assets_of(n: int) -> list[str]:
    return sorted(str(uuid.uuid4()) for _ in range(n))


async def test_a_rule_change_rederives_every_verdict_as_a_replay_would(ch: Analytics) -> None:
    assets = assets_of(4)
    log = view_log(1, assets)
    old, new = oracle(log, OLD), oracle(log, NEW)
    assert sum(old[i] != new[i] for i in old) > 20  # the change matters to many reports
    assert len(log.records) > len(old)  # and some were re-published
    # A store from before the rule was recorded, derived under the old rule.
    await feed(ch, log.consumed(), 7, ClickHouseProjection(OLD))
    assert await verdicts(ch) == old

    done = await rederive(ch, NEW, chunk_rows=CHUNK)
    assert done.ran and not done.resumed and done.rows == len(new) and done.chunks > 10
    assert await verdicts(ch) == new
    assert await figures(ch, assets) == expected_figures(log, new, assets)
    recorded = await ch.run(read_recorded)
    assert (recorded.rule, recorded.derived, recorded.cursor) == (NEW, True, None)

    # Again: nothing to do under the recorded rule; forced, the very same rows.
    rederived = await snapshot(ch)
    assert not (await rederive(ch, NEW, chunk_rows=CHUNK)).ran
    again = await rederive(ch, NEW, chunk_rows=5, force=True)
    assert again.ran and again.rows == len(new)
    assert await snapshot(ch) == rederived

    # A replay of the log under the new rule into empty tables writes exactly those rows.
    for table in ("events", "views", "projection_positions"):
        await ch.command(f"TRUNCATE TABLE {table}")
    await feed(ch, log.consumed(), 13, ClickHouseProjection(NEW))
    assert await snapshot(ch) == rederived


async def test_an_interrupted_rederivation_completes_when_run_again(ch: Analytics) -> None:
    assets = assets_of(6)
    log = view_log(2, assets)
    old, new = oracle(log, OLD), oracle(log, NEW)
    await feed(ch, log.consumed(), 9, ClickHouseProjection(OLD))
    assert (await rederive(ch, OLD)).rows == len(old)  # recorded: the old rule, derived
    # ClickHouse refuses a chunk half-way through the table (a constraint on its rows).
    middle = assets[3]
    await ch.command(f"ALTER TABLE views ADD CONSTRAINT halt CHECK asset_id < '{middle}'")
    with pytest.raises(DatabaseError, match="halt"):
        await rederive(ch, NEW, chunk_rows=CHUNK)
    await ch.command("ALTER TABLE views DROP CONSTRAINT halt")
    stopped = await ch.run(read_recorded)
    assert stopped.rule == NEW and not stopped.derived and stopped.cursor is not None
    assert stopped.cursor.session[0] < middle
    mixed = await verdicts(ch)
    assert any(mixed[i] == new[i] != old[i] for i in new)
    assert any(mixed[i] == old[i] != new[i] for i in new)

    # Interrupted again, now after a chunk's rows were written and before its cursor was.
    await ch.command(f"ALTER TABLE view_rule ADD CONSTRAINT halt CHECK step < {stopped.step + 3}")
    with pytest.raises(DatabaseError, match="halt"):
        await rederive(ch, NEW, chunk_rows=CHUNK)
    await ch.command("ALTER TABLE view_rule DROP CONSTRAINT halt")
    assert (await ch.run(read_recorded)).step == stopped.step + 2

    done = await rederive(ch, NEW, chunk_rows=CHUNK)
    assert done.resumed and 0 < done.rows < len(new)
    assert await verdicts(ch) == new
    recorded = await ch.run(read_recorded)
    assert (recorded.rule, recorded.derived) == (NEW, True)
    assert await figures(ch, assets) == expected_figures(log, new, assets)


async def test_going_back_to_the_old_rule_mid_way_rederives_everything(ch: Analytics) -> None:
    """Interrupted at the worst moment, the first chunk's rows written and nothing after: the
    rows are no longer all derived with the old rule, and the record says so."""
    assets = assets_of(4)
    log = view_log(3, assets)
    old = oracle(log, OLD)
    await feed(ch, log.consumed(), 9, ClickHouseProjection(OLD))
    await rederive(ch, OLD)
    await ch.command("ALTER TABLE view_rule ADD CONSTRAINT halt CHECK cursor = ''")
    with pytest.raises(DatabaseError, match="halt"):
        await rederive(ch, NEW, chunk_rows=CHUNK)
    await ch.command("ALTER TABLE view_rule DROP CONSTRAINT halt")
    assert await verdicts(ch) != old

    done = await rederive(ch, OLD, chunk_rows=CHUNK)
    assert done.ran and not done.resumed and done.rows == len(old)
    assert await verdicts(ch) == old


async def test_the_projection_restarted_under_the_new_rule_continues_it(ch: Analytics) -> None:
    """What the agent does at start: re-derive, then consume from Faust's offsets, which trail
    the stored positions. Merges are stopped, so both versions of each re-derived row stay in
    the table (as until a merge): the sessions the projection reads back must be the new."""
    assets = assets_of(3)
    log = view_log(4, assets)
    new = oracle(log, NEW)
    records = log.consumed()
    half = len(records) // 2
    await ch.command("SYSTEM STOP MERGES")
    try:
        await feed(ch, records[:half], 8, ClickHouseProjection(OLD))
        restarted = ClickHouseProjection(NEW)
        await derive_before_consuming(ch, restarted)
        await feed(ch, records[half - 20:], 8, restarted)
    finally:
        await ch.command("SYSTEM START MERGES")
    assert await verdicts(ch) == new
    assert await figures(ch, assets) == expected_figures(log, new, assets)


async def test_a_projection_forgets_its_sessions_when_the_verdicts_are_rederived(
        ch: Analytics) -> None:
    """A projection under the new rule that applied a batch over old verdicts (so its session
    continued an old state) keeps nothing of it once it re-derived: the batch that continues its
    partition reads the re-derived state instead of its cache."""
    asset = str(uuid.uuid4())
    log = ViewLog()
    start = NOW - timedelta(hours=1)
    for seconds, watch in ((0, 4), (40, 4), (45, 1), (50, 2)):
        log.report(asset, "viewer", "session", watch, start + timedelta(seconds=seconds))
    ids = log.ids
    # Under the new rule the report at 40 s opens a window (30 s) that the next two share: 4 +
    # 1 + 2 s make 7 s, a view. Continuing the old state (one window since 0 s), the report at
    # 45 s opens a window instead, and 1 + 2 s make none.
    want = dict(zip(ids, ["below_threshold"] * 3 + ["counted"], strict=True))
    assert oracle(log, NEW) == want
    records = log.consumed()
    await feed(ch, records[:2], 8, ClickHouseProjection(OLD))
    live = ClickHouseProjection(NEW)
    await feed(ch, records[2:3], 8, live)
    await derive_before_consuming(ch, live)
    await feed(ch, records[3:], 8, live)
    assert await verdicts(ch) == want


def rebuild_command(dsn: str, rule: ViewRule, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
    env.update(MEDIALOG_CLICKHOUSE_URL=dsn, MEDIALOG_DATA_DIR=str(data_dir),
               MEDIALOG_VIEW_THRESHOLD_S=str(rule.threshold_s),
               MEDIALOG_VIEW_WINDOW_S=str(int(rule.window_s)))
    return subprocess.run([sys.executable, "-m", "medialog", "rebuild", "analytics"], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_the_command_refuses_a_store_in_use_and_rederives_one_at_rest(
        tmp_path: Path) -> None:
    path, assets = tmp_path / "chdb", assets_of(3)
    log = view_log(6, assets)
    old, new = oracle(log, OLD), oracle(log, NEW)
    ch = await open_store(path)
    try:
        await feed(ch, log.consumed(), 10, ClickHouseProjection(OLD))
        refused = rebuild_command(f"chdb://{path}", NEW, tmp_path)
        assert refused.returncode == 1, refused.stderr
        assert f"the chDB store {path} is open in another process" in refused.stderr
        assert await verdicts(ch) == old
    finally:
        await ch.close()

    done = rebuild_command(f"chdb://{path}", NEW, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"analytics: {len(new)} view reports re-derived" in done.stdout
    shown = [line for line in done.stderr.splitlines() if line.startswith("rebuild analytics: ")]
    assert shown[0] == f"rebuild analytics: {len(new)} view reports to go", done.stderr
    assert shown[-1].startswith(
        f"rebuild analytics: done, {len(new)}/{len(new)} view reports in "), done.stderr

    ch = await open_store(path)
    try:
        assert await verdicts(ch) == new
        recorded = await ch.run(read_recorded)
        assert (recorded.rule, recorded.derived) == (NEW, True)
    finally:
        await ch.close()
