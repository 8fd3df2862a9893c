import pytest

from medialog.domain import commands as c
from medialog.domain import events as e
from medialog.domain.engagement import Engagement, decide, fold
from medialog.domain.errors import ValidationError
from medialog.domain.metadata import validate_metadata_patch
from medialog.domain.view_reports import UNKNOWN_DURATION_MAX_S, validate_view_report

LIKE = c.Like(asset_id="a", user_id="u", owner_id="o")
UNLIKE = c.Unlike(asset_id="a", user_id="u", owner_id="o")


def test_like_twice_emits_once_and_unlike_reverts():
    s = Engagement(key="a/u")
    first = decide(s, LIKE)
    assert [type(x) for x in first] == [e.Liked]
    s = fold(s, first)
    assert decide(s, LIKE) == []
    s = fold(s, decide(s, UNLIKE))
    assert not s.liked and s.version == 2
    assert decide(s, UNLIKE) == []


def test_metadata_patch_is_cleaned():
    out = validate_metadata_patch({"title": "  A  title ", "tags": ["Music", "music", "live set"],
                                   "visibility": "unlisted", "description": " d "})
    assert out == {"title": "A title", "tags": ["music", "live set"], "visibility": "unlisted",
                   "description": "d"}


@pytest.mark.parametrize("body", [
    {}, [], {"title": "ab"}, {"description": "x" * 5001}, {"tags": ["t"] * 11},
    {"tags": ["bad/tag"]}, {"visibility": "secret"}, {"owner_id": "me"}, {"category": ""},
])
def test_metadata_patch_rejects(body):
    with pytest.raises(ValidationError):
        validate_metadata_patch(body)


@pytest.mark.parametrize("field, value", [
    ("title", "abc\x00"), ("title", "abc\ud800"), ("title", "ab\x1bc"),
    ("description", "a\x00b"), ("description", "\ud83d alone"), ("description", "bell\x07"),
    ("description", "c1\x9b"), ("tags", ["ok", "n\x00ul"]), ("tags", ["\ud800"]),
    ("category", "music\x00"), ("category", "\ud800"),
])
def test_metadata_with_control_characters_or_lone_surrogates_is_refused(field, value):
    # Accepted before, then refused by PostgreSQL once the event was published (security F3).
    with pytest.raises(ValidationError) as err:
        validate_metadata_patch({field: value})
    assert err.value.code == "VALIDATION_ERROR"
    assert [d["field"] for d in err.value.details] == [field]


def test_a_description_keeps_its_lines_and_tabs():
    text = "line one\n\tindented\r\nlast 👨\u200d👩\u200d👧"
    assert validate_metadata_patch({"description": text}) == {"description": text}
    assert validate_metadata_patch({"title": "tab\tand\nnewline"}) == {"title": "tab and newline"}


HUGE = 10 ** 400  # a JSON integer no float holds: float() raises OverflowError


@pytest.mark.parametrize("body, field", [
    ({"session_id": "abcdefgh", "watch_seconds": HUGE}, "watch_seconds"),
    ({"session_id": "abcdefgh", "watch_seconds": -HUGE}, "watch_seconds"),
    ({"session_id": "abcdefgh", "watch_seconds": 1, "position": HUGE}, "position"),
])
def test_a_huge_integer_in_a_view_report_is_refused(body, field):
    # engagement F7: was OverflowError, so 500 on an anonymous endpoint.
    with pytest.raises(ValidationError) as err:
        validate_view_report(body, duration_s=None)
    assert err.value.code == "INVALID_VIEW_REPORT"
    assert [d["field"] for d in err.value.details] == [field]


def test_position_is_capped_when_the_duration_is_unknown():
    # engagement F9: a report sent while the asset is processing could claim position 1e300.
    ok = validate_view_report({"session_id": "abcdefgh", "watch_seconds": 1,
                               "position": UNKNOWN_DURATION_MAX_S}, duration_s=None)
    assert ok.position == UNKNOWN_DURATION_MAX_S
    for duration in (None, 0.0):
        with pytest.raises(ValidationError) as err:
            validate_view_report({"session_id": "abcdefgh", "watch_seconds": 1,
                                  "position": 1e300}, duration_s=duration)
        [problem] = err.value.details
        assert (problem["field"], problem["max"]) == ("position", UNKNOWN_DURATION_MAX_S)
