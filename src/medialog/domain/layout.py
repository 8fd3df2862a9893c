"""The storage layout: every object key of the three buckets, and the content types of the
previews. Keys are built here and nowhere else, so whoever writes an object (api, promoter,
transcoder) and whoever reads or removes it (stream route, janitor) cannot drift apart. Pure.

Keys, relative to their bucket::

    staging   uploads/{owner}/{asset}/original.{ext}   the upload, until it is promoted
    masters   {asset}/original.{ext}                   the original, kept for good
    previews  {asset}/hls/master.m3u8                  the master playlist
              {asset}/hls/{rung}/index.m3u8            a rendition's playlist …
              {asset}/hls/{rung}/{segment}             … and its segments
              {asset}/thumb.jpg                        the thumbnail

Under an asset's previews prefix an object is named by its *path* (``hls/master.m3u8``): what a
stream URL ends with, and how the transcoder lays out its local output directory."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import quote

HLS_DIR = "hls"
PLAYLIST = "index.m3u8"  # a rendition's playlist, in the rendition's directory
MASTER_PLAYLIST = f"{HLS_DIR}/master.m3u8"
THUMBNAIL = "thumb.jpg"

_CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "m3u8": "application/vnd.apple.mpegurl",
        "ts": "video/mp2t",
        "m4s": "video/iso.segment",
        "mp4": "video/mp4",
        "aac": "audio/aac",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "png": "image/png",
    }
)
_SEGMENT_TYPES = frozenset({"video/mp2t", "video/iso.segment", "audio/aac", "video/mp4"})


def staging_key(owner_id: str, asset_id: str, extension: str) -> str:
    """``uploads/{owner}/{asset}/original.{ext}`` in the staging bucket.

    The owner id comes from a token subject; it is percent-encoded so it can never add a
    path segment."""
    return f"uploads/{quote(owner_id, safe='')}/{asset_id}/original.{extension}"


def master_key(asset_id: str, staging_key: str) -> str:
    """``{asset}/original.{ext}`` in masters, the extension taken from the staging key (``bin``
    when it has none)."""
    stem, dot, ext = staging_key.rsplit("/", 1)[-1].rpartition(".")
    return f"{asset_id}/original.{ext if stem and dot and ext else 'bin'}"


def previews_prefix(asset_id: str) -> str:
    """``{asset}/``: every previews object of the asset is under it, and only those."""
    return f"{asset_id}/"


def preview_key(asset_id: str, path: str) -> str:
    """The previews key of the asset's object at ``path`` (``hls/master.m3u8``…)."""
    return previews_prefix(asset_id) + path


def stream_path(asset_id: str, key: str) -> str:
    """A previews key as a path under the asset's stream prefix (``preview_key``'s inverse)."""
    return key.removeprefix(previews_prefix(asset_id))


def rendition_uri(rung: str) -> str:
    """``{rung}/index.m3u8``: the rendition's playlist as the master playlist (in ``hls/``)
    names it."""
    return f"{rung}/{PLAYLIST}"


def rung_of_uri(uri: str) -> str:
    """The rung a master playlist's URI names (``rendition_uri``'s inverse)."""
    return uri.split("/", 1)[0]


def rendition_path(rung: str, name: str = PLAYLIST) -> str:
    """``hls/{rung}/{name}``: a file of the rendition (its playlist unless named), as a path."""
    return f"{HLS_DIR}/{rung}/{name}"


def content_type_for(path: str) -> str:
    """The ``Content-Type`` of an object path, by its (case-insensitive) extension.

    ``.m3u8`` application/vnd.apple.mpegurl, ``.ts`` video/mp2t, ``.m4s`` video/iso.segment,
    ``.mp4`` video/mp4, ``.aac`` audio/aac, ``.jpg``/``.jpeg`` image/jpeg, ``.png`` image/png;
    anything else application/octet-stream.
    """
    name = path.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return "application/octet-stream"
    return _CONTENT_TYPES.get(ext.lower(), "application/octet-stream")


def is_segment(path: str) -> bool:
    """Whether the path is a media segment (by its type): written once, never changed."""
    return content_type_for(path) in _SEGMENT_TYPES
