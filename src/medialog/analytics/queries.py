"""The analytics queries, over the ClickHouse projection's tables (002_analytics.sql).

Exactness: every read is of ``views FINAL`` / ``events FINAL`` (a replayed or re-published
record collapses to one row), or a ``uniqExact`` that duplicates cannot change; aggregates are
computed at query time from these base tables, never kept as running sums. Values reach
ClickHouse only as server-side parameters (``{name:Type}``); the only SQL chosen in Python is
a bucket function from a fixed table. Each query runs on the ``Analytics`` thread.

Definitions. A *view* is a report the rule judged ``counted``; *unique viewers* are the distinct
viewer keys of counted views; *watch time* sums every report's delta; a *session* is a
(asset, viewer key, session id) with reports in the range, bucketed by its first report;
*completion rate* = sessions that watched ≥ 90 % of the duration (by watch time or position)
÷ sessions whose duration is known. *Unique users* are the distinct signed-in users that caused
an event (a command), reported a view signed in, or were issued playback URLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from medialog.analytics.params import LIKE_WEIGHT, TimeRange, TrendingQuery
from medialog.clickhouse import Analytics
from medialog.timefmt import iso

COMPLETION_RATIO = 0.9
_BUCKET = {"hour": "toStartOfHour", "day": "toStartOfDay"}
_RANGE = "time >= {start:DateTime64(3, 'UTC')} AND time < {end:DateTime64(3, 'UTC')}"
_LIKED, _UNLIKED = "medialog.engagement.liked", "medialog.engagement.unliked"
DURATION_BUCKETS = ("<30s", "30s-2m", "2m-10m", "10m-30m", "30m-60m", ">=60m")

_REPORTS = """SELECT __T__ countIf(verdict = 'counted'),
  uniqExactIf(viewer_key, verdict = 'counted'),
  sum(watch_ms), count(), countIf(verdict = 'below_threshold'), countIf(verdict = 'already_counted')
FROM views FINAL WHERE __WHERE__ AND """ + _RANGE
_REPORT_KEYS = ("views", "unique_viewers", "watch_ms", "reports", "below_threshold",
                "already_counted")
_SESSIONS = """SELECT __T__ count(), countIf(d > 0),
  countIf(d > 0 AND greatest(w / 1000, p) >= {ratio:Float64} * d)
FROM (SELECT min(time) AS started, sum(watch_ms) AS w, ifNull(max(duration_s), 0) AS d,
        ifNull(max(position), 0) AS p
      FROM views FINAL WHERE __WHERE__ AND """ + _RANGE + """
      GROUP BY asset_id, viewer_key, session_id)"""
_SESSION_KEYS = ("sessions", "sessions_with_duration", "completed_sessions")
_LIKES = f"""SELECT __T__ countIf(type = '{_LIKED}'), countIf(type = '{_UNLIKED}')
FROM events FINAL WHERE type IN ('{_LIKED}', '{_UNLIKED}') AND __WHERE__ AND """ + _RANGE
_UPLOADS = """SELECT __T__ countIf(type = 'medialog.asset.upload_requested'),
  countIf(type = 'medialog.asset.upload_completed')
FROM events FINAL
WHERE type IN ('medialog.asset.upload_requested', 'medialog.asset.upload_completed')
  AND __WHERE__ AND """ + _RANGE
_PLAYBACK = """SELECT __T__ count() FROM events FINAL
WHERE type = 'medialog.access.playback_issued' AND __WHERE__ AND """ + _RANGE
_USERS = """SELECT __T__ uniqExact(u) FROM (
  SELECT time, actor_id AS u FROM events
    WHERE actor_roles != '' AND NOT has(splitByChar(',', actor_roles), 'system')
      AND """ + _RANGE + """
  UNION ALL SELECT time, viewer_key FROM views WHERE signed_in = 1 AND """ + _RANGE + """
  UNION ALL SELECT time, JSONExtractString(data, 'user_id') FROM events
    WHERE type = 'medialog.access.playback_issued' AND """ + _RANGE + """
) WHERE u != '' AND __WHERE__"""
_DELETED = "SELECT subject FROM events WHERE type = 'medialog.asset.deleted'"
_STORAGE = """SELECT count(), sum(size), avg(size) FROM (
  SELECT subject, argMax(JSONExtractUInt(data, 'size_bytes'), assumeNotNull(sequence)) AS size
  FROM events FINAL WHERE type = 'medialog.asset.promoted' GROUP BY subject)
WHERE subject NOT IN (""" + _DELETED + ")"
_DURATIONS = """SELECT multiIf(d < 30, '<30s', d < 120, '30s-2m', d < 600, '2m-10m',
  d < 1800, '10m-30m', d < 3600, '30m-60m', '>=60m') AS bucket, count()
FROM (SELECT subject, argMax(JSONExtractFloat(data, 'duration_s'), assumeNotNull(sequence)) AS d
      FROM events FINAL WHERE type = 'medialog.asset.transcode_completed'
        AND JSONExtractRaw(data, 'duration_s') NOT IN ('', 'null') GROUP BY subject)
WHERE subject NOT IN (""" + _DELETED + """)
GROUP BY bucket"""
# Public and not deleted: the latest visibility an asset event set (an upload request that
# predates the field means public), and no asset.deleted.
_VISIBLE = """SELECT subject FROM events FINAL
WHERE type IN ('medialog.asset.upload_requested', 'medialog.asset.metadata_updated',
               'medialog.asset.deleted', 'medialog.asset.upload_expired')
GROUP BY subject
HAVING argMaxIf(if(type = 'medialog.asset.upload_requested' AND NOT JSONHas(data, 'visibility'),
                   'public', JSONExtractString(data, 'visibility')),
                assumeNotNull(sequence),
                type = 'medialog.asset.upload_requested'
                  OR JSONExtractString(data, 'visibility') != '') = 'public'
   AND countIf(type IN ('medialog.asset.deleted', 'medialog.asset.upload_expired')) = 0"""
# Engagement events are keyed "{asset}/{user}"; the asset is read from the payload.
_ASSET_OF_LIKE = "JSONExtractString(data, 'asset_id')"
_AGE = "dateDiff('millisecond', time, {now:DateTime64(3, 'UTC')}) / 1000.0 / {tau:Float64}"
_WINDOW = "time >= {since:DateTime64(3, 'UTC')} AND time <= {now:DateTime64(3, 'UTC')}"
_TRENDING = f"""SELECT asset_id, sum(w) AS score, sum(v) AS n_views, sum(l) AS n_likes FROM (
  SELECT asset_id, exp(-{_AGE}) AS w, toInt64(1) AS v, toInt64(0) AS l
  FROM views FINAL WHERE verdict = 'counted' AND {_WINDOW}
  UNION ALL
  SELECT liked_asset, {{like_weight:Float64}} * s * exp(-{_AGE}), toInt64(0), toInt64(s)
  FROM (SELECT {_ASSET_OF_LIKE} AS liked_asset, time, if(type = '{_LIKED}', 1, -1) AS s
        FROM events FINAL
        WHERE type IN ('{_LIKED}', '{_UNLIKED}') AND {_WINDOW})
) WHERE asset_id IN ({_VISIBLE})
GROUP BY asset_id HAVING score > 0
ORDER BY score DESC, asset_id LIMIT {{limit:UInt32}}"""

Row = dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One query of a report: its figures' names, its filter, the column it is bucketed by."""

    template: str
    keys: tuple[str, ...]
    where: str
    time: str = "time"


async def _series(ch: Analytics, part: Part, params: dict[str, Any],
                  rng: TimeRange) -> tuple[Row, dict[datetime, Row]]:
    """Run ``template`` once for the whole range and once per bucket (``__T__`` is where the
    bucket column goes, ``__WHERE__`` the filter: both fixed SQL, never values)."""
    p = {**params, "start": rng.start, "end": rng.end}
    sql = part.template.replace("__WHERE__", part.where)
    total = (await ch.query(sql.replace("__T__", ""), p))[0]
    bucket = f"{_BUCKET[rng.interval]}({part.time}) AS t,"
    rows = await ch.query(sql.replace("__T__", bucket) + " GROUP BY t ORDER BY t", p)
    per = {_utc(r[0]): dict(zip(part.keys, r[1:], strict=True)) for r in rows}
    return dict(zip(part.keys, total, strict=True)), per


def _utc(value: datetime) -> datetime:
    """chDB returns DateTime values without their zone: they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finish(row: Row) -> Row:
    """Derived figures of a bucket or of the totals."""
    out = dict(row)
    watch_ms = out.pop("watch_ms", None)
    if watch_ms is not None:
        out["watch_seconds"] = watch_ms / 1000
        if "sessions" in out:
            sessions = out["sessions"]
            out["avg_watch_seconds"] = round(watch_ms / 1000 / sessions, 3) if sessions else None
    if "sessions_with_duration" in out:
        known = out.pop("sessions_with_duration")
        out["completion_rate"] = round(out["completed_sessions"] / known, 4) if known else None
    return out


async def _report(ch: Analytics, parts: list[Part], params: dict[str, Any],
                  rng: TimeRange) -> Row:
    totals: Row = {}
    buckets: dict[datetime, Row] = {b: {} for b in rng.buckets()}
    for part in parts:
        total, per = await _series(ch, part, params, rng)
        totals.update(total)
        for b, row in buckets.items():
            row.update(per.get(b, dict.fromkeys(part.keys, 0)))
    return {
        "from": iso(rng.start), "to": iso(rng.end), "interval": rng.interval,
        "totals": _finish(totals),
        "series": [{"start": iso(b), **_finish(row)} for b, row in buckets.items()],
    }


def _view_parts(where: str) -> list[Part]:
    return [Part(_REPORTS, _REPORT_KEYS, where), Part(_SESSIONS, _SESSION_KEYS, where, "started")]


async def asset_report(ch: Analytics, asset_id: str, rng: TimeRange) -> Row:
    parts = _view_parts("asset_id = {id:String}")
    parts.append(Part(_LIKES, ("likes", "unlikes"), _ASSET_OF_LIKE + " = {id:String}"))
    params = {"id": asset_id, "ratio": COMPLETION_RATIO}
    return {"asset_id": asset_id, **await _report(ch, parts, params, rng)}


# An asset's events after its upload request do not name its owner (an upload_completed has
# none): they are the creator's through the asset's request.
_OF_CREATOR = ("subject IN (SELECT subject FROM events WHERE type = "
               "'medialog.asset.upload_requested' AND JSONExtractString(data, 'owner_id') = "
               "{id:String})")


async def creator_report(ch: Analytics, creator_id: str, rng: TimeRange) -> Row:
    where = "owner_id = {id:String}"
    owned = "JSONExtractString(data, 'owner_id') = {id:String}"
    parts = _view_parts(where)
    parts.append(Part(_LIKES, ("likes", "unlikes"), owned))
    parts.append(Part(_UPLOADS, ("uploads", "uploads_completed"), _OF_CREATOR))
    params = {"id": creator_id, "ratio": COMPLETION_RATIO}
    report = await _report(ch, parts, params, rng)
    top = await ch.query(
        "SELECT asset_id, countIf(verdict = 'counted') AS v, sum(watch_ms) FROM views FINAL "
        f"WHERE {where} AND {_RANGE} GROUP BY asset_id ORDER BY v DESC, asset_id LIMIT 10",
        {**params, "start": rng.start, "end": rng.end},
    )
    report["top_assets"] = [
        {"asset_id": a, "views": v, "watch_seconds": w / 1000} for a, v, w in top
    ]
    return {"creator_id": creator_id, **report}


async def overview_report(ch: Analytics, rng: TimeRange) -> Row:
    parts = [
        Part(_UPLOADS, ("uploads", "uploads_completed"), "1"),
        Part(_PLAYBACK, ("playback_urls_issued",), "1"),
        Part(_USERS, ("unique_users",), "1"),
        Part(_REPORTS, _REPORT_KEYS, "1"),
    ]
    report = await _report(ch, parts, {}, rng)
    count, total, avg = (await ch.query(_STORAGE))[0]
    durations = dict(await ch.query(_DURATIONS))
    report["storage"] = {
        "stored_assets": count,
        "storage_used_bytes": total,
        "average_file_size_bytes": round(avg) if count else None,
    }
    report["duration_distribution"] = [
        {"bucket": b, "assets": durations.get(b, 0)} for b in DURATION_BUCKETS
    ]
    return report


async def trending(ch: Analytics, q: TrendingQuery) -> list[Row]:
    rows = await ch.query(_TRENDING, {
        "now": q.now, "since": q.since, "tau": q.tau_s, "like_weight": LIKE_WEIGHT,
        "limit": q.limit,
    })
    return [
        {"rank": i + 1, "asset_id": a, "score": round(s, 6), "views": v, "likes": lk}
        for i, (a, s, v, lk) in enumerate(rows)
    ]
