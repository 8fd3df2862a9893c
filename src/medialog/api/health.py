"""``GET /health`` (alive) and ``GET /health/ready`` (every dependency, with latency; 503 if any
is down). Checks run concurrently, each bounded by a timeout. The dependencies are the process's
clients and its peers (``keys.PEERS``: processes it runs with, ready when their own
``/health/ready`` answers 200). It also reports each projection's lag (``projections``: the end
offset minus the next offset to apply, per partition and in total), its own and its peers'.

The endpoint is unauthenticated, so a check must not cost a process per request: ffmpeg and
ffprobe (``<binary> -version``) are checked once per application and the success kept; a failure
is checked again at most every ``TOOLS_RECHECK_S`` seconds, and concurrent requests share the one
check in flight. The other checks are cheap calls on clients the process holds.

Nor may the endpoint be used to flood the dependencies: a process checks at most once per
``READY_CACHE_S`` (``ReadyCache``). Concurrent requests share the check in flight, and its whole
answer (body and status; ``checked_at`` says when) is reused until ``READY_CACHE_S`` after it
ended.

The answer also says what runs: ``version`` (the package's), ``uptime_s`` (since the
application was made), ``memory_rss_bytes`` (the process's resident memory, from
``/proc/self/status``; null where there is none) and the same of each peer (``peers``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cache, partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from medialog.api import keys
from medialog.config import Settings
from medialog.timefmt import iso

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 3.0
TOOLS_RECHECK_S = 30.0  # a failed ffmpeg/ffprobe check is run again no sooner than this
TOOLS_TIMEOUT_S = 10.0  # a ``-version`` that has not exited by then is killed: a failure
READY_CACHE_S = 1.0  # an answer of ``/health/ready`` is reused this long after its check ended
PROCESS_FIELDS = ("version", "uptime_s", "memory_rss_bytes")  # what a peer's answer adds
Answer = tuple[dict[str, Any], int]  # a readiness body and its HTTP status


async def alive(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _version(binary: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        binary, "-version", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        code = await asyncio.wait_for(proc.wait(), TOOLS_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"{binary} -version did not exit in {TOOLS_TIMEOUT_S}s") from None
    if code != 0:
        raise RuntimeError(f"{binary} -version failed")


class ToolsCheck:
    """Whether ffmpeg and ffprobe run, found out once: the first ``check()`` starts the probe,
    later ones await the same probe (its result once done). A failed probe is replaced by a new
    one on a ``check()`` at least ``TOOLS_RECHECK_S`` after it ended."""

    def __init__(self, binaries: tuple[str, ...]) -> None:
        self.binaries = binaries
        self._probe: asyncio.Task[None] | None = None
        self._ended_at = 0.0

    async def check(self) -> None:
        probe = self._probe
        if probe is None or (self._failed(probe)
                             and time.monotonic() - self._ended_at >= TOOLS_RECHECK_S):
            probe = self._probe = asyncio.create_task(self._run())
        # A caller's timeout cancels its wait, not the probe that other callers share.
        await asyncio.shield(probe)

    @staticmethod
    def _failed(probe: asyncio.Task[None]) -> bool:
        return probe.done() and (probe.cancelled() or probe.exception() is not None)

    async def _run(self) -> None:
        try:
            for binary in self.binaries:
                await _version(binary)
        finally:
            self._ended_at = time.monotonic()


TOOLS = web.AppKey("tools", ToolsCheck)  # set by the app factory (``tools_of``)


def tools_of(settings: Settings) -> ToolsCheck:
    """The check of the ffmpeg and ffprobe that ``settings`` name."""
    return ToolsCheck((settings.ffmpeg_bin, settings.ffprobe_bin))


async def _ffmpeg(app: web.Application) -> None:
    await app[TOOLS].check()


async def _postgres(app: web.Application) -> None:
    async with app[keys.PG].acquire() as conn:
        await conn.fetchval("SELECT 1")


async def _kafka(app: web.Application) -> None:
    await app[keys.PUBLISHER].producer.client.fetch_all_metadata()


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


async def _peer(url: str, lags: dict[str, Any], process: dict[str, Any]) -> None:
    """Ready when the peer's ``/health/ready`` is; the lag of its projections joins ``lags``,
    what runs there (``PROCESS_FIELDS``) fills ``process``."""
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        with contextlib.suppress(aiohttp.ContentTypeError, ValueError):
            answer = await response.json()
            lags.update(answer.get("projections", {}))
            process.update((k, answer[k]) for k in PROCESS_FIELDS if k in answer)
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


class ReadyCache:
    """An application's last readiness answer. ``answer(check)`` runs ``check`` when there is
    none yet, or when the last check ended ``READY_CACHE_S`` ago or more, or raised; otherwise
    it awaits the check in flight, or returns its answer. ``started``: when the application was
    made (its uptime counts from then)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._check: asyncio.Task[Answer] | None = None
        self._ended_at = 0.0

    async def answer(self, check: Callable[[], Awaitable[Answer]]) -> Answer:
        task = self._check
        if task is None or (task.done() and (
                task.cancelled() or task.exception() is not None
                or self.clock() - self._ended_at >= READY_CACHE_S)):
            task = self._check = asyncio.create_task(self._run(check))
        # A caller that goes away cancels its wait, not the check that other callers share.
        return await asyncio.shield(task)

    async def _run(self, check: Callable[[], Awaitable[Answer]]) -> Answer:
        try:
            return await check()
        finally:
            self._ended_at = self.clock()


READY = web.AppKey("ready", ReadyCache)  # set by the app factory


@cache
def package_version() -> str:
    return version("medialog")


def rss_bytes() -> int | None:
    """The process's resident memory (``VmRSS`` of ``/proc/self/status``); None without
    ``/proc`` (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # given in kB
    return None


async def ready(request: web.Request) -> web.Response:
    body, status = await request.app[READY].answer(partial(_check, request.app))
    return web.json_response(body, status=status)


async def _check(app: web.Application) -> Answer:
    # ClickHouse is opened only by the roles that use it (config.CLICKHOUSE_ROLES).
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        n: partial(f, app) for n, f in CHECKS.items() if n != "clickhouse" or keys.ANALYTICS in app
    }
    lags: dict[str, Any] = {}
    peers: dict[str, dict[str, Any]] = {name: {} for name in app[keys.PEERS]}
    checks.update({name: partial(_peer, url, lags, peers[name])
                   for name, url in app[keys.PEERS].items()})
    results, own = await asyncio.gather(
        asyncio.gather(*(_run(n, check) for n, check in checks.items())), _own_lags(app))
    deps = dict(zip(checks, results, strict=True))
    ok = all(r["status"] == "up" for r in deps.values())
    cached = app[READY]
    body = {"status": "ready" if ok else "unavailable", "checked_at": iso(datetime.now(UTC)),
            "version": package_version(),
            "uptime_s": round(cached.clock() - cached.started, 3),
            "memory_rss_bytes": rss_bytes(), "dependencies": deps,
            "projections": dict(sorted({**lags, **own}.items())), "peers": peers}
    return body, 200 if ok else 503


async def _own_lags(app: web.Application) -> dict[str, Any]:
    """The lag of this process's projections; none when the broker does not answer in time
    (the ``kafka`` check then says why)."""
    try:
        return await asyncio.wait_for(app[keys.LAGS].report(), CHECK_TIMEOUT_S)
    except Exception as exc:  # a readiness probe answers whatever the broker does
        log.warning("readiness: projection lag unknown: %s: %s", type(exc).__name__, exc)
        return {}
