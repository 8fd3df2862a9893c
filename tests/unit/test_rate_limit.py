"""The rate limiter's pure parts: route classes, the in-memory counters, the settings' rules, and
the middleware over a trivial route (memory storage, no stack)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from medialog.api import keys, routes
from medialog.api import rate_limit as rl
from medialog.api.edge import edge_middleware
from medialog.api.rate_limit import MemoryCounters, route_class
from medialog.config import Settings


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/uploads", "uploads"),
    ("POST", "/v1/assets/{asset_id}/views", "views"),
    ("POST", "/v1/assets/{asset_id}/complete", "writes"),
    ("PATCH", "/v1/assets/{asset_id}", "writes"),
    ("PUT", "/v1/assets/{asset_id}/like", "writes"),
    ("DELETE", "/v1/assets/{asset_id}", "writes"),
    ("GET", "/v1/uploads", "reads"),
    ("GET", "/v1/assets/{asset_id}", "reads"),
    ("HEAD", "/v1/stream/{asset}/{expires}/{signature}/{path}", "reads"),
    ("GET", "/health", None),
    ("GET", "/health/ready", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/docs/swagger-ui.css", None),
    ("GET", "/.well-known/jwks.json", None),
    ("OPTIONS", "/v1/uploads", None),
])
def test_route_classes(method: str, path: str, expected: str | None) -> None:
    """The unlimited paths are those the route table marks ``limited=False``."""
    unlimited = frozenset(r.path for r in (*routes.EVERY_PROCESS, *routes.api_routes(
        serve_jwks=True)) if not r.limited)
    assert route_class(method, path, unlimited) == expected


def test_memory_counters_count_per_key_until_the_window_ends() -> None:
    counters = MemoryCounters(sweep_s=10.0)
    assert [counters.hit("a", 60, 1000.0) for _ in range(3)] == [
        (1, 1060.0), (2, 1060.0), (3, 1060.0)]
    assert counters.hit("b", 60, 1000.0) == (1, 1060.0)
    assert counters.hit("a", 60, 1059.9) == (4, 1060.0)
    # the window ended: a new one starts with this hit
    assert counters.hit("a", 60, 1060.0) == (1, 1120.0)


def test_memory_counters_drop_expired_keys_in_a_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rl.time, "time", lambda: 1000.0)
    counters = MemoryCounters(sweep_s=10.0)
    for n in range(100):
        counters.hit(f"k{n}", 5, 1000.0)
    counters.hit("long", 600, 1000.0)
    assert counters.hit("long", 600, 1011.0) == (2, 1600.0)  # past the next sweep
    assert set(counters._counters) == {"long"}


@pytest.mark.parametrize("value", ["100/day", "600/minute", "10 per 2 hours", "", "  "])
def test_rate_limit_settings_take_one_limit_or_nothing(value: str) -> None:
    assert Settings(rate_limit_uploads=value).rate_limit_uploads == value.strip()
    assert Settings(rate_limit_view_sessions=value).rate_limit_view_sessions == value.strip()


@pytest.mark.parametrize("value", ["100", "many/day", "10/second;600/minute", "1/day,2/week"])
def test_rate_limit_settings_refuse_anything_else(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limit_reads=value)
    with pytest.raises(ValidationError):
        Settings(rate_limit_view_sessions=value)


@pytest.mark.parametrize("value", ["redis://127.0.0.1:6379", "memory", ""])
def test_the_storage_is_memory_or_an_async_uri(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limit_storage=value)
    assert Settings(rate_limit_storage="async+redis://r:6379").rate_limit_storage


CALLS = web.AppKey("calls", list[str])  # the paths whose handler ran


async def _ok(request: web.Request) -> web.Response:
    request.app[CALLS].append(request.path)
    return web.json_response({"ok": True})


async def _session(request: web.Request) -> web.Response:
    refused = await rl.spend(request, "view_sessions", request.match_info["session"])
    if refused is not None:
        return refused
    request.app[CALLS].append(request.path)
    return web.json_response({"ok": True}, status=202)


@contextlib.asynccontextmanager
async def serve(**limits: str) -> AsyncIterator[tuple[str, list[str]]]:
    app = web.Application(middlewares=[edge_middleware])
    app[CALLS] = []
    app[keys.SETTINGS] = Settings(**limits)  # type: ignore[arg-type]
    app[keys.ROUTES] = routes.EVERY_PROCESS  # /health: limited=False
    app.cleanup_ctx.append(rl.rate_limits_ctx)
    app.router.add_get("/things", _ok)
    app.router.add_post("/v1/uploads", _ok)
    app.router.add_get("/health", _ok)
    app.router.add_post("/sessions/{session}", _session)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app[CALLS]
    finally:
        await server.close()


async def test_the_middleware_answers_429_before_the_handler_runs() -> None:
    async with serve(rate_limit_reads="2/minute", rate_limit_uploads="1/day") as (base, calls), \
            ClientSession() as http:
        seen = []
        for _ in range(3):
            async with http.get(f"{base}/things") as r:
                seen.append((r.status, r.headers.get("RateLimit-Limit"),
                             r.headers.get("RateLimit-Remaining"), "Retry-After" in r.headers))
                body = await r.json()
        assert seen == [(200, "2", "1", False), (200, "2", "0", False), (429, "2", "0", True)]
        assert body["error"]["code"] == "RATE_LIMITED"
        assert 0 < int(r.headers["RateLimit-Reset"]) <= 60
        assert r.content_type == "application/json"
        assert calls == ["/things", "/things"]
        async with http.post(f"{base}/v1/uploads") as r:  # another class: its own budget
            assert r.status == 200
        async with http.post(f"{base}/v1/uploads") as r:
            assert r.status == 429
            assert 82800 < int(r.headers["Retry-After"]) <= 86400
        async with http.get(f"{base}/nowhere") as r:  # no route: limited as a read
            assert r.status == 429
        for _ in range(3):
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
                assert "RateLimit-Limit" not in r.headers


async def test_unlimited_classes_skip_the_limiter() -> None:
    async with serve(rate_limit_reads="") as (base, _), ClientSession() as http:
        for _ in range(5):
            async with http.get(f"{base}/things") as r:
                assert r.status == 200
                assert "RateLimit-Limit" not in r.headers


async def test_a_handlers_budget_refuses_before_the_handler_writes() -> None:
    async with serve(rate_limit_writes="3/minute", rate_limit_view_sessions="2/minute") as (
            base, calls), ClientSession() as http:
        seen = []
        for session in ("a", "a", "a", "b"):
            async with http.post(f"{base}/sessions/{session}") as r:
                seen.append((r.status, r.headers.get("RateLimit-Limit"),
                             r.headers.get("RateLimit-Remaining"), "Retry-After" in r.headers))
                body = await r.json()
        # the headers are those of the budget closest to exhaustion; a 429, of the one exceeded
        assert seen == [(202, "2", "1", False), (202, "2", "0", False), (429, "2", "0", True),
                        (429, "3", "0", True)]
        assert body["error"]["code"] == "RATE_LIMITED"
        assert calls == ["/sessions/a", "/sessions/a"]


@pytest.mark.parametrize(("sessions", "expected"), [
    ("5/minute", [("2", "1"), ("2", "0")]),  # the route class's budget is the closer one
    ("", [("2", "1"), ("2", "0")]),  # sessions unlimited
    ("1/minute", [("1", "0"), ("1", "0")]),  # the second: 429 of the session's budget
])
async def test_the_headers_follow_the_budget_closest_to_exhaustion(
        sessions: str, expected: list[tuple[str, str]]) -> None:
    async with serve(rate_limit_writes="2/minute", rate_limit_view_sessions=sessions) as (
            base, _), ClientSession() as http:
        seen = []
        for _ in expected:
            async with http.post(f"{base}/sessions/s") as r:
                seen.append((r.headers.get("RateLimit-Limit"),
                             r.headers.get("RateLimit-Remaining")))
        assert seen == expected
