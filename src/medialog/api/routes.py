"""Every route, in one place: ``ROUTES`` declares each operation once (``operation.Route``): its
handler, and what the OpenAPI document (``medialog.api.openapi``) says of it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from medialog.analytics import params as analytics_params
from medialog.api import (
    analytics,
    assets,
    commands,
    docs,
    engagement,
    health,
    history,
    keys,
    metrics,
    openapi,
    playback,
    queries,
    read_models,
    status_token,
    streaming,
    transcode,
    uploads,
)
from medialog.api.operation import Param, Route
from medialog.domain.metadata import VISIBILITIES, MetadataPatch
from medialog.domain.playback import MIN_TTL_S
from medialog.domain.uploads import UploadRequest
from medialog.domain.view_reports import ViewReport


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.LOCAL_JWKS], headers={"Cache-Control": "max-age=300"})


def _int(low: int, high: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    return schema if default is None else {**schema, "default": default}


def _enum(values: Any, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    return schema if default is None else {**schema, "default": default}


_TIME = {"type": "string", "format": "date-time"}
RANGE = (
    Param("from", _TIME, "start (RFC 3339 with an offset); default: `to` − 7 days"),
    Param("to", _TIME, "end, exclusive; default: now"),
    Param("interval", _enum(analytics_params.INTERVALS, "day"), "bucket size"),
)
RANGE_ERRORS = {400: ("INVALID_TIME", "INVALID_RANGE", "RANGE_TOO_LONG", "INVALID_INTERVAL")}
NOT_FOUND = {404: ("ASSET_NOT_FOUND",)}
READ_MODEL_BUSY = {409: ("READ_MODEL_JOB_RUNNING",), 503: ("ANALYTICS_UNAVAILABLE",)}
READ_MODEL_JOB = {404: ("READ_MODEL_JOB_NOT_FOUND",), 503: ("ANALYTICS_UNAVAILABLE",)}
OWNER_WRITE = {404: ("ASSET_NOT_FOUND",), 403: ("NOT_OWNER",), 409: ("INVALID_TRANSITION",)}

ROUTES: tuple[Route, ...] = (
    # Playback reports first: aiohttp tries the routes under one prefix (here /v1/assets) in the
    # order they were added, and this one takes most requests (see ``bench/ingest.py``).
    Route(method="POST", path="/v1/assets/{asset_id}/views", handler=engagement.report_view,
          summary="Report playback (signed in or anonymous)", tag="engagement", auth="optional",
          body=ViewReport, idempotent=True,
          errors={400: ("INVALID_VIEW_REPORT",), **NOT_FOUND, 409: ("ASSET_NOT_PLAYABLE",)}),
    Route(method="POST", path="/v1/uploads", handler=uploads.create_upload,
          summary="Start an upload: an asset id and a presigned PUT", tag="uploads",
          roles=("creator", "admin"), body=UploadRequest, idempotent=True, waits=True,
          errors={413: ("UPLOAD_TOO_LARGE",), 409: ("ASSET_EXISTS",)}),
    Route(method="GET", path="/v1/assets", handler=assets.list_assets,
          summary="List the assets the caller may see", tag="assets", auth="optional",
          query=(
              Param("owner", {"type": "string"}, "only this owner's assets"),
              Param("status", _enum(queries.STATUSES), "only assets in this status"),
              Param("visibility", _enum(VISIBILITIES), "only this visibility"),
              Param("tag", {"type": "string", "maxLength": 30}, "only assets with this tag"),
              Param("q", {"type": "string", "maxLength": queries.Q_MAX},
                    "title contains (case-insensitive)"),
              Param("sort", _enum(queries.SORTS, "-created_at"), "order"),
              Param("page", _int(1, queries.PAGE_MAX, 1), "page number"),
              Param("limit", _int(1, queries.LIMIT_MAX, queries.LIMIT_DEFAULT), "page size"),
          )),
    Route(method="GET", path="/v1/assets/{asset_id}", handler=assets.get_asset,
          summary="One asset", tag="assets", auth="optional", errors=NOT_FOUND),
    Route(method="PATCH", path="/v1/assets/{asset_id}", handler=assets.update_asset,
          summary="Edit an asset's metadata (owner)", tag="assets", body=MetadataPatch,
          idempotent=True, waits=True, errors=OWNER_WRITE),
    Route(method="DELETE", path="/v1/assets/{asset_id}", handler=assets.delete_asset,
          summary="Delete an asset (owner or admin)", tag="assets", idempotent=True,
          waits=True, errors=OWNER_WRITE),
    Route(method="POST", path="/v1/assets/{asset_id}/complete", handler=uploads.complete_upload,
          summary="Say the upload's PUT is done (owner or admin)", tag="uploads",
          idempotent=True, waits=True,
          errors={**OWNER_WRITE, 409: ("INVALID_TRANSITION", "UPLOAD_MISSING", "UPLOAD_EMPTY",
                                       "UPLOAD_SIZE_MISMATCH", "UPLOAD_CONTENT_TYPE_MISMATCH",
                                       "UPLOAD_EXPIRED")}),
    Route(method="GET", path="/v1/assets/{asset_id}/history", handler=history.get_history,
          summary="The asset's events, in order (owner or admin)", tag="assets",
          query=(Param("after", _int(0, queries.SEQUENCE_MAX, 0), "events after this sequence"),
                 Param("limit", _int(1, queries.HISTORY_LIMIT_MAX,
                                     queries.HISTORY_LIMIT_DEFAULT), "at most this many")),
          errors={**NOT_FOUND, 403: ("NOT_OWNER",)}),
    Route(method="GET", path="/v1/assets/{asset_id}/status", handler=history.stream_status,
          summary="Follow the asset's status (Server-Sent Events)", tag="assets",
          auth="optional",
          query=(Param("access_token", {"type": "string"},
                       "a status token (`POST …/status-token`), for browsers' EventSource"),),
          errors={**NOT_FOUND, 401: ("STATUS_TOKEN_INVALID", "STATUS_TOKEN_EXPIRED")}),
    Route(method="POST", path="/v1/assets/{asset_id}/status-token",
          handler=status_token.create_status_token,
          summary="A short-lived token that opens this asset's status stream", tag="assets",
          errors=NOT_FOUND),
    Route(method="GET", path="/v1/commands/{command_id}", handler=commands.get_command,
          summary="A command's outcome", tag="commands", waits=True,
          errors={404: ("COMMAND_NOT_FOUND",)}),
    Route(method="POST", path="/v1/assets/{asset_id}/transcode",
          handler=transcode.request_transcode, summary="Transcode again (owner or admin)",
          tag="assets", body=transcode.TranscodeRequest, body_required=False, idempotent=True,
          waits=True, errors=OWNER_WRITE),
    Route(method="GET", path="/v1/assets/{asset_id}/playback", handler=playback.issue_playback,
          summary="Signed playback URLs", tag="playback", auth="optional",
          query=(Param("expires_in", {"type": "integer", "minimum": MIN_TTL_S},
                       "URL lifetime in seconds (at most MEDIALOG_PLAYBACK_TTL_MAX_S)",
                       maximum_setting="playback_ttl_max_s"),
                 Param("bind_ip", {"type": "boolean", "default": False},
                       "URLs verify only for the caller's address")),
          errors={**NOT_FOUND, 409: ("ASSET_NOT_PLAYABLE",), 400: ("CLIENT_ADDRESS_UNKNOWN",)}),
    Route(method="GET", path="/v1/stream/{asset}/{expires}/{signature}/{path}",
          handler=streaming.stream_object, summary="A signed playback object (HLS, thumbnail)",
          tag="playback", auth="none",
          errors={403: ("SIGNATURE_INVALID", "SIGNATURE_EXPIRED", "PATH_INVALID"),
                  404: ("NOT_FOUND",), 416: ("RANGE_NOT_SATISFIABLE",)}),
    Route(method="GET", path="/v1/analytics/assets/{asset_id}", handler=analytics.asset_analytics,
          summary="An asset's views and watch time over time (owner or admin)", tag="analytics",
          query=RANGE, errors={**RANGE_ERRORS, **NOT_FOUND}),
    Route(method="GET", path="/v1/analytics/creators/{creator_id}",
          handler=analytics.creator_analytics, summary="A creator's totals (self or admin)",
          tag="analytics", query=RANGE,
          errors={**RANGE_ERRORS, 403: ("FORBIDDEN_NOT_CREATOR",)}),
    Route(method="GET", path="/v1/analytics/overview", handler=analytics.overview,
          summary="Platform totals (admin)", tag="analytics", roles=("admin",), query=RANGE,
          errors=RANGE_ERRORS),
    Route(method="GET", path="/v1/trending", handler=analytics.trending,
          summary="Trending assets", tag="analytics", auth="optional",
          query=(Param("window", _enum(analytics_params.WINDOWS,
                                       analytics_params.DEFAULT_WINDOW), "time window"),
                 Param("limit", _int(1, analytics_params.MAX_LIMIT,
                                     analytics_params.DEFAULT_LIMIT), "at most this many")),
          errors={400: ("INVALID_WINDOW", "INVALID_LIMIT")}),
    Route(method="PUT", path="/v1/assets/{asset_id}/like", handler=engagement.like,
          summary="Like", tag="engagement", idempotent=True, waits=True, errors=NOT_FOUND),
    Route(method="DELETE", path="/v1/assets/{asset_id}/like", handler=engagement.unlike,
          summary="Unlike", tag="engagement", idempotent=True, waits=True, errors=NOT_FOUND),
    Route(method="GET", path="/v1/assets/{asset_id}/stats", handler=engagement.get_stats,
          summary="An asset's counters", tag="engagement", auth="optional", errors=NOT_FOUND),
    Route(method="POST", path="/v1/admin/read-models/analytics/verify",
          handler=read_models.start_verify, summary="Start verifying the ClickHouse read model",
          tag="operations", roles=("admin",), errors=READ_MODEL_BUSY),
    Route(method="POST", path="/v1/admin/read-models/analytics/replay",
          handler=read_models.start_replay, summary="Start replaying the ClickHouse read model",
          tag="operations", roles=("admin",), body=read_models.ReplayRequest,
          body_required=False, errors=READ_MODEL_BUSY),
    Route(method="GET", path="/v1/admin/read-models/jobs/{job_id}", handler=read_models.get_job,
          summary="A read-model job: progress, then its report", tag="operations",
          roles=("admin",), errors=READ_MODEL_JOB),
    Route(method="DELETE", path="/v1/admin/read-models/jobs/{job_id}",
          handler=read_models.cancel_job, summary="Cancel a read-model job", tag="operations",
          roles=("admin",), errors=READ_MODEL_JOB),
)
# Served by every role process, not only the api.
EVERY_PROCESS: tuple[Route, ...] = (
    Route(method="GET", path="/health", handler=health.alive, summary="Alive", tag="operations",
          auth="none", limited=False),
    Route(method="GET", path="/health/ready", handler=health.ready,
          summary="Ready: every dependency, with latency, version, uptime, memory and lag",
          tag="operations", auth="none", limited=False),
    Route(method="GET", path="/metrics", handler=metrics.serve,
          summary="Prometheus metrics", tag="operations", auth="none", limited=False),
)
JWKS = Route(method="GET", path="/.well-known/jwks.json", handler=jwks,
             summary="The public keys of medialog's own issuer", tag="operations", auth="none",
             limited=False)
DOCS = (
    Route(method="GET", path="/openapi.json", handler=openapi.serve,
          summary="This document", tag="operations", auth="none", limited=False),
    Route(method="GET", path="/docs", handler=docs.page, summary="API docs (Swagger UI)",
          tag="operations", auth="none", limited=False),
)


def api_routes(*, serve_jwks: bool) -> tuple[Route, ...]:
    """What the api serves besides ``EVERY_PROCESS``: the document describes exactly these."""
    return (*DOCS, *((JWKS,) if serve_jwks else ()), *ROUTES)


def _add(app: web.Application, route: Route) -> None:
    path = route.path.replace("{path}", "{path:.*}")
    if route.method == "GET":  # and HEAD
        app.router.add_get(path, route.handler)
    else:
        app.router.add_route(route.method, path, route.handler)


def setup_routes(app: web.Application, *, api: bool, serve_jwks: bool) -> None:
    for route in EVERY_PROCESS:
        _add(app, route)
    if not api:
        return
    routes = api_routes(serve_jwks=serve_jwks)
    app[keys.ROUTES] = (*EVERY_PROCESS, *routes)
    app.on_startup.append(openapi.prepare)
    for route in routes:
        _add(app, route)
    docs.setup_static(app)
    app.cleanup_ctx.append(engagement.engagement_ctx)  # after the pool's: create_app added it
