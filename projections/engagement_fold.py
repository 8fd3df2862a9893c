"""The engagement projection's fold, pure (no I/O): a batch's records grouped by key
(``touched``), each session's reports folded with the counting rule (``fold_views``) and the
like events applied above each key's version (``fold_likes``), with the per-asset counter
deltas they make. ``projections.engagement_pg`` reads and writes the rows around it."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

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


@dataclass
class Touched:
    """A batch's records by key: each session's view reports in log order (and whether its
    viewer is signed in), the like events, each key's partition; per partition, the lowest and
    highest offset and the time of the newest view report; how many records decoded and which
    did not."""

    views: dict[SessionKey, list[Report]] = field(default_factory=dict)
    signed_in: dict[SessionKey, bool] = field(default_factory=dict)
    likes: list[tuple[CloudEvent, Liked | Unliked]] = field(default_factory=list)
    session_part: dict[SessionKey, Part] = field(default_factory=dict)
    like_part: dict[str, Part] = field(default_factory=dict)
    first: dict[Part, int] = field(default_factory=dict)
    top: dict[Part, int] = field(default_factory=dict)
    newest: dict[Part, datetime] = field(default_factory=dict)
    decoded: int = 0
    undecodable: list[Position] = field(default_factory=list)


def touched(records: Iterable[tuple[Position, CloudEvent | None, DomainEvent | None]]
            ) -> Touched:
    """Group decoded records (``None`` for one that did not decode) by key."""
    t = Touched()
    views, signed_in, session_part, first, top = (
        t.views, t.signed_in, t.session_part, t.first, t.top)
    for position, event, p in records:
        part = (position.topic, position.partition)
        offset = position.offset
        if offset < first.get(part, offset + 1):
            first[part] = offset
        if offset > top.get(part, -1):
            top[part] = offset
        if event is None:
            t.undecodable.append(position)
            continue
        t.decoded += 1
        if isinstance(p, ViewReported):
            key = (p.asset_id, p.viewer_key, p.session_id)
            report = Report(report_id=event.id, at=event.time, watch_seconds=p.watch_seconds,
                            duration_s=p.duration_s)
            if key in views:
                views[key].append(report)
            else:
                views[key], signed_in[key], session_part[key] = [report], p.signed_in, part
            if part not in t.newest or event.time > t.newest[part]:
                t.newest[part] = event.time
        elif isinstance(p, Liked | Unliked):
            t.likes.append((event, p))
            t.like_part[engagement_key(p.asset_id, p.user_id)] = part
    return t


def decoding(batch: Batch, stored: Mapping[Part, tracking.Stored] | None = None
             ) -> Iterator[tuple[Position, CloudEvent | None, DomainEvent | None]]:
    """The records of ``batch`` decoded (``None`` if undecodable), past ``stored`` if given."""
    for position, raw in batch:
        if stored is not None and \
                position.offset <= stored[(position.topic, position.partition)].offset:
            continue
        try:
            event, payload = decode_event(raw)
        except ValueError:
            yield position, None, None
            continue
        yield position, event, payload


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
    records: Sequence[tuple[CloudEvent, Liked | Unliked]], current: dict[str, LikeRow],
    deltas: defaultdict[str, Delta],
) -> list[tuple[str, LikeWrite]]:
    """Apply like/unlike events above each key's version (the rows left in ``current``); the
    changed rows, sorted."""
    out: dict[str, LikeWrite] = {}
    for event, p in records:
        key = engagement_key(p.asset_id, p.user_id)
        liked, version, liked_at = current.get(key, UNLIKED)
        seq = event.sequence
        if seq is None or seq <= version:
            continue  # re-emitted duplicate (or not from the actor): already applied
        if seq > version + 1:
            log.warning("engagement %s: sequence %d after %d (gap)", key, seq, version)
        now_liked = isinstance(p, Liked)
        if now_liked != liked:
            deltas[p.asset_id].likes += 1 if now_liked else -1
        liked_at = event.time if now_liked and not liked else liked_at
        current[key] = (now_liked, seq, liked_at)
        out[key] = (p.asset_id, p.user_id, now_liked, seq, liked_at, event.time)
    return sorted(out.items())
