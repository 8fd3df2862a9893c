"""The engagement projection's fold, pure (no I/O): a batch's records read (``reading``: a
tolerant reader of the fields the fold uses) and grouped by key (``touched``), each session's
reports folded with the counting rule (``fold_views``) and the like events applied above each
key's version (``fold_likes``), with the per-asset counter deltas they make.
``projections.postgres.engagement`` reads and writes the rows around it."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final, Literal, NamedTuple, TypeAlias

import msgspec

from medialog import tracking
from medialog.domain.engagement import engagement_key
from medialog.domain.events import DomainEvent, Liked, Unliked, ViewReported
from medialog.domain.views import Report, SessionState, ViewRule, replay
from medialog.envelope import CloudEvent, decode_event
from medialog.tracking import Position
from projections.runner import Batch

log = logging.getLogger(__name__)

SessionKey = tuple[str, str, str]  # (asset_id, viewer_key, session_id)
Part = tuple[str, int]  # (topic, partition)
LikeRow = tuple[bool, int, datetime | None]  # (liked, version, liked_at)
LikeWrite = tuple[str, str, bool, int, datetime | None, datetime]  # a likes row to store
NEW_SESSION = SessionState()
UNLIKED: LikeRow = (False, 0, None)


@dataclass
class Delta:
    """What a batch adds to one asset's counters."""

    views: int = 0
    likes: int = 0
    watched_ms: int = 0


class ViewIn(NamedTuple):
    """What the fold needs of a view report."""

    key: SessionKey
    signed_in: bool
    report: Report


class LikeIn(NamedTuple):
    """What the fold needs of a like or unlike event."""

    asset_id: str
    user_id: str
    liked: bool
    sequence: int | None
    time: datetime


class Undecodable(Enum):
    RECORD = "undecodable"


# A record as the fold reads it; None: it decoded, but the fold does not use its type.
Read: TypeAlias = ViewIn | LikeIn | None | Literal[Undecodable.RECORD]


@dataclass
class Touched:
    """A batch's records by key: each session's view reports in log order (and whether its
    viewer is signed in), the like events, each key's partition; per partition, the lowest and
    highest offset and the time of the newest view report; how many records decoded and which
    did not."""

    views: dict[SessionKey, list[Report]] = field(default_factory=dict)
    signed_in: dict[SessionKey, bool] = field(default_factory=dict)
    likes: list[LikeIn] = field(default_factory=list)
    session_part: dict[SessionKey, Part] = field(default_factory=dict)
    like_part: dict[str, Part] = field(default_factory=dict)
    first: dict[Part, int] = field(default_factory=dict)
    top: dict[Part, int] = field(default_factory=dict)
    newest: dict[Part, datetime] = field(default_factory=dict)
    decoded: int = 0
    undecodable: list[Position] = field(default_factory=list)


def touched(records: Iterable[tuple[Position, Read]]) -> Touched:
    """Group records (as ``reading`` yields them) by key."""
    t = Touched()
    views, signed_in, session_part, first, top, newest = (
        t.views, t.signed_in, t.session_part, t.first, t.top, t.newest)
    for position, item in records:
        part = (position.topic, position.partition)
        offset = position.offset
        highest = top.get(part)
        if highest is None:
            first[part] = top[part] = offset
        elif offset > highest:
            top[part] = offset
        elif offset < first[part]:
            first[part] = offset
        if item is Undecodable.RECORD:
            t.undecodable.append(position)
            continue
        t.decoded += 1
        if isinstance(item, ViewIn):
            key, report = item.key, item.report
            if key in views:
                views[key].append(report)
            else:
                views[key], signed_in[key], session_part[key] = [report], item.signed_in, part
            latest = newest.get(part)
            if latest is None or report.at > latest:
                newest[part] = report.at
        elif item is not None:
            t.likes.append(item)
            t.like_part[engagement_key(item.asset_id, item.user_id)] = part
    return t


def read_event(event: CloudEvent, payload: DomainEvent | None) -> Read:
    """A decoded event as the fold reads it."""
    if isinstance(payload, ViewReported):
        return ViewIn((payload.asset_id, payload.viewer_key, payload.session_id),
                      payload.signed_in,
                      Report(report_id=event.id, at=event.time,
                             watch_seconds=payload.watch_seconds, duration_s=payload.duration_s))
    if isinstance(payload, Liked | Unliked):
        return LikeIn(payload.asset_id, payload.user_id, isinstance(payload, Liked),
                      event.sequence, event.time)
    return None


# The tolerant reader ``reading`` parses first: of the current versions of the three event types
# the fold uses, only the fields it uses (and the type and schema that say what it is), decoded
# and type-checked in one pass over the JSON by msgspec (strict: no coercion) — about five times
# faster than ``decode_event``, which validates the whole envelope and payload with pydantic.
# Anything it does not match (another type, an older version to upcast, a value pydantic would
# coerce, something invalid) goes through ``decode_event``, so what it reads is what the full
# decoder would give (tests/unit/test_engagement_reader.py holds the two equal).
VIEW_SCHEMA: Final = "urn:medialog:events:view.reported:v1"
LIKED_SCHEMA: Final = "urn:medialog:events:engagement.liked:v1"
UNLIKED_SCHEMA: Final = "urn:medialog:events:engagement.unliked:v1"
READER_SCHEMAS = {ViewReported: VIEW_SCHEMA, Liked: LIKED_SCHEMA, Unliked: UNLIKED_SCHEMA}


class _ViewData(msgspec.Struct, gc=False):
    asset_id: str
    viewer_key: str
    signed_in: bool
    session_id: str
    watch_seconds: float
    duration_s: float | None


class _ViewReported(msgspec.Struct, tag_field="dataschema", tag=VIEW_SCHEMA, gc=False):
    id: str
    type: Literal["medialog.view.reported"]
    time: str  # converted by ``_time``
    data: _ViewData


class _LikeData(msgspec.Struct, gc=False):
    asset_id: str
    user_id: str


class _Liked(msgspec.Struct, tag_field="dataschema", tag=LIKED_SCHEMA, gc=False):
    type: Literal["medialog.engagement.liked"]
    time: str
    data: _LikeData
    sequence: int | None = None


class _Unliked(msgspec.Struct, tag_field="dataschema", tag=UNLIKED_SCHEMA, gc=False):
    type: Literal["medialog.engagement.unliked"]
    time: str
    data: _LikeData
    sequence: int | None = None


_DECODE: Final = msgspec.json.Decoder(_ViewReported | _Liked | _Unliked).decode


class _Unmatched(Exception):
    """What the fast path leaves to ``decode_event``."""


def _time(text: str) -> datetime:
    """The event time as pydantic reads it. msgspec rounds a fraction of more than six digits
    where pydantic truncates it: such a time (the 7th digit is at the same place in every form
    msgspec accepts) is left to the full decoder."""
    if text[26:27].isdigit() and text[19:20] == ".":
        raise _Unmatched
    return msgspec.convert(text, datetime)


def read_raw(raw: bytes) -> Read:
    """One record as the fold reads it (``Undecodable.RECORD`` if it does not decode)."""
    try:
        r = _DECODE(raw)
        at = _time(r.time)
    except (msgspec.DecodeError, _Unmatched):
        try:
            return read_event(*decode_event(raw))
        except ValueError:
            return Undecodable.RECORD
    if isinstance(r, _ViewReported):
        v = r.data
        return ViewIn((v.asset_id, v.viewer_key, v.session_id), v.signed_in,
                      Report(report_id=r.id, at=at, watch_seconds=v.watch_seconds,
                             duration_s=v.duration_s))
    return LikeIn(r.data.asset_id, r.data.user_id, isinstance(r, _Liked), r.sequence, at)


def reading(batch: Batch, stored: Mapping[Part, tracking.Stored] | None = None
            ) -> Iterator[tuple[Position, Read]]:
    """The records of ``batch`` past ``stored`` (if given) as the fold reads them."""
    for position, raw in batch:
        if stored is not None and \
                position.offset <= stored[(position.topic, position.partition)].offset:
            continue
        yield position, read_raw(raw)


def fold_views(
    rule: ViewRule, views: Mapping[SessionKey, Sequence[Report]],
    signed_in: Mapping[SessionKey, bool], states: dict[SessionKey, SessionState],
    deltas: defaultdict[str, Delta], keys: Iterable[SessionKey],
) -> list[tuple[SessionKey, bool, SessionState]]:
    """Fold the reports of the sessions ``keys`` (log order within each partition: the fold is
    exact) from their stored state, left in ``states``; the changed sessions."""
    changed = []
    for key in keys:
        before = states.get(key, NEW_SESSION)
        done = replay(rule, views[key], before)
        states[key] = after = done.state
        if after.reports == before.reports:
            continue  # duplicates only
        delta = deltas[key[0]]
        delta.views += after.views - before.views
        delta.watched_ms += done.watched_ms
        changed.append((key, signed_in[key], after))
    return changed


def fold_likes(
    records: Sequence[LikeIn], current: dict[str, LikeRow], deltas: defaultdict[str, Delta],
) -> list[tuple[str, LikeWrite]]:
    """Apply like/unlike events above each key's version (the rows left in ``current``); the
    changed rows, sorted."""
    out: dict[str, LikeWrite] = {}
    for like in records:
        key = engagement_key(like.asset_id, like.user_id)
        liked, version, liked_at = current.get(key, UNLIKED)
        seq = like.sequence
        if seq is None or seq <= version:
            continue  # re-emitted duplicate (or not from the actor): already applied
        if seq > version + 1:
            log.warning("engagement %s: sequence %d after %d (gap)", key, seq, version)
        if like.liked != liked:
            deltas[like.asset_id].likes += 1 if like.liked else -1
        liked_at = like.time if like.liked and not liked else liked_at
        current[key] = (like.liked, seq, liked_at)
        out[key] = (like.asset_id, like.user_id, like.liked, seq, liked_at, like.time)
    return sorted(out.items())
