"""The asset aggregate: its state, what it may do next (``decide``), and how events change it
(``evolve``). Pure: no I/O, no clock — times and observed facts come in with the command.

    awaiting_upload → uploaded → promoted → processing → ready | failed
    awaiting_upload → expired          (not completed within the URL validity + grace)
    any (but deleted) → deleted
    ready | failed → (re-transcode requested) → processing → ready | failed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import singledispatch
from types import MappingProxyType
from typing import Any

from medialog.domain import commands as c
from medialog.domain import events as e
from medialog.domain.errors import Conflict, Forbidden


class AssetStatus(StrEnum):
    NEW = "new"  # no event yet
    AWAITING_UPLOAD = "awaiting_upload"
    UPLOADED = "uploaded"
    PROMOTED = "promoted"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"
    DELETED = "deleted"


S = AssetStatus
GONE = frozenset({S.DELETED, S.EXPIRED})
TERMINAL = frozenset({S.READY, S.FAILED, S.DELETED, S.EXPIRED})  # until a command moves it on
# The status each event type leaves an asset in; the other events keep it. ``evolve`` applies
# it, and the read models (``projections.postgres.assets``, the status stream) take it from here.
STATUS_AFTER: Mapping[str, AssetStatus] = MappingProxyType({
    e.UploadRequested.TYPE: S.AWAITING_UPLOAD,
    e.UploadCompleted.TYPE: S.UPLOADED,
    e.UploadExpired.TYPE: S.EXPIRED,
    e.Promoted.TYPE: S.PROMOTED,
    e.TranscodeStarted.TYPE: S.PROCESSING,
    e.TranscodeCompleted.TYPE: S.READY,
    e.TranscodeFailed.TYPE: S.FAILED,
    e.AssetDeleted.TYPE: S.DELETED,
})


@dataclass(frozen=True, kw_only=True)
class Asset:
    """The fold of an asset's events. ``version`` is the sequence of the last event applied."""

    asset_id: str
    version: int = 0
    status: AssetStatus = S.NEW
    owner_id: str = ""
    kind: str = ""
    content_type: str = ""
    size_bytes: int = 0  # declared, then measured on completion
    staging_key: str = ""
    upload_expires_at: datetime | None = None
    master_key: str = ""
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    category: str = ""
    visibility: str = "public"
    job_id: str = ""  # the current (or last) transcode job
    job_rungs: tuple[str, ...] = ()  # rungs the current job makes (empty: not started)
    done_rungs: tuple[str, ...] = field(default=())  # rungs finished by the current job


def _conflict(asset: Asset, action: str, code: str = "INVALID_TRANSITION") -> Conflict:
    return Conflict(
        f"cannot {action} an asset that is {asset.status.value}",
        code=code,
        details=[{"status": asset.status.value, "action": action}],
    )


def _check_exists(asset: Asset, action: str) -> None:
    if asset.status is S.NEW:
        raise Conflict(f"asset {asset.asset_id} does not exist", code="ASSET_NOT_FOUND")
    if asset.status is S.DELETED:
        raise _conflict(asset, action, "ASSET_DELETED")


def _check_owner(asset: Asset, requested_by: str, is_admin: bool, *, admin_ok: bool = True) -> None:
    if requested_by != asset.owner_id and not (admin_ok and is_admin):
        raise Forbidden("only the asset's owner may do this", code="NOT_OWNER")


def _check_job(asset: Asset, job_id: str, action: str) -> None:
    if job_id != asset.job_id:
        raise Conflict(
            f"cannot {action}: job {job_id} is not the asset's current job",
            code="STALE_JOB",
            details=[{"current_job": asset.job_id}],
        )


def _decide_complete(asset: Asset, cmd: c.CompleteUpload) -> list[Any]:
    _check_exists(asset, "complete the upload of")
    _check_owner(asset, cmd.requested_by, cmd.is_admin)
    if asset.status is not S.AWAITING_UPLOAD:
        raise _conflict(asset, "complete the upload of")
    assert asset.upload_expires_at is not None
    if cmd.now > asset.upload_expires_at + timedelta(seconds=cmd.grace_s):
        raise Conflict("the upload URL has expired; request a new upload", code="UPLOAD_EXPIRED")
    seen = cmd.observed
    if seen is None:
        raise Conflict("nothing was uploaded to the upload URL", code="UPLOAD_MISSING")
    if seen.size_bytes == 0:
        raise Conflict("the uploaded object is empty", code="UPLOAD_EMPTY")
    if seen.size_bytes > min(asset.size_bytes, cmd.max_bytes):
        raise Conflict(
            "the uploaded object is larger than declared",
            code="UPLOAD_SIZE_MISMATCH",
            details=[{"declared": asset.size_bytes, "uploaded": seen.size_bytes}],
        )
    if seen.content_type.split(";")[0].strip().lower() != asset.content_type:
        raise Conflict(
            "the uploaded object's content type is not the one signed",
            code="UPLOAD_CONTENT_TYPE_MISMATCH",
            details=[{"signed": asset.content_type, "uploaded": seen.content_type}],
        )
    return [
        e.UploadCompleted(
            asset_id=asset.asset_id,
            staging_key=asset.staging_key,
            size_bytes=seen.size_bytes,
            content_type=asset.content_type,
            etag=seen.etag,
        )
    ]


def _decide_metadata(asset: Asset, cmd: c.UpdateMetadata) -> list[Any]:
    _check_exists(asset, "edit")
    _check_owner(asset, cmd.requested_by, cmd.is_admin, admin_ok=False)
    if asset.status in GONE:
        raise _conflict(asset, "edit")
    current = {
        "title": asset.title,
        "description": asset.description,
        "tags": list(asset.tags),
        "category": asset.category,
        "visibility": asset.visibility,
    }
    changes = {
        name: getattr(cmd, name)
        for name in current
        if getattr(cmd, name) is not None and getattr(cmd, name) != current[name]
    }
    return [e.MetadataUpdated(asset_id=asset.asset_id, **changes)] if changes else []


def decide(asset: Asset, cmd: Any) -> list[Any]:
    """The events ``cmd`` produces from ``asset``; raises Conflict/Forbidden saying why not.
    An empty list means accepted with nothing to change (an idempotent repeat)."""
    aid = asset.asset_id
    if isinstance(cmd, c.RequestUpload):
        if asset.status is not S.NEW:
            raise Conflict(f"asset {aid} already exists", code="ASSET_EXISTS",
                           details=[{"status": asset.status.value}])
        requested = e.UploadRequested(
            asset_id=cmd.asset_id, owner_id=cmd.owner_id, kind=cmd.kind,
            filename=cmd.filename, content_type=cmd.content_type, size_bytes=cmd.size_bytes,
            title=cmd.title, staging_key=cmd.staging_key,
            upload_expires_at=cmd.upload_expires_at, visibility=cmd.visibility,
        )
        extra = {name: getattr(cmd, name) for name in ("description", "tags", "category")
                 if getattr(cmd, name) is not None}
        return [requested, e.MetadataUpdated(asset_id=aid, **extra)] if extra else [requested]
    if isinstance(cmd, c.CompleteUpload):
        return _decide_complete(asset, cmd)
    if isinstance(cmd, c.ExpireUpload):
        if asset.status is not S.AWAITING_UPLOAD:
            raise _conflict(asset, "expire")
        assert asset.upload_expires_at is not None
        if cmd.now <= asset.upload_expires_at + timedelta(seconds=cmd.grace_s):
            raise Conflict("the upload URL is still valid", code="UPLOAD_NOT_EXPIRED")
        return [e.UploadExpired(asset_id=aid, staging_key=asset.staging_key)]
    if isinstance(cmd, c.RecordPromotion):
        _check_exists(asset, "promote")
        if asset.status is not S.UPLOADED:
            raise _conflict(asset, "promote")
        return [
            e.Promoted(asset_id=aid, master_key=cmd.master_key, size_bytes=cmd.size_bytes,
                       staging_key=asset.staging_key),
            e.TranscodeRequested(asset_id=aid, job_id=cmd.job_id, master_key=cmd.master_key,
                                 kind=asset.kind, rungs=None),
        ]
    if isinstance(cmd, c.RequestTranscode):
        _check_exists(asset, "transcode")
        _check_owner(asset, cmd.requested_by, cmd.is_admin)
        if asset.status not in {S.READY, S.FAILED}:
            raise _conflict(asset, "transcode")
        rungs = None
        if cmd.only_failed:
            rungs = [r for r in asset.job_rungs if r not in asset.done_rungs] or None
        return [e.TranscodeRequested(asset_id=aid, job_id=cmd.job_id, master_key=asset.master_key,
                                     kind=asset.kind, rungs=rungs)]
    if isinstance(cmd, c.StartTranscode):
        _check_exists(asset, "start transcoding")
        _check_job(asset, cmd.job_id, "start transcoding")
        if asset.status not in {S.PROMOTED, S.READY, S.FAILED, S.PROCESSING}:
            raise _conflict(asset, "start transcoding")
        return [e.TranscodeStarted(asset_id=aid, job_id=cmd.job_id, attempt=cmd.attempt,
                                   rungs=list(cmd.rungs))]
    if isinstance(cmd, c.RecordRendition):
        _check_exists(asset, "record a rendition of")
        _check_job(asset, cmd.job_id, "record a rendition")
        if asset.status is not S.PROCESSING:
            raise _conflict(asset, "record a rendition of")
        if cmd.rendition.name in asset.done_rungs:
            return []
        return [e.RenditionCompleted(asset_id=aid, job_id=cmd.job_id, rendition=cmd.rendition)]
    if isinstance(cmd, c.CompleteTranscode):
        _check_exists(asset, "complete transcoding")
        _check_job(asset, cmd.job_id, "complete transcoding")
        if asset.status is not S.PROCESSING:
            raise _conflict(asset, "complete transcoding")
        return [
            e.TranscodeCompleted(
                asset_id=aid, job_id=cmd.job_id, renditions=list(cmd.renditions),
                master_playlist_key=cmd.master_playlist_key, thumbnail_key=cmd.thumbnail_key,
                duration_s=cmd.duration_s, width=cmd.width, height=cmd.height, probe=cmd.probe,
            )
        ]
    if isinstance(cmd, c.FailTranscode):
        _check_exists(asset, "fail transcoding")
        _check_job(asset, cmd.job_id, "fail transcoding")
        if asset.status not in {S.PROMOTED, S.PROCESSING, S.READY, S.FAILED}:
            raise _conflict(asset, "fail transcoding")
        return [e.TranscodeFailed(asset_id=aid, job_id=cmd.job_id, reason=cmd.reason,
                                  rung=cmd.rung, attempts=cmd.attempts)]
    if isinstance(cmd, c.UpdateMetadata):
        return _decide_metadata(asset, cmd)
    if isinstance(cmd, c.DeleteAsset):
        _check_exists(asset, "delete")
        _check_owner(asset, cmd.requested_by, cmd.is_admin)
        return [e.AssetDeleted(asset_id=aid, previous_status=asset.status.value,
                               staging_key=asset.staging_key or None)]
    raise TypeError(f"unknown asset command {type(cmd).__name__}")


@singledispatch
def evolve(event: Any, asset: Asset) -> Asset:
    """Apply one event; never raises on stored history (unknown events leave state alone)."""
    return asset


@evolve.register
def _(ev: e.UploadRequested, asset: Asset) -> Asset:
    return replace(
        asset, status=STATUS_AFTER[ev.TYPE], owner_id=ev.owner_id, kind=ev.kind,
        content_type=ev.content_type, size_bytes=ev.size_bytes, staging_key=ev.staging_key,
        upload_expires_at=ev.upload_expires_at, title=ev.title, visibility=ev.visibility,
    )


@evolve.register
def _(ev: e.UploadCompleted, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE], size_bytes=ev.size_bytes)


@evolve.register
def _(ev: e.UploadExpired, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE])


@evolve.register
def _(ev: e.Promoted, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE], master_key=ev.master_key)


@evolve.register
def _(ev: e.TranscodeRequested, asset: Asset) -> Asset:
    return replace(asset, job_id=ev.job_id, job_rungs=(), done_rungs=())


@evolve.register
def _(ev: e.TranscodeStarted, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE], job_id=ev.job_id,
                   job_rungs=tuple(ev.rungs))


@evolve.register
def _(ev: e.RenditionCompleted, asset: Asset) -> Asset:
    return replace(asset, done_rungs=(*asset.done_rungs, ev.rendition.name))


@evolve.register
def _(ev: e.TranscodeCompleted, asset: Asset) -> Asset:
    names = tuple(dict.fromkeys((*asset.done_rungs, *(r.name for r in ev.renditions))))
    return replace(asset, status=STATUS_AFTER[ev.TYPE], done_rungs=names)


@evolve.register
def _(ev: e.TranscodeFailed, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE])


@evolve.register
def _(ev: e.MetadataUpdated, asset: Asset) -> Asset:
    return replace(
        asset,
        title=asset.title if ev.title is None else ev.title,
        description=asset.description if ev.description is None else ev.description,
        tags=asset.tags if ev.tags is None else tuple(ev.tags),
        category=asset.category if ev.category is None else ev.category,
        visibility=asset.visibility if ev.visibility is None else ev.visibility,
    )


@evolve.register
def _(ev: e.AssetDeleted, asset: Asset) -> Asset:
    return replace(asset, status=STATUS_AFTER[ev.TYPE])


def fold(asset: Asset, events: list[Any]) -> Asset:
    for event in events:
        asset = replace(evolve(event, asset), version=asset.version + 1)
    return asset
