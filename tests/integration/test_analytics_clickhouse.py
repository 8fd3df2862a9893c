"""The ClickHouse projection and the analytics queries against a real ClickHouse engine (chDB in
this test process, on its own temporary path: chDB allows one path per process at a time, so
the module opens it once and closes it at the end). Exact figures for a known log, the same
figures after a replay from scratch batched differently and after re-deliveries, and the
trending score equal to its formula."""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medialog.analytics import queries
from medialog.analytics.params import TimeRange, TrendingQuery, decay_score
from medialog.clickhouse import Analytics
from medialog.domain import events as e
from medialog.domain.views import ViewRule
from medialog.envelope import encode_event, make_event
from medialog.migrate import migrate_clickhouse
from medialog.tracking import Position
from projections.clickhouse import ClickHouseProjection

pytestmark = pytest.mark.integration
RULE = ViewRule(threshold_s=10, window_s=3600)
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
DAY = TimeRange(start=NOW - timedelta(days=2), end=NOW + timedelta(hours=1), interval="day")
HOUR = TimeRange(start=NOW - timedelta(hours=6), end=NOW + timedelta(hours=1), interval="hour")


@pytest.fixture(scope="module")
async def ch() -> AsyncIterator[Analytics]:
    with tempfile.TemporaryDirectory(prefix="medialog-chdb-") as tmp:
        analytics = Analytics(f"chdb://{tmp}/chdb")
        await analytics.open()
        await migrate_clickhouse(analytics)
        yield analytics
        await analytics.close()


async def reset(ch: Analytics) -> None:
    for table in ("events", "views", "projection_positions"):
        await ch.command(f"TRUNCATE TABLE {table}")


class Log:
    """A log under construction: records with their positions, per topic and partition."""

    def __init__(self) -> None:
        self.records: list[tuple[Position, bytes]] = []
        self._next: dict[tuple[str, int], int] = {}
        self._seq: dict[str, int] = {}

    def add(self, topic: str, key: str, payload: Any, at: datetime, *, seq: bool = False,
            actor: str | None = None) -> None:
        partition = sum(key.encode()) % 3
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        sequence = None
        if seq:
            sequence = self._seq[key] = self._seq.get(key, 0) + 1
        event = make_event(payload, subject=payload.asset_id, event_id=str(uuid.uuid4()),
                           time=at, sequence=sequence)
        if actor:
            event = event.model_copy(update={"actorid": actor, "actorroles": "creator"})
        self.records.append((Position(topic, partition, offset), encode_event(event)))

    def asset(self, asset: str, owner: str, at: datetime, *, size: int | None = None,
              duration: float | None = None, visibility: str | None = None,
              deleted: bool = False) -> None:
        self.add("events.asset", asset, e.UploadRequested(
            asset_id=asset, owner_id=owner, kind="video", filename="a.mp4",
            content_type="video/mp4", size_bytes=size or 1, title="clip",
            staging_key=f"uploads/{owner}/{asset}/original.mp4",
            upload_expires_at=at + timedelta(minutes=15)), at, seq=True, actor=owner)
        if size is not None:
            self.add("events.asset", asset, e.Promoted(
                asset_id=asset, master_key=f"{asset}/original.mp4", size_bytes=size),
                at + timedelta(seconds=1), seq=True)
        if duration is not None:
            self.add("events.asset", asset, e.TranscodeCompleted(
                asset_id=asset, job_id="j", renditions=[], master_playlist_key=None,
                thumbnail_key=None, duration_s=duration, width=None, height=None, probe={}),
                at + timedelta(seconds=2), seq=True)
        if visibility:
            self.add("events.asset", asset, e.MetadataUpdated(asset_id=asset,
                                                              visibility=visibility),
                     at + timedelta(seconds=3), seq=True, actor=owner)
        if deleted:
            self.add("events.asset", asset, e.AssetDeleted(asset_id=asset,
                                                           previous_status="ready"),
                     at + timedelta(seconds=4), seq=True, actor=owner)

    def view(self, asset: str, owner: str, viewer: str, session: str, watch: float,
             at: datetime, duration: float | None = 60.0, position: float | None = None) -> None:
        self.add("events.views", asset, e.ViewReported(
            asset_id=asset, owner_id=owner, viewer_key=viewer, signed_in=True,
            session_id=session, watch_seconds=watch, duration_s=duration, position=position),
            at)

    def like(self, asset: str, owner: str, user: str, at: datetime, liked: bool = True) -> None:
        cls = e.Liked if liked else e.Unliked
        self.add("events.engagement", f"{asset}/{user}",
                 cls(asset_id=asset, user_id=user, owner_id=owner), at, seq=True, actor=user)


async def apply(ch: Analytics, records: list[tuple[Position, bytes]], size: int,
                projection: ClickHouseProjection | None = None) -> None:
    projection = projection or ClickHouseProjection(RULE)
    for i in range(0, len(records), size):
        batch = records[i:i + size]
        await ch.run(lambda c, b=batch: projection.apply(c, b))


async def figures(ch: Analytics, assets: list[str], owner: str) -> dict[str, Any]:
    return {
        "assets": [await queries.asset_report(ch, a, rng) for a in assets for rng in (DAY, HOUR)],
        "creator": await queries.creator_report(ch, owner, DAY),
        "overview": await queries.overview_report(ch, DAY),
        "trending": await queries.trending(ch, TrendingQuery(window="24h", limit=100, now=NOW)),
    }


def busy_log(owner: str, assets: list[str], seed: int = 3) -> Log:
    rng = random.Random(seed)
    log = Log()
    for a in assets:
        log.asset(a, owner, NOW - timedelta(days=1), size=1000, duration=60.0)
    for s in range(40):  # sessions of 1–6 reports of 2–6 s, some viewers return
        asset, viewer = rng.choice(assets), f"viewer-{rng.randrange(12)}"
        start = NOW - timedelta(minutes=rng.randrange(0, 300))
        for k in range(rng.randrange(1, 7)):
            log.view(asset, owner, viewer, f"session-{s}", rng.choice([2, 4, 6]),
                     start + timedelta(seconds=5 * k), position=5.0 * k)
    for u in range(6):
        log.like(rng.choice(assets), owner, f"fan-{u}", NOW - timedelta(minutes=u))
    log.like(assets[0], owner, "fan-0", NOW - timedelta(seconds=10), liked=False)
    rng.shuffle(log.records)  # interleave topics and partitions, then restore each one's order
    log.records.sort(key=lambda r: (r[0].topic, r[0].partition, r[0].offset))
    return log


async def test_replays_and_redeliveries_change_no_figure(ch: Analytics) -> None:
    await reset(ch)
    owner = "creator-replay"
    assets = [str(uuid.uuid4()) for _ in range(3)]
    log = busy_log(owner, assets)
    await apply(ch, log.records, 7)
    first = await figures(ch, assets, owner)
    assert first["creator"]["totals"]["views"] > 5  # the log is not trivial

    # Re-delivery: the same records again, in overlapping batches, to the running projection
    # and to a restarted one.
    projection = ClickHouseProjection(RULE)
    await apply(ch, log.records, 50, projection)
    await apply(ch, log.records[10:], 13, projection)
    await apply(ch, log.records, 1000)
    assert await figures(ch, assets, owner) == first

    # Rows written but positions lost (a crash between the inserts and the positions): every
    # row is written again, identical; with merges stopped the duplicates stay in the parts,
    # so the figures are exact only because every query deduplicates (FINAL).
    await ch.command("SYSTEM STOP MERGES")
    try:
        await ch.command("TRUNCATE TABLE projection_positions")
        await apply(ch, log.records, 17)
        assert (await ch.query("SELECT count() > uniqExact(id) FROM views"))[0][0]
        assert await figures(ch, assets, owner) == first
    finally:
        await ch.command("SYSTEM START MERGES")

    # The same records re-published (duplicates at new offsets) change nothing either.
    copies = Log()
    copies.records = [(Position(p.topic, p.partition, p.offset + 10_000), raw)
                      for p, raw in log.records]
    await apply(ch, copies.records, 31)
    assert await figures(ch, assets, owner) == first

    # A rebuild from scratch, batched otherwise, derives the same figures.
    await reset(ch)
    await apply(ch, log.records, 3)
    assert await figures(ch, assets, owner) == first

    # A crash half-way, then a restart whose first batches straddle what was applied.
    await reset(ch)
    half = len(log.records) // 2
    await apply(ch, log.records[:half], 9)
    await apply(ch, log.records[half - 25:], 11)
    assert await figures(ch, assets, owner) == first


async def test_exact_figures_of_a_known_log(ch: Analytics) -> None:
    await reset(ch)
    owner, other = "creator-known", "creator-other"
    a, b, gone, hidden = (str(uuid.uuid4()) for _ in range(4))
    log = Log()
    log.asset(a, owner, NOW - timedelta(hours=5), size=1000, duration=20.0)
    log.asset(b, owner, NOW - timedelta(hours=5), size=3000, duration=700.0)
    log.asset(gone, owner, NOW - timedelta(hours=5), size=5000, duration=4000.0, deleted=True)
    log.asset(hidden, other, NOW - timedelta(hours=5), size=2000, duration=90.0,
              visibility="private")
    at = NOW - timedelta(hours=2, minutes=30)
    log.view(a, owner, "v1", "s1", 4, at, duration=20.0)  # threshold: half of 20 s = 10 s
    log.view(a, owner, "v1", "s1", 8, at + timedelta(seconds=4), duration=20.0)  # counted
    log.view(a, owner, "v1", "s1", 8, at + timedelta(seconds=12), duration=20.0)  # already
    log.view(a, owner, "v2", "s2", 3, at + timedelta(hours=1), duration=20.0)  # below
    log.view(b, owner, "v1", "s3", 12, at, duration=700.0)  # counted
    log.view(hidden, other, "v3", "s4", 30, at, duration=90.0)
    log.like(a, owner, "fan", NOW - timedelta(minutes=5))
    await apply(ch, log.records, 4)

    report = await queries.asset_report(ch, a, HOUR)
    totals = report["totals"]
    assert (totals["views"], totals["unique_viewers"], totals["reports"]) == (1, 1, 4)
    assert (totals["below_threshold"], totals["already_counted"]) == (2, 1)
    assert totals["watch_seconds"] == 23 and totals["sessions"] == 2
    assert totals["completed_sessions"] == 1 and totals["completion_rate"] == 0.5  # 20 of 20 s
    assert totals["likes"] == 1 and totals["avg_watch_seconds"] == 11.5
    views_by_hour = {s["start"]: s["views"] for s in report["series"] if s["reports"]}
    assert views_by_hour == {"2025-03-10T09:00:00Z": 1, "2025-03-10T10:00:00Z": 0}

    creator = await queries.creator_report(ch, owner, DAY)
    assert creator["totals"]["views"] == 2 and creator["totals"]["uploads"] == 3
    assert [t["asset_id"] for t in creator["top_assets"]][:2] in ([a, b], [b, a])

    overview = await queries.overview_report(ch, DAY)
    assert overview["totals"]["uploads"] == 4 and overview["totals"]["views"] == 3
    assert overview["totals"]["unique_users"] == 6  # 2 creators (commands) + v1, v2, v3 + fan
    assert overview["storage"] == {"stored_assets": 3, "storage_used_bytes": 6000,
                                   "average_file_size_bytes": 2000}
    durations = {d["bucket"]: d["assets"] for d in overview["duration_distribution"]}
    assert durations == {"<30s": 1, "30s-2m": 1, "2m-10m": 0, "10m-30m": 1, "30m-60m": 0,
                         ">=60m": 0}

    items = await queries.trending(ch, TrendingQuery(window="24h", limit=10, now=NOW))
    assert [i["asset_id"] for i in items] == [a, b]  # the like lifts a; hidden is private
    assert items[0]["likes"] == 1 and items[1]["views"] == 1


async def test_the_trending_score_is_its_formula(ch: Analytics) -> None:
    await reset(ch)
    owner = "creator-trend"
    hot, warm = str(uuid.uuid4()), str(uuid.uuid4())
    log = Log()
    for a in (hot, warm):
        log.asset(a, owner, NOW - timedelta(days=3))
    ages = {hot: [60, 600, 1800], warm: [300, 7000, 20000, 40000]}
    for a, seconds in ages.items():
        for i, age in enumerate(seconds):
            log.view(a, owner, f"v{i}", f"{a}-{i}", 15, NOW - timedelta(seconds=age))
    log.like(warm, owner, "fan", NOW - timedelta(seconds=100))
    log.like(warm, owner, "fan", NOW - timedelta(seconds=50), liked=False)
    log.like(warm, owner, "fan2", NOW - timedelta(seconds=3600))
    await apply(ch, log.records, 5)
    q = TrendingQuery(window="24h", limit=10, now=NOW)
    scores = {i["asset_id"]: i["score"] for i in await queries.trending(ch, q)}
    assert scores[hot] == pytest.approx(decay_score(ages[hot], [], q.tau_s), rel=1e-6)
    expected_warm = decay_score(ages[warm], [(100, 1), (50, -1), (3600, 1)], q.tau_s)
    assert scores[warm] == pytest.approx(expected_warm, rel=1e-6)
    assert list(scores) == sorted(scores, key=lambda k: -scores[k])
    short = await queries.trending(ch, TrendingQuery(window="1h", limit=1, now=NOW))
    assert [i["asset_id"] for i in short] == [hot]
