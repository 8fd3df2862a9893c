"""Playback rules: request parameters and when an asset plays."""

from __future__ import annotations

import pytest

from medialog.api.transcode import parse_body
from medialog.domain.errors import Conflict, ValidationError
from medialog.domain.playback import (
    Playable,
    check_playable,
    hls_path,
    parse_params,
    thumbnail_path,
)


def params(**query: str):
    return parse_params(query, default_ttl_s=3600, max_ttl_s=86400)


def asset(status: str = "ready", renditions: int = 2, **keys: str | None) -> Playable:
    return Playable(asset_id="a1", status=status, renditions=renditions,
                    master_playlist_key=keys.get("master", "a1/hls/master.m3u8"),
                    thumbnail_key=keys.get("thumb", "a1/thumb.jpg"))


def test_defaults_and_bounds_of_the_parameters() -> None:
    assert params().expires_in == 3600 and params().bind_ip is False
    assert params(expires_in="60").expires_in == 60
    assert params(expires_in="86400", bind_ip="true").bind_ip is True
    assert params(bind_ip="0").bind_ip is False


@pytest.mark.parametrize("query", [
    {"expires_in": "59"}, {"expires_in": "86401"}, {"expires_in": "-5"}, {"expires_in": "1e3"},
    {"expires_in": ""}, {"expires_in": "9" * 40}, {"bind_ip": "yes"},
])
def test_bad_parameters_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        params(**query)


def test_ready_plays_and_processing_plays_once_a_rung_is_done() -> None:
    check_playable(asset())
    check_playable(asset("processing", 1, master=None))
    for status, count in [("processing", 0), ("promoted", 0), ("failed", 2), ("uploaded", 0),
                          ("deleted", 2), ("awaiting_upload", 0)]:
        with pytest.raises(Conflict) as info:
            check_playable(asset(status, count))
        assert info.value.code == "ASSET_NOT_PLAYABLE"


def test_paths_under_the_stream_prefix() -> None:
    assert hls_path(asset()) == "hls/master.m3u8"
    assert thumbnail_path(asset()) == "thumb.jpg"
    assert hls_path(asset("processing", 1, master=None, thumb=None)) == "hls/master.m3u8"
    image = asset(renditions=0, master=None)
    assert hls_path(image) is None and thumbnail_path(image) == "thumb.jpg"
    assert thumbnail_path(asset(thumb=None)) is None  # audio


def test_the_retranscode_body() -> None:
    assert parse_body(None) is False
    assert parse_body({}) is False
    assert parse_body({"only_failed": True}) is True
    for bad in ([], {"only_failed": "yes"}, {"rungs": ["720p"]}):
        with pytest.raises(ValidationError):
            parse_body(bad)
