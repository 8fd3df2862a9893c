"""The engagement actor: owns like/unlike per (asset, user), keyed by "{asset_id}/{user_id}" on
``commands.engagement``; emits ``Liked``/``Unliked`` to ``events.engagement`` only when the
state changes (liking twice is a no-op that is still an accepted command)."""

from __future__ import annotations

import faust

from medialog.domain.engagement import Engagement, decide, fold
from medialog.runtime.deps import Deps
from streams.actors.runner import ActorSpec, register_actor

NAME = "engagement"  # outcomes._READ_MODELS maps it to the ``likes`` table


def spec(events_topic: str) -> ActorSpec[Engagement]:
    return ActorSpec(
        name=NAME,
        events_topic=events_topic,
        initial=lambda key: Engagement(key=key),
        decide=decide,
        fold=fold,
        version=lambda s: s.version,
        # the asset (docs/events.md), not "{asset}/{user}"
        subject=lambda key: key.split("/", 1)[0],
    )


def register(app: faust.App, deps: Deps) -> None:
    register_actor(app, deps, spec("events.engagement"), "commands.engagement")
