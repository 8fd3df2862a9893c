"""The view-counting rule (a pure fold) and the validation of playback reports."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from medialog.api.engagement import check_visible
from medialog.domain.access import Viewer
from medialog.domain.errors import NotFound, ValidationError
from medialog.domain.view_reports import (
    AssetRef,
    anonymous_viewer_key,
    max_watch_seconds,
    validate_view_report,
)
from medialog.domain.views import (
    RECENT_IDS,
    Replayed,
    Report,
    SessionState,
    Verdict,
    ViewRule,
    observe,
    replay,
    to_ms,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULE = ViewRule(threshold_s=10, window_s=3600)
C, B, A, D = (Verdict.COUNTED, Verdict.BELOW_THRESHOLD, Verdict.ALREADY_COUNTED,
              Verdict.DUPLICATE)


def reports(*deltas: float, start: datetime = T0, every_s: float = 5,
            duration_s: float | None = None) -> list[Report]:
    return [Report(report_id=str(uuid.uuid4()), at=start + timedelta(seconds=i * every_s),
                   watch_seconds=d, duration_s=duration_s) for i, d in enumerate(deltas)]


# -- the rule ---------------------------------------------------------------------------------


def unpack(replayed: Replayed) -> tuple[SessionState, list[Verdict]]:
    return replayed.state, replayed.verdicts


def test_counts_once_when_the_sum_of_deltas_reaches_the_threshold():
    state, verdicts = unpack(replay(RULE, reports(4, 4, 2, 5, 30)))
    assert verdicts == [B, B, C, A, A]
    assert state.views == 1 and state.watched_ms == 45_000 and state.reports == 5
    assert state.counted_at == T0 + timedelta(seconds=10)


def test_below_threshold_never_counts():
    state, verdicts = unpack(replay(RULE, reports(3, 3, 3.999)))
    assert verdicts == [B, B, B] and state.views == 0 and state.counted_at is None


def test_float_deltas_sum_exactly():
    # 3.3 + 3.3 + 3.4 is 9.999999999999998 in floats; in milliseconds it is exactly 10 000.
    assert replay(RULE, reports(3.3, 3.3, 3.4)).verdicts == [B, B, C]


def test_short_assets_count_at_half_their_duration():
    assert RULE.threshold_ms(12.0) == 6_000
    assert RULE.threshold_ms(20.0) == 10_000 and RULE.threshold_ms(None) == 10_000
    assert RULE.threshold_ms(0.0) == 10_000  # unknown/zero duration: the plain threshold
    assert RULE.threshold_ms(0.001) == 1  # never zero: some watching is always needed
    assert replay(RULE, reports(3, 3, duration_s=12.0)).verdicts == [B, C]


def test_a_new_window_counts_again_and_resets_the_sum():
    first = reports(10, 5)
    later = reports(4, 6, start=T0 + timedelta(seconds=3600))
    state, verdicts = unpack(replay(RULE, [*first, *later]))
    assert verdicts == [C, A, B, C]
    assert state.views == 2 and state.window_start == T0 + timedelta(seconds=3600)
    # just inside the window: still already counted
    inside = reports(1, start=T0 + timedelta(seconds=3599.999))
    assert replay(RULE, [*first, *inside]).verdicts == [C, A, A]


def test_a_duplicate_report_changes_nothing():
    rs = reports(6, 6)
    state, verdicts = unpack(replay(RULE, [rs[0], rs[0], rs[1], rs[0], rs[1]]))
    assert verdicts == [B, D, C, D, D]
    assert state == replay(RULE, rs).state


def test_recent_ids_are_bounded():
    state, _ = unpack(replay(RULE, reports(*([0.5] * (RECENT_IDS + 5)))))
    assert len(state.recent_ids) == RECENT_IDS


def test_fold_is_resumable_from_a_stored_state():
    rs = reports(2, 3, 4, 5, 6)
    whole, verdicts = unpack(replay(RULE, rs))
    middle, first = unpack(replay(RULE, rs[:2]))
    resumed, rest = unpack(replay(RULE, rs[2:], middle))
    assert resumed == whole and first + rest == verdicts


@pytest.mark.parametrize("seed", range(20))
def test_replay_is_observe_report_by_report(seed: int) -> None:
    """The batch fold the projections use gives what the one-report step gives, state,
    verdicts and watch time, over windows, thresholds, duplicates and forgotten ids."""
    rng = random.Random(seed)
    pool = reports(*(rng.choice([0, 0.5, 3, 7, 12]) for _ in range(40)),
                   every_s=rng.choice([5, 400]), duration_s=rng.choice([None, 8.0, 600.0]))
    picked = [rng.choice(pool[: i + 1]) if rng.random() < 0.3 else pool[i]
              for i in range(len(pool))]
    state, verdicts, added = SessionState(), [], 0
    for report in picked:
        seen = observe(RULE, state, report)
        state, added = seen.state, added + seen.watched_ms
        verdicts.append(seen.verdict)
    whole = replay(RULE, picked)
    assert (whole.state, whole.verdicts, whole.watched_ms) == (state, verdicts, added)
    assert D in verdicts  # the draws do repeat reports


def test_observe_reports_the_watch_time_it_added():
    seen = observe(RULE, SessionState(), reports(2.5)[0])
    assert seen.watched_ms == 2_500 and not seen.counted
    assert to_ms(0.0004) == 0 and to_ms(0.0005) == 1


def test_rule_needs_positive_parameters():
    with pytest.raises(ValueError):
        ViewRule(threshold_s=0)


# -- who may report / like / read ------------------------------------------------------------


def ref(**kw: object) -> AssetRef:
    base = {"asset_id": "a", "owner_id": "owner", "status": "ready", "visibility": "public",
            "duration_s": None}
    return AssetRef(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("asset, viewer, admin, ok", [
    (ref(), None, False, True),
    (ref(status="processing"), "someone", False, True),
    (ref(status="awaiting_upload"), None, False, False),
    (ref(status="awaiting_upload"), "owner", False, True),
    (ref(status="awaiting_upload"), "root", True, True),
    (ref(visibility="unlisted"), None, False, True),
    (ref(visibility="private"), None, False, False),
    (ref(visibility="private"), "someone", False, False),
    (ref(visibility="private"), "owner", False, True),
    (ref(visibility="private"), "root", True, True),
    (ref(status="deleted"), "owner", True, False),
    (ref(status="expired"), "owner", False, False),
    (None, "owner", True, False),
])
def test_who_may_engage(asset, viewer, admin, ok):
    """As ``GET /v1/assets/{id}`` (owner and admins; others a listed asset whose upload
    completed), and no one once it is deleted or expired."""
    if ok:
        assert check_visible(asset, Viewer(user_id=viewer, is_admin=admin)) is asset
    else:
        with pytest.raises(NotFound) as err:
            check_visible(asset, Viewer(user_id=viewer, is_admin=admin))
        assert err.value.code == "ASSET_NOT_FOUND"


def test_anonymous_viewer_key_is_salted_and_stable():
    k = anonymous_viewer_key(b"salt", "203.0.113.7")
    assert k == anonymous_viewer_key(b"salt", "203.0.113.7") and k.startswith("anon:")
    assert k != anonymous_viewer_key(b"other", "203.0.113.7")
    assert "203.0.113.7" not in k


# -- report validation -------------------------------------------------------------------------


def test_a_full_report_is_cleaned():
    spec = validate_view_report(
        {"session_id": "sess_0001-ab", "watch_seconds": 5, "position": 12.5, "device": " tv ",
         "country": "fr", "referrer": "https://example.com/x"}, duration_s=60.0)
    assert spec.watch_seconds == 5.0 and spec.country == "FR" and spec.device == "tv"
    assert validate_view_report({"session_id": "s" * 64, "watch_seconds": 0, "country": None},
                                duration_s=None).country is None


@pytest.mark.parametrize("body, fields", [
    ({"watch_seconds": 1}, ["session_id"]),
    ({"session_id": "short", "watch_seconds": 1}, ["session_id"]),
    ({"session_id": "has space!", "watch_seconds": 1}, ["session_id"]),
    ({"session_id": "s" * 65, "watch_seconds": 1}, ["session_id"]),
    ({"session_id": "session01"}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": -1}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": "5"}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": True}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": float("nan")}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": 601}, ["watch_seconds"]),
    ({"session_id": "session01", "watch_seconds": 1, "position": -3}, ["position"]),
    ({"session_id": "session01", "watch_seconds": 1, "country": "XX"}, ["country"]),
    ({"session_id": "session01", "watch_seconds": 1, "country": "FRA"}, ["country"]),
    ({"session_id": "session01", "watch_seconds": 1, "device": "d" * 65}, ["device"]),
    ({"session_id": "session01", "watch_seconds": 1, "device": "a\u0000b"}, ["device"]),
    ({"session_id": "session01", "watch_seconds": 1, "referrer": "r" * 1025}, ["referrer"]),
    ({"session_id": "session01", "watch_seconds": 1, "viewer_key": "me"}, ["viewer_key"]),
    ({"session_id": 1, "watch_seconds": -1, "extra": 1}, ["session_id", "watch_seconds",
                                                           "extra"]),
])
def test_bad_reports_list_every_problem(body, fields):
    with pytest.raises(ValidationError) as err:
        validate_view_report(body, duration_s=None)
    assert err.value.code == "INVALID_VIEW_REPORT"
    assert [d["field"] for d in err.value.details] == fields


def test_watch_time_is_capped_by_the_duration():
    assert max_watch_seconds(20.0) == 50.0 and max_watch_seconds(None) == 600.0
    validate_view_report({"session_id": "session01", "watch_seconds": 50}, duration_s=20.0)
    for body in ({"session_id": "session01", "watch_seconds": 50.5},
                 {"session_id": "session01", "watch_seconds": 1, "position": 51}):
        with pytest.raises(ValidationError) as err:
            validate_view_report(body, duration_s=20.0)
        assert err.value.details[0]["max"] == 50.0


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_a_report_must_be_an_object(body):
    with pytest.raises(ValidationError):
        validate_view_report(body, duration_s=None)
