"""The audit trail of access (topic ``events.access``, key = asset id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class PlaybackIssued:
    """Signed playback URLs were handed to someone."""

    TYPE: ClassVar[str] = "medialog.access.playback_issued"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = "/medialog/api"

    asset_id: str
    owner_id: str
    user_id: str | None  # None: anonymous viewer of a public asset
    expires_at: datetime
    ip_bound: bool
    key_id: str
    download: bool


ACCESS_EVENTS: tuple[type[Any], ...] = (PlaybackIssued,)
