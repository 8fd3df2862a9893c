"""Analytics query parameters: RFC 3339 times, ranges, intervals, trending window and limit, and
the decay score."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from medialog.analytics.params import (
    LIKE_WEIGHT,
    TimeRange,
    decay_score,
    parse_range,
    parse_time,
    parse_trending,
)
from medialog.domain.errors import ValidationError

NOW = datetime(2025, 3, 10, 15, 42, 7, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31t12:00:00z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31T14:00:00+02:00", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31T14:00:00 02:00", datetime(2025, 1, 31, 12, tzinfo=UTC)),  # "+" form-decoded
        ("2025-01-31T06:30:00-05:30", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31 12:00:00.5Z", datetime(2025, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2025-01-31T12:00:00.123456789Z", datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_as_utc(raw: str, expected: datetime) -> None:
    value = parse_time(raw, "from")
    assert value == expected and value.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    ["", "yesterday", "2025-01-31", "2025-01-31T12:00:00", "2025-01-31T12:00Z",
     "2025-13-01T00:00:00Z", "2025-01-31T25:00:00Z", "1738324800", "2025-01-31T12:00:00+0200",
     "2025-01-31T12:00:00Z; DROP TABLE views"],
)
def test_anything_else_is_invalid_time(raw: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_time(raw, "to")
    assert err.value.code == "INVALID_TIME" and err.value.details == [{"field": "to"}]


def test_defaults_are_the_last_seven_days_by_day() -> None:
    rng = parse_range({}, NOW)
    assert rng == TimeRange(start=NOW - timedelta(days=7), end=NOW, interval="day")
    buckets = rng.buckets()
    assert buckets[0] == datetime(2025, 3, 3, tzinfo=UTC)
    assert buckets[-1] == datetime(2025, 3, 10, tzinfo=UTC) and len(buckets) == 8


def test_hour_buckets_cover_the_range_without_gaps() -> None:
    rng = parse_range({"from": "2025-03-10T10:30:00Z", "to": "2025-03-10T13:00:00Z",
                       "interval": "hour"}, NOW)
    assert rng.buckets() == [datetime(2025, 3, 10, h, tzinfo=UTC) for h in (10, 11, 12)]


def test_only_from_given_runs_to_now() -> None:
    rng = parse_range({"from": "2025-03-01T00:00:00Z"}, NOW)
    assert rng.start == datetime(2025, 3, 1, tzinfo=UTC) and rng.end == NOW


@pytest.mark.parametrize(
    "query, code",
    [
        ({"interval": "minute"}, "INVALID_INTERVAL"),
        ({"interval": ""}, "INVALID_INTERVAL"),
        ({"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "INVALID_RANGE"),
        ({"from": "2025-03-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "INVALID_RANGE"),
        ({"from": "2099-01-01T00:00:00Z"}, "INVALID_RANGE"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"}, "RANGE_TOO_LONG"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2025-02-02T00:00:00Z", "interval": "hour"},
         "RANGE_TOO_LONG"),
        ({"from": "last week"}, "INVALID_TIME"),
    ],
)
def test_bad_ranges_are_refused_with_a_code(query: dict[str, str], code: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_range(query, NOW)
    assert err.value.code == code


def test_the_longest_ranges_are_allowed() -> None:
    assert parse_range({"from": "2024-03-09T00:00:00Z", "to": "2025-03-10T00:00:00Z"}, NOW)
    assert parse_range({"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z",
                        "interval": "hour"}, NOW)


def test_trending_defaults_and_window() -> None:
    q = parse_trending({}, NOW)
    assert (q.window, q.limit, q.now) == ("24h", 20, NOW)
    assert q.since == NOW - timedelta(hours=24) and q.tau_s == 8 * 3600
    q = parse_trending({"window": "7d", "limit": "100"}, NOW)
    assert q.limit == 100 and q.since == NOW - timedelta(days=7)


@pytest.mark.parametrize(
    "query, code",
    [({"window": "2h"}, "INVALID_WINDOW"), ({"window": ""}, "INVALID_WINDOW"),
     ({"limit": "0"}, "INVALID_LIMIT"), ({"limit": "101"}, "INVALID_LIMIT"),
     ({"limit": "-1"}, "INVALID_LIMIT"), ({"limit": "ten"}, "INVALID_LIMIT"),
     ({"limit": "1.5"}, "INVALID_LIMIT")],
)
def test_bad_trending_parameters(query: dict[str, str], code: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_trending(query, NOW)
    assert err.value.code == code


def test_decay_prefers_recent_activity_and_likes_weigh_more() -> None:
    tau = 1200.0
    assert decay_score([0.0], [], tau) == 1.0
    assert decay_score([tau], [], tau) == pytest.approx(math.exp(-1))
    # three fresh views beat five from a window ago
    assert decay_score([0, 60, 120], [], tau) > decay_score([3600] * 5, [], tau)
    # a like counts LIKE_WEIGHT views; an unlike takes it back
    assert decay_score([], [(0.0, 1)], tau) == LIKE_WEIGHT
    assert decay_score([], [(0.0, 1), (0.0, -1)], tau) == 0.0


@pytest.mark.parametrize(
    "query, field",
    [
        ({"to": "0001-01-01T00:00:00Z"}, "to"),  # default from = to − 7 d: was OverflowError
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),  # before year 1 in UTC: OverflowError
        ({"to": "9999-12-31T23:59:59-01:00"}, "to"),  # after year 9999 in UTC: OverflowError
        ({"from": "0001-01-01T00:30:00+01:00", "to": "1970-01-02T00:00:00Z"}, "from"),
        ({"from": "1969-12-31T23:59:59Z", "to": "1970-01-02T00:00:00Z"}, "from"),
        ({"from": "2299-12-31T00:00:00Z", "to": "2300-01-01T00:00:00Z"}, "to"),
        ({"to": "٢٠٢٥-01-31T12:00:00Z"}, "to"),  # Arabic-Indic digits are not RFC 3339
    ],
)
def test_out_of_range_times_are_invalid_time(query: dict[str, str], field: str) -> None:
    # security F5 / engagement F7: these were 500 (OverflowError in astimezone or end − span).
    with pytest.raises(ValidationError) as err:
        parse_range(query, NOW)
    assert err.value.code == "INVALID_TIME" and err.value.details == [{"field": field}]


def test_the_extreme_times_still_allowed() -> None:
    rng = parse_range({"to": "1970-01-01T00:00:00Z"}, NOW)
    assert rng.start == datetime(1969, 12, 25, tzinfo=UTC)  # the default span before it
    rng = parse_range({"from": "2299-12-31T00:00:00Z", "to": "2299-12-31T23:59:59.999Z",
                       "interval": "hour"}, NOW)
    assert len(rng.buckets()) == 24


@pytest.mark.parametrize("limit", ["²", "²²", "٣", "３", "1_0", "+5", "0" * 20 + "1"])
def test_trending_limit_takes_ascii_digits_only(limit: str) -> None:
    # "²".isdigit() is True but int("²") raises (500); "٣" was silently taken as 3.
    with pytest.raises(ValidationError) as err:
        parse_trending({"limit": limit}, NOW)
    assert err.value.code == "INVALID_LIMIT"
