"""Assets: reads from the PostgreSQL read model (who sees what: ``medialog.domain.access``) and
the owner's writes (PATCH metadata, DELETE), sent as commands to the asset actor.

Writes pre-check the read model to answer fast (unknown or unreadable → 404, not the owner →
403) but the actor stays the authority: the read model may lag, so a write that passes here can
still be rejected, and ``Prefer: wait`` then answers with that rejection."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from medialog.api import keys, queries
from medialog.api.auth.principal import ADMIN, Principal
from medialog.api.commands import command_response, send_command
from medialog.api.requests import (
    command_id,
    command_meta,
    optional_principal,
    principal,
    read_json,
)
from medialog.domain.access import (
    ANYONE,
    AssetFacts,
    Viewer,
    may_manage,
    may_read,
    not_found,
)
from medialog.domain.commands import DeleteAsset, UpdateMetadata
from medialog.domain.errors import Forbidden
from medialog.domain.metadata import validate_metadata_patch
from medialog.timefmt import iso, iso_or_none

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def asset_json(row: asyncpg.Record) -> dict[str, Any]:
    transcode = _json(row["transcode"])
    failure = _json(row["failure"])
    return {
        "asset_id": row["asset_id"],
        "owner_id": row["owner_id"],
        "status": row["status"],
        "kind": row["kind"],
        "version": row["version"],
        "metadata": {
            "title": row["title"],
            "filename": row["filename"],
            "content_type": row["content_type"],
            "size_bytes": row["size_bytes"],
        },
        "visibility": row["visibility"],
        "description": row["description"],
        "tags": list(row["tags"]),
        "category": row["category"],
        "duration_s": row["duration_s"],
        "width": row["width"],
        "height": row["height"],
        "thumbnail_key": row["thumbnail_key"],
        "renditions": [
            {k: r.get(k) for k in ("name", "width", "height", "bandwidth", "codecs")}
            for r in _json(row["renditions"]) or []
        ],
        "transcode": transcode and {
            k: transcode.get(k) for k in ("job_id", "state", "attempt", "rungs", "done")
        },
        "failure": failure and {k: failure.get(k) for k in ("reason", "rung", "attempts")},
        "stats": {"views": row["view_count"], "likes": row["like_count"]},
        "upload_expires_at": iso_or_none(row["upload_expires_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "deleted_at": iso_or_none(row["deleted_at"]),
    }


def parse_asset_id(raw: str) -> str:
    """The asset id of a path in its canonical form (lowercase, hyphens), else ``NotFound``. A
    canonical id is returned as it is: building a ``UUID`` costs more than a report's lookup."""
    if _CANONICAL_UUID.fullmatch(raw):
        return raw
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise not_found() from exc


def viewer_of(who: Principal | None) -> Viewer:
    if who is None:
        return ANYONE
    return Viewer(user_id=who.user_id, is_admin=who.has_any(ADMIN))


def facts_of(row: asyncpg.Record) -> AssetFacts:
    """The access facts of an ``assets`` row."""
    return AssetFacts(owner_id=row["owner_id"], status=row["status"], visibility=row["visibility"])


async def readable_asset(request: web.Request, viewer: Viewer) -> asyncpg.Record:
    """The asset named in the path, if ``viewer`` may read it; else 404 (never 403, so that
    ids of assets one may not see cannot be probed)."""
    asset_id = parse_asset_id(request.match_info["asset_id"])
    async with request.app[keys.PG].acquire() as conn:
        row = await queries.fetch_asset(conn, asset_id)
    if row is None or not may_read(viewer, facts_of(row)):
        raise not_found()
    return row


async def owned_asset(request: web.Request, who: Principal, *,
                      admin_ok: bool = True) -> asyncpg.Record:
    """The asset named in the path for a write by ``who``: 404 unless readable, 403 NOT_OWNER
    unless theirs (or ``who`` is an admin and ``admin_ok``)."""
    viewer = viewer_of(who)
    row = await readable_asset(request, viewer)
    if not may_manage(viewer, row["owner_id"], admin_ok=admin_ok):
        raise Forbidden("only the asset's owner may do this", code="NOT_OWNER")
    return row


async def get_asset(request: web.Request) -> web.Response:
    row = await readable_asset(request, viewer_of(await optional_principal(request)))
    return web.json_response(asset_json(row))


async def list_assets(request: web.Request) -> web.Response:
    viewer = viewer_of(await optional_principal(request))
    query = queries.parse_list_query(request.query)
    async with request.app[keys.PG].acquire() as conn:
        rows, total = await queries.list_assets(conn, query, viewer)
    return web.json_response({
        "items": [asset_json(r) for r in rows],
        "page": query.page,
        "limit": query.limit,
        "total": total,
    })


async def update_asset(request: web.Request) -> web.Response:
    """``PATCH /v1/assets/{id}``: the owner edits title, description, tags, category,
    visibility (admins may not: the metadata is the creator's voice)."""
    who = await principal(request)
    row = await owned_asset(request, who, admin_ok=False)
    changes = validate_metadata_patch(await read_json(request))
    cmd_id = await command_id(request, who, f"metadata:{row['asset_id']}")
    now = datetime.now(UTC)
    command = UpdateMetadata(requested_by=who.user_id, is_admin=who.has_any(ADMIN), **changes)
    await send_command(request.app, "commands.asset", row["asset_id"], command,
                       command_meta(request, who, cmd_id, now))
    return await command_response(request, cmd_id, {"asset_id": row["asset_id"]})


async def delete_asset(request: web.Request) -> web.Response:
    """``DELETE /v1/assets/{id}`` (owner or admin). Previews are removed by the janitor once the
    deletion is on the log; the master is kept (retention)."""
    who = await principal(request)
    row = await owned_asset(request, who)
    cmd_id = await command_id(request, who, f"delete:{row['asset_id']}")
    now = datetime.now(UTC)
    command = DeleteAsset(requested_by=who.user_id, is_admin=who.has_any(ADMIN))
    await send_command(request.app, "commands.asset", row["asset_id"], command,
                       command_meta(request, who, cmd_id, now))
    return await command_response(request, cmd_id, {"asset_id": row["asset_id"]})
