"""Domain events: frozen, kw-only, past tense. Each names its CloudEvents ``type``, the
``source`` that emits it and the version of its payload schema. The envelope
(``medialog.envelope``) wraps them for the log; ``schemas/events/`` holds the generated JSON
Schema of every (type, version)."""

from __future__ import annotations

from typing import Any

from medialog.domain.events.access import ACCESS_EVENTS, PlaybackIssued
from medialog.domain.events.asset import (
    ASSET_EVENTS,
    AssetDeleted,
    MetadataUpdated,
    Promoted,
    RenditionCompleted,
    TranscodeCompleted,
    TranscodeFailed,
    TranscodeRequested,
    TranscodeStarted,
    UploadCompleted,
    UploadExpired,
    UploadRequested,
)
from medialog.domain.events.engagement import ENGAGEMENT_EVENTS, Liked, Unliked
from medialog.domain.events.views import VIEW_EVENTS, ViewReported

DomainEvent = Any  # one of EVENT_CLASSES; each carries TYPE, VERSION and SOURCE
EVENT_CLASSES: tuple[type[Any], ...] = (
    *ASSET_EVENTS, *ENGAGEMENT_EVENTS, *VIEW_EVENTS, *ACCESS_EVENTS,
)

__all__ = [
    "EVENT_CLASSES", "DomainEvent", "AssetDeleted", "Liked", "MetadataUpdated", "PlaybackIssued",
    "Promoted", "RenditionCompleted", "TranscodeCompleted", "TranscodeFailed",
    "TranscodeRequested", "TranscodeStarted", "Unliked", "UploadCompleted", "UploadExpired",
    "UploadRequested", "ViewReported",
]
