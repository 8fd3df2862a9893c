"""The view-counting rule, as a fold over one playback session. Pure: no I/O, no clock.

A *session* is one (asset, viewer_key, session_id). Its reports (``ViewReported`` on
``events.views``, keyed by asset, so one session's reports are read in log order) are folded one
at a time with :func:`observe`, which returns the new state and a :class:`Verdict`:

* a view counts **once per session per window**: the window opens at the first report of the
  session (the report's acceptance time, from the event) and lasts ``window_s``; a report at or
  after ``window_start + window_s`` opens a new window with nothing watched;
* it counts when the watch time accumulated in the window (the sum of the reports'
  ``watch_seconds`` deltas) reaches the threshold: ``threshold_s``, or half the duration for
  assets shorter than ``2 × threshold_s`` (the duration each report carries);
* the report that makes it reach the threshold is ``counted``; earlier ones are
  ``below_threshold``; later ones in the same window are ``already_counted``;
* a report whose id is among the session's recent ids is a ``duplicate`` (the same record twice
  on the log, as an at-least-once producer retry writes it): it changes nothing.

Watch time is kept in whole milliseconds so that sums are exact and a replay of the same log,
batched differently, derives exactly the same state (projections are rebuilt by replaying).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

RECENT_IDS = 16  # report ids remembered per session to recognise re-published duplicates


class Verdict(StrEnum):
    COUNTED = "counted"
    BELOW_THRESHOLD = "below_threshold"
    ALREADY_COUNTED = "already_counted"
    DUPLICATE = "duplicate"


def to_ms(seconds: float) -> int:
    """Seconds → whole milliseconds (half up), the unit every sum is kept in."""
    return int(seconds * 1000 + 0.5)


@dataclass(frozen=True, kw_only=True)
class ViewRule:
    """The configured rule (``Settings.view_threshold_s``, ``Settings.view_window_s``)."""

    threshold_s: float = 10.0
    window_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.threshold_s <= 0 or self.window_s <= 0:
            raise ValueError("threshold_s and window_s must be positive")

    @cached_property
    def window(self) -> timedelta:
        """``window_s`` as a ``timedelta`` (computed once: the fold compares every report)."""
        return timedelta(seconds=self.window_s)

    def threshold_ms(self, duration_s: float | None) -> int:
        """Watch time that makes a view: the threshold, or half of a short asset (≥ 1 ms)."""
        threshold = self.threshold_s
        if duration_s is not None and 0 < duration_s < 2 * threshold:
            threshold = duration_s / 2
        return max(1, to_ms(threshold))


@dataclass(frozen=True, kw_only=True)
class Report:
    """What the rule needs of one ``ViewReported``: its event id and time, and the delta."""

    report_id: str
    at: datetime
    watch_seconds: float
    duration_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class SessionState:
    """One session's fold. The initial state (no report yet) is ``SessionState()``."""

    window_start: datetime | None = None
    watched_ms: int = 0  # accumulated in the current window
    counted_at: datetime | None = None  # when the view of the current window counted
    reports: int = 0  # reports applied (duplicates excluded), all windows
    views: int = 0  # views counted, all windows
    recent_ids: tuple[str, ...] = ()  # the last RECENT_IDS report ids, oldest first


@dataclass(frozen=True, kw_only=True)
class Observation:
    state: SessionState
    verdict: Verdict
    watched_ms: int  # watch time this report added (0 for a duplicate)

    @property
    def counted(self) -> bool:
        return self.verdict is Verdict.COUNTED


def observe(rule: ViewRule, state: SessionState, report: Report) -> Observation:
    """Fold one report into a session; never raises on stored history."""
    recent = state.recent_ids
    if report.report_id in recent:
        return Observation(state=state, verdict=Verdict.DUPLICATE, watched_ms=0)
    verdict, window_start, watched, counted_at, delta = _step(
        rule, report, state.window_start, state.watched_ms, state.counted_at)
    new = SessionState(
        window_start=window_start,
        watched_ms=watched,
        counted_at=counted_at,
        reports=state.reports + 1,
        views=state.views + (verdict is Verdict.COUNTED),
        recent_ids=(*recent, report.report_id)[-RECENT_IDS:],
    )
    return Observation(state=new, verdict=verdict, watched_ms=delta)


@dataclass(frozen=True, kw_only=True)
class Replayed:
    state: SessionState  # after the last report
    verdicts: list[Verdict]  # one per report, in order
    watched_ms: int  # watch time the reports added (duplicates add nothing)


def replay(
    rule: ViewRule, reports: Iterable[Report], state: SessionState | None = None
) -> Replayed:
    """Fold ``reports`` (in log order) from ``state`` (default: a new session): what
    :func:`observe` report by report gives, without building the states in between."""
    current = state or SessionState()
    window_start, watched, counted_at = current.window_start, current.watched_ms, \
        current.counted_at
    recent, verdicts = list(current.recent_ids), []
    applied = views = added = 0
    for report in reports:
        if report.report_id in recent:
            verdicts.append(Verdict.DUPLICATE)
            continue
        verdict, window_start, watched, counted_at, delta = _step(
            rule, report, window_start, watched, counted_at)
        verdicts.append(verdict)
        recent.append(report.report_id)
        if len(recent) > RECENT_IDS:
            del recent[0]
        applied += 1
        views += verdict is Verdict.COUNTED
        added += delta
    if not applied:
        return Replayed(state=current, verdicts=verdicts, watched_ms=0)
    new = SessionState(window_start=window_start, watched_ms=watched, counted_at=counted_at,
                       reports=current.reports + applied, views=current.views + views,
                       recent_ids=tuple(recent))
    return Replayed(state=new, verdicts=verdicts, watched_ms=added)


def _step(
    rule: ViewRule, report: Report, window_start: datetime | None, watched: int,
    counted_at: datetime | None,
) -> tuple[Verdict, datetime, int, datetime | None, int]:
    """The rule for one report that is not a duplicate, over the window's fields:
    ``(verdict, window_start, watched, counted_at, watch time added)``. Plain values, no
    objects: projections fold every report."""
    delta = max(0, to_ms(report.watch_seconds))
    at = report.at
    if window_start is None or at >= window_start + rule.window:
        window_start, watched, counted_at = at, 0, None
    watched += delta
    if counted_at is not None:
        verdict = Verdict.ALREADY_COUNTED
    elif watched >= rule.threshold_ms(report.duration_s):
        verdict, counted_at = Verdict.COUNTED, at
    else:
        verdict = Verdict.BELOW_THRESHOLD
    return verdict, window_start, watched, counted_at, delta
