"""The one application factory. ``create_app(settings, roles)`` wires the clients each role
needs, each opened in its own cleanup context (no I/O at import or construction time). The
api role serves the REST routes; actors and workers run as Faust agents and projections as
readers of their own (``projections.reader``), hosted in the same process, which also answers
``/health`` and ``/health/ready`` (ready when its own clients and its ``peers``, the processes it
was started with, are)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
from aiohttp import web

from medialog.api import health, keys
from medialog.api.auth import TokenVerifier
from medialog.api.errors import error_middleware
from medialog.api.notifier import Notifier
from medialog.api.routes import setup_routes
from medialog.clickhouse import Analytics
from medialog.config import CLICKHOUSE_ROLES, Role, Settings
from medialog.issuer import load_private_key, public_jwks
from medialog.kafka import Lags, new_producer
from medialog.signing import SigningKeys
from medialog.storage import BlobStore

if TYPE_CHECKING:
    from streams.app import StreamDeps

log = logging.getLogger(__name__)
FAUST_ROLES: frozenset[Role] = frozenset({"actors", "workers"})  # Faust agents
PROJECTION_ROLES: frozenset[Role] = frozenset({"projections", "analytics"})  # projections.reader


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    s = app[keys.SETTINGS]
    app[keys.PG] = await asyncpg.create_pool(
        s.postgres_dsn.get_secret_value(), min_size=1, max_size=s.postgres_pool_max
    )
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


async def _producer(app: web.Application) -> AsyncIterator[None]:
    producer = new_producer(app[keys.SETTINGS])
    await producer.start()
    app[keys.PRODUCER] = producer
    yield
    await producer.stop()


async def _auth(app: web.Application) -> AsyncIterator[None]:
    s = app[keys.SETTINGS]
    local = None
    if s.jwt_private_key_file is not None:
        local = public_jwks(load_private_key(s.jwt_private_key_file))
        app[keys.LOCAL_JWKS] = local
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        app[keys.HTTP] = http
        app[keys.VERIFIER] = TokenVerifier.from_settings(s, http=http, local_jwks=local)
        notifier = Notifier()
        await notifier.start(s.postgres_dsn.get_secret_value())
        app[keys.NOTIFIER] = notifier
        yield
        await notifier.stop()


async def _signing(app: web.Application) -> AsyncIterator[None]:
    """Parse the streaming URL keys once; the api refuses to start without valid ones."""
    app[keys.SIGNING] = SigningKeys.parse(app[keys.SETTINGS].signing_keys.get_secret_value())
    yield


def _deps(app: web.Application) -> StreamDeps:
    """What agents and projections need (``streams`` is imported only by roles that run them)."""
    from streams.app import StreamDeps

    return StreamDeps(
        settings=app[keys.SETTINGS],
        pool=app[keys.PG],
        blobs=app[keys.BLOBS],
        analytics=app.get(keys.ANALYTICS),
        lags=app[keys.LAGS],
    )


async def _streams(app: web.Application) -> AsyncIterator[None]:
    from streams.app import create_faust_app

    roles: frozenset[Role] = app[keys.ROLES]
    faust_app = create_faust_app(_deps(app), set(roles))
    app[keys.FAUST] = faust_app
    await faust_app.start()
    yield
    await faust_app.stop()


async def _projections(app: web.Application) -> AsyncIterator[None]:
    """Each projection of the roles reads and applies the log in a task of its own."""
    from projections.reader import readers, supervised

    roles: frozenset[Role] = app[keys.ROLES]
    tasks = [asyncio.create_task(supervised(name, run), name=name)
             for name, run in readers(_deps(app), set(roles)).items()]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create_app(
    settings: Settings, roles: frozenset[Role], *, peers: Mapping[str, str] | None = None
) -> web.Application:
    """``peers``: name → ``/health/ready`` URL of each process this one runs with (``medialog
    dev``'s roles process); this one is ready only when they are."""
    app = web.Application(middlewares=[error_middleware], client_max_size=1024**2)
    app[keys.SETTINGS] = settings
    app[keys.ROLES] = roles
    app[keys.PEERS] = dict(peers or {})
    app[health.TOOLS] = health.tools_of(settings)
    app[keys.LAGS] = Lags()
    app.cleanup_ctx.append(_postgres)
    if roles & CLICKHOUSE_ROLES:
        app.cleanup_ctx.append(_clickhouse)
    app.cleanup_ctx.append(_blobs)
    app.cleanup_ctx.append(_producer)
    if "api" in roles:
        app.cleanup_ctx.append(_auth)
        app.cleanup_ctx.append(_signing)
    if roles & FAUST_ROLES:
        app.cleanup_ctx.append(_streams)
    if roles & PROJECTION_ROLES:
        app.cleanup_ctx.append(_projections)
    setup_routes(app, api="api" in roles, serve_jwks=settings.jwt_private_key_file is not None)
    return app
