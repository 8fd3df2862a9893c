"""``POST /v1/assets/{id}/transcode`` (owner or admin): run the ladder again, every rung or with
``{"only_failed": true}`` only the rungs the last job did not finish. The asset actor decides
(it accepts only a ``ready`` or ``failed`` asset) and requests a new job with a fresh id; the
transcoder picks it up like the first one. 202 with ``command_id`` and ``job_id``; with
``Prefer: wait=N`` a rejection answers as its domain error (409 with the code, e.g.
``INVALID_TRANSITION`` while the asset is still processing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field

from medialog.api.assets import owned_asset
from medialog.api.auth.principal import ADMIN
from medialog.api.commands import command_response, send_command
from medialog.api.requests import command_id, command_meta, principal, read_json
from medialog.domain.commands import RequestTranscode
from medialog.domain.schema import Body, parse

_JOB_NAMESPACE = uuid.UUID("6a1f0c8e-2d4b-4f7a-9e3c-8b5d7f1a0e24")


class TranscodeRequest(Body):
    """``POST /v1/assets/{id}/transcode`` (the body is optional)."""

    only_failed: bool = Field(False, description="redo only the rungs the last job did not "
                                                 "finish")


def parse_body(body: object) -> bool:
    """``only_failed`` of a ``TranscodeRequest`` (an empty body means false)."""
    if body is None:
        return False
    return parse(TranscodeRequest, body, message="invalid transcode request").only_failed


async def request_transcode(request: web.Request) -> web.Response:
    who = await principal(request)
    row = await owned_asset(request, who)
    only_failed = parse_body(await read_json(request) if request.body_exists else None)
    asset_id = row["asset_id"]
    cmd_id = await command_id(request, who, f"transcode:{asset_id}")
    job_id = str(uuid.uuid5(_JOB_NAMESPACE, cmd_id))  # a retried request is the same job
    command = RequestTranscode(requested_by=who.user_id, is_admin=who.has_any(ADMIN),
                               job_id=job_id, only_failed=only_failed)
    await send_command(request.app, "commands.asset", asset_id, command,
                       command_meta(request, who, cmd_id, datetime.now(UTC)))
    return await command_response(request, cmd_id, {"asset_id": asset_id, "job_id": job_id})
