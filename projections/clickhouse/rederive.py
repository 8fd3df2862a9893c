"""Re-derive the verdicts of ``views`` under the configured view rule: the ClickHouse projection
does it when it starts (before it consumes anything), ``medialog rebuild analytics`` on demand.

**From ``views`` itself, not from the log or ``events``.** A ``views`` row keeps, besides the
rule's two columns (``verdict``, ``state``), everything the fold read of its report, and
``views`` holds each report once, at the position where the fold first met it (a copy
re-published later got no row). ``events`` has lost that: its sort key is the event id, so once
merged a re-published report keeps only the position of its last inserted copy, and folding in
that order would put it in the wrong place. So each session's rows, in log order, are turned
back into their records (``rows.stored_record``) and folded by the same ``ViewFold``
from a new session under the new rule: exactly the rows a replay of the log writes.

**In place, in chunks.** Rows are read in the table's order (asset, viewer, session; then log
order within a session), ``CHUNK_ROWS`` at a time, with FINAL; each chunk is folded and inserted
in one call on the ``Analytics`` thread, so the api's queries get the thread between chunks. A
new row replaces the old one of its event id: ``views`` is a ReplacingMergeTree without version,
whose FINAL keeps the last inserted row of a key, and every reader reads FINAL (the projection's
own session read too). A session cut by a chunk boundary continues from its state.

**Recorded in ``view_rule``** (``004_view_rule.sql``): after each chunk's insert, the cursor
(its last row and that session's state); after the last chunk, the rule as derived. An
interrupted run loses nothing: the next one under the same rule resumes at the cursor, and the
rule counts as derived only once every row is.

**Safe with the live projection.** ``events`` and ``projection_positions`` are not touched, so
its positions stay right: records above them are written again by the projection, under its
rule. Its session cache holds states of its own rule's fold, and the process owning ClickHouse
re-derives before consuming and then drops that cache (``projection`` in this package). chDB is one
process per path, so the command refuses a path in use (``StoreInUse``). A ClickHouse server
may have several analytics processes: those running the same rule write the same rows as a
re-derivation, so it may run beside them; every one of them must run the same rule."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from clickhouse_connect.driver.client import Client

from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.domain.views import SessionState, ViewRule
from medialog.migrate import migrate_clickhouse
from medialog.runtime.progress import Progress
from medialog.tracking import Position
from projections.clickhouse.rows import (
    STORED_COLUMNS,
    VIEW_COLUMNS,
    SessionKey,
    ViewFold,
    decode_state,
    encode_state,
    session_key,
    stored_record,
)

log = logging.getLogger(__name__)
CHUNK_ROWS = 10_000
PROGRESS_EVERY_S = 10.0  # a progress line at most this often

_ORDER = "asset_id, viewer_key, session_id, topic, partition, offset"
_CHUNK = (f"SELECT {', '.join(STORED_COLUMNS)} FROM views FINAL __AFTER__ ORDER BY {_ORDER} "
          "LIMIT {rows:UInt32}")
_COUNT = "SELECT count() FROM views FINAL __AFTER__"  # the rows a run reads
# The first condition lets the primary key skip what lies before the cursor's asset.
_AFTER = ("WHERE asset_id >= {asset:String} AND (" + _ORDER + ") > ({asset:String}, "
          "{viewer:String}, {session:String}, {topic:String}, {partition:UInt32}, {offset:UInt64})")
# Read in order with FINAL, a big block makes each chunk read that many rows of every part;
# 8192 (the index granule) keeps each chunk's read small.
_READ_SETTINGS = {"max_block_size": 8192}
# A chunk spans every month of the history (the table is partitioned by month), and its rows
# must not be dropped as a repeated block on a replicated table: they replace rows that differ.
_WRITE_SETTINGS = {"max_partitions_per_insert_block": 0, "insert_deduplicate": 0}
_RECORDED = "SELECT rule, derived, cursor, step FROM view_rule ORDER BY step DESC LIMIT 1"


class StoreInUse(RuntimeError):
    """The chDB path is open in another process (chDB allows one process per path)."""


class Cursor(NamedTuple):
    """The last row re-derived (its session and log position) and the session's state after it."""

    session: SessionKey
    position: Position
    state: SessionState


@dataclass(frozen=True)
class Recorded:
    """The latest ``view_rule`` row; ``rule`` is None when none was written yet."""

    rule: ViewRule | None = None
    derived: bool = False
    cursor: Cursor | None = None
    step: int = 0


@dataclass
class Rederived:
    """What a call of :func:`rederive` did: ``ran`` is False when the rows were derived with the
    rule already; ``rows`` and ``verdicts`` count what this call rewrote."""

    rule: ViewRule
    ran: bool = False
    resumed: bool = False
    rows: int = 0
    chunks: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def rule_json(rule: ViewRule) -> str:
    return json.dumps({"threshold_s": float(rule.threshold_s), "window_s": float(rule.window_s)})


def cursor_json(cursor: Cursor) -> str:
    (asset, viewer, session), at = cursor.session, cursor.position
    return json.dumps({"asset_id": asset, "viewer_key": viewer, "session_id": session,
                       "topic": at.topic, "partition": at.partition, "offset": at.offset,
                       "state": encode_state(cursor.state)})


def parse_cursor(raw: str) -> Cursor | None:
    if not raw:
        return None
    c = json.loads(raw)
    return Cursor((c["asset_id"], c["viewer_key"], c["session_id"]),
                  Position(c["topic"], c["partition"], c["offset"]), decode_state(c["state"]))


def start_at(recorded: Recorded, rule: ViewRule, *, force: bool) -> tuple[bool, Cursor | None]:
    """Whether to re-derive under ``rule``, and from where (None: the first row). A run under
    the same rule left unfinished resumes at its cursor; rows derived under another rule, or
    under none recorded (a store older than the record: its rule is unknown), start over;
    rows derived with ``rule`` already are left alone unless ``force``."""
    if recorded.rule != rule:
        return True, None
    if not recorded.derived:
        return True, recorded.cursor
    return force, None


def read_recorded(client: Client) -> Recorded:
    rows = client.query(_RECORDED).result_rows
    if not rows:
        return Recorded()
    rule, derived, cursor, step = rows[0]
    return Recorded(ViewRule(**json.loads(rule)), bool(derived), parse_cursor(cursor), int(step))


def _record(client: Client, rule: ViewRule, *, cursor: Cursor | None, derived: bool,
            step: int) -> None:
    client.insert("view_rule", [[rule_json(rule), int(derived),
                                 "" if cursor is None else cursor_json(cursor), step]],
                  column_names=["rule", "derived", "cursor", "step"])


def _after(sql: str, after: Cursor | None) -> tuple[str, dict[str, Any]]:
    """``sql`` reading the rows after ``after`` (all: None), and its parameters."""
    if after is None:
        return sql.replace("__AFTER__", ""), {}
    (asset, viewer, session), at = after.session, after.position
    return sql.replace("__AFTER__", _AFTER), {
        "asset": asset, "viewer": viewer, "session": session, "topic": at.topic,
        "partition": at.partition, "offset": at.offset}


def count_after(client: Client, after: Cursor | None) -> int:
    """How many rows a re-derivation from ``after`` reads."""
    sql, params = _after(_COUNT, after)
    return int(client.query(sql, parameters=params).result_rows[0][0])


def rederive_chunk(client: Client, rule: ViewRule, after: Cursor | None, rows: int
                   ) -> tuple[Cursor | None, ViewFold]:
    """Read up to ``rows`` rows after ``after``, fold them under ``rule`` and insert the new
    rows. Returns the cursor to continue from (None: that was the last chunk) and the fold."""
    sql, params = _after(_CHUNK, after)
    params["rows"] = rows
    states: dict[SessionKey, SessionState] = {}
    if after is not None:
        states[after.session] = after.state
    records = [stored_record(row) for row in
               client.query(sql, parameters=params, settings=_READ_SETTINGS).result_rows]
    fold = ViewFold(rule, states, {})
    for record in records:
        fold.add(record)
    if fold.rows:
        client.insert("views", fold.rows, column_names=VIEW_COLUMNS, settings=_WRITE_SETTINGS)
    if len(records) < rows:
        return None, fold
    last = records[-1]
    key = session_key(last.report)
    return Cursor(key, last.position, fold.states[key]), fold


def _chunk_and_record(client: Client, rule: ViewRule, after: Cursor | None, rows: int,
                      step: int) -> tuple[Cursor | None, ViewFold]:
    """One chunk, then where it leaves the run: recorded after its rows, so a record never
    claims rows not written (re-doing a chunk writes the same rows)."""
    following, fold = rederive_chunk(client, rule, after, rows)
    _record(client, rule, cursor=following, derived=following is None, step=step)
    return following, fold


async def rederive(analytics: Analytics, rule: ViewRule, *, force: bool = False,
                   chunk_rows: int = CHUNK_ROWS,
                   progress: Callable[[int], Progress] | None = None) -> Rederived:
    """Make every row of ``views`` derived with ``rule`` (see the module doc); ``force``: even
    when they are recorded as derived with it already. ``progress`` is called with the number
    of rows to read; the ``Progress`` it returns is advanced by each chunk, and closed (without
    it, a line is logged every ``PROGRESS_EVERY_S``)."""
    began = time.monotonic()
    recorded = await analytics.run(read_recorded)
    run, cursor = start_at(recorded, rule, force=force)
    done = Rederived(rule, ran=run, resumed=cursor is not None)
    if not run:
        return done
    log.info("re-deriving the view verdicts under %s (recorded: %s)%s", rule_json(rule),
             "none" if recorded.rule is None else
             rule_json(recorded.rule) + ("" if recorded.derived else ", unfinished"),
             f", resuming after asset {cursor.session[0]}" if cursor else "")
    step = recorded.step + 1
    if cursor is None:  # starting over: recorded before the first row changes, so that an
        # interruption is never taken for rows still derived with the recorded rule
        await analytics.run(partial(_record, rule=rule, cursor=None, derived=False, step=step))
        step += 1
    shown = None if progress is None else progress(
        await analytics.run(partial(count_after, after=cursor)))
    logged = began
    try:
        while True:
            cursor, fold = await analytics.run(partial(
                _chunk_and_record, rule=rule, after=cursor, rows=chunk_rows, step=step))
            step += 1
            done.chunks += 1
            done.rows += len(fold.rows)
            for verdict, n in fold.verdicts.items():
                done.verdicts[verdict] = done.verdicts.get(verdict, 0) + n
            if shown is not None:
                shown.advance(sum(fold.verdicts.values()))  # a verdict per row read
            if cursor is None:
                break
            if shown is None and time.monotonic() - logged >= PROGRESS_EVERY_S:
                logged = time.monotonic()
                log.info("re-deriving: %d rows in %.0fs, at asset %s", done.rows,
                         logged - began, cursor.session[0])
    finally:
        if shown is not None:
            shown.close()
    done.seconds = time.monotonic() - began
    log.info("re-derived the view verdicts under %s: %d rows in %d chunks, %.1fs, %s",
             rule_json(rule), done.rows, done.chunks, done.seconds, done.verdicts)
    return done


def in_use(dsn: str) -> Path | None:
    """The chDB path of ``dsn`` if another opener holds it (a running ``medialog dev`` or
    analytics role), else None. chDB locks ``<path>/status`` (flock) while open and removes it
    on close; a file left by a crashed process is not locked."""
    url = urlsplit(dsn)
    if url.scheme != "chdb" or url.netloc:  # a server, or chdb://memory
        return None
    path = Path(unquote(url.path))
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return path
    finally:
        os.close(fd)  # and with it the lock, if taken
    return None


async def rederive_with_settings(settings: Settings, *,
                                 progress: Callable[[int], Progress] | None = None
                                 ) -> Rederived:
    """``medialog rebuild analytics``: re-derive against the configured ClickHouse, even when
    the rule is recorded as derived already (resuming an unfinished run of the same rule)."""
    path = in_use(settings.clickhouse_dsn)
    if path is not None:
        raise StoreInUse(
            f"the chDB store {path} is open in another process (medialog dev, or the api and "
            "analytics roles); chDB allows one process per path. Stop it and run this again, "
            "or restart it with the new rule: the analytics role re-derives when it starts")
    analytics = Analytics(settings.clickhouse_dsn)
    await analytics.open()
    try:
        await migrate_clickhouse(analytics)
        rule = ViewRule(threshold_s=settings.view_threshold_s, window_s=settings.view_window_s)
        return await rederive(analytics, rule, force=True, progress=progress)
    finally:
        await analytics.close()
