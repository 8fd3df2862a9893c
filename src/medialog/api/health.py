"""``GET /health`` (alive) and ``GET /health/ready`` (every dependency, with latency; 503 if any
is down). Checks run concurrently, each bounded by a timeout. The dependencies are the process's
clients and its peers (``keys.PEERS``: processes it runs with, ready when their own
``/health/ready`` answers 200)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from medialog.api import keys

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 3.0


async def alive(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ffmpeg(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    for binary in (settings.ffmpeg_bin, settings.ffprobe_bin):
        proc = await asyncio.create_subprocess_exec(
            binary, "-version", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"{binary} -version failed")


async def _postgres(app: web.Application) -> None:
    async with app[keys.PG].acquire() as conn:
        await conn.fetchval("SELECT 1")


async def _kafka(app: web.Application) -> None:
    await app[keys.PRODUCER].client.fetch_all_metadata()


async def _clickhouse(app: web.Application) -> None:
    await app[keys.ANALYTICS].query("SELECT 1")


async def _s3(app: web.Application) -> None:
    await app[keys.BLOBS].check()


CHECKS: dict[str, Callable[[web.Application], Awaitable[None]]] = {
    "kafka": _kafka,
    "postgres": _postgres,
    "clickhouse": _clickhouse,
    "s3": _s3,
    "ffmpeg": _ffmpeg,
}


async def _peer(url: str) -> None:
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


async def _run(name: str, check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        result: dict[str, Any] = {"status": "up"}
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        # Unauthenticated endpoint: the type only; the detail (hosts, buckets) goes to the log.
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
        result = {"status": "down", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return result


async def ready(request: web.Request) -> web.Response:
    app = request.app
    # ClickHouse is opened only by the roles that use it (config.CLICKHOUSE_ROLES).
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        n: partial(f, app) for n, f in CHECKS.items() if n != "clickhouse" or keys.ANALYTICS in app
    }
    checks.update({name: partial(_peer, url) for name, url in app[keys.PEERS].items()})
    results = await asyncio.gather(*(_run(n, check) for n, check in checks.items()))
    deps = dict(zip(checks, results, strict=True))
    ok = all(r["status"] == "up" for r in deps.values())
    return web.json_response(
        {"status": "ready" if ok else "unavailable", "dependencies": deps}, status=200 if ok else 503
    )
