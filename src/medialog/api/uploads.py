"""Uploads. ``POST /v1/uploads``: validate, mint an asset id, presign a PUT to staging, command
the actor. ``POST /v1/assets/{id}/complete``: the client says the PUT is done; the asset actor
checks the staging object (HeadObject) and accepts or rejects the completion."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from medialog.api import keys, queries
from medialog.api.assets import owned_asset
from medialog.api.auth.principal import ADMIN, CREATOR, require
from medialog.api.commands import command_response, send_command
from medialog.api.requests import command_id, command_meta, principal, read_json
from medialog.domain.commands import CompleteUpload, RequestUpload
from medialog.domain.layout import staging_key
from medialog.domain.uploads import validate_upload
from medialog.timefmt import iso

_ASSET_NAMESPACE = uuid.UUID("9f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8")


# Creating writes wait this long for their outcome by default (read-your-writes: the client's
# next call finds the asset); ``Prefer: wait=0`` answers at once.
CREATE_WAIT_S = 10.0


async def create_upload(request: web.Request) -> web.Response:
    """Waits (``CREATE_WAIT_S``, or ``Prefer: wait=N``; ``wait=0`` answers at once) until the
    asset is in the read model, so the client's next call finds it, then 202 with the asset id
    and a presigned PUT that signs the declared Content-Type and size.
    A retry (same ``Idempotency-Key``) is the same command and names the same asset: while the
    asset awaits its upload it gets a new URL valid until the first one's deadline; once the
    upload is no longer awaited (completed, promoted…, expired, deleted) or that deadline has
    passed, ``upload_url`` is null and ``asset_status`` says where the asset is."""
    who = await principal(request)
    require(who, CREATOR, ADMIN)
    settings = request.app[keys.SETTINGS]
    spec = validate_upload(await read_json(request), max_bytes=settings.upload_max_bytes)

    cmd_id = await command_id(request, who, "uploads")
    # With an Idempotency-Key the asset id follows from the command id: a retry names the same
    # asset.
    asset_id = str(uuid.uuid5(_ASSET_NAMESPACE, cmd_id))
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=settings.upload_url_ttl_s)
    key = staging_key(who.user_id, asset_id, spec.extension)
    command = RequestUpload(
        asset_id=asset_id,
        owner_id=who.user_id,
        kind=spec.kind,
        filename=spec.filename,
        content_type=spec.content_type,
        size_bytes=spec.size_bytes,
        title=spec.title,
        staging_key=key,
        upload_expires_at=expires_at,
        visibility=spec.visibility,
        description=spec.description,
        tags=None if spec.tags is None else list(spec.tags),
        category=spec.category,
    )
    meta = command_meta(request, who, cmd_id, now)
    earlier = None
    if "Idempotency-Key" in request.headers:  # only then can the asset exist already
        async with request.app[keys.PG].acquire() as conn:
            earlier = await queries.fetch_asset(conn, asset_id)
    body: dict[str, Any] = {"asset_id": asset_id}
    if earlier is not None:  # the first request's deadline holds (the actor keeps its command)
        expires_at = earlier["upload_expires_at"]
    if earlier is None or (earlier["status"] == "awaiting_upload" and expires_at > now):
        body["upload_url"] = await request.app[keys.BLOBS].presign_put(
            settings.bucket_staging,
            key,
            content_type=spec.content_type,
            size_bytes=spec.size_bytes,
            expires_in=math.ceil((expires_at - now).total_seconds()),
        )
        body["method"] = "PUT"
        body["headers"] = {"Content-Type": spec.content_type,
                           "Content-Length": str(spec.size_bytes)}
    else:
        body["upload_url"] = None
        body["asset_status"] = earlier["status"]
    body["expires_at"] = iso(expires_at)
    await send_command(request.app, "commands.asset", asset_id, command, meta)
    return await command_response(request, cmd_id, body,
                                  headers={"Location": f"/v1/assets/{asset_id}"},
                                  wait_by_default=CREATE_WAIT_S)


async def complete_upload(request: web.Request) -> web.Response:
    """The owner (or an admin) says the bytes are in staging. Waits for the outcome as
    ``create_upload`` does, then 202 with the command id; the actor rejects with UPLOAD_MISSING,
    UPLOAD_SIZE_MISMATCH, UPLOAD_CONTENT_TYPE_MISMATCH, UPLOAD_EXPIRED… (409 unless
    ``Prefer: wait=0``), or accepts and the promoter takes over."""
    who = await principal(request)
    row = await owned_asset(request, who)
    settings = request.app[keys.SETTINGS]
    asset_id = row["asset_id"]
    cmd_id = await command_id(request, who, f"complete:{asset_id}")
    now = datetime.now(UTC)
    command = CompleteUpload(
        requested_by=who.user_id,
        is_admin=who.has_any(ADMIN),
        max_bytes=settings.upload_max_bytes,
        now=now,
        grace_s=settings.upload_grace_s,
    )
    await send_command(request.app, "commands.asset", asset_id, command,
                       command_meta(request, who, cmd_id, now))
    return await command_response(request, cmd_id, {"asset_id": asset_id},
                                  headers={"Location": f"/v1/assets/{asset_id}"},
                                  wait_by_default=CREATE_WAIT_S)
