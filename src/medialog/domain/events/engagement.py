"""Events of the engagement aggregate (one per asset and user), emitted by the engagement actor
only when the state changes (topic ``events.engagement``, key = "{asset_id}/{user_id}",
subject = the asset id, sequence per (asset, user))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

ACTOR = "/medialog/actors/engagement"


@dataclass(frozen=True, kw_only=True)
class Liked:
    TYPE: ClassVar[str] = "medialog.engagement.liked"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    user_id: str
    owner_id: str  # the asset's creator, for per-creator analytics


@dataclass(frozen=True, kw_only=True)
class Unliked:
    TYPE: ClassVar[str] = "medialog.engagement.unliked"
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str] = ACTOR

    asset_id: str
    user_id: str
    owner_id: str


ENGAGEMENT_EVENTS: tuple[type[Any], ...] = (Liked, Unliked)
