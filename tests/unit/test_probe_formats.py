"""Which containers the transcoder opens for each accepted content type (security review F2).
Pure: no ffmpeg here (tests/integration/test_transcode_inputs.py runs the real one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medialog.domain.uploads import ALLOWED_TYPES
from streams.transcode.ffmpeg_runner import TranscodeError
from streams.transcode.probe import (
    ALL_FORMATS,
    FORMATS_BY_EXTENSION,
    FORMATS_BY_TYPE,
    MediaInfo,
    demuxer_args,
    media_info,
    source_formats,
)

# Demuxers that open further files or URLs named in the input, or run scripts.
FOLLOWERS = {"hls", "applehttp", "dash", "concat", "imf", "sdp", "rtsp", "rtp", "vobsub",
             "avisynth", "vapoursynth", "image2pipe", "lavfi", "webm_dash_manifest"}

_H264 = {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 320, "height": 240,
         "avg_frame_rate": "25/1"}


def _probed(format_name: str) -> dict[str, Any]:
    return {"format": {"format_name": format_name, "probe_score": 100, "duration": "2.0"},
            "streams": [_H264]}


def test_every_accepted_content_type_has_its_demuxers_and_no_other_type_is_listed() -> None:
    assert set(FORMATS_BY_TYPE) == set(ALLOWED_TYPES)
    assert all(FORMATS_BY_TYPE.values())
    assert set(FORMATS_BY_EXTENSION) == {ext for _kind, ext in ALLOWED_TYPES.values()}


def test_no_allowed_demuxer_follows_references() -> None:
    names = {name for fmt in ALL_FORMATS for name in fmt.split(",")}
    assert not names & FOLLOWERS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("source.mp4", {"mov,mp4,m4a,3gp,3g2,mj2"}),
        ("source.MP4", {"mov,mp4,m4a,3gp,3g2,mj2"}),
        ("source.weba", {"matroska,webm"}),
        ("source.wav", {"wav"}),
        ("source.png", {"image2", "png_pipe", "apng"}),
        ("source.m3u8", set()),
        ("source.ts", set()),
        ("source", set()),
    ],
)
def test_the_source_extension_selects_the_demuxers(name: str, expected: set[str]) -> None:
    assert source_formats(Path("/work/job.1") / name) == expected


@pytest.mark.parametrize("fmt", ["hls", "concat", "image2pipe", "lavfi", "mpegts"])
def test_media_info_refuses_a_format_the_declared_type_does_not_allow(fmt: str) -> None:
    with pytest.raises(TranscodeError) as err:
        media_info(_probed(fmt), FORMATS_BY_TYPE["video/mp4"])
    assert err.value.rung == "probe"
    assert err.value.reason.startswith(f"format {fmt} not allowed here (allowed: mov,mp4,")


@pytest.mark.parametrize("fmt", ["hls", "concat", "dash", "image2pipe"])
def test_media_info_refuses_followers_even_without_a_declared_type(fmt: str) -> None:
    with pytest.raises(TranscodeError):
        media_info(_probed(fmt))


def test_media_info_accepts_the_declared_types_demuxer() -> None:
    info = media_info(_probed("matroska,webm"), FORMATS_BY_TYPE["video/webm"])
    assert (info.kind, info.format_name) == ("video", "matroska,webm")


def test_ffmpeg_is_given_exactly_the_probed_demuxer_and_only_the_file_protocol() -> None:
    info = media_info(_probed("mov,mp4,m4a,3gp,3g2,mj2"))
    assert isinstance(info, MediaInfo)
    assert demuxer_args(info) == ["-f", "mov", "-protocol_whitelist", "file"]
