"""The engagement aggregate: one per (asset, user). Liking twice is a no-op; so is unliking
what was not liked. Events are emitted only when the state changes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from medialog.domain import commands as c
from medialog.domain import events as e


@dataclass(frozen=True, kw_only=True)
class Engagement:
    key: str  # "{asset_id}/{user_id}"
    version: int = 0
    liked: bool = False


def engagement_key(asset_id: str, user_id: str) -> str:
    return f"{asset_id}/{user_id}"


def decide(state: Engagement, cmd: Any) -> list[Any]:
    if isinstance(cmd, c.Like):
        return [] if state.liked else [
            e.Liked(asset_id=cmd.asset_id, user_id=cmd.user_id, owner_id=cmd.owner_id)
        ]
    if isinstance(cmd, c.Unlike):
        return [
            e.Unliked(asset_id=cmd.asset_id, user_id=cmd.user_id, owner_id=cmd.owner_id)
        ] if state.liked else []
    raise TypeError(f"unknown engagement command {type(cmd).__name__}")


def fold(state: Engagement, events: list[Any]) -> Engagement:
    for event in events:
        if isinstance(event, e.Liked):
            state = replace(state, liked=True)
        elif isinstance(event, e.Unliked):
            state = replace(state, liked=False)
        state = replace(state, version=state.version + 1)
    return state
