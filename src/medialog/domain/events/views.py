"""Playback reports, appended by the api straight to ``events.views`` (key = asset id, no
sequence: no invariant needs an actor). Whether a report makes a view count is derived by the
projections from the configured rule, so changing the rule and replaying re-derives counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class ViewReported:
    """One playback report: a player sends one every few seconds while playing."""

    TYPE: ClassVar[str] = "medialog.view.reported"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = "/medialog/api"

    asset_id: str
    owner_id: str
    viewer_key: str  # user id when signed in, else a salted hash of the client address
    signed_in: bool
    session_id: str
    watch_seconds: float  # watched since the previous report of this session (a delta)
    duration_s: float | None  # the asset's duration when reported
    position: float | None = None
    device: str | None = None
    country: str | None = None
    referrer: str | None = None


VIEW_EVENTS: tuple[type[Any], ...] = (ViewReported,)
