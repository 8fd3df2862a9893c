"""Analytics and trending, answered from ClickHouse (``medialog.analytics.queries``).

Who may read what: an asset's figures — its owner (from the PostgreSQL ``assets`` read model)
or an admin, anyone else gets 404 as for the asset itself; a creator's figures — that creator
or an admin (403 otherwise); the overview — admins (403 ``FORBIDDEN_ROLE``); trending — anyone,
and it lists only public, not deleted assets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from aiohttp import web

from medialog.analytics import params, queries
from medialog.api import keys
from medialog.api.assets import parse_asset_id
from medialog.api.auth.principal import ADMIN, require
from medialog.api.requests import principal
from medialog.domain.access import HIDDEN_FROM_OTHERS, LISTED_VISIBILITY
from medialog.domain.errors import Forbidden, NotFound


def _now() -> datetime:
    return datetime.now(UTC)


async def asset_analytics(request: web.Request) -> web.Response:
    who = await principal(request)
    asset_id = parse_asset_id(request.match_info["asset_id"])
    async with request.app[keys.PG].acquire() as conn:
        owner = await conn.fetchval("SELECT owner_id FROM assets WHERE asset_id = $1", asset_id)
    if owner is None or (owner != who.user_id and not who.has_any(ADMIN)):
        raise NotFound("no such asset", code="ASSET_NOT_FOUND")
    rng = params.parse_range(request.query, _now())
    report = await queries.asset_report(request.app[keys.ANALYTICS], asset_id, rng)
    return web.json_response({"owner_id": owner, **report})


async def creator_analytics(request: web.Request) -> web.Response:
    who = await principal(request)
    creator_id = request.match_info["creator_id"]
    if creator_id != who.user_id and not who.has_any(ADMIN):
        raise Forbidden("only the creator or an admin may read these figures",
                        code="FORBIDDEN_NOT_CREATOR")
    rng = params.parse_range(request.query, _now())
    return web.json_response(
        await queries.creator_report(request.app[keys.ANALYTICS], creator_id, rng)
    )


async def overview(request: web.Request) -> web.Response:
    require(await principal(request), ADMIN)
    rng = params.parse_range(request.query, _now())
    return web.json_response(await queries.overview_report(request.app[keys.ANALYTICS], rng))


# Trending ranks from ClickHouse, which may lag the log; each item is shown only if the
# PostgreSQL read model (what GET /v1/assets/{id} answers from) also lists it for anyone: public
# and not hidden from others, so an asset made private or deleted leaves the list as soon as the
# api hides it. Twice the limit is ranked, so that items hidden here leave room for the next.
_SHOWN = ("SELECT asset_id, owner_id, title FROM assets WHERE asset_id = ANY($1::text[]) "
          f"AND visibility = '{LISTED_VISIBILITY}' AND status <> ALL($2::text[])")


async def trending(request: web.Request) -> web.Response:
    q = params.parse_trending(request.query, _now())
    ranked = await queries.trending(request.app[keys.ANALYTICS], replace(q, limit=q.limit * 2))
    items: list[dict[str, object]] = []
    if ranked:
        async with request.app[keys.PG].acquire() as conn:
            rows = await conn.fetch(_SHOWN, [i["asset_id"] for i in ranked],
                                    sorted(HIDDEN_FROM_OTHERS))
        shown = {r["asset_id"]: r for r in rows}
        for item in ranked:
            row = shown.get(item["asset_id"])
            if row is not None and len(items) < q.limit:
                items.append({**item, "rank": len(items) + 1, "owner_id": row["owner_id"],
                              "title": row["title"]})
    return web.json_response({
        "window": q.window, "generated_at": q.now.isoformat().replace("+00:00", "Z"),
        "items": items,
    })
