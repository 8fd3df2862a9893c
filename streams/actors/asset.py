"""The asset actor: owns each asset's state machine, keyed by asset id on ``commands.asset``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import faust

from medialog.domain.asset import Asset, decide, fold
from medialog.domain.commands import CompleteUpload, ObjectFacts
from medialog.runtime.deps import Deps
from medialog.storage import BlobStore
from streams.actors.runner import ActorSpec, register_actor


def spec(events_topic: str, blobs: BlobStore) -> ActorSpec[Asset]:
    async def prepare(asset: Asset, command: Any) -> Any:
        """A completion is decided on what S3 says about the staging object."""
        if not isinstance(command, CompleteUpload) or not asset.staging_key:
            return command
        head = await blobs.head(blobs.settings.bucket_staging, asset.staging_key)
        if head is None:
            return command  # observed stays None: decide rejects with UPLOAD_MISSING
        facts = ObjectFacts(size_bytes=head.size, content_type=head.content_type, etag=head.etag)
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


def register(app: faust.App, deps: Deps) -> None:
    register_actor(app, deps, spec("events.asset", deps.blobs), "commands.asset")
