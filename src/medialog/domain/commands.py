"""Commands: imperative requests addressed to one aggregate's actor. An actor accepts a command
(emitting events) or rejects it with a reason; either way the outcome is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar


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


@dataclass(frozen=True, kw_only=True)
class CommandMeta:
    """Who sent a command, when, and why (the HTTP request that led to it)."""

    command_id: str
    issued_at: datetime
    actor_id: str
    actor_roles: tuple[str, ...]
    correlation_id: str


AssetCommand = RequestUpload
COMMAND_CLASSES: tuple[type[AssetCommand], ...] = (RequestUpload,)
