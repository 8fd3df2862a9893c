"""``GET /metrics`` (Prometheus text format, every role process) and ``observe``, which counts and
times every request by route template, method and status.

The route label is the matched aiohttp resource's canonical path (``/v1/assets/{asset_id}/views``),
``unmatched`` when no route matched (404, 405): raw paths would make a time series per id. A
method outside ``METHODS`` is ``other``, for the same reason. ``observe`` is on the hot path,
so each (route, method, status) keeps its child of ``HTTP_REQUESTS`` (a lock-free
``LoopHistogram``) in ``_CHILDREN``: a request costs a dict lookup and one observation."""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from medialog.api import keys
from medialog.runtime.metrics import HTTP_REQUESTS, LoopObserver, exposition

log = logging.getLogger(__name__)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LAG_TIMEOUT_S = 3.0  # as /health/ready's checks: a scrape never waits long for the broker

_CHILDREN: dict[tuple[str, str, int], LoopObserver] = {}


def route_of(request: web.Request) -> str:
    """The template of the route ``request`` matched, or ``UNMATCHED``."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def observe(request: web.Request, status: int, start: float) -> None:
    """Count the request, answered ``status``, and its time since ``start`` (``perf_counter``).
    Called by the api's middleware (``medialog.api.edge``) for every request; kept in one
    function, the hot path."""
    resource = request.match_info.route.resource
    key = (UNMATCHED if resource is None else resource.canonical, request.method, status)
    found = _CHILDREN.get(key)
    if found is None:
        route, method, _ = key
        found = _CHILDREN[key] = HTTP_REQUESTS.labels(
            route, method if method in METHODS else "other", str(status))
    found.observe(perf_counter() - start)


async def serve(request: web.Request) -> web.Response:
    """The process's metrics; the projections' lag asks the broker for its end offsets."""
    try:
        lags = await asyncio.wait_for(request.app[keys.LAGS].report(), LAG_TIMEOUT_S)
    except Exception as exc:  # a scrape answers whatever the broker does: lag left out
        log.warning("metrics: projection lag unknown: %s: %s", type(exc).__name__, exc)
        lags = {}
    return web.Response(body=exposition(lags), headers={"Content-Type": CONTENT_TYPE_LATEST})
