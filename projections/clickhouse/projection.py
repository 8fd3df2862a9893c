"""Projection "clickhouse": every event of the public topics → ClickHouse (what analysts read).

Reads ``events.asset``, ``events.engagement``, ``events.views`` and ``events.access`` in batches
(``projections.reader``) and writes, per batch, one insert into ``views`` (each view report with the
verdict of the view-counting rule) and then one insert into ``events`` (every event).

**Why positions live in ClickHouse and not in PostgreSQL.** A ClickHouse insert cannot join a
PostgreSQL transaction, so "rows and offset in one commit" is impossible here.
Instead (a) every insert is idempotent: both tables are ReplacingMergeTree keyed on the event
id, a replayed record yields the identical row, and every query reads FINAL, so a row written
twice changes no figure; and (b) the positions ``(topic, partition, offset)`` go to
``projection_positions`` (ReplacingMergeTree, version = offset) in an insert *after* the rows
they cover (views first, then events, then positions), so a stored position only covers rows
that exist; records at or below it are not written again (they are still folded, see below).
Positions are written at most every ``POSITIONS_EVERY_S`` (a third insert per batch cost as much
as a sixth of the batch; 003_positions_from_projection.sql dropped the materialized view that
did it per insert): a stored position may lag, and a crash then re-delivers records that are
written again, identically. Keeping it all in ClickHouse also means that dropping the ClickHouse
tables and replaying the log rebuilds them with no PostgreSQL state to reset.

**Verdicts under replay.** The rule is a fold per session (``medialog.domain.views``). Each views
row stores the session state after it; a batch continues from each session's latest row *below
the batch's first offset on that partition* (a session's reports share the asset's partition,
in log order). So a verdict depends on the log alone, whatever the batch boundaries or however
often it is replayed. A report whose event id is already stored for its session below the batch,
or seen earlier in the batch (the same report re-published: a duplicate on the log), gets no row
and does not move the fold — exactly, not only within the rule's memory of recent ids.

**A rule change** re-derives the stored verdicts (``projections.clickhouse.rederive``): the
projection does it before its reader joins the group, when the rule recorded in ``view_rule`` is
not its own, then drops its session cache. The new rows replace the old ones of the same event
ids, so the sessions read is FINAL: until a merge, both versions of a row are in the table.

All ClickHouse work of a batch runs in one call on the ``Analytics`` thread (sync client).

**Paused by a replay** (``projections.clickhouse.replay``): ``consume`` takes a ``Live``, whose
gate each batch (and the re-derivation at start) holds; the replay takes it to catch up with and
swap the tables under a projection standing still, then makes it ``reset``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext

from medialog.clickhouse import Analytics
from medialog.domain.events import ViewReported
from medialog.domain.views import SessionState, ViewRule
from medialog.envelope import CloudEvent, decode_event
from medialog.runtime.deps import Deps
from medialog.runtime.handle_once import batch_or_skip
from medialog.runtime.retry import retrying
from medialog.tracking import Position
from projections.clickhouse.rederive import rederive
from projections.clickhouse.rows import (
    EVENT_COLUMNS,
    VIEW_COLUMNS,
    SessionKey,
    ViewFold,
    ViewRecord,
    decode_state,
    event_row,
    first_offsets,
)
from projections.reader import read

log = logging.getLogger(__name__)
NAME = "projection.clickhouse"  # the consumer of its rows in projection_positions
TOPICS = ("events.asset", "events.engagement", "events.views", "events.access")
BATCH_SIZE = 1000
BATCH_WITHIN_S = 0.5
POSITIONS_EVERY_S = 1.0  # positions are written at most this often (after the batch's rows)
POSITION_COLUMNS = ("consumer", "topic", "partition", "offset")
MAX_CACHED_SESSIONS = 500_000  # sessions kept in memory (ClickHouseProjection: session cache)


@dataclass
class BatchResult:
    """What one batch did: records past the stored positions, rows written, verdicts."""

    applied: int = 0
    events: int = 0
    views: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


# At most one read per batch: the stored positions of partitions this process has not seen yet,
# and for each session the batch touches, its state and report ids below the batch (on the
# session's partition).
_READ_POSITIONS = """SELECT 'position', topic, toString(partition), '', max(offset), '',
  CAST([], 'Array(String)')
FROM projection_positions WHERE consumer = {name:String} AND topic IN {topics:Array(String)}
GROUP BY topic, partition"""
_READ_SESSIONS = """SELECT 'session', asset_id, viewer_key, session_id, max(offset),
  argMax(state, offset), groupArray(id)
FROM views FINAL
WHERE asset_id IN {assets:Array(String)} AND session_id IN {sessions:Array(String)}
  AND offset < arrayElement({below:Array(UInt64)},
                            indexOf({parts:Array(String)}, concat(topic, '/', toString(partition))))
GROUP BY asset_id, viewer_key, session_id"""


def _offset(record: tuple[Position, bytes]) -> int:
    return record[0].offset


class Inserter:
    """Inserts into a table through one insert context per (table, columns), made once: an
    insert without one asks ClickHouse for the table's column types first (a ``DESCRIBE``, a
    query per insert: a real share of a batch's apply, and a round trip to a server). The
    types are read when the first insert needs them; the tables do not change while the
    projection runs (migrations run before it starts)."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}

    def __call__(self, client: Client, table: str, rows: list[list[Any]],
                 columns: Sequence[str]) -> None:
        """Insert ``rows``, then empty the list: clickhouse-connect's insert path leaves
        reference cycles around the rows, which would keep them alive until the cyclic collector
        runs (frequent, costly collections that stall the projection). It empties
        the context after every insert, failed or not, so the next one can use it."""
        key = (table, tuple(columns))
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = client.create_insert_context(table, columns)
        try:
            client.insert(table, rows, context=context)
        finally:
            rows.clear()


@dataclass(frozen=True)
class Stored:
    """What ClickHouse already holds for a batch (see ``ClickHouseProjection.read``)."""

    positions: dict[tuple[str, int], int]
    states: dict[SessionKey, SessionState]
    ids: dict[SessionKey, frozenset[str]]


@dataclass
class _Folded:
    """One partition's fold as this process left it: each cached session's state and report
    ids as of ``upto`` (every record up to it folded, in log order). ``complete``: every session
    with a report at or below ``upto`` is cached (the fold started at offset 0), so a session
    not in here is new; otherwise a missing session is read from ClickHouse."""

    upto: int
    complete: bool
    states: dict[SessionKey, SessionState] = field(default_factory=dict)
    ids: dict[SessionKey, set[str]] = field(default_factory=dict)


@dataclass
class _Part:
    """One partition's records in a batch: the span of their offsets (undecodable records
    included) and, in log order, the decoded events (the view reports also in ``views``)."""

    first: int
    last: int
    gapless: bool  # every offset from ``first`` to ``last`` is in the batch
    events: list[tuple[Position, CloudEvent]] = field(default_factory=list)
    views: list[ViewRecord] = field(default_factory=list)


def _parts(batch: Sequence[tuple[Position, bytes]]) -> dict[tuple[str, int], _Part]:
    """The batch per (topic, partition), sorted, each decoded in log order."""
    grouped: dict[tuple[str, int], list[tuple[Position, bytes]]] = {}
    for record in batch:
        p = record[0]
        grouped.setdefault((p.topic, p.partition), []).append(record)
    parts: dict[tuple[str, int], _Part] = {}
    for key in sorted(grouped):
        records = sorted(grouped[key], key=_offset)
        first, last = records[0][0].offset, records[-1][0].offset
        gapless = last - first + 1 == len({p.offset for p, _ in records})
        part = parts[key] = _Part(first, last, gapless)
        events, views = part.events, part.views
        for position, raw in records:
            try:
                event, payload = decode_event(raw)
            except ValueError:
                log.error("projection %s: skipping undecodable record at %s", NAME, position)
                continue
            events.append((position, event))
            if isinstance(payload, ViewReported):
                views.append(ViewRecord(position, event, payload))
    return parts


class ClickHouseProjection:
    """Applies batches of raw records; call :meth:`apply` on the ClickHouse thread.

    **Session cache.** Reading each batch's session states back from ClickHouse costs a query
    per batch; instead the process keeps, per partition, the states and ids its own fold
    reached (``_Folded``). They are the very values ClickHouse holds below the next batch when
    that batch continues the partition exactly where the cache ends (first offset = ``upto`` +
    1): the states are a function of the log below, which is the same log. Any other batch
    start (a re-delivery or replay from further back, a gap: another consumer may have applied
    records in between) drops the partition's cache, and the batch reads from ClickHouse as if
    the process had just started. The cache is updated only after both inserts succeeded, so a
    failed batch is retried from the same cache. Verdicts therefore stay a function of the log,
    whatever the batching, restarts or replays."""

    def __init__(self, rule: ViewRule, *, max_sessions: int = MAX_CACHED_SESSIONS) -> None:
        self.rule = rule
        self.max_sessions = max_sessions
        # Positions this process stored itself or read: never above what ClickHouse holds, so a
        # stale entry (another worker advanced the partition meanwhile) only makes a redelivered
        # record be written again, identically. Partitions not in here are read from ClickHouse.
        self._known: dict[tuple[str, int], int] = {}
        self._folded: dict[tuple[str, int], _Folded] = {}
        # Positions applied but not yet written to ``projection_positions``; when last written.
        self._unwritten: dict[tuple[str, int], int] = {}
        self._written_at = float("-inf")
        self._insert = Inserter()

    def apply(self, client: Client, batch: Sequence[tuple[Position, bytes]]) -> BatchResult:
        """Fold the whole batch (records at or below the stored positions too: they recompute
        their stored rows), then write the rows of the records past the positions."""
        result = BatchResult()
        if not batch:
            return result
        parts = _parts(batch)
        # Per partition, the cached fold the batch continues, if any.
        folded: dict[tuple[str, int], _Folded] = {}
        for key, part in parts.items():
            cached = self._folded.get(key)
            if cached is None or cached.upto + 1 != part.first:
                cached = _Folded(upto=part.first - 1, complete=part.first == 0)
            folded[key] = cached
        # Sessions the cache cannot answer are read from ClickHouse, below the batch.
        states: dict[SessionKey, SessionState] = {}
        ids: dict[SessionKey, AbstractSet[str]] = {}
        missing: list[ViewRecord] = []
        part_of: dict[SessionKey, tuple[str, int]] = {}
        for key, part in parts.items():
            cached = folded[key]
            for record in part.views:
                r = record.report
                session = (r.asset_id, r.viewer_key, r.session_id)  # session_key(r): hot path
                if session in ids:
                    continue
                part_of[session] = key
                known = cached.ids.get(session)
                if known is not None:
                    states[session], ids[session] = cached.states[session], known
                else:
                    ids[session] = frozenset()  # new, or until read: absent from ClickHouse too
                    if not cached.complete:
                        missing.append(record)
        unknown = parts.keys() - self._known.keys()
        stored = self.read(client, {t for t, _ in unknown}, missing)
        states.update(stored.states)
        ids.update(stored.ids)
        self._known.update(stored.positions)
        for key in unknown - stored.positions.keys():
            self._known[key] = -1
        # Records above their partition's stored position are written; all are folded.
        fold = ViewFold(self.rule, states, ids)
        rows: list[list[Any]] = []
        for key, part in parts.items():
            floor = self._known[key]
            for record in part.views:
                fold.add(record, write=record.position.offset > floor)
            rows += [event_row(p, e) for p, e in part.events if p.offset > floor]
        result.applied = len(rows)
        result.views, result.verdicts = len(fold.rows), fold.verdicts
        if fold.rows:
            self._insert(client, "views", fold.rows, VIEW_COLUMNS)
        if rows:  # after the views: the positions (written after it) cover both
            result.events = len(rows)
            self._insert(client, "events", rows, EVENT_COLUMNS)
            for key, part in parts.items():
                if part.events and (top := part.events[-1][0].offset) > self._known[key]:
                    self._known[key] = self._unwritten[key] = top
        self._write_positions(client)
        self._remember(parts, folded, fold, ids, part_of)
        return result

    def flush(self, client: Client) -> None:
        """Store the applied positions now (a replay pauses the projection and needs the stored
        positions to be exactly what it applied)."""
        self._written_at = float("-inf")
        self._write_positions(client)

    def reset(self) -> None:
        """Forget everything read from or applied to ClickHouse (after a replay swapped the
        tables): the next batch reads its positions and sessions from the new tables."""
        self._known.clear()
        self._folded.clear()
        self._unwritten.clear()

    def forget(self) -> None:
        """Drop the session cache (after the stored verdicts were re-derived): the next batch of
        each partition reads its sessions from ClickHouse. The positions stay: a re-derivation
        does not touch ``events`` or ``projection_positions``."""
        self._folded.clear()

    def _write_positions(self, client: Client, *, now: float | None = None) -> None:
        """Store the applied positions, at most every ``POSITIONS_EVERY_S``: a lagging position
        only makes a re-delivered record be written again, identically, and one insert fewer per
        batch is worth more than that (``003_positions_from_projection.sql``)."""
        now = time.monotonic() if now is None else now
        if not self._unwritten or now - self._written_at < POSITIONS_EVERY_S:
            return
        rows = [[NAME, t, p, o] for (t, p), o in sorted(self._unwritten.items())]
        self._insert(client, "projection_positions", rows, POSITION_COLUMNS)
        self._unwritten.clear()
        self._written_at = now

    def _remember(self, parts: Mapping[tuple[str, int], _Part],
                  folded: Mapping[tuple[str, int], _Folded], fold: ViewFold,
                  ids: Mapping[SessionKey, AbstractSet[str]],
                  part_of: Mapping[SessionKey, tuple[str, int]]) -> None:
        """After the batch is written: the touched sessions' states and ids, as of its end."""
        for session, new_ids in fold.folded.items():
            cached = folded[part_of[session]]
            known = cached.ids.get(session)
            if known is None:
                known = cached.ids[session] = set(ids[session])
            known.update(new_ids)
            cached.states[session] = fold.states[session]
        for key, part in parts.items():
            if not part.gapless:  # a gap inside the batch: do not trust
                self._folded.pop(key, None)
                continue
            cached = folded[key]
            cached.upto = part.last
            self._folded[key] = cached
        if sum(len(f.ids) for f in self._folded.values()) > self.max_sessions:
            self._folded.clear()  # memory bound: start over (reads from ClickHouse)

    @staticmethod
    def read(client: Client, topics: set[str], views: list[ViewRecord]) -> Stored:
        """Stored positions of ``topics`` and the state and ids of the sessions of ``views``."""
        parts: list[str] = []
        params: dict[str, object] = {}
        if topics:
            parts.append(_READ_POSITIONS)
            params.update(name=NAME, topics=sorted(topics))
        keys = {(v.report.asset_id, v.report.viewer_key, v.report.session_id) for v in views}
        if views:
            below = first_offsets(views)
            parts.append(_READ_SESSIONS)
            params.update(
                assets=sorted({k[0] for k in keys}),
                sessions=sorted({k[2] for k in keys}),
                parts=[f"{t}/{p}" for t, p in below],
                below=list(below.values()),
            )
        out = Stored({}, {}, {})
        if not parts:
            return out
        result = client.query(" UNION ALL ".join(parts), parameters=params)
        for kind, k1, k2, k3, top, state, ids in result.result_rows:
            if kind == "position":
                out.positions[(k1, int(k2))] = int(top)
            elif (k1, k2, k3) in keys:  # the filter above is per column: keep exact sessions
                out.states[(k1, k2, k3)] = decode_state(state)
                out.ids[(k1, k2, k3)] = frozenset(ids)
        return out


async def apply_with_retry(
    analytics: Analytics, projection: ClickHouseProjection, batch: Sequence[tuple[Position, bytes]]
) -> BatchResult:
    """Apply with ``batch_or_skip`` (inserts are idempotent), because the reader moves on past
    whatever a batch gives up on. A record passed over needs no position of its own: its
    partition's position moves on with the next record, so one poison record cannot stall the
    four topics."""
    results = await batch_or_skip(
        f"projection {NAME}",
        lambda items: analytics.run(partial(projection.apply, batch=items)), batch)
    if len(results) == 1:
        return results[0]
    return BatchResult(applied=sum(r.applied for r in results))


async def derive_before_consuming(analytics: Analytics, projection: ClickHouseProjection) -> None:
    """Re-derive the stored verdicts if they are not recorded as derived with the projection's
    rule (a rule change, an interrupted re-derivation, a store older than the record); after one,
    the projection forgets its session cache, on the thread that applies its batches."""
    if (await rederive(analytics, projection.rule)).ran:
        await analytics.run(lambda _: projection.forget())


class Live:
    """The pause hook of the live projection of this process: ``gate`` is held by each batch
    (and the re-derivation at start), so whoever holds it has the projection standing still
    between two batches; ``projection`` is the one running (None until it started)."""

    def __init__(self) -> None:
        self.gate = asyncio.Lock()
        self.projection: ClickHouseProjection | None = None


async def consume(deps: Deps, live: Live | None = None) -> None:
    """Re-derive the verdicts if the rule changed, then read ``TOPICS`` and apply them
    (``projections.reader``) until cancelled. The re-derivation runs before the reader joins
    its group: however long it takes, no rebalance waits on it. ``live``: the pause hook a
    replay in this process uses."""
    s = deps.settings
    analytics = deps.analytics
    if analytics is None:
        raise RuntimeError("the ClickHouse projection needs ClickHouse (Analytics)")
    projection = ClickHouseProjection(
        ViewRule(threshold_s=s.view_threshold_s, window_s=s.view_window_s)
    )
    gate = asyncio.Lock() if live is None else live.gate
    async with gate:
        await retrying(f"projection {NAME}: re-deriving verdicts",
                       partial(derive_before_consuming, analytics, projection))
    if live is not None:
        live.projection = projection

    async def handle(batch: Sequence[tuple[Position, bytes]]) -> None:
        async with gate:
            result = await apply_with_retry(analytics, projection, batch)
        if result.applied:
            log.debug("projection %s: %d applied, %d view rows %s",
                      NAME, result.applied, result.views, result.verdicts)

    await read(s, NAME, TOPICS, BATCH_SIZE, BATCH_WITHIN_S, handle, deps.lags)
