"""The ClickHouse projection and the analytics queries against a real ClickHouse engine (chDB in
this test process, on its own temporary path: chDB allows one path per process at a time, so
the module opens it once and closes it at the end). Exact figures for a known log, the same
figures after a replay from scratch batched differently and after re-deliveries, and the
trending score equal to its formula."""

from __future__ import annotations

import random
import tempfile
import uuid
from collections import Counter
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
from projections.clickhouse.projection import POSITION_COLUMNS, ClickHouseProjection, Inserter

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
        # What was logged, in plain values, for working figures out by hand
        self.views: list[tuple[str, str, str, float, datetime]] = []  # asset, viewer, session…
        self.likes: list[tuple[str, str, datetime, int]] = []  # asset, user, time, +1 | -1
        self._next: dict[tuple[str, int], int] = {}
        self._seq: dict[str, int] = {}

    def add(self, topic: str, key: str, payload: Any, at: datetime, *, seq: bool = False,
            actor: str | None = None, roles: str = "creator") -> None:
        partition = sum(key.encode()) % 3
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        sequence = None
        if seq:
            sequence = self._seq[key] = self._seq.get(key, 0) + 1
        event = make_event(payload, subject=payload.asset_id, event_id=str(uuid.uuid4()),
                           time=at, sequence=sequence)
        if actor:
            event = event.model_copy(update={"actorid": actor, "actorroles": roles})
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
                at + timedelta(seconds=1), seq=True, actor="system:promoter", roles="system")
        if duration is not None:
            self.add("events.asset", asset, e.TranscodeCompleted(
                asset_id=asset, job_id="j", renditions=[], master_playlist_key=None,
                thumbnail_key=None, duration_s=duration, width=None, height=None, probe={}),
                at + timedelta(seconds=2), seq=True, actor="system:transcoder", roles="system")
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
        self.views.append((asset, viewer, session, watch, at))
        self.add("events.views", asset, e.ViewReported(
            asset_id=asset, owner_id=owner, viewer_key=viewer, signed_in=True,
            session_id=session, watch_seconds=watch, duration_s=duration, position=position),
            at)

    def like(self, asset: str, owner: str, user: str, at: datetime, liked: bool = True) -> None:
        cls = e.Liked if liked else e.Unliked
        self.likes.append((asset, user, at, 1 if liked else -1))
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


VIEW_FIGURES = ("views", "reports", "below_threshold", "already_counted", "watch_seconds")


def by_hand(log: Log, assets: list[str], owner: str) -> dict[str, Any]:
    """The figures of a ``busy_log``, worked out from what was logged. Every session's reports
    lie within seconds of each other (one window of the rule) and every asset lasts 60 s, so a
    session counts once, at the report that brings its watch time to 10 s; the reports before it
    are below the threshold, those after it already counted. All of it lies in both ranges."""
    per = {a: dict.fromkeys((*VIEW_FIGURES, "sessions", "likes", "unlikes"), 0) for a in assets}
    viewers: dict[str, set[str]] = {a: set() for a in assets}
    counted: dict[str, list[datetime]] = {a: [] for a in assets}
    watched: dict[tuple[str, str, str], float] = {}
    for asset, viewer, session, watch, at in log.views:
        row, key = per[asset], (asset, viewer, session)
        before = watched.get(key, 0)
        row["sessions"] += key not in watched
        watched[key] = before + watch
        row["reports"] += 1
        row["watch_seconds"] += watch
        if before >= RULE.threshold_s:
            row["already_counted"] += 1
        elif before + watch >= RULE.threshold_s:
            row["views"] += 1
            viewers[asset].add(viewer)
            counted[asset].append(at)
        else:
            row["below_threshold"] += 1
    for asset, _, _, sign in log.likes:
        per[asset]["likes" if sign > 0 else "unlikes"] += 1
    for a in assets:
        per[a]["unique_viewers"] = len(viewers[a])
    every_viewer = len(set().union(*viewers.values()))
    creator = {k: sum(per[a][k] for a in assets) for k in per[assets[0]]}
    creator.update(unique_viewers=every_viewer, uploads=len(assets), uploads_completed=0)
    overview = {k: creator[k] for k in VIEW_FIGURES}
    overview.update(unique_viewers=every_viewer, uploads=len(assets), uploads_completed=0,
                    playback_urls_issued=0,
                    unique_users=len({owner} | {u for _, u, _, _ in log.likes}
                                     | {v for _, v, _, _, _ in log.views}))

    q = TrendingQuery(window="24h", limit=100, now=NOW)
    scored = []
    for a in assets:
        views = [(NOW - t).total_seconds() for t in counted[a] if q.since <= t <= NOW]
        likes = [((NOW - t).total_seconds(), sign) for x, _, t, sign in log.likes
                 if x == a and q.since <= t <= NOW]
        score = decay_score(views, likes, q.tau_s)
        if score > 0:
            scored.append((-score, a, len(views), sum(sign for _, sign in likes)))
    return {
        "assets": per,
        "views_by_hour": {
            a: dict(Counter(t.strftime("%Y-%m-%dT%H:00:00Z") for t in counted[a]))
            for a in assets},
        "creator": creator,
        "top_assets": sorted(
            ({"asset_id": a, "views": per[a]["views"], "watch_seconds": per[a]["watch_seconds"]}
             for a in assets if per[a]["reports"]),
            key=lambda t: (-t["views"], t["asset_id"])),
        "overview": overview,
        "trending": [
            {"rank": rank, "asset_id": a, "score": pytest.approx(-minus, rel=1e-6, abs=1e-6),
             "views": views, "likes": likes}
            for rank, (minus, a, views, likes) in enumerate(sorted(scored), 1)],
    }


def pick(row: dict[str, Any], keys: Any) -> dict[str, Any]:
    return {k: row[k] for k in keys}


def assert_as_worked_out(got: dict[str, Any], want: dict[str, Any], assets: list[str]) -> None:
    """``figures`` against ``by_hand``."""
    reports = iter(got["assets"])  # per asset, by the DAY and then by the HOUR
    for a in assets:
        by_day, by_hour = next(reports), next(reports)
        for report in (by_day, by_hour):
            assert report["asset_id"] == a
            assert pick(report["totals"], want["assets"][a]) == want["assets"][a], a
        views = {s["start"]: s["views"] for s in by_hour["series"] if s["views"]}
        assert views == want["views_by_hour"][a], a
    creator = got["creator"]
    assert pick(creator["totals"], want["creator"]) == want["creator"]
    assert creator["top_assets"] == want["top_assets"]
    overview = got["overview"]
    assert pick(overview["totals"], want["overview"]) == want["overview"]
    assert overview["storage"] == {"stored_assets": 3, "storage_used_bytes": 3000,
                                   "average_file_size_bytes": 1000}
    assert {d["bucket"]: d["assets"] for d in overview["duration_distribution"]} == {
        "<30s": 0, "30s-2m": 3, "2m-10m": 0, "10m-30m": 0, "30m-60m": 0, ">=60m": 0}
    assert got["trending"] == want["trending"]


async def test_replays_and_redeliveries_change_no_figure(ch: Analytics) -> None:
    """A busy log gives the figures worked out by hand; re-deliveries, lost positions,
    re-published duplicates, rebuilds and a crash half-way all leave them as they were."""
    await reset(ch)
    owner = "creator-replay"
    assets = [str(uuid.uuid4()) for _ in range(3)]
    log = busy_log(owner, assets)
    want = by_hand(log, assets, owner)
    overall = want["overview"]  # the log is not trivial: every verdict occurs
    assert overall["views"] > 5 and overall["below_threshold"] and overall["already_counted"]
    await apply(ch, log.records, 7)
    first = await figures(ch, assets, owner)
    assert_as_worked_out(first, want, assets)

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
    # 2 creators (commands) + v1, v2, v3 + fan; the workers (system:*) are not users
    assert overview["totals"]["unique_users"] == 6
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



async def test_an_insert_that_fails_leaves_the_projections_inserter_usable(ch: Analytics) -> None:
    """The projection's inserts share one insert context per table: a failed insert (rows of the
    wrong shape, a value of the wrong type) must leave it empty, or every later insert into that
    table would be refused."""
    await reset(ch)
    insert = Inserter()
    bad_rows = ([["projection.test", "events.views", 0]],  # a column short
                [["projection.test", "events.views", 0, "not an offset"]])
    for rows in bad_rows:
        with pytest.raises(Exception):  # noqa: B017 — clickhouse-connect's or the engine's
            await ch.run(lambda c, r=rows: insert(c, "projection_positions", r, POSITION_COLUMNS))
    for offset in range(3):
        await ch.run(lambda c, o=offset: insert(
            c, "projection_positions", [["projection.test", "events.views", 0, o]],
            POSITION_COLUMNS))
    assert await ch.query(
        "SELECT offset FROM projection_positions "
        "WHERE consumer = 'projection.test' ORDER BY offset"
    ) == [(0,), (1,), (2,)]
