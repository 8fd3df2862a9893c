"""Rows of the ClickHouse projection, built from decoded records. Pure: no I/O.

``event_row`` turns any event into a row of ``events``; ``ViewFold`` folds the view reports of a
batch through the view-counting rule (``medialog.domain.views``) and yields ``views`` rows with
their verdicts. The fold starts from what the caller read from ClickHouse for each session the
batch touches (the state stored with its latest row below the batch, and its report ids there),
so the rows depend only on the log: a replay, batched any way, yields the same rows.

A ``views`` row also keeps everything the fold read of its report, so ``stored_record`` turns it
back into that record: folding a session's rows again under another rule re-derives its verdicts
(``projections.clickhouse.rederive``). For that to be exact the fold reads the report's time at
the precision ClickHouse stores it (milliseconds), never the microseconds of the envelope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import TypeAdapter
from pydantic_core import to_json

from medialog.domain.events import ViewReported
from medialog.domain.views import Report, SessionState, Verdict, ViewRule, observe
from medialog.envelope import CloudEvent, payload_json
from medialog.tracking import Position

EVENT_COLUMNS = (
    "id", "type", "source", "subject", "sequence", "time", "actor_id", "actor_roles",
    "causation_id", "correlation_id", "data", "topic", "partition", "offset",
)
VIEW_COLUMNS = (
    "id", "time", "asset_id", "owner_id", "viewer_key", "signed_in", "session_id", "watch_ms",
    "duration_s", "position", "device", "country", "referrer", "verdict", "state", "topic",
    "partition", "offset",
)
# What ``stored_record`` reads of a ``views`` row: every column but the rule's (verdict, state).
STORED_COLUMNS = tuple(c for c in VIEW_COLUMNS if c not in ("verdict", "state"))
SessionKey = tuple[str, str, str]  # (asset_id, viewer_key, session_id): one session of the rule
_STATE = TypeAdapter(SessionState)
_VALUES = {v: v.value for v in Verdict}  # (Enum.value is a descriptor call: hot path)


def event_row(position: Position, event: CloudEvent) -> list[Any]:
    """The ``events`` row: the envelope's attributes and the payload as it is on the log."""
    return [
        event.id, event.type, event.source, event.subject, event.sequence, event.time,
        event.actorid or "", event.actorroles or "", event.causationid or "",
        event.correlationid or "", payload_json(event),
        position.topic, position.partition, position.offset,
    ]


def session_key(report: ViewReported) -> SessionKey:
    return (report.asset_id, report.viewer_key, report.session_id)


def encode_state(state: SessionState) -> str:
    """The state kept with a row, without the rule's ``recent_ids``: the projection recognises
    duplicates exactly, from the ids stored (``ViewFold``), so the rule never needs them. The
    very JSON pydantic writes for it (``decode_state`` reads it with pydantic; a unit test holds
    the two equal), formatted here because every report encodes one and pydantic's serializer
    costs three times as much."""
    start, counted = state.window_start, state.counted_at
    return (f'{{"window_start":{"null" if start is None else to_json(start).decode()},'
            f'"watched_ms":{state.watched_ms},'
            f'"counted_at":{"null" if counted is None else to_json(counted).decode()},'
            f'"reports":{state.reports},"views":{state.views}}}')


def decode_state(raw: str) -> SessionState:
    return _STATE.validate_json(raw)


class Stamp(NamedTuple):
    """What the fold reads of an envelope: the event id and its time (``stored_record``)."""

    id: str
    time: datetime


class ViewRecord(NamedTuple):
    """One view report of a batch: where it is on the log, its envelope, its payload."""

    position: Position
    event: CloudEvent | Stamp
    report: ViewReported


@dataclass
class ViewFold:
    """The view rows of one batch. Feed records in log order (per partition, by offset).

    ``states``: each touched session's state as of just below the batch (absent: new session).
    ``stored``: each touched session's report ids stored below the batch. A report whose id is
    stored, or was seen earlier in the batch, is a duplicate (the same report re-published on
    the log): it gets no row and moves no state. Every other report is folded; ``write=False``
    (a record already applied, re-delivered with the batch) folds it without keeping its row,
    which ClickHouse holds already, identical. ``folded``: per session, the ids of the reports
    folded here (rows written or not), in order: with ``stored`` they are the session's ids as
    of the end of the batch."""

    rule: ViewRule
    states: dict[SessionKey, SessionState]
    stored: Mapping[SessionKey, AbstractSet[str]]
    rows: list[list[Any]] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    folded: dict[SessionKey, list[str]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add(self, record: ViewRecord, *, write: bool = True) -> Verdict:
        position, event, r = record
        key = (r.asset_id, r.viewer_key, r.session_id)  # session_key(r), inlined: hot path
        event_id = event.id
        if event_id in self._seen or event_id in self.stored.get(key, ()):
            return self._count(Verdict.DUPLICATE, write)
        self._seen.add(event_id)
        at = event.time
        if at.microsecond % 1000:  # to the millisecond, as ``views.time`` keeps it
            at = at.replace(microsecond=at.microsecond - at.microsecond % 1000)
        seen = observe(self.rule, self.states.get(key, _NEW),
                       Report(report_id=event_id, at=at, watch_seconds=r.watch_seconds,
                              duration_s=r.duration_s))
        verdict = seen.verdict
        if verdict is Verdict.DUPLICATE:
            return self._count(verdict, write)
        self.states[key] = state = seen.state
        folded = self.folded.get(key)
        if folded is None:
            self.folded[key] = [event_id]
        else:
            folded.append(event_id)
        if write:
            value = _VALUES[verdict]
            self.rows.append([
                event_id, at, r.asset_id, r.owner_id, r.viewer_key, int(r.signed_in),
                r.session_id, seen.watched_ms, r.duration_s, r.position, r.device or "",
                r.country or "", r.referrer or "", value, encode_state(state),
                position.topic, position.partition, position.offset,
            ])
            self.verdicts[value] = self.verdicts.get(value, 0) + 1
        return verdict

    def _count(self, verdict: Verdict, write: bool) -> Verdict:
        if write:
            value = _VALUES[verdict]
            self.verdicts[value] = self.verdicts.get(value, 0) + 1
        return verdict


_NEW = SessionState()


def stored_record(row: Sequence[Any]) -> ViewRecord:
    """The record a ``views`` row (``STORED_COLUMNS``) was derived from, as the fold read it:
    the watch time is the row's exact delta (``to_ms`` gives ``watch_ms`` back), the time the
    stored milliseconds. Folding it again yields the same row but for the rule's columns."""
    (event_id, at, asset_id, owner_id, viewer_key, signed_in, session_id, watch_ms, duration_s,
     position, device, country, referrer, topic, partition, offset) = row
    report = ViewReported(
        asset_id=asset_id, owner_id=owner_id, viewer_key=viewer_key, signed_in=bool(signed_in),
        session_id=session_id, watch_seconds=watch_ms / 1000, duration_s=duration_s,
        position=position, device=device, country=country, referrer=referrer)
    return ViewRecord(Position(topic, partition, offset), Stamp(event_id, utc(at)), report)


def first_offsets(records: Iterable[ViewRecord]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the lowest offset among ``records``: states are read below it."""
    low: dict[tuple[str, int], int] = {}
    for rec in records:
        key = (rec.position.topic, rec.position.partition)
        low[key] = min(low.get(key, rec.position.offset), rec.position.offset)
    return low


def utc(value: datetime) -> datetime:
    """chDB returns DateTime64('UTC') values without their zone: they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
