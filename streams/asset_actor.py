"""The asset actor: owns each asset's state machine, keyed by asset id on ``commands.asset``."""

from __future__ import annotations

import faust

from medialog.domain.asset import Asset, decide, fold
from streams.actor import ActorSpec, handle_command
from streams.app import StreamDeps, publish
from medialog.tracking import Position


def spec(events_topic: str) -> ActorSpec[Asset]:
    return ActorSpec(
        name="asset",
        events_topic=events_topic,
        initial=lambda asset_id: Asset(asset_id=asset_id),
        decide=decide,
        fold=fold,
        version=lambda a: a.version,
    )


def register(app: faust.App, deps: StreamDeps) -> None:
    s = deps.settings
    actor = spec(s.topic("events.asset"))
    commands = app.topic(s.topic("commands.asset"), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    async def send(topic: str, key: str, values: list[bytes]) -> None:
        await publish(app, topic, key, values)

    @app.agent(commands, name="asset-actor")
    async def asset_actor(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = event.message
            await handle_command(
                actor, deps.pool, send, Position(msg.topic, msg.partition, msg.offset), event.value
            )
