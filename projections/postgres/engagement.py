"""Projection "engagement": ``events.views`` + ``events.engagement`` → ``view_sessions``,
``likes`` and ``asset_stats`` in PostgreSQL (what ``/v1/assets/{id}/stats`` and likes read).

Exactly once (docs/architecture.md, rules 2 and 3): each batch is one transaction with its offsets
(``projections.runner.apply_batch``), so a re-delivered batch changes nothing. Beyond offsets:

* views: a session's reports are folded with the pure rule (``medialog.domain.views``); its
  state, including the recent report ids, is stored per session, so the same record appearing
  twice on the log (a producer retry) is a ``duplicate`` and counts nothing;
* likes: guarded on the per-(asset, user) sequence: an event applies only if its sequence is
  above the stored version (equal or lower: a re-emitted duplicate, skipped).

Counters change by deltas computed in the same transaction, so they equal the fold of the log.
The live projection runs ``EngagementProjection``, which also remembers the rows it committed so
that its next batches need not read them back; the rebuild (``engagement_rebuild`` in this
package, ``medialog rebuild engagement``) runs the same fold through ``make_apply`` and the
runner.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from operator import itemgetter

import asyncpg
from pydantic_core import to_json

from medialog import tracking
from medialog.config import Settings
from medialog.domain.views import SessionState, ViewRule
from medialog.outcomes import NOTIFY_CHANNEL
from medialog.runtime.deps import Deps
from projections.postgres.engagement_fold import (
    UNLIKED,
    Delta,
    LikeRow,
    LikeWrite,
    Part,
    SessionKey,
    fold_likes,
    fold_views,
    read_event,
    reading,
    touched,
)
from projections.reader import read
from projections.runner import (
    Apply,
    Batch,
    PartitionCache,
    Record,
    overlapped,
    project_or_skip,
)

log = logging.getLogger(__name__)
NAME = "projection.engagement"
TOPICS = ("events.views", "events.engagement")
GATE_LOCK = 0x6D6C656E  # advisory lock: live batches share it, a rebuild takes it alone
# A batch waits at most 50 ms to fill: a longer wait (Faust's take_events here before) adds
# to the lag to the counters and saves no CPU worth having (see ``bench/ingest.py``).
BATCH_MAX, BATCH_WITHIN_S = 2000, 0.05
# Rows (sessions, likes: each kind) EngagementProjection remembers: enough for the sessions
# live at once at the target report rate (players report every few seconds), at a bounded
# memory cost.
MAX_CACHED_ROWS = 20_000
PRUNE_EVERY_S = 60.0  # per partition: how often spent sessions are deleted
_GATE = f"SELECT pg_advisory_xact_lock_shared({GATE_LOCK})"


def rule_of(settings: Settings) -> ViewRule:
    return ViewRule(threshold_s=settings.view_threshold_s, window_s=settings.view_window_s)


def make_apply(rule: ViewRule) -> Apply:
    """The ``apply`` for ``runner.apply_batch`` (the rebuild's), with the configured view rule:
    what ``EngagementProjection`` does, without its cache.

    Two round trips per batch, whatever its size: one read of the touched sessions and likes,
    the folds in Python, one statement writing sessions, likes, counters (and the notify)."""

    async def apply(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        t = touched((r.position, read_event(r.event, r.payload)) for r in records)
        if not t.views and not t.likes:
            return
        states, current = await _read(conn, t.views, t.like_part)
        deltas: defaultdict[str, Delta] = defaultdict(Delta)
        sessions = fold_views(rule, t.views, t.signed_in, states, deltas, sorted(t.views))
        liked = fold_likes(t.likes, current, deltas)
        await _write(conn, sessions, t.session_part, liked, deltas, {})

    return apply


class EngagementProjection:
    """The live projection (a ``runner.Projection``): per batch, one transaction takes the gate
    (``GATE_LOCK`` shared: a rebuild holds it alone, so batches wait while one runs and a
    rebuild waits for the batch in flight), locks the stored offsets (the batch is decoded
    meanwhile), folds the records past them and writes sessions, likes, counters and the new
    offsets in one statement.

    **Row cache.** The sessions and likes rows it commits are kept (``PartitionCache``): a
    batch reads back only the rows the cache cannot vouch for — those it never wrote, or of a
    partition that someone else has applied records of since (another worker after a
    rebalance, a rebuild, a passed-over record) — and folds the others while that read is on
    its way. A new projection starts cold and reads. Keys are partition-local (views keyed by
    asset, likes by engagement key), as the fold already requires.

    **Pruning.** At most every ``prune_every_s`` per partition, the batch also deletes that
    partition's sessions whose window started ``window_s + keep_s`` before the newest report it
    applies there (log time: catching up on old reports never deletes a session that a later
    report of the same replay continues; the rebuild, through ``make_apply``, does not prune). A
    later report of such a session would open a new window anyway; only a duplicate of one of
    its reports re-published that late would count again."""

    name = NAME

    def __init__(self, rule: ViewRule, *, keep_s: float = 86400.0,
                 prune_every_s: float = PRUNE_EVERY_S, max_rows: int = MAX_CACHED_ROWS) -> None:
        self.rule = rule
        self.spent_after = timedelta(seconds=rule.window_s + keep_s)
        self.prune_every_s = prune_every_s
        self._pruned_at: dict[Part, float] = {}
        self._sessions: PartitionCache[SessionKey, SessionState] = PartitionCache(max_rows)
        self._likes: PartitionCache[str, LikeRow] = PartitionCache(max_rows)

    async def apply_batch(self, pool: asyncpg.Pool, batch: Batch) -> int:
        """Apply what is new in ``batch``; return how many records were applied."""
        if not batch:
            return 0
        parts = sorted({(p.topic, p.partition) for p, _ in batch})
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_GATE)  # a rebuild in progress: wait until it is done
            stored, t = await overlapped(tracking.lock_stored(conn, NAME, parts),
                                         partial(touched, reading(batch)))
            self._sessions.check(stored)
            self._likes.check(stored)
            if any(stored[part].offset >= offset for part, offset in t.first.items()):
                t = touched(reading(batch, stored))  # re-delivered records: skip them
            for position in t.undecodable:
                log.error("projection %s: skipping undecodable record at %s", NAME, position)
            states, missing = self._sessions.split(t.session_part)
            current, missing_likes = self._likes.split(t.like_part)
            deltas: defaultdict[str, Delta] = defaultdict(Delta)
            fold = partial(fold_views, self.rule, t.views, t.signed_in, states, deltas)
            if missing or missing_likes:  # read them while folding the sessions known
                (read, read_likes), changed = await overlapped(
                    _read(conn, missing, missing_likes), partial(fold, list(states)))
                states.update(read)
                current.update(read_likes)
                changed += fold(missing)
            else:
                changed = fold(t.views)
            liked = fold_likes(t.likes, current, deltas)
            pruned = await self._prune(conn, t.newest)
            versions = await _write(conn, sorted(changed, key=itemgetter(0)), t.session_part,
                                    liked, deltas, dict(sorted(t.top.items())))
        self._sessions.commit(versions, ((p, k, states[k]) for k, p in t.session_part.items()))
        self._likes.commit(versions, ((p, k, current.get(k, UNLIKED))
                                      for k, p in t.like_part.items()))
        now = time.monotonic()
        for part, cutoff in pruned.items():
            self._pruned_at[part] = now
            self._sessions.forget(part, partial(_spent, cutoff))
        return t.decoded

    async def _prune(self, conn: asyncpg.Connection, newest: Mapping[Part, datetime]
                     ) -> dict[Part, datetime]:
        """Delete the spent sessions of the partitions due; their cutoffs."""
        now = time.monotonic()
        due = {part: at - self.spent_after for part, at in sorted(newest.items())
               if now - self._pruned_at.get(part, -self.prune_every_s) >= self.prune_every_s}
        if due:
            await conn.execute(_PRUNE, [t for t, _ in due], [p for _, p in due],
                               list(due.values()))
        return due


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
    conn: asyncpg.Connection, keys: Collection[SessionKey], like_keys: Collection[str],
) -> tuple[dict[SessionKey, SessionState], dict[str, LikeRow]]:
    rows = await conn.fetch(
        _READ, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], list(like_keys))
    states: dict[SessionKey, SessionState] = {}
    current: dict[str, LikeRow] = {}
    for r in rows:
        if r[0] == "s":
            states[(r[1], r[2], r[3])] = SessionState(
                window_start=r[4], watched_ms=r[5], counted_at=r[6], reports=r[7], views=r[8],
                recent_ids=tuple(r[9]))
        else:
            current[r[1]] = (r[10], r[11], r[12])
    return states, current


def _spent(cutoff: datetime, state: SessionState) -> bool:
    return state.window_start is not None and state.window_start < cutoff


_PRUNE = (
    "DELETE FROM view_sessions v USING unnest($1::text[], $2::int[], $3::timestamptz[]) "
    "AS c(topic, partition, cutoff) "
    "WHERE v.topic = c.topic AND v.partition = c.partition AND v.window_start < c.cutoff"
)
_WRITE = (  # one statement; each part is a no-op on an empty array
    "WITH sessions AS (INSERT INTO view_sessions AS s (asset_id, viewer_key, session_id, "
    "signed_in, window_start, watched_ms, counted_at, reports, views, recent_ids, topic, "
    "partition) "
    "SELECT r->>0, r->>1, r->>2, (r->>3)::boolean, (r->>4)::timestamptz, (r->>5)::bigint, "
    "(r->>6)::timestamptz, (r->>7)::integer, (r->>8)::integer, "
    "ARRAY(SELECT jsonb_array_elements_text(r->9)), r->>10, (r->>11)::integer "
    "FROM jsonb_array_elements($1::jsonb) AS r "
    "ON CONFLICT (asset_id, viewer_key, session_id) DO UPDATE SET "
    "window_start = EXCLUDED.window_start, watched_ms = EXCLUDED.watched_ms, "
    "counted_at = EXCLUDED.counted_at, reports = EXCLUDED.reports, views = EXCLUDED.views, "
    "recent_ids = EXCLUDED.recent_ids, topic = EXCLUDED.topic, "
    "partition = EXCLUDED.partition, updated_at = now()), "
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
    "updated_at = now()), "
    f"advanced AS ({tracking.advance_statement(6, 7, 8, 9)}), "
    "notified AS (SELECT pg_notify($4, 'engagement') WHERE $5::boolean) "  # likes changed
    "SELECT a.* FROM (SELECT count(*) FROM notified) AS n LEFT JOIN advanced AS a ON true"
)


async def _write(
    conn: asyncpg.Connection, sessions: Sequence[tuple[SessionKey, bool, SessionState]],
    parts: Mapping[SessionKey, Part], likes: Sequence[tuple[str, LikeWrite]],
    deltas: dict[str, Delta], top: Mapping[Part, int],
) -> dict[Part, str]:
    """Write the rows (each kind sorted by key: concurrent workers lock them in the same order)
    and store the offsets ``top``; the offsets rows' new versions. The rows go as three JSON
    arrays of arrays (one parameter each): encoding thousands of array elements one by one cost
    more than the statement itself."""
    stats = sorted((a, d) for a, d in deltas.items() if d.views or d.likes or d.watched_ms)
    if not sessions and not likes and not stats and not top:
        return {}
    rows = await conn.fetch(
        _WRITE,
        to_json([(*k, si, s.window_start, s.watched_ms, s.counted_at, s.reports, s.views,
                  s.recent_ids, *parts[k]) for k, si, s in sessions]).decode(),
        to_json([(k, *v) for k, v in likes]).decode(),
        to_json([(a, d.views, d.likes, d.watched_ms) for a, d in stats]).decode(),
        NOTIFY_CHANNEL, bool(likes), NAME, [t for t, _ in top], [p for _, p in top],
        list(top.values()),
    )
    return {(r[0], r[1]): r[2] for r in rows if r[0] is not None}


async def consume(deps: Deps) -> None:
    """Read ``TOPICS`` and apply them (``projections.reader``) until cancelled."""
    s = deps.settings
    projection = EngagementProjection(rule_of(s), keep_s=s.view_sessions_keep_s)
    await read(s, NAME, TOPICS, BATCH_MAX, BATCH_WITHIN_S,
               partial(project_or_skip, deps.pool, projection), deps.lags)
