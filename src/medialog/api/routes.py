"""Every route, in one place."""

from __future__ import annotations

from aiohttp import web

from medialog.api import (
    analytics,
    assets,
    commands,
    engagement,
    health,
    history,
    keys,
    playback,
    streaming,
    transcode,
    uploads,
)


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.LOCAL_JWKS], headers={"Cache-Control": "max-age=300"})


def setup_routes(app: web.Application, *, api: bool, serve_jwks: bool) -> None:
    app.router.add_get("/health", health.alive)
    app.router.add_get("/health/ready", health.ready)
    if not api:
        return
    if serve_jwks:
        app.router.add_get("/.well-known/jwks.json", jwks)
    # Playback reports first: aiohttp tries the routes under one prefix (here /v1/assets) in the
    # order they were added, and this one takes most requests (see ``bench/ingest.py``).
    app.router.add_post("/v1/assets/{asset_id}/views", engagement.report_view)
    app.router.add_post("/v1/uploads", uploads.create_upload)
    app.router.add_get("/v1/assets", assets.list_assets)
    app.router.add_get("/v1/assets/{asset_id}", assets.get_asset)
    app.router.add_patch("/v1/assets/{asset_id}", assets.update_asset)
    app.router.add_delete("/v1/assets/{asset_id}", assets.delete_asset)
    app.router.add_post("/v1/assets/{asset_id}/complete", uploads.complete_upload)
    app.router.add_get("/v1/assets/{asset_id}/history", history.get_history)
    app.router.add_get("/v1/assets/{asset_id}/status", history.stream_status)
    app.router.add_get("/v1/commands/{command_id}", commands.get_command)
    app.router.add_post("/v1/assets/{asset_id}/transcode", transcode.request_transcode)
    app.router.add_get("/v1/assets/{asset_id}/playback", playback.issue_playback)
    app.router.add_get("/v1/stream/{asset}/{expires}/{signature}/{path:.*}",
                       streaming.stream_object)
    app.router.add_get("/v1/analytics/assets/{asset_id}", analytics.asset_analytics)
    app.router.add_get("/v1/analytics/creators/{creator_id}", analytics.creator_analytics)
    app.router.add_get("/v1/analytics/overview", analytics.overview)
    app.router.add_get("/v1/trending", analytics.trending)
    app.cleanup_ctx.append(engagement.engagement_ctx)  # after the pool's: create_app added it
    app.router.add_put("/v1/assets/{asset_id}/like", engagement.like)
    app.router.add_delete("/v1/assets/{asset_id}/like", engagement.unlike)
    app.router.add_get("/v1/assets/{asset_id}/stats", engagement.get_stats)
