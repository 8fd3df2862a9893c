"""Domain events: frozen, kw-only, past tense. Each names its CloudEvents ``type`` and the
version of its payload schema. The envelope (``medialog.envelope``) wraps them for the log;
``schemas/events/`` holds the generated JSON Schema of every (type, version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class UploadRequested:
    """A creator asked to upload a file; a presigned PUT to staging was issued."""

    TYPE: ClassVar[str] = "medialog.asset.upload_requested"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = "/medialog/actors/asset"

    asset_id: str
    owner_id: str
    kind: str
    filename: str
    content_type: str
    size_bytes: int
    title: str
    staging_key: str
    upload_expires_at: datetime


DomainEvent = UploadRequested
EVENT_CLASSES: tuple[type[DomainEvent], ...] = (UploadRequested,)
