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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import faust

from medialog.config import Settings
from medialog.domain.engagement import engagement_key
from medialog.domain.events import Liked, Unliked, ViewReported
from medialog.domain.views import Report, SessionState, Verdict, ViewRule, observe
from medialog.outcomes import NOTIFY_CHANNEL
from projections.runner import Apply, Record, apply_batch, events_of
from streams.app import StreamDeps

log = logging.getLogger(__name__)
NAME = "projection.engagement"
TOPICS = ("events.views", "events.engagement")
GATE_LOCK = 0x6D6C656E  # advisory lock: live batches share it, a rebuild takes it alone
BATCH_MAX, BATCH_WITHIN_S = 2000, 0.2

SessionKey = tuple[str, str, str]  # (asset_id, viewer_key, session_id)


@dataclass
class _Delta:
    views: int = 0
    likes: int = 0
    watched_ms: int = 0


def rule_of(settings: Settings) -> ViewRule:
    return ViewRule(threshold_s=settings.view_threshold_s, window_s=settings.view_window_s)


def make_apply(rule: ViewRule) -> Apply:
    """The ``apply`` for ``runner.apply_batch``, with the configured view rule."""

    async def apply(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        deltas: defaultdict[str, _Delta] = defaultdict(_Delta)
        views = [(r, r.payload) for r in records if isinstance(r.payload, ViewReported)]
        likes = [(r, r.payload) for r in records if isinstance(r.payload, Liked | Unliked)]
        if views:
            await _apply_views(conn, rule, views, deltas)
        if likes and await _apply_likes(conn, likes, deltas):
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, "engagement")
        await _add_stats(conn, deltas)

    return apply


async def _apply_views(
    conn: asyncpg.Connection, rule: ViewRule, records: Sequence[tuple[Record, ViewReported]],
    deltas: defaultdict[str, _Delta],
) -> None:
    keys = sorted({(p.asset_id, p.viewer_key, p.session_id) for _, p in records})
    rows = await conn.fetch(
        "SELECT s.* FROM view_sessions s JOIN unnest($1::text[], $2::text[], $3::text[]) "
        "AS k(a, v, s2) ON s.asset_id = k.a AND s.viewer_key = k.v AND s.session_id = k.s2",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
    )
    states: dict[SessionKey, SessionState] = {
        (r["asset_id"], r["viewer_key"], r["session_id"]): SessionState(
            window_start=r["window_start"], watched_ms=r["watched_ms"],
            counted_at=r["counted_at"], reports=r["reports"], views=r["views"],
            recent_ids=tuple(r["recent_ids"]),
        )
        for r in rows
    }
    signed_in: dict[SessionKey, bool] = {}
    changed: set[SessionKey] = set()
    for r, p in records:  # log order within each partition: the fold is exact
        key = (p.asset_id, p.viewer_key, p.session_id)
        seen = observe(rule, states.get(key, SessionState()), Report(
            report_id=r.event.id, at=r.event.time, watch_seconds=p.watch_seconds,
            duration_s=p.duration_s))
        if seen.verdict is Verdict.DUPLICATE:
            continue
        states[key], signed_in[key] = seen.state, p.signed_in
        changed.add(key)
        delta = deltas[p.asset_id]
        delta.views += seen.counted
        delta.watched_ms += seen.watched_ms
    if not changed:
        return
    rows_out = [(k, states[k]) for k in sorted(changed)]
    await conn.execute(
        "INSERT INTO view_sessions AS s (asset_id, viewer_key, session_id, signed_in, "
        "window_start, watched_ms, counted_at, reports, views, recent_ids) "
        "SELECT a, v, sid, si, ws, w, ca, rp, vw, string_to_array(ids, ' ') FROM unnest("
        "$1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::bigint[], "
        "$7::timestamptz[], $8::int[], $9::int[], $10::text[]) "
        "AS u(a, v, sid, si, ws, w, ca, rp, vw, ids) "
        "ON CONFLICT (asset_id, viewer_key, session_id) DO UPDATE SET "
        "window_start = EXCLUDED.window_start, watched_ms = EXCLUDED.watched_ms, "
        "counted_at = EXCLUDED.counted_at, reports = EXCLUDED.reports, views = EXCLUDED.views, "
        "recent_ids = EXCLUDED.recent_ids, updated_at = now()",
        [k[0] for k, _ in rows_out], [k[1] for k, _ in rows_out], [k[2] for k, _ in rows_out],
        [signed_in[k] for k, _ in rows_out], [s.window_start for _, s in rows_out],
        [s.watched_ms for _, s in rows_out], [s.counted_at for _, s in rows_out],
        [s.reports for _, s in rows_out], [s.views for _, s in rows_out],
        [" ".join(s.recent_ids) for _, s in rows_out],
    )


async def _apply_likes(
    conn: asyncpg.Connection, records: Sequence[tuple[Record, Liked | Unliked]],
    deltas: defaultdict[str, _Delta],
) -> bool:
    """Apply like/unlike events above each key's version; True if any row changed."""
    keys = sorted({engagement_key(p.asset_id, p.user_id) for _, p in records})
    rows = await conn.fetch(
        "SELECT engagement_key, liked, version, liked_at FROM likes "
        "WHERE engagement_key = ANY($1::text[])", keys)
    current = {r["engagement_key"]: (r["liked"], r["version"], r["liked_at"]) for r in rows}
    out: dict[str, tuple[str, str, bool, int, object, object]] = {}
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
    if not out:
        return False
    items = sorted(out.items())
    await conn.execute(
        "INSERT INTO likes (engagement_key, asset_id, user_id, liked, version, liked_at, "
        "updated_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], "
        "$5::int[], $6::timestamptz[], $7::timestamptz[]) "
        "ON CONFLICT (engagement_key) DO UPDATE SET liked = EXCLUDED.liked, "
        "version = EXCLUDED.version, liked_at = EXCLUDED.liked_at, updated_at = EXCLUDED.updated_at",
        [k for k, _ in items], [v[0] for _, v in items], [v[1] for _, v in items],
        [v[2] for _, v in items], [v[3] for _, v in items], [v[4] for _, v in items],
        [v[5] for _, v in items],
    )
    return True


async def _add_stats(conn: asyncpg.Connection, deltas: dict[str, _Delta]) -> None:
    items = sorted((a, d) for a, d in deltas.items() if d.views or d.likes or d.watched_ms)
    if not items:
        return
    await conn.execute(  # sorted by asset: concurrent workers lock rows in the same order
        "INSERT INTO asset_stats AS t (asset_id, view_count, like_count, watch_seconds_total) "
        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::numeric[]) "
        "ON CONFLICT (asset_id) DO UPDATE SET view_count = t.view_count + EXCLUDED.view_count, "
        "like_count = t.like_count + EXCLUDED.like_count, "
        "watch_seconds_total = t.watch_seconds_total + EXCLUDED.watch_seconds_total, "
        "updated_at = now()",
        [a for a, _ in items], [d.views for _, d in items], [d.likes for _, d in items],
        [Decimal(d.watched_ms) / 1000 for _, d in items],
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
                await apply_batch(deps.pool, NAME, apply, events_of(batch))
