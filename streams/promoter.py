"""The promoter (workers role): on ``medialog.asset.upload_completed`` it copies the original,
server side, from staging to the immutable masters bucket, then tells the asset actor
(``RecordPromotion``), which emits ``promoted`` and requests the first transcode job. The
janitor removes the staging object once ``promoted`` is on the log.

Idempotent throughout (re-delivery is normal, DESIGN.md rule 2):

- the copy is conditional: only from the staging object the actor validated (``If-Match`` its
  etag) and never over an existing master (``If-None-Match: *``). A master already there with
  the same size and source etag (recorded in its metadata) is this promotion done before; any
  other master is a conflict that is logged as an error, never overwritten;
- the command id and the transcode job id derive from the event id, so a second delivery sends
  the same command and the actor, which remembers command ids, applies it once.

Position: consumer ``worker.promoter`` in ``consumer_offsets``, stored after the effects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import faust
from botocore.exceptions import ClientError

from medialog.domain.commands import RecordPromotion
from medialog.domain.events import UploadCompleted
from medialog.envelope import CloudEvent, decode_event
from medialog.runtime.deps import Deps
from medialog.runtime.handle_once import handle_once
from medialog.runtime.retry import PermanentFailure
from medialog.storage import BlobStore
from medialog.tracking import Position
from streams.app import position, raw_topic
from streams.worker import SendCommand, asset_commands, derived_id, system_meta

log = logging.getLogger(__name__)
CONSUMER = "worker.promoter"
MAX_COPY_BYTES = 5 * 1024**3  # one CopyObject copies up to 5 GiB (larger needs UploadPartCopy)


def master_key_for(asset_id: str, staging_key: str) -> str:
    """``{asset}/original.{ext}`` in masters, the extension taken from the staging key."""
    ext = staging_key.rsplit("/", 1)[-1].rpartition(".")[2] or "bin"
    return f"{asset_id}/original.{ext}"


def _error(exc: ClientError) -> tuple[int, str]:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return status, str(exc.response.get("Error", {}).get("Code", ""))


def _copy(blobs: BlobStore, p: UploadCompleted, master_key: str) -> str:
    """Blocking (run in a thread): "copied", "present" (an earlier run copied it), or raise."""
    s, s3 = blobs.settings, blobs.client
    if p.size_bytes > MAX_COPY_BYTES:
        raise PermanentFailure(f"{p.asset_id}: {p.size_bytes} bytes is over one CopyObject's limit")
    try:
        s3.copy_object(
            CopySource={"Bucket": s.bucket_staging, "Key": p.staging_key},
            CopySourceIfMatch=f'"{p.etag}"',
            IfNoneMatch="*",
            Bucket=s.bucket_masters,
            Key=master_key,
            MetadataDirective="REPLACE",
            ContentType=p.content_type,
            Metadata={"asset-id": p.asset_id, "source-etag": p.etag},
        )
        return "copied"
    except ClientError as exc:
        status, code = _error(exc)
        if status not in (404, 412) and code not in ("NoSuchKey", "PreconditionFailed"):
            raise
        cause = "missing" if status == 404 or code == "NoSuchKey" else "precondition"
    try:
        head: dict[str, Any] = s3.head_object(Bucket=s.bucket_masters, Key=master_key)
    except ClientError as exc:
        if _error(exc)[0] != 404:
            raise
        head = {}
    if head:
        same = (int(head["ContentLength"]) == p.size_bytes
                and head.get("Metadata", {}).get("source-etag") == p.etag)
        if same:
            return "present"
        raise PermanentFailure(
            f"masters/{master_key} exists with other content ({head['ContentLength']} bytes, "
            f"source etag {head.get('Metadata', {}).get('source-etag')!r}); not overwritten")
    if cause == "missing":
        return "staging-missing"
    raise PermanentFailure(
        f"staging/{p.staging_key} changed after the completion was validated (etag {p.etag})")


async def _asset_gone(pool: asyncpg.Pool, asset_id: str) -> bool:
    async with pool.acquire() as conn:
        status = await conn.fetchval(
            "SELECT state->>'status' FROM actor_snapshots WHERE actor = 'asset' "
            "AND aggregate_id = $1", asset_id)
    return status in ("deleted", "expired")


async def promote(deps: Deps, send: SendCommand, event: CloudEvent, p: UploadCompleted) -> str:
    """Copy staging → masters and send ``RecordPromotion``; return what the copy found."""
    master_key = master_key_for(p.asset_id, p.staging_key)
    result = await asyncio.to_thread(_copy, deps.blobs, p, master_key)
    if result == "staging-missing":
        if await _asset_gone(deps.pool, p.asset_id):
            log.info("promoter: %s was deleted before its promotion; nothing to do", p.asset_id)
            return result
        raise PermanentFailure(f"staging/{p.staging_key} is gone and no master was made")
    command = RecordPromotion(master_key=master_key, size_bytes=p.size_bytes,
                              job_id=derived_id("transcode-job", event.id))
    meta = system_meta(derived_id("promotion", event.id), "promoter", event.correlationid)
    await send(p.asset_id, command, meta)
    log.info("promoter: %s → masters/%s (%s)", p.asset_id, master_key, result)
    return result


async def handle(deps: Deps, send: SendCommand, position: Position, raw: bytes) -> bool:
    """One record of ``events.asset``; only ``upload_completed`` concerns the promoter."""
    try:
        event, payload = decode_event(raw)
    except ValueError:
        log.error("promoter: undecodable record at %s", position)
        return False
    if not isinstance(payload, UploadCompleted):
        return False
    return await handle_once(deps.pool, CONSUMER, position,
                             lambda: promote(deps, send, event, payload))


def register(app: faust.App, deps: Deps) -> None:
    s = deps.settings
    topic = raw_topic(app, s, "events.asset")
    send = asset_commands(deps.publisher)

    @app.agent(topic, name="worker-promoter")
    async def promoter(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            await handle(deps, send, position(record), record.value)
