"""Events of the asset aggregate, emitted by the asset actor with per-asset sequence numbers
(topic ``events.asset``, key = asset id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

ACTOR = "/medialog/actors/asset"


@dataclass(frozen=True, kw_only=True)
class Rendition:
    """One rung of a finished ladder; keys are relative to the previews bucket."""

    name: str  # "720p", "a128k"
    playlist_key: str  # "{asset}/hls/720p/index.m3u8"
    bandwidth: int  # bits/s, as in the master playlist
    codecs: str  # "avc1.64001f,mp4a.40.2"
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, kw_only=True)
class UploadRequested:
    """A creator asked to upload a file; a presigned PUT to staging was issued."""

    TYPE: ClassVar[str] = "medialog.asset.upload_requested"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    owner_id: str
    kind: str  # video | audio | image
    filename: str
    content_type: str
    size_bytes: int  # declared by the client
    title: str
    staging_key: str
    upload_expires_at: datetime
    visibility: str = "public"


@dataclass(frozen=True, kw_only=True)
class UploadCompleted:
    """The staging object was checked (HeadObject): it exists, fits, and has the signed type."""

    TYPE: ClassVar[str] = "medialog.asset.upload_completed"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    staging_key: str
    size_bytes: int  # measured
    content_type: str
    etag: str


@dataclass(frozen=True, kw_only=True)
class UploadExpired:
    """The upload was not completed within the URL's validity plus the grace period."""

    TYPE: ClassVar[str] = "medialog.asset.upload_expired"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    staging_key: str


@dataclass(frozen=True, kw_only=True)
class Promoted:
    """The original was copied, server side, from staging to the immutable masters bucket."""

    TYPE: ClassVar[str] = "medialog.asset.promoted"
    VERSION: ClassVar[int] = 2
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    master_key: str  # "{asset}/original.{ext}" in masters
    size_bytes: int
    # v2: the staging object the janitor removes now that the master exists (None: a v1 event)
    staging_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class TranscodeRequested:
    """A transcode job was asked for: all rungs (``rungs`` is None) or only the listed ones."""

    TYPE: ClassVar[str] = "medialog.asset.transcode_requested"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    job_id: str
    master_key: str
    kind: str
    rungs: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class TranscodeStarted:
    TYPE: ClassVar[str] = "medialog.asset.transcode_started"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    job_id: str
    attempt: int
    rungs: list[str]


@dataclass(frozen=True, kw_only=True)
class RenditionCompleted:
    """One rung is playable (the lowest comes first, so playback can start early)."""

    TYPE: ClassVar[str] = "medialog.asset.rendition_completed"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    job_id: str
    rendition: Rendition


@dataclass(frozen=True, kw_only=True)
class TranscodeCompleted:
    TYPE: ClassVar[str] = "medialog.asset.transcode_completed"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    job_id: str
    renditions: list[Rendition]
    master_playlist_key: str | None  # None for images
    thumbnail_key: str | None
    duration_s: float | None
    width: int | None
    height: int | None
    probe: dict[str, str | int | float | None]  # codecs, bitrate… as ffprobe reported


@dataclass(frozen=True, kw_only=True)
class TranscodeFailed:
    """The job failed for good (after its retries): which rung and why."""

    TYPE: ClassVar[str] = "medialog.asset.transcode_failed"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    job_id: str
    reason: str
    rung: str | None
    attempts: int


@dataclass(frozen=True, kw_only=True)
class MetadataUpdated:
    """Only the fields that changed are present (others None)."""

    TYPE: ClassVar[str] = "medialog.asset.metadata_updated"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    category: str | None = None
    visibility: str | None = None


@dataclass(frozen=True, kw_only=True)
class AssetDeleted:
    TYPE: ClassVar[str] = "medialog.asset.deleted"
    VERSION: ClassVar[int] = 2
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    previous_status: str
    # v2: the staging object to remove, if the upload was never promoted (None: a v1 event)
    staging_key: str | None = None


def _staging_key_unknown(v1: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2 of ``promoted`` and ``deleted``: a v1 event did not carry the staging key, and
    nothing in it names the key, so readers look it up elsewhere (``None``)."""
    return {**v1, "staging_key": None}


# (type, the version it upgrades from) → the payload of the next version.
ASSET_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    (Promoted.TYPE, 1): _staging_key_unknown,
    (AssetDeleted.TYPE, 1): _staging_key_unknown,
}


ASSET_EVENTS: tuple[type[Any], ...] = (
    UploadRequested, UploadCompleted, UploadExpired, Promoted, TranscodeRequested,
    TranscodeStarted, RenditionCompleted, TranscodeCompleted, TranscodeFailed, MetadataUpdated,
    AssetDeleted,
)
