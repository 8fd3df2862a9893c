"""The engagement actor: owns like/unlike per (asset, user), keyed by "{asset_id}/{user_id}" on
``commands.engagement``; emits ``Liked``/``Unliked`` to ``events.engagement`` only when the
state changes (liking twice is a no-op that is still an accepted command)."""

from __future__ import annotations

import faust

from medialog.domain.engagement import Engagement, decide, fold
from medialog.tracking import Position
from streams.actor import ActorSpec, handle_command
from streams.app import StreamDeps, publish

NAME = "engagement"  # outcomes._READ_MODELS maps it to the ``likes`` table


def spec(events_topic: str) -> ActorSpec[Engagement]:
    return ActorSpec(
        name=NAME,
        events_topic=events_topic,
        initial=lambda key: Engagement(key=key),
        decide=decide,
        fold=fold,
        version=lambda s: s.version,
        subject=lambda key: key.split("/", 1)[0],  # the asset (DESIGN.md), not "{asset}/{user}"
    )


def register(app: faust.App, deps: StreamDeps) -> None:
    s = deps.settings
    actor = spec(s.topic("events.engagement"))
    commands = app.topic(s.topic("commands.engagement"), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    async def send(topic: str, key: str, values: list[bytes]) -> None:
        await publish(app, topic, key, values)

    @app.agent(commands, name="engagement-actor")
    async def engagement_actor(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = event.message
            await handle_command(
                actor, deps.pool, send, Position(msg.topic, msg.partition, msg.offset), event.value
            )
