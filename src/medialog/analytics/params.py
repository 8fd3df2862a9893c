"""Query parameters of the analytics endpoints, parsed and checked. Pure: no I/O, no clock
(``now`` is passed in). Bad input raises ``ValidationError`` with one of these codes:

* ``INVALID_TIME`` — ``from``/``to`` is not an RFC 3339 date-time with an offset
  (``2025-01-31T12:00:00Z``, ``…+02:00``; a ``+`` decoded to a space is accepted), or is
  outside 1970-01-01 … 2299-12-31 UTC (what ClickHouse ``DateTime64`` stores);
* ``INVALID_RANGE`` — ``from`` is not before ``to``;
* ``RANGE_TOO_LONG`` — the range spans more than 366 days, or more than 31 days by the hour;
* ``INVALID_INTERVAL`` — ``interval`` is not ``hour`` or ``day``;
* ``INVALID_WINDOW`` — ``window`` is not ``1h``, ``24h`` or ``7d``;
* ``INVALID_LIMIT`` — ``limit`` is not an integer in 1…100.

Defaults: ``to`` = now, ``from`` = ``to`` − 7 days, ``interval`` = day, ``window`` = 24h,
``limit`` = 20. Buckets are UTC hours or days."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from medialog.domain.errors import ValidationError

Interval = Literal["hour", "day"]
INTERVALS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = timedelta(days=7)
MAX_SPAN = timedelta(days=366)
MAX_HOURLY_SPAN = timedelta(days=31)

# Trending: score = Σ exp(-age/τ) over counted views + LIKE_WEIGHT · Σ ±exp(-age/τ) over likes
# (+1 liked, −1 unliked) in the window; τ = window / DECAY_DIVISOR, so a view at the start of
# the window weighs e^-3 ≈ 5 % of a view now.
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
}
DEFAULT_WINDOW = "24h"
DECAY_DIVISOR = 3.0
LIKE_WEIGHT = 3.0
DEFAULT_LIMIT, MAX_LIMIT = 20, 100

# Bounds of a time parameter, after conversion to UTC: the default span before the earliest is
# still a datetime, and the latest is what DateTime64 (ClickHouse) can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_RFC3339 = re.compile(  # ASCII digits only (\d would take "٢٠٢٥" too)
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
_SPACE_OFFSET = re.compile(r"(?<=[0-9]) ([0-9]{2}:[0-9]{2})\Z")  # "…:00 02:00": a lost "+"
_LIMIT = re.compile(r"\A[0-9]{1,3}\Z")


def parse_time(raw: str, name: str) -> datetime:
    """An RFC 3339 date-time with an offset → an aware UTC datetime."""
    text = _SPACE_OFFSET.sub(r"+\1", raw.strip())
    if not _RFC3339.match(text):
        raise ValidationError(f"{name} must be an RFC 3339 date-time such as "
                              "2025-01-31T12:00:00Z", code="INVALID_TIME",
                              details=[{"field": name}])
    try:  # 3.11's fromisoformat takes Z and any fraction once the regex has shaped the text
        value = datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # month 13, hour 25; year 1 moved before year 1
        raise ValidationError(f"{name} is not a valid date-time", code="INVALID_TIME",
                              details=[{"field": name}]) from exc
    if not EARLIEST <= value <= LATEST:
        raise ValidationError(f"{name} must be between 1970-01-01 and 2299-12-31 (UTC)",
                              code="INVALID_TIME", details=[{"field": name}])
    return value


def floor_to(value: datetime, interval: Interval) -> datetime:
    if interval == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class TimeRange:
    """``[start, end)`` in UTC, reported in ``interval`` buckets."""

    start: datetime
    end: datetime
    interval: Interval

    def buckets(self) -> list[datetime]:
        """Every bucket start overlapping the range, oldest first (empty ones included)."""
        step = INTERVALS[self.interval]
        out, at = [], floor_to(self.start, self.interval)
        while at < self.end:
            out.append(at)
            at += step
        return out


def parse_range(query: Mapping[str, str], now: datetime) -> TimeRange:
    interval = query.get("interval", "day")
    if interval not in INTERVALS:
        raise ValidationError("interval must be hour or day", code="INVALID_INTERVAL",
                              details=[{"field": "interval"}])
    end = parse_time(query["to"], "to") if "to" in query else now.astimezone(UTC)
    start = parse_time(query["from"], "from") if "from" in query else end - DEFAULT_SPAN
    if start >= end:
        raise ValidationError("from must be before to", code="INVALID_RANGE",
                              details=[{"field": "from"}, {"field": "to"}])
    limit = MAX_HOURLY_SPAN if interval == "hour" else MAX_SPAN
    if end - start > limit:
        raise ValidationError(f"the range may span at most {limit.days} days by the {interval}",
                              code="RANGE_TOO_LONG", details=[{"field": "from"}, {"field": "to"}])
    return TimeRange(start=start, end=end, interval=interval)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrendingQuery:
    window: str
    limit: int
    now: datetime

    @property
    def since(self) -> datetime:
        return self.now - WINDOWS[self.window]

    @property
    def tau_s(self) -> float:
        return WINDOWS[self.window].total_seconds() / DECAY_DIVISOR


def parse_trending(query: Mapping[str, str], now: datetime) -> TrendingQuery:
    window = query.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise ValidationError("window must be one of 1h, 24h, 7d", code="INVALID_WINDOW",
                              details=[{"field": "window"}])
    raw = query.get("limit", str(DEFAULT_LIMIT)).strip()
    if not _LIMIT.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}",
                              code="INVALID_LIMIT", details=[{"field": "limit"}])
    return TrendingQuery(window=window, limit=int(raw), now=now.astimezone(UTC))


def decay_score(
    view_ages_s: list[float], like_ages_s: list[tuple[float, int]], tau_s: float
) -> float:
    """The trending score in Python (the SQL in ``queries.trending`` computes the same):
    Σ exp(-age/τ) over counted views + LIKE_WEIGHT · Σ sign · exp(-age/τ) over like events."""
    views = sum(math.exp(-age / tau_s) for age in view_ages_s)
    likes = sum(sign * math.exp(-age / tau_s) for age, sign in like_ages_s)
    return views + LIKE_WEIGHT * likes
