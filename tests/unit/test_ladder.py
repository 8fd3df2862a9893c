"""The HLS ladder and probe classification as pure functions: no ffmpeg, no files."""

from __future__ import annotations

from typing import Any

import pytest

from streams.transcode.ffmpeg_runner import TranscodeError
from streams.transcode.ladder import (
    Rung,
    audio_ladder,
    bandwidth,
    h264_level,
    level_idc,
    master_playlist,
    plan_ladder,
    video_encoder_args,
    video_ladder,
)
from streams.transcode.probe import MediaInfo, media_info


def _info(
    kind: str = "video", width: int | None = 1920, height: int | None = 1080, has_audio: bool = True
) -> MediaInfo:
    return MediaInfo(
        kind=kind,  # type: ignore[arg-type]
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=10.0,
        width=width,
        height=height,
        fps=30.0,
        video_codec="h264" if kind != "audio" else None,
        audio_codec="aac" if has_audio else None,
        bitrate=8_000_000,
        has_video=kind != "audio",
        has_audio=has_audio,
        video_stream=0 if kind != "audio" else None,
        audio_stream=1 if has_audio else None,
    )


def _dims(rungs: list[Rung]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in rungs]


def test_1080p_source_gets_the_full_ladder_highest_first() -> None:
    assert _dims(plan_ladder(_info())) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (1280, 720),
        (1778, 1000),
        (1920, 800),
        (1080, 1920),
        (720, 1280),
        (640, 360),
        (641, 359),
        (3840, 2160),
        (1440, 1080),
        (480, 854),
        (2, 2),
        (100, 50),
    ],
)
def test_no_rung_is_larger_than_the_source_and_dims_are_even(width: int, height: int) -> None:
    rungs = video_ladder(width, height, has_audio=True)
    assert rungs
    for rung in rungs:
        assert rung.width <= width and rung.height <= height
        assert rung.width % 2 == 0 and rung.height % 2 == 0
    assert [r.pixels for r in rungs] == sorted((r.pixels for r in rungs), reverse=True)


def test_ladder_stops_below_the_source_height() -> None:
    assert [r.name for r in video_ladder(1280, 720, True)] == ["720p", "480p", "360p"]
    assert [r.name for r in video_ladder(1778, 1000, True)] == ["720p", "480p", "360p"]
    assert [r.name for r in video_ladder(3840, 2160, True)] == ["1080p", "720p", "480p", "360p"]


def test_portrait_ladder_is_measured_on_the_short_side() -> None:
    assert _dims(video_ladder(1080, 1920, True))[:2] == [("1080p", 1080, 1920), ("720p", 720, 1280)]


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (320, 240, ("240p", 320, 240)),
        (321, 241, ("240p", 320, 240)),
        (426, 240, ("240p", 426, 240)),
        (640, 358, ("358p", 640, 358)),
        (100, 50, ("50p", 100, 50)),
        (240, 320, ("240p", 240, 320)),
    ],
)
def test_small_source_gets_one_rung_at_its_own_size(
    width: int, height: int, expected: tuple[str, int, int]
) -> None:
    rungs = video_ladder(width, height, has_audio=True)
    assert _dims(rungs) == [expected]
    assert 150 <= rungs[0].video_bitrate_k < 800


def test_video_without_audio_has_no_audio_codec() -> None:
    rungs = plan_ladder(_info(has_audio=False))
    assert all(r.audio_bitrate_k == 0 and "mp4a" not in r.codecs for r in rungs)
    assert all(not any(a.startswith("-c:a") for a in video_encoder_args(r)) for r in rungs)


def test_audio_ladder_and_image_has_none() -> None:
    assert plan_ladder(_info(kind="audio", width=None, height=None)) == audio_ladder()
    assert [(r.name, r.audio_bitrate_k, r.codecs) for r in audio_ladder()] == [
        ("a128k", 128, "mp4a.40.2"),
        ("a64k", 64, "mp4a.40.2"),
    ]
    assert all(r.is_audio_only and r.playlist == f"{r.name}/index.m3u8" for r in audio_ladder())
    assert plan_ladder(_info(kind="image", has_audio=False)) == []


def test_codecs_string_matches_the_level_passed_to_the_encoder() -> None:
    for rung in video_ladder(1920, 1080, True):
        level = h264_level(rung)
        args = video_encoder_args(rung)
        assert args[args.index("-level:v") + 1] == level
        assert args[args.index("-profile:v") + 1] == "high"
        assert rung.codecs.startswith("avc1.6400")
    assert level_idc(1920, 1080, 5000) == 42  # 1080p60 needs 4.2
    assert level_idc(640, 360, 800) == 31
    assert h264_level(Rung("x", 2, 2, 1, 0, "avc1.64001f")) == "3.1"


def test_bandwidth_covers_the_encoder_ceiling_plus_audio() -> None:
    for rung in video_ladder(1920, 1080, True) + audio_ladder():
        assert bandwidth(rung) > (rung.video_bitrate_k + rung.audio_bitrate_k) * 1000


def test_master_playlist_content_is_exact() -> None:
    assert master_playlist(video_ladder(1280, 720, True)) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=3437000,RESOLUTION=1280x720,CODECS="avc1.640020,mp4a.40.2"\n'
        "720p/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1754000,RESOLUTION=854x480,CODECS="avc1.64001f,mp4a.40.2"\n'
        "480p/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1048000,RESOLUTION=640x360,CODECS="avc1.64001f,mp4a.40.2"\n'
        "360p/index.m3u8\n"
    )
    assert master_playlist(audio_ladder()) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=160000,CODECS="mp4a.40.2"\n'
        "a128k/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=80000,CODECS="mp4a.40.2"\n'
        "a64k/index.m3u8\n"
    )


# --- probe classification (pure part of probe.py), which decides the ladder ------------------


def _probe(
    fmt: str, *streams: dict[str, Any], score: int = 100, duration: str = "4.0"
) -> dict[str, Any]:
    indexed = [dict(s, index=i) for i, s in enumerate(streams)]
    return {
        "format": {
            "format_name": fmt,
            "probe_score": score,
            "duration": duration,
            "bit_rate": "1000",
        },
        "streams": indexed,
    }


_H264 = {
    "codec_type": "video",
    "codec_name": "h264",
    "width": 1280,
    "height": 720,
    "avg_frame_rate": "30/1",
}
_AAC = {"codec_type": "audio", "codec_name": "aac"}


def test_media_info_classifies_video_audio_and_image() -> None:
    video = media_info(_probe("mov,mp4,m4a,3gp,3g2,mj2", _H264, _AAC))
    assert (video.kind, video.width, video.height, video.fps) == ("video", 1280, 720, 30.0)
    assert (video.has_audio, video.video_stream, video.audio_stream) == (True, 0, 1)
    cover = dict(_H264, codec_name="mjpeg", disposition={"attached_pic": 1})
    audio = media_info(_probe("mp3", cover, dict(_AAC, codec_name="mp3")))
    assert (audio.kind, audio.has_video, audio.audio_stream) == ("audio", False, 1)
    png = {"codec_type": "video", "codec_name": "png", "width": 300, "height": 200}
    image = media_info(_probe("png_pipe", png, duration="N/A"))
    assert (image.kind, image.duration_s, image.width) == ("image", None, 300)


def test_media_info_applies_rotation_and_sample_aspect_ratio() -> None:
    rotated = dict(_H264, side_data_list=[{"rotation": -90}])
    assert (
        media_info(_probe("mov", rotated)).width,
        media_info(_probe("mov", rotated)).height,
    ) == (720, 1280)
    anamorphic = dict(_H264, width=1440, height=1080, sample_aspect_ratio="4:3")
    assert media_info(_probe("mov", anamorphic)).width == 1920


@pytest.mark.parametrize(
    "data",
    [
        _probe("bin", dict(_H264, codec_name="bintext"), score=50),
        _probe("mp3", dict(_AAC, codec_name="mp3"), score=1),
        _probe("image2", {"codec_type": "video", "codec_name": "png", "width": 0, "height": 0}),
        _probe("mov,mp4,m4a,3gp,3g2,mj2", {"codec_type": "data"}),
    ],
    ids=["text-art", "wild-guess", "undecodable", "no-streams"],
)
def test_media_info_rejects_non_media(data: dict[str, Any]) -> None:
    with pytest.raises(TranscodeError) as err:
        media_info(data)
    assert err.value.rung == "probe" and err.value.code == "TRANSCODE_FAILED"
