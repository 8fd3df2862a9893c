"""The asset actor: owns each asset's state machine, keyed by asset id on ``commands.asset``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import faust

from medialog.domain.asset import Asset, decide, fold
from medialog.domain.commands import CompleteUpload, ObjectFacts
from medialog.storage import BlobStore
from medialog.tracking import Position
from streams.actor import ActorSpec, handle_command
from streams.app import StreamDeps, publish


def spec(events_topic: str, blobs: BlobStore) -> ActorSpec[Asset]:
    async def prepare(asset: Asset, command: Any) -> Any:
        """A completion is decided on what S3 says about the staging object."""
        if not isinstance(command, CompleteUpload) or not asset.staging_key:
            return command
        head = await blobs.head(blobs.settings.bucket_staging, asset.staging_key)
        facts = head and ObjectFacts(
            size_bytes=head.size, content_type=head.content_type, etag=head.etag
        )
        return replace(command, observed=facts)

    return ActorSpec(
        name="asset",
        events_topic=events_topic,
        initial=lambda asset_id: Asset(asset_id=asset_id),
        decide=decide,
        fold=fold,
        version=lambda a: a.version,
        prepare=prepare,
    )


def register(app: faust.App, deps: StreamDeps) -> None:
    s = deps.settings
    actor = spec(s.topic("events.asset"), deps.blobs)
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
