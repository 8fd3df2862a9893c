"""The janitor (workers role): storage cleanup driven by ``events.asset``, and the expiry sweep.

On the log:

- ``promoted``: the original is safe in masters; the staging object goes;
- ``upload_expired``: the upload never completed; the staging object (if any) goes;
- ``deleted``: every ``previews/{asset}/…`` object goes (HLS renditions, thumbnail), and the
  staging object if one is left. Masters are kept: originals are retained after deletion.

Every removal is idempotent (deleting what is gone is a no-op). Position: consumer
``worker.janitor`` in ``consumer_offsets``, stored after the effects.

The sweep (a timer, every ``expiry_sweep_interval_s``): uploads still ``awaiting_upload``
past their URL validity + ``upload_grace_s`` get an ``ExpireUpload`` command whose id derives
from the asset id, so sweepers in several processes, or sweeps repeated before the read model
caught up, send the same command and the actor applies it once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import faust

from medialog.domain.commands import ExpireUpload
from medialog.domain.events import AssetDeleted, Promoted, UploadExpired
from medialog.domain.layout import previews_prefix
from medialog.envelope import decode_event
from medialog.runtime.deps import Deps
from medialog.runtime.handle_once import handle_once
from medialog.runtime.retry import PermanentFailure
from medialog.storage import BlobStore
from medialog.tracking import Position
from streams.app import agent, position, raw_topic
from streams.worker import SendCommand, asset_commands, derived_id, system_meta

log = logging.getLogger(__name__)
CONSUMER = "worker.janitor"
SWEEP_BATCH = 500


async def staging_key_of(pool: asyncpg.Pool, asset_id: str) -> str | None:
    """The asset's staging key from the read model (set by its first event, never changed): for
    v1 ``promoted``/``deleted`` events, which did not carry it."""
    async with pool.acquire() as conn:
        key: str | None = await conn.fetchval(
            "SELECT staging_key FROM assets WHERE asset_id = $1", asset_id)
    return key


async def remove_staging(blobs: BlobStore, asset_id: str, key: str | None) -> None:
    if not key:
        raise PermanentFailure(f"no staging key known for {asset_id}")
    await blobs.delete(blobs.settings.bucket_staging, key)
    log.info("janitor: removed staging/%s", key)


async def clean(deps: Deps, payload: Promoted | UploadExpired | AssetDeleted) -> None:
    blobs = deps.blobs
    if isinstance(payload, UploadExpired):
        await remove_staging(blobs, payload.asset_id, payload.staging_key)
        return
    staging = payload.staging_key or await staging_key_of(deps.pool, payload.asset_id)
    if isinstance(payload, AssetDeleted):
        removed = await blobs.delete_prefix(blobs.settings.bucket_previews,
                                            previews_prefix(payload.asset_id))
        log.info("janitor: %s deleted; removed %d preview objects", payload.asset_id, removed)
    await remove_staging(blobs, payload.asset_id, staging)


async def handle(deps: Deps, position: Position, raw: bytes) -> bool:
    try:
        _, payload = decode_event(raw)
    except ValueError:
        log.error("janitor: undecodable record at %s", position)
        return False
    if not isinstance(payload, (Promoted, UploadExpired, AssetDeleted)):
        return False
    return await handle_once(deps.pool, CONSUMER, position, lambda: clean(deps, payload))


async def expired_uploads(conn: asyncpg.Connection, before: datetime, limit: int) -> list[str]:
    """Assets still awaiting their upload whose URL expired before ``before``."""
    rows = await conn.fetch(
        "SELECT asset_id FROM assets WHERE status = 'awaiting_upload' AND upload_expires_at < $1 "
        "ORDER BY upload_expires_at LIMIT $2", before, limit)
    return [r["asset_id"] for r in rows]


async def sweep_expired(
    pool: asyncpg.Pool, send: SendCommand, *, now: datetime, grace_s: int,
    limit: int = SWEEP_BATCH,
) -> list[str]:
    """Send ``ExpireUpload`` for each stale upload; return their asset ids."""
    async with pool.acquire() as conn:
        stale = await expired_uploads(conn, now - timedelta(seconds=grace_s), limit)
    for asset_id in stale:
        meta = system_meta(derived_id("expire-upload", asset_id), "expiry", None)
        await send(asset_id, ExpireUpload(now=now, grace_s=grace_s), meta)
    if stale:
        log.info("expiry sweep: %d uploads expired", len(stale))
    return stale


def register(app: faust.App, deps: Deps) -> None:
    s = deps.settings
    topic = raw_topic(app, s, "events.asset")
    send = asset_commands(deps.publisher)

    @agent(app, topic, name="worker-janitor")
    async def janitor(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            await handle(deps, position(record), record.value)

    async def expiry_sweep() -> None:
        try:
            await sweep_expired(deps.pool, send, now=datetime.now(UTC), grace_s=s.upload_grace_s)
        except Exception:  # a timer that raises stops for good: log, and try next interval
            log.exception("expiry sweep failed")

    app.timer(s.expiry_sweep_interval_s, name="expiry-sweep")(expiry_sweep)
