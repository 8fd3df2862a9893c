"""The asset aggregate: its state, what it may do next (``decide``), and how events change it
(``evolve``). Pure: no I/O, no clock — times come in with the command."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import singledispatch

from medialog.domain.commands import AssetCommand, RequestUpload
from medialog.domain.errors import Conflict
from medialog.domain.events import DomainEvent, UploadRequested


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


@dataclass(frozen=True, kw_only=True)
class Asset:
    """The fold of an asset's events. ``version`` is the sequence of the last event applied."""

    asset_id: str
    version: int = 0
    status: AssetStatus = AssetStatus.NEW
    owner_id: str = ""
    kind: str = ""
    content_type: str = ""
    size_bytes: int = 0
    staging_key: str = ""
    upload_expires_at: datetime | None = None


def decide(asset: Asset, command: AssetCommand) -> list[DomainEvent]:
    """The events ``command`` produces from ``asset``, or a ``Conflict`` saying why not."""
    if isinstance(command, RequestUpload):
        if asset.status is not AssetStatus.NEW:
            raise Conflict(
                f"asset {asset.asset_id} already exists", code="ASSET_EXISTS",
                details=[{"status": asset.status.value}],
            )
        return [
            UploadRequested(
                asset_id=command.asset_id,
                owner_id=command.owner_id,
                kind=command.kind,
                filename=command.filename,
                content_type=command.content_type,
                size_bytes=command.size_bytes,
                title=command.title,
                staging_key=command.staging_key,
                upload_expires_at=command.upload_expires_at,
            )
        ]
    raise TypeError(f"unknown command {type(command).__name__}")


@singledispatch
def evolve(event: DomainEvent, asset: Asset) -> Asset:
    """Apply one event; never raises on stored history (unknown events leave state alone)."""
    return asset


@evolve.register
def _(event: UploadRequested, asset: Asset) -> Asset:
    return replace(
        asset,
        status=AssetStatus.AWAITING_UPLOAD,
        owner_id=event.owner_id,
        kind=event.kind,
        content_type=event.content_type,
        size_bytes=event.size_bytes,
        staging_key=event.staging_key,
        upload_expires_at=event.upload_expires_at,
    )


def fold(asset: Asset, events: list[DomainEvent]) -> Asset:
    for event in events:
        asset = replace(evolve(event, asset), version=asset.version + 1)
    return asset
