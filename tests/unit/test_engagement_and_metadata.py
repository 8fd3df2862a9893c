import pytest

from medialog.domain import commands as c
from medialog.domain import events as e
from medialog.domain.engagement import Engagement, decide, fold
from medialog.domain.errors import ValidationError
from medialog.domain.metadata import validate_metadata_patch

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
