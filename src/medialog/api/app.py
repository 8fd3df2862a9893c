"""The HTTP application factory. ``create_app(settings, roles)`` opens the clients a role
process needs, each in its own cleanup context (no I/O at import or construction time), serves
``/health`` and ``/health/ready`` (ready when its own clients and its ``peers``, the processes it
was started with, are) and, for the api role, the REST routes. What else a process runs (Faust
agents, projection readers) the composition root (``medialog.bootstrap``) adds."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from medialog.api import health, keys
from medialog.api.auth.verifier import TokenVerifier
from medialog.api.cors import add_cors_headers
from medialog.api.edge import edge_middleware, prepare_headers
from medialog.api.rate_limit import rate_limits_ctx
from medialog.api.routes import setup_routes
from medialog.clickhouse import Analytics
from medialog.config import CLICKHOUSE_ROLES, Role, Settings
from medialog.issuer import load_private_key, public_jwks
from medialog.kafka import Lags
from medialog.runtime.notifier import Notifier
from medialog.runtime.pg_pool import open_pool
from medialog.runtime.publisher import Publisher
from medialog.signing import SigningKeys
from medialog.storage import BlobStore

log = logging.getLogger(__name__)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[keys.PG] = await open_pool(app[keys.SETTINGS])
    yield
    await app[keys.PG].close()


async def _clickhouse(app: web.Application) -> AsyncIterator[None]:
    analytics = Analytics(app[keys.SETTINGS].clickhouse_dsn)
    await analytics.open()
    app[keys.ANALYTICS] = analytics
    yield
    await analytics.close()


async def _blobs(app: web.Application) -> AsyncIterator[None]:
    app[keys.BLOBS] = BlobStore(app[keys.SETTINGS])
    yield


async def _publisher(app: web.Application) -> AsyncIterator[None]:
    publisher = Publisher(app[keys.SETTINGS])
    await publisher.start()
    app[keys.PUBLISHER] = publisher
    yield
    await publisher.stop()


async def _auth(app: web.Application) -> AsyncIterator[None]:
    s = app[keys.SETTINGS]
    local = None
    if s.jwt_private_key_file is not None:
        local = public_jwks(load_private_key(s.jwt_private_key_file))
        app[keys.LOCAL_JWKS] = local
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        app[keys.HTTP] = http
        app[keys.VERIFIER] = TokenVerifier.from_settings(s, http=http, local_jwks=local)
        yield


async def _notifier(app: web.Application) -> AsyncIterator[None]:
    notifier = Notifier()
    await notifier.start(app[keys.SETTINGS].postgres_dsn.get_secret_value())
    app[keys.NOTIFIER] = notifier
    yield
    await notifier.stop()


async def _signing(app: web.Application) -> AsyncIterator[None]:
    """Parse the streaming URL keys once; the api refuses to start without valid ones."""
    app[keys.SIGNING] = SigningKeys.parse(app[keys.SETTINGS].signing_keys.get_secret_value())
    yield


def create_app(
    settings: Settings, roles: frozenset[Role], *, peers: Mapping[str, str] | None = None
) -> web.Application:
    """``peers``: name → ``/health/ready`` URL of each process this one runs with (``medialog
    dev``'s roles process); this one is ready only when they are."""
    app = web.Application(middlewares=[edge_middleware], client_max_size=1024**2)
    # Headers every answer carries, streamed ones too: set as it is prepared.
    app.on_response_prepare.append(prepare_headers)
    if settings.cors_origins:
        app.on_response_prepare.append(add_cors_headers)
    app[keys.SETTINGS] = settings
    app[keys.ROLES] = roles
    app[keys.PEERS] = dict(peers or {})
    app[health.TOOLS] = health.tools_of(settings)
    app[health.READY] = health.ReadyCache()
    app[keys.LAGS] = Lags()
    app.cleanup_ctx.append(_postgres)
    app.cleanup_ctx.append(_notifier)
    if roles & CLICKHOUSE_ROLES:
        app.cleanup_ctx.append(_clickhouse)
    app.cleanup_ctx.append(_blobs)
    app.cleanup_ctx.append(_publisher)
    if "api" in roles:
        app.cleanup_ctx.append(_auth)
        app.cleanup_ctx.append(_signing)
        app.cleanup_ctx.append(rate_limits_ctx)
    setup_routes(app, api="api" in roles, serve_jwks=settings.jwt_private_key_file is not None)
    return app
