"""The access log keeps stream URLs' signatures (bearer credentials) out, on a real server."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from medialog.api.access_log import REDACTED, AccessLog
from medialog.api.routes import setup_routes


def stream_route() -> str:
    """The api's stream route, as ``routes.setup_routes`` declares it."""
    app = web.Application()
    setup_routes(app, api=True, serve_jwks=False)
    return next(r.canonical for r in app.router.resources()
                if r.canonical.startswith("/v1/stream/"))


async def test_a_stream_signature_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="#EXTM3U\n")

    app = web.Application()
    app.router.add_get(stream_route(), ok)
    app.router.add_get("/v1/assets/{asset_id}", ok)
    runner = web.AppRunner(app, access_log_class=AccessLog)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    signature = "k1.a.Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8"
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as http:
                for path in (f"/v1/stream/a1/1900000000/{signature}/master.m3u8",
                             "/v1/assets/a1?x=1"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        assert response.status == 200
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 2
    assert signature not in lines[0]
    assert f"GET /v1/stream/a1/1900000000/{REDACTED}/master.m3u8 HTTP/1.1\" 200" in lines[0]
    assert "GET /v1/assets/a1?x=1 HTTP/1.1\" 200" in lines[1]


def test_nothing_is_formatted_below_info() -> None:
    """aiohttp skips ``log`` when ``enabled`` is false: no line is built for a dropped record
    (the api runs at WARNING in benchmarks and often in production)."""
    logger = logging.getLogger("test.access")
    access = AccessLog(logger, "")
    logger.setLevel(logging.WARNING)
    assert not access.enabled
    logger.setLevel(logging.INFO)
    assert access.enabled
