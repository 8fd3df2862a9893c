"""The ClickHouse projection's rows, pure: verdicts per report, the same rows however the log is
batched, and duplicates (a report re-published on the log) getting no second row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter

from medialog.domain.events import Liked, ViewReported
from medialog.domain.views import SessionState, ViewRule
from medialog.envelope import make_event
from medialog.tracking import Position
from projections.clickhouse.rederive import Cursor, Recorded, cursor_json, parse_cursor, start_at
from projections.clickhouse.rows import (
    EVENT_COLUMNS,
    STORED_COLUMNS,
    VIEW_COLUMNS,
    ViewFold,
    ViewRecord,
    decode_state,
    encode_state,
    event_row,
    first_offsets,
    session_key,
    stored_record,
)

RULE = ViewRule(threshold_s=10, window_s=3600)
T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
ASSET = str(uuid.uuid4())
TOPIC = "events.views"


def record(offset: int, watch: float, *, session: str = "s1", viewer: str = "u1",
           at: datetime | None = None, event_id: str | None = None,
           duration: float | None = 120.0) -> ViewRecord:
    report = ViewReported(asset_id=ASSET, owner_id="creator", viewer_key=viewer, signed_in=True,
                          session_id=session, watch_seconds=watch, duration_s=duration,
                          position=float(offset), device="web", country="DE")
    event = make_event(report, subject=ASSET, event_id=event_id or str(uuid.uuid4()),
                       time=at or T0 + timedelta(seconds=offset), sequence=None)
    return ViewRecord(Position(TOPIC, 2, offset), event, report)


def verdicts(fold: ViewFold) -> list[str]:
    return [row[VIEW_COLUMNS.index("verdict")] for row in fold.rows]


def test_each_report_gets_its_verdict_and_exact_watch_ms() -> None:
    fold = ViewFold(RULE, {}, {})
    for i in range(5):
        fold.add(record(i, 4.0))
    assert verdicts(fold) == ["below_threshold", "below_threshold", "counted",
                              "already_counted", "already_counted"]
    assert [row[VIEW_COLUMNS.index("watch_ms")] for row in fold.rows] == [4000] * 5
    assert fold.verdicts == {"below_threshold": 2, "counted": 1, "already_counted": 2}
    assert all(len(row) == len(VIEW_COLUMNS) for row in fold.rows)


def test_sessions_are_folded_separately() -> None:
    fold = ViewFold(RULE, {}, {})
    fold.add(record(0, 12.0, session="a"))
    fold.add(record(1, 12.0, session="b"))
    fold.add(record(2, 12.0, session="a", viewer="u2"))  # same session id, other viewer
    assert verdicts(fold) == ["counted", "counted", "counted"]


def test_the_same_rows_however_the_log_is_batched() -> None:
    log = [record(i, 3.0, session=f"s{i % 2}") for i in range(12)]
    whole = ViewFold(RULE, {}, {})
    for r in log:
        whole.add(r)
    # In batches of 5: each batch starts from the state stored with each session's last row
    # below it, as the projection reads it back from ClickHouse.
    rows: list[list[object]] = []
    for start in range(0, len(log), 5):
        part = log[start:start + 5]
        below = first_offsets(part)[(TOPIC, 2)]
        states: dict[tuple[str, str, str], SessionState] = {}
        for row in rows:
            if row[VIEW_COLUMNS.index("offset")] < below:
                key = (row[2], row[4], row[6])
                states[key] = decode_state(str(row[VIEW_COLUMNS.index("state")]))
        fold = ViewFold(RULE, states, {})
        for r in part:
            fold.add(r)
        rows += fold.rows
    assert rows == whole.rows


def test_a_redelivered_record_is_folded_but_not_written_again() -> None:
    log = [record(i, 4.0) for i in range(4)]
    first = ViewFold(RULE, {}, {})
    for r in log:
        first.add(r)
    # the batch comes again, its first two records already applied: they fold, unwritten
    again = ViewFold(RULE, {}, {})
    for i, r in enumerate(log):
        again.add(r, write=i >= 2)
    assert again.rows == first.rows[2:]
    assert again.verdicts == {"counted": 1, "already_counted": 1}


def test_a_republished_report_gets_no_row_and_moves_nothing() -> None:
    original = record(3, 6.0)
    copy = ViewRecord(Position(TOPIC, 2, 90), original.event, original.report)
    key = session_key(original.report)
    # stored below the batch (ClickHouse holds the original)
    fold = ViewFold(RULE, {}, {key: frozenset({original.event.id})})
    assert fold.add(copy).value == "duplicate"
    assert fold.rows == [] and fold.states == {}
    # inside one batch too: the second copy is a duplicate, the session stays below threshold
    fold = ViewFold(RULE, {}, {})
    fold.add(original)
    fold.add(copy)
    fold.add(record(91, 3.0))
    assert verdicts(fold) == ["below_threshold", "below_threshold"]
    assert fold.verdicts["duplicate"] == 1
    assert fold.states[key].watched_ms == 9000


def test_a_copy_older_than_the_rules_memory_is_still_a_duplicate() -> None:
    reports = [record(i, 1.0) for i in range(20)]  # more than the rule's RECENT_IDS
    fold = ViewFold(RULE, {}, {})
    for r in reports:
        fold.add(r)
    stale = ViewRecord(Position(TOPIC, 2, 500), reports[0].event, reports[0].report)
    ids = frozenset(r.event.id for r in reports)
    later = ViewFold(RULE, dict(fold.states), {session_key(stale.report): ids})
    assert later.add(stale).value == "duplicate" and later.rows == []


def test_the_fold_reads_times_to_the_millisecond_as_views_keeps_them() -> None:
    """0.9 ms and 1000.5 ms after T0 are 0 and 1000 ms: the second report opens the next
    window (1 s), so 6 + 6 s make no view, and the rows keep the millisecond times."""
    fold = ViewFold(ViewRule(threshold_s=10, window_s=1), {}, {})
    fold.add(record(0, 6.0, at=T0 + timedelta(microseconds=900)))
    fold.add(record(1, 6.0, at=T0 + timedelta(seconds=1, microseconds=500)))
    assert verdicts(fold) == ["below_threshold", "below_threshold"]
    assert [row[VIEW_COLUMNS.index("time")] for row in fold.rows] == [
        T0, T0 + timedelta(seconds=1)]


def as_stored(row: list[object]) -> list[object]:
    """A ``views`` row as ClickHouse hands it back for ``stored_record``: its STORED_COLUMNS,
    the time to the millisecond (DateTime64(3)) and without its zone (as chDB returns it)."""
    values = dict(zip(VIEW_COLUMNS, row, strict=True))
    at = values["time"]
    assert isinstance(at, datetime)
    values["time"] = at.replace(tzinfo=None, microsecond=at.microsecond // 1000 * 1000)
    return [values[c] for c in STORED_COLUMNS]


def test_a_stored_row_folds_again_into_the_row_a_replay_writes() -> None:
    """Rows turned back into records and folded again — under the same rule and under another
    — are the rows the log's records give: what re-deriving ``views`` relies on."""
    log = [record(i, watch, session=f"s{i % 3}", duration=duration,
                  at=T0 + timedelta(seconds=7 * i, microseconds=123_456 * i))
           for i, (watch, duration) in enumerate(
               [(1.2345, 120.0), (0.0005, None), (4.5, 15.0), (9.9999, None), (3.0, 120.0)] * 4)]
    for rule in (RULE, ViewRule(threshold_s=4, window_s=20)):
        original = ViewFold(RULE, {}, {})
        for r in log:
            original.add(r)
        replayed, again = ViewFold(rule, {}, {}), ViewFold(rule, {}, {})
        for r in log:
            replayed.add(r)
        for row in original.rows:
            again.add(stored_record(as_stored(row)))
        assert again.rows == replayed.rows
        assert len(again.rows) == len(log)


A, B = ViewRule(threshold_s=10, window_s=3600), ViewRule(threshold_s=5, window_s=60)
CURSOR = Cursor(("asset", "viewer", "session"), Position("events.views", 2, 41),
                SessionState(window_start=T0, watched_ms=4_000, reports=2))


@pytest.mark.parametrize(("recorded", "force", "expected"), [
    (Recorded(), False, (True, None)),  # none: a new store, or one older than the record
    (Recorded(A, derived=True), False, (True, None)),  # another rule
    (Recorded(A, derived=False, cursor=CURSOR), False, (True, None)),  # another rule's run
    (Recorded(B, derived=False, cursor=CURSOR), False, (True, CURSOR)),  # resumed
    (Recorded(B, derived=False), False, (True, None)),  # stopped before its first chunk
    (Recorded(B, derived=True), False, (False, None)),  # derived with it already
    (Recorded(B, derived=True), True, (True, None)),
    (Recorded(B, derived=False, cursor=CURSOR), True, (True, CURSOR)),
])
def test_where_a_rederivation_under_a_rule_starts(
        recorded: Recorded, force: bool, expected: tuple[bool, Cursor | None]) -> None:
    assert start_at(recorded, B, force=force) == expected


def test_a_cursor_is_recorded_and_read_back_whole() -> None:
    assert parse_cursor(cursor_json(CURSOR)) == CURSOR
    assert parse_cursor("") is None


def test_event_rows_carry_the_envelope_and_the_position() -> None:
    payload = Liked(asset_id=ASSET, user_id="u9", owner_id="creator")
    event = make_event(payload, subject=ASSET, event_id="e-1", time=T0, sequence=3)
    row = dict(zip(EVENT_COLUMNS, event_row(Position("events.engagement", 1, 44), event),
                   strict=True))
    assert row["id"] == "e-1" and row["type"] == "medialog.engagement.liked"
    assert row["sequence"] == 3 and row["time"] == T0 and row["actor_id"] == ""
    assert (row["topic"], row["partition"], row["offset"]) == ("events.engagement", 1, 44)
    assert '"user_id":"u9"' in row["data"]


def test_folded_lists_each_sessions_folded_ids_in_order() -> None:
    log = [record(i, 3.0, session=f"s{i % 2}") for i in range(6)]
    fold = ViewFold(RULE, {}, {})
    for i, r in enumerate(log):
        fold.add(r, write=i >= 2)
    fold.add(log[0])  # a duplicate: not folded
    assert fold.folded == {session_key(log[0].report): [r.event.id for r in log[0::2]],
                           session_key(log[1].report): [r.event.id for r in log[1::2]]}


class FakeClickHouse:
    """Enough of a ClickHouse client for ``ClickHouseProjection``: inserts kept in memory, the
    positions and sessions reads answered from them (as the SQL does)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, object]]] = {}
        self.session_reads = 0

    def create_insert_context(self, table: str, column_names: Sequence[str]) -> SimpleNamespace:
        return SimpleNamespace(table=table, column_names=list(column_names), data=None)

    def insert(self, table: str, rows: list[list[object]], *,
               context: SimpleNamespace) -> None:
        assert context.table == table
        self.tables.setdefault(table, []).extend(
            dict(zip(context.column_names, r, strict=True)) for r in rows)

    def query(self, sql: str, parameters: dict[str, object]) -> object:
        out: list[tuple[object, ...]] = []
        if "'session'" in sql:
            self.session_reads += 1
            below = dict(zip(parameters["parts"], parameters["below"], strict=True))
            sessions: dict[tuple[str, str, str], list[dict[str, object]]] = {}
            for row in self.tables.get("views", []):
                part = f"{row['topic']}/{row['partition']}"
                if (row["asset_id"] in parameters["assets"]
                        and row["session_id"] in parameters["sessions"]
                        and part in below and row["offset"] < below[part]):
                    key = (row["asset_id"], row["viewer_key"], row["session_id"])
                    sessions.setdefault(key, []).append(row)
            for (a, v, s), rows in sessions.items():
                last = max(rows, key=lambda r: r["offset"])
                out.append(("session", a, v, s, last["offset"], last["state"],
                            [r["id"] for r in rows]))
        return type("Result", (), {"result_rows": out})()


def test_the_projection_caches_sessions_and_stays_exact() -> None:
    from medialog.envelope import encode_event
    from projections.clickhouse.projection import ClickHouseProjection

    log = [record(i, 3.0, session=f"s{i % 3}") for i in range(40)]
    whole = ViewFold(RULE, {}, {})
    for r in log:
        whole.add(r)
    raw = [(r.position, encode_event(r.event)) for r in log]
    copies = [(Position(TOPIC, 2, p.offset + 100), b) for p, b in raw[:5]]  # re-published

    client = FakeClickHouse()
    projection = ClickHouseProjection(RULE)
    for start in range(0, 30, 6):  # continuing batches: the cache answers, no session read
        projection.apply(client, raw[start:start + 6])  # type: ignore[arg-type]
    assert client.session_reads == 0
    projection.apply(client, raw[20:34])  # re-delivered from further back: read, then cached
    projection.apply(client, raw[34:])
    assert client.session_reads == 1
    # a restarted process, a gap (offsets 40-99 applied elsewhere): reads; copies: duplicates
    ClickHouseProjection(RULE).apply(client, raw[37:])  # type: ignore[arg-type]
    result = projection.apply(client, copies)  # type: ignore[arg-type]
    assert result.views == 0 and client.session_reads == 3
    written = {row["id"]: row for row in client.tables["views"]}
    assert len(written) == len(whole.rows)
    for row in whole.rows:
        assert list(written[row[0]].values()) == row


@pytest.mark.parametrize("state", [
    SessionState(),
    SessionState(window_start=T0, watched_ms=12_345, counted_at=None, reports=3, views=0,
                 recent_ids=("a", "b")),
    SessionState(window_start=T0.replace(microsecond=123_456), watched_ms=10_000,
                 counted_at=T0 + timedelta(seconds=9, microseconds=1), reports=7, views=2),
    SessionState(window_start=datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
                 watched_ms=0, counted_at=datetime(2026, 5, 6, 7, 8, 9), reports=1, views=1),
])
def test_state_json_is_what_pydantic_writes_and_reads_back(state: SessionState) -> None:
    """``encode_state`` formats by hand (hot path): it must stay pydantic's JSON of every field
    but ``recent_ids`` — a field added to ``SessionState`` fails here until it is written."""
    raw = encode_state(state)
    assert raw == TypeAdapter(SessionState).dump_json(state, exclude={"recent_ids"}).decode()
    assert decode_state(raw) == SessionState(
        window_start=state.window_start, watched_ms=state.watched_ms,
        counted_at=state.counted_at, reports=state.reports, views=state.views)
