"""Projection "engagement": ``events.views`` + ``events.engagement`` → ``view_sessions``,
``likes`` and ``asset_stats`` in PostgreSQL (what ``/v1/assets/{id}/stats`` and likes read).

Exactly once (DESIGN.md rules 2, 3): each batch is one transaction with its offsets
(``projections.runner.apply_batch``), so a re-delivered batch changes nothing. Beyond offsets:

* views: a session's reports are folded with the pure rule (``medialog.domain.views``); its
  state, including the recent report ids, is stored per session, so the same record appearing
  twice on the log (a producer retry) is a ``duplicate`` and counts nothing;
* likes: guarded on the per-(asset, user) sequence: an event applies only if its sequence is
  above the stored version (equal or lower: a re-emitted duplicate, skipped).

Counters change by deltas computed in the same transaction, so they equal the fold of the log.
Rebuild: ``projections.engagement_rebuild`` (``medialog rebuild engagement``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import faust
from pydantic_core import to_json

from medialog.config import Settings
from medialog.domain.engagement import engagement_key
from medialog.domain.events import Liked, Unliked, ViewReported
from medialog.domain.views import Report, SessionState, ViewRule, replay
from medialog.outcomes import NOTIFY_CHANNEL
from projections.runner import Apply, Record, apply_or_skip, events_of
from streams.app import StreamDeps

log = logging.getLogger(__name__)
NAME = "projection.engagement"
TOPICS = ("events.views", "events.engagement")
GATE_LOCK = 0x6D6C656E  # advisory lock: live batches share it, a rebuild takes it alone
BATCH_MAX, BATCH_WITHIN_S = 2000, 0.2

SessionKey = tuple[str, str, str]  # (asset_id, viewer_key, session_id)
_NEW = SessionState()


@dataclass
class _Delta:
    views: int = 0
    likes: int = 0
    watched_ms: int = 0


def rule_of(settings: Settings) -> ViewRule:
    return ViewRule(threshold_s=settings.view_threshold_s, window_s=settings.view_window_s)


def make_apply(rule: ViewRule) -> Apply:
    """The ``apply`` for ``runner.apply_batch``, with the configured view rule.

    Two round trips per batch, whatever its size: one read of the touched sessions and likes,
    the folds in Python, one statement writing sessions, likes, counters (and the notify)."""

    async def apply(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        views: dict[SessionKey, list[Report]] = {}
        signed_in: dict[SessionKey, bool] = {}
        likes: list[tuple[Record, Liked | Unliked]] = []
        for r in records:
            p = r.payload
            if isinstance(p, ViewReported):
                key = (p.asset_id, p.viewer_key, p.session_id)
                report = Report(report_id=r.event.id, at=r.event.time,
                                watch_seconds=p.watch_seconds, duration_s=p.duration_s)
                if key in views:
                    views[key].append(report)
                else:
                    views[key], signed_in[key] = [report], p.signed_in
            elif isinstance(p, Liked | Unliked):
                likes.append((r, p))
        if not views and not likes:
            return
        states, current = await _read(conn, views, likes)
        deltas: defaultdict[str, _Delta] = defaultdict(_Delta)
        sessions = _fold_views(rule, views, signed_in, states, deltas)
        liked = _fold_likes(likes, current, deltas)
        await _write(conn, sessions, liked, deltas)

    return apply


_READ = (  # one round trip: the touched sessions (kind 's') and likes rows (kind 'l')
    "SELECT 's' AS kind, s.asset_id AS key, s.viewer_key, s.session_id, s.window_start, "
    "s.watched_ms, s.counted_at, s.reports, s.views, s.recent_ids, "
    "NULL::boolean AS liked, NULL::integer AS version, NULL::timestamptz AS liked_at "
    "FROM view_sessions s JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(a, v, sid) "
    "ON s.asset_id = k.a AND s.viewer_key = k.v AND s.session_id = k.sid "
    "UNION ALL "
    "SELECT 'l', l.engagement_key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "l.liked, l.version, l.liked_at FROM likes l WHERE l.engagement_key = ANY($4::text[])"
)


async def _read(
    conn: asyncpg.Connection, keys: Collection[SessionKey],
    likes: Sequence[tuple[Record, Liked | Unliked]],
) -> tuple[dict[SessionKey, SessionState], dict[str, tuple[bool, int, datetime | None]]]:
    rows = await conn.fetch(
        _READ, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        list({engagement_key(p.asset_id, p.user_id) for _, p in likes}),
    )
    states: dict[SessionKey, SessionState] = {}
    current: dict[str, tuple[bool, int, datetime | None]] = {}
    for r in rows:
        if r[0] == "s":
            states[(r[1], r[2], r[3])] = SessionState(
                window_start=r[4], watched_ms=r[5], counted_at=r[6], reports=r[7], views=r[8],
                recent_ids=tuple(r[9]))
        else:
            current[r[1]] = (r[10], r[11], r[12])
    return states, current


def _fold_views(
    rule: ViewRule, views: Mapping[SessionKey, Sequence[Report]],
    signed_in: Mapping[SessionKey, bool], states: Mapping[SessionKey, SessionState],
    deltas: defaultdict[str, _Delta],
) -> list[tuple[SessionKey, bool, SessionState]]:
    """Fold each session's reports (log order within each partition: the fold is exact) from
    its stored state; the changed sessions, sorted (concurrent workers lock rows in the same
    order)."""
    changed = []
    for key in sorted(views):
        before = states.get(key, _NEW)
        done = replay(rule, views[key], before)
        if done.state.reports == before.reports:
            continue  # duplicates only
        delta = deltas[key[0]]
        delta.views += done.state.views - before.views
        delta.watched_ms += done.watched_ms
        changed.append((key, signed_in[key], done.state))
    return changed


def _fold_likes(
    records: Sequence[tuple[Record, Liked | Unliked]],
    current: dict[str, tuple[bool, int, datetime | None]], deltas: defaultdict[str, _Delta],
) -> list[tuple[str, tuple[str, str, bool, int, datetime | None, datetime]]]:
    """Apply like/unlike events above each key's version; the changed rows, sorted."""
    out: dict[str, tuple[str, str, bool, int, datetime | None, datetime]] = {}
    for r, p in records:
        key = engagement_key(p.asset_id, p.user_id)
        liked, version, liked_at = current.get(key, (False, 0, None))
        seq = r.event.sequence
        if seq is None or seq <= version:
            continue  # re-emitted duplicate (or not from the actor): already applied
        if seq > version + 1:
            log.warning("engagement %s: sequence %d after %d (gap)", key, seq, version)
        now_liked = isinstance(p, Liked)
        if now_liked != liked:
            deltas[p.asset_id].likes += 1 if now_liked else -1
        liked_at = r.event.time if now_liked and not liked else liked_at
        current[key] = (now_liked, seq, liked_at)
        out[key] = (p.asset_id, p.user_id, now_liked, seq, liked_at, r.event.time)
    return sorted(out.items())


_WRITE = (  # one statement; each part is a no-op on an empty array
    "WITH sessions AS (INSERT INTO view_sessions AS s (asset_id, viewer_key, session_id, "
    "signed_in, window_start, watched_ms, counted_at, reports, views, recent_ids) "
    "SELECT r->>0, r->>1, r->>2, (r->>3)::boolean, (r->>4)::timestamptz, (r->>5)::bigint, "
    "(r->>6)::timestamptz, (r->>7)::integer, (r->>8)::integer, "
    "ARRAY(SELECT jsonb_array_elements_text(r->9)) FROM jsonb_array_elements($1::jsonb) AS r "
    "ON CONFLICT (asset_id, viewer_key, session_id) DO UPDATE SET "
    "window_start = EXCLUDED.window_start, watched_ms = EXCLUDED.watched_ms, "
    "counted_at = EXCLUDED.counted_at, reports = EXCLUDED.reports, views = EXCLUDED.views, "
    "recent_ids = EXCLUDED.recent_ids, updated_at = now()), "
    "likes AS (INSERT INTO likes (engagement_key, asset_id, user_id, liked, version, liked_at, "
    "updated_at) SELECT r->>0, r->>1, r->>2, (r->>3)::boolean, (r->>4)::integer, "
    "(r->>5)::timestamptz, (r->>6)::timestamptz FROM jsonb_array_elements($2::jsonb) AS r "
    "ON CONFLICT (engagement_key) DO UPDATE SET liked = EXCLUDED.liked, "
    "version = EXCLUDED.version, liked_at = EXCLUDED.liked_at, updated_at = EXCLUDED.updated_at), "
    "stats AS (INSERT INTO asset_stats AS t (asset_id, view_count, like_count, "
    "watch_seconds_total) SELECT r->>0, (r->>1)::bigint, (r->>2)::bigint, "
    "(r->>3)::numeric / 1000 FROM jsonb_array_elements($3::jsonb) AS r "
    "ON CONFLICT (asset_id) DO UPDATE SET "
    "view_count = t.view_count + EXCLUDED.view_count, "
    "like_count = t.like_count + EXCLUDED.like_count, "
    "watch_seconds_total = t.watch_seconds_total + EXCLUDED.watch_seconds_total, "
    "updated_at = now()) "
    "SELECT pg_notify($4, 'engagement') WHERE $5::boolean"  # likes changed: wake waiters
)


async def _write(
    conn: asyncpg.Connection, sessions: Sequence[tuple[SessionKey, bool, SessionState]],
    likes: Sequence[tuple[str, tuple[str, str, bool, int, datetime | None, datetime]]],
    deltas: dict[str, _Delta],
) -> None:
    """The rows go as three JSON arrays of arrays (one parameter each): encoding thousands of
    array elements one by one cost more than the statement itself."""
    stats = sorted((a, d) for a, d in deltas.items() if d.views or d.likes or d.watched_ms)
    if not sessions and not likes and not stats:
        return
    await conn.execute(  # rows sorted by key: concurrent workers lock them in the same order
        _WRITE,
        to_json([(*k, si, s.window_start, s.watched_ms, s.counted_at, s.reports, s.views,
                  s.recent_ids) for k, si, s in sessions]).decode(),
        to_json([(k, *v) for k, v in likes]).decode(),
        to_json([(a, d.views, d.likes, d.watched_ms) for a, d in stats]).decode(),
        NOTIFY_CHANNEL, bool(likes),
    )


@contextlib.asynccontextmanager
async def live_gate(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Held (shared) around each live batch; a rebuild takes the lock exclusively, so it starts
    only between batches and live batches wait until it is done."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock_shared($1)", GATE_LOCK)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock_shared($1)", GATE_LOCK)


def register(app: faust.App, deps: StreamDeps) -> None:
    s = deps.settings
    apply = make_apply(rule_of(s))
    topic = app.topic(*(s.topic(t) for t in TOPICS), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name="projection-engagement")
    async def engagement_projection(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(  # type: ignore[attr-defined]
            BATCH_MAX, within=BATCH_WITHIN_S
        ):
            async with live_gate(deps.pool):
                await apply_or_skip(deps.pool, NAME, apply, events_of(batch))
