"""Domain events: frozen, kw-only, past tense. Each names its CloudEvents ``type``, the
``source`` that emits it and the version of its payload schema. The envelope
(``medialog.envelope``) wraps them for the log; ``schemas/events/`` holds the generated JSON
Schema of every (type, version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medialog.domain.events.access import ACCESS_EVENTS, PlaybackIssued
from medialog.domain.events.asset import (
    ASSET_EVENTS,
    ASSET_UPCASTERS,
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
# (type, the version it upgrades from) → a pure function from that payload to the next version's
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    **ASSET_UPCASTERS,
}

__all__ = [
    "EVENT_CLASSES", "UPCASTERS", "DomainEvent", "AssetDeleted", "Liked", "MetadataUpdated",
    "PlaybackIssued", "Promoted", "RenditionCompleted", "TranscodeCompleted", "TranscodeFailed",
    "TranscodeRequested", "TranscodeStarted", "Unliked", "UploadCompleted", "UploadExpired",
    "UploadRequested", "ViewReported",
]
