"""The promoter (workers role): on ``medialog.asset.upload_completed`` it copies the original,
server side, from staging to the immutable masters bucket, then tells the asset actor
(``RecordPromotion``), which emits ``promoted`` and requests the first transcode job. The
janitor removes the staging object once ``promoted`` is on the log.

Idempotent throughout (re-delivery is normal, docs/architecture.md, rule 2):

- the copy is conditional: only from the staging object the actor validated (``If-Match`` its
  etag) and never over an existing master (``If-None-Match: *``). A master already there with
  the same size and source etag (recorded in its metadata) is this promotion done before; any
  other master is a conflict that is logged as an error, never overwritten;
- the command id and the transcode job id derive from the event id, so a second delivery sends
  the same command and the actor, which remembers command ids, applies it once.

Position: consumer ``worker.promoter`` in ``consumer_offsets``, stored after the effects."""

from __future__ import annotations

import logging

import faust

from medialog.domain.access import GONE_STATUSES
from medialog.domain.commands import RecordPromotion
from medialog.domain.errors import Conflict, NotFound
from medialog.domain.events import UploadCompleted
from medialog.domain.layout import master_key
from medialog.envelope import CloudEvent, decode_event
from medialog.runtime.deps import Deps
from medialog.runtime.handle_once import handle_once
from medialog.runtime.retry import PermanentFailure
from medialog.storage import BlobStore
from medialog.tracking import Position
from streams.app import agent, position, raw_topic
from streams.worker import SendCommand, asset_commands, derived_id, system_meta

log = logging.getLogger(__name__)
CONSUMER = "worker.promoter"
GONE_WAIT_S = 10.0
MAX_COPY_BYTES = 5 * 1024**3  # one CopyObject copies up to 5 GiB (larger needs UploadPartCopy)


async def _copy(blobs: BlobStore, p: UploadCompleted, key: str) -> str:
    """What the copy found: "copied", "present" (an earlier run copied it) or
    "staging-missing"; PermanentFailure when the master cannot be made."""
    s = blobs.settings
    if p.size_bytes > MAX_COPY_BYTES:
        raise PermanentFailure(f"{p.asset_id}: {p.size_bytes} bytes is over one CopyObject's limit")
    try:
        await blobs.copy_if_absent(s.bucket_staging, p.staging_key, s.bucket_masters, key,
                                   src_etag=p.etag, content_type=p.content_type,
                                   metadata={"asset-id": p.asset_id, "source-etag": p.etag})
        return "copied"
    except (NotFound, Conflict) as exc:
        cause = "missing" if isinstance(exc, NotFound) else "precondition"
    head = await blobs.head(s.bucket_masters, key)
    if head is not None:
        source_etag = head.metadata.get("source-etag")
        if head.size == p.size_bytes and source_etag == p.etag:
            return "present"
        raise PermanentFailure(
            f"masters/{key} exists with other content ({head.size} bytes, "
            f"source etag {source_etag!r}); not overwritten")
    if cause == "missing":
        return "staging-missing"
    raise PermanentFailure(
        f"staging/{p.staging_key} changed after the completion was validated (etag {p.etag})")


async def _asset_gone(deps: Deps, asset_id: str) -> bool:
    """Whether the asset was deleted or expired, from the read model (not the actor's private
    state). A deletion decided just before may not be projected yet: its projection notifies,
    so it is waited for up to ``GONE_WAIT_S``."""
    async def status() -> str | None:
        async with deps.pool.acquire() as conn:
            found: str | None = await conn.fetchval(
                "SELECT status FROM assets WHERE asset_id = $1", asset_id)
        return found

    return await deps.notifier.wait_until(
        status, lambda s: s in GONE_STATUSES, GONE_WAIT_S) in GONE_STATUSES


async def promote(deps: Deps, send: SendCommand, event: CloudEvent, p: UploadCompleted) -> str:
    """Copy staging → masters and send ``RecordPromotion``; return what the copy found."""
    key = master_key(p.asset_id, p.staging_key)
    result = await _copy(deps.blobs, p, key)
    if result == "staging-missing":
        if await _asset_gone(deps, p.asset_id):
            log.info("promoter: %s was deleted before its promotion; nothing to do", p.asset_id)
            return result
        raise PermanentFailure(f"staging/{p.staging_key} is gone and no master was made")
    command = RecordPromotion(master_key=key, size_bytes=p.size_bytes,
                              job_id=derived_id("transcode-job", event.id))
    meta = system_meta(derived_id("promotion", event.id), "promoter", event.correlationid)
    await send(p.asset_id, command, meta)
    log.info("promoter: %s → masters/%s (%s)", p.asset_id, key, result)
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

    @agent(app, topic, name="worker-promoter")
    async def promoter(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            await handle(deps, send, position(record), record.value)
