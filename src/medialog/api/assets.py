"""Asset queries, answered from the PostgreSQL read model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from medialog.api import keys
from medialog.api.auth import ADMIN, Principal
from medialog.api.requests import principal
from medialog.domain.errors import NotFound


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def asset_json(row: asyncpg.Record) -> dict[str, Any]:
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
        "upload_expires_at": _iso(row["upload_expires_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def parse_asset_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise NotFound("no such asset", code="ASSET_NOT_FOUND") from exc


def may_read(row: asyncpg.Record, who: Principal) -> bool:
    return row["owner_id"] == who.user_id or who.has_any(ADMIN)


async def get_asset(request: web.Request) -> web.Response:
    who = await principal(request)
    asset_id = parse_asset_id(request.match_info["asset_id"])
    async with request.app[keys.PG].acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM assets WHERE asset_id = $1", asset_id)
    # Visibility arrives with metadata (issue "asset lifecycle"); until then an asset is its
    # owner's. A stranger gets 404, not 403, so ids cannot be probed.
    if row is None or not may_read(row, who):
        raise NotFound("no such asset", code="ASSET_NOT_FOUND")
    return web.json_response(asset_json(row))
