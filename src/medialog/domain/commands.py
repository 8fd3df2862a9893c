"""Commands: imperative requests addressed to one aggregate's actor. An actor accepts a command
(emitting zero or more events) or rejects it with a reason; either way the outcome is recorded.

Commands that need an ownership check carry who asked (``requested_by``, ``is_admin``): the
actor is the authority, since the read model the api checked first may lag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from medialog.domain.events.asset import Rendition


@dataclass(frozen=True, kw_only=True)
class CommandMeta:
    """Who sent a command, when, and why (the HTTP request that led to it)."""

    command_id: str
    issued_at: datetime
    actor_id: str
    actor_roles: tuple[str, ...]
    correlation_id: str


@dataclass(frozen=True, kw_only=True)
class ObjectFacts:
    """What HeadObject said about an uploaded object."""

    size_bytes: int
    content_type: str
    etag: str


# -- asset (topic commands.asset, key = asset id) ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RequestUpload:
    TYPE: ClassVar[str] = "asset.request_upload"

    asset_id: str
    owner_id: str
    kind: str
    filename: str
    content_type: str
    size_bytes: int
    title: str
    staging_key: str
    upload_expires_at: datetime
    visibility: str = "public"
    # set at creation: recorded as a MetadataUpdated right after UploadRequested
    description: str | None = None
    tags: list[str] | None = None
    category: str | None = None


@dataclass(frozen=True, kw_only=True)
class CompleteUpload:
    """``observed`` is filled by the asset actor (HeadObject) before it decides."""

    TYPE: ClassVar[str] = "asset.complete_upload"

    requested_by: str
    is_admin: bool
    max_bytes: int
    now: datetime
    grace_s: int
    observed: ObjectFacts | None = None


@dataclass(frozen=True, kw_only=True)
class ExpireUpload:
    TYPE: ClassVar[str] = "asset.expire_upload"

    now: datetime
    grace_s: int


@dataclass(frozen=True, kw_only=True)
class RecordPromotion:
    TYPE: ClassVar[str] = "asset.record_promotion"

    master_key: str
    size_bytes: int
    job_id: str  # the first transcode job, requested with the promotion


@dataclass(frozen=True, kw_only=True)
class RequestTranscode:
    """Re-run the ladder: every rung, or (``only_failed``) the rungs the last job did not finish."""

    TYPE: ClassVar[str] = "asset.request_transcode"

    requested_by: str
    is_admin: bool
    job_id: str
    only_failed: bool = False


@dataclass(frozen=True, kw_only=True)
class StartTranscode:
    TYPE: ClassVar[str] = "asset.start_transcode"

    job_id: str
    attempt: int
    rungs: list[str]


@dataclass(frozen=True, kw_only=True)
class RecordRendition:
    TYPE: ClassVar[str] = "asset.record_rendition"

    job_id: str
    rendition: Rendition


@dataclass(frozen=True, kw_only=True)
class CompleteTranscode:
    TYPE: ClassVar[str] = "asset.complete_transcode"

    job_id: str
    renditions: list[Rendition]
    master_playlist_key: str | None
    thumbnail_key: str | None
    duration_s: float | None
    width: int | None
    height: int | None
    probe: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class FailTranscode:
    TYPE: ClassVar[str] = "asset.fail_transcode"

    job_id: str
    reason: str
    rung: str | None
    attempts: int


@dataclass(frozen=True, kw_only=True)
class UpdateMetadata:
    """Only non-None fields are to change; values were validated by ``domain.metadata``."""

    TYPE: ClassVar[str] = "asset.update_metadata"

    requested_by: str
    is_admin: bool
    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    category: str | None = None
    visibility: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteAsset:
    TYPE: ClassVar[str] = "asset.delete"

    requested_by: str
    is_admin: bool


# -- engagement (topic commands.engagement, key = "{asset_id}/{user_id}") ------------------------


@dataclass(frozen=True, kw_only=True)
class Like:
    TYPE: ClassVar[str] = "engagement.like"

    asset_id: str
    user_id: str
    owner_id: str


@dataclass(frozen=True, kw_only=True)
class Unlike:
    TYPE: ClassVar[str] = "engagement.unlike"

    asset_id: str
    user_id: str
    owner_id: str


ASSET_COMMANDS: tuple[type[Any], ...] = (
    RequestUpload, CompleteUpload, ExpireUpload, RecordPromotion, RequestTranscode,
    StartTranscode, RecordRendition, CompleteTranscode, FailTranscode, UpdateMetadata, DeleteAsset,
)
ENGAGEMENT_COMMANDS: tuple[type[Any], ...] = (Like, Unlike)
COMMAND_CLASSES: tuple[type[Any], ...] = (*ASSET_COMMANDS, *ENGAGEMENT_COMMANDS)
AssetCommand = Any  # one of COMMAND_CLASSES
