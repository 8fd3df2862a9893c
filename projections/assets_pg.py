"""Projection "assets": asset events → the ``assets`` table the api reads.

Guarded on the aggregate sequence: an event applies only if it is the next one for its asset,
so a re-emitted event (same sequence) is recognised as a duplicate and ignored."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
import faust

from medialog.domain.events import UploadRequested
from medialog.outcomes import NOTIFY_CHANNEL
from projections.runner import Record, apply_batch, events_of
from streams.app import StreamDeps

log = logging.getLogger(__name__)
NAME = "projection.assets"


async def apply(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    changed: set[str] = set()
    for r in records:
        p = r.payload
        if isinstance(p, UploadRequested) and r.event.sequence == 1:
            status = await conn.execute(
                "INSERT INTO assets (asset_id, version, owner_id, status, kind, filename, "
                "content_type, size_bytes, title, staging_key, upload_expires_at, created_at, "
                "updated_at) VALUES ($1, 1, $2, 'awaiting_upload', $3, $4, $5, $6, $7, $8, $9, "
                "$10, $10) ON CONFLICT (asset_id) DO NOTHING",
                p.asset_id, p.owner_id, p.kind, p.filename, p.content_type, p.size_bytes,
                p.title, p.staging_key, p.upload_expires_at, r.event.time,
            )
            if status.endswith(" 1"):
                changed.add(p.asset_id)
    for asset_id in changed:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, asset_id)


def register(app: faust.App, deps: StreamDeps) -> None:
    topic = app.topic(deps.settings.topic("events.asset"), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name="projection-assets")
    async def assets_projection(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(500, within=0.2):
            await apply_batch(deps.pool, NAME, apply, events_of(batch))
