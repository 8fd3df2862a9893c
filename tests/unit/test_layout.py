"""The storage layout: every key the buckets hold, and the content types of the previews."""

from __future__ import annotations

import pytest

from medialog.domain.layout import (
    MASTER_PLAYLIST,
    THUMBNAIL,
    content_type_for,
    is_segment,
    master_key,
    preview_key,
    previews_prefix,
    rendition_path,
    rendition_uri,
    rung_of_uri,
    staging_key,
    stream_path,
)

ASSET = "0b6f7c1e-1a2b-4c3d-8e9f-0123456789ab"


def test_staging_key() -> None:
    assert staging_key("u1", ASSET, "mp4") == f"uploads/u1/{ASSET}/original.mp4"


def test_staging_key_cannot_gain_segments_from_owner() -> None:
    assert staging_key("a/../b", "id1", "mp4") == "uploads/a%2F..%2Fb/id1/original.mp4"


@pytest.mark.parametrize(("staging", "expected"), [
    (f"uploads/u1/{ASSET}/original.mov", f"{ASSET}/original.mov"),
    (f"uploads/u.x/{ASSET}/original", f"{ASSET}/original.bin"),  # a dot in a folder is no ext
    ("k", f"{ASSET}/original.bin"),
    ("uploads/u/a/original.", f"{ASSET}/original.bin"),
])
def test_master_key_keeps_the_staging_extension(staging: str, expected: str) -> None:
    assert master_key(ASSET, staging) == expected


def test_master_key_of_a_staging_key_built_here() -> None:
    assert master_key(ASSET, staging_key("u1", ASSET, "webm")) == f"{ASSET}/original.webm"


def test_previews_are_all_under_the_asset_prefix() -> None:
    paths = [MASTER_PLAYLIST, THUMBNAIL, rendition_path("720p"),
             rendition_path("720p", "seg_00001.ts")]
    keys = [preview_key(ASSET, p) for p in paths]
    assert keys == [f"{ASSET}/hls/master.m3u8", f"{ASSET}/thumb.jpg",
                    f"{ASSET}/hls/720p/index.m3u8", f"{ASSET}/hls/720p/seg_00001.ts"]
    assert all(k.startswith(previews_prefix(ASSET)) for k in keys)
    assert [stream_path(ASSET, k) for k in keys] == paths


def test_a_rendition_uri_is_its_playlist_relative_to_the_master() -> None:
    assert rendition_uri("a64k") == "a64k/index.m3u8"
    assert rung_of_uri(rendition_uri("a64k")) == "a64k"
    master_dir = MASTER_PLAYLIST.rsplit("/", 1)[0]
    assert f"{master_dir}/{rendition_uri('360p')}" == rendition_path("360p")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hls/master.m3u8", "application/vnd.apple.mpegurl"),
        ("hls/720p/INDEX.M3U8", "application/vnd.apple.mpegurl"),
        ("hls/720p/seg_00001.ts", "video/mp2t"),
        ("hls/720p/seg_00001.m4s", "video/iso.segment"),
        ("hls/720p/init.mp4", "video/mp4"),
        ("hls/audio/seg.aac", "audio/aac"),
        ("thumb.jpg", "image/jpeg"),
        ("thumb.jpeg", "image/jpeg"),
        ("thumb.png", "image/png"),
        ("notes.txt", "application/octet-stream"),
        ("noext", "application/octet-stream"),
        (".m3u8", "application/octet-stream"),
        ("hls.m3u8/file", "application/octet-stream"),
    ],
)
def test_content_type_for(path: str, expected: str) -> None:
    assert content_type_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    (rendition_path("360p", "seg_00000.ts"), True),
    ("hls/720p/seg_00001.m4s", True),
    (rendition_path("360p"), False),
    (MASTER_PLAYLIST, False),
    (THUMBNAIL, False),
])
def test_only_segments_are_segments(path: str, expected: bool) -> None:
    assert is_segment(path) is expected
