"""Every route, in one place."""

from __future__ import annotations

from aiohttp import web

from medialog.api import assets, commands, health, keys, uploads


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.LOCAL_JWKS], headers={"Cache-Control": "max-age=300"})


def setup_routes(app: web.Application, *, api: bool, serve_jwks: bool) -> None:
    app.router.add_get("/health", health.alive)
    app.router.add_get("/health/ready", health.ready)
    if not api:
        return
    if serve_jwks:
        app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_post("/v1/uploads", uploads.create_upload)
    app.router.add_get("/v1/assets/{asset_id}", assets.get_asset)
    app.router.add_get("/v1/commands/{command_id}", commands.get_command)
