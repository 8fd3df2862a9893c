"""An asset's past and present: ``GET /v1/assets/{id}/history`` (its events, in order; owner or
admin) and ``GET /v1/assets/{id}/status`` (Server-Sent Events: the status now, then one message
per event as the read model applies it, until a terminal status).

The stream never misses a change: it watches the asset's key on the notifier *before* reading,
clears the flag before every re-read, and re-reads on every heartbeat too (a lost LISTEN
connection costs at most one heartbeat of delay, never an event)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from medialog.api import keys, queries
from medialog.api.assets import owned_asset, readable_asset
from medialog.api.requests import principal
from medialog.api.status_token import status_viewer
from medialog.domain.asset import STATUS_AFTER, TERMINAL
from medialog.timefmt import iso

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
MAX_STREAM_S = 600.0


async def get_history(request: web.Request) -> web.Response:
    """Events in sequence order; ``?after=N`` continues from sequence N (``next_after``)."""
    who = await principal(request)
    row = await owned_asset(request, who)
    after, limit = queries.parse_history_query(request.query)
    async with request.app[keys.PG].acquire() as conn:
        rows = await queries.fetch_history(conn, row["asset_id"], after, limit)
    events = [
        {
            "sequence": r["sequence"],
            "id": r["event_id"],
            "type": r["type"],
            "time": iso(r["time"]),
            "actor_id": r["actor_id"],
            "causation_id": r["causation_id"],
            "data": json.loads(r["data"]),
        }
        for r in rows
    ]
    body: dict[str, Any] = {"asset_id": row["asset_id"], "events": events}
    body["next_after"] = events[-1]["sequence"] if len(events) == limit else None
    return web.json_response(body)


def _detail(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a status watcher may see of an event (never keys or probe output)."""
    if event_type == "medialog.asset.transcode_started":
        return {"attempt": data.get("attempt"), "rungs": data.get("rungs")}
    if event_type == "medialog.asset.rendition_completed":
        return {"rendition": (data.get("rendition") or {}).get("name")}
    if event_type == "medialog.asset.transcode_failed":
        return {"reason": data.get("reason"), "rung": data.get("rung")}
    if event_type == "medialog.asset.metadata_updated":
        return {"changed": sorted(k for k, v in data.items() if v is not None and k != "asset_id")}
    return {}


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_status(request: web.Request) -> web.StreamResponse:
    """``text/event-stream``: ``event: status`` messages ``{asset_id, version, status, event,
    time, detail}`` (``event`` null for the first, which is the state now); comments as
    heartbeats; closes after a terminal status, after 10 minutes, or when the client leaves."""
    row = await readable_asset(request, await status_viewer(request))  # ?access_token= too
    asset_id: str = row["asset_id"]
    pool, notifier = request.app[keys.PG], request.app[keys.NOTIFIER]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_S
    with notifier.watch(asset_id) as changed:
        async with pool.acquire() as conn:  # re-read after watching: nothing slips in between
            row = await queries.fetch_asset(conn, asset_id)
        assert row is not None
        await response.prepare(request)
        version, status = row["version"], row["status"]
        await response.write(b"retry: 3000\n\n" + sse("status", {
            "asset_id": asset_id, "version": version, "status": status, "event": None,
            "time": iso(row["updated_at"]), "detail": {},
        }, version))
        try:
            while status not in TERMINAL:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), min(HEARTBEAT_S, remaining))
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                changed.clear()
                async with pool.acquire() as conn:
                    rows = await queries.fetch_history(conn, asset_id, version, 1000)
                for r in rows:
                    version, status = r["sequence"], STATUS_AFTER.get(r["type"], status)
                    await response.write(sse("status", {
                        "asset_id": asset_id, "version": version, "status": status,
                        "event": r["type"], "time": iso(r["time"]),
                        "detail": _detail(r["type"], json.loads(r["data"])),
                    }, version))
        except ConnectionResetError:
            log.debug("status stream of %s: the client left", asset_id)
            return response
    await response.write_eof()
    return response
