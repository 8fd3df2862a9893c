"""Rate limits on real requests: an api built in this process by ``create_app`` on the session's
stack (its PostgreSQL, Kafka and S3), with tiny limits, so the session's ``medialog dev`` (with
budgets the suite never spends) is left alone; and two api instances sharing one budget through
a real ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from medialog.api import keys
from medialog.api.app import create_app
from medialog.api.edge import edge_middleware
from medialog.api.rate_limit import rate_limits_ctx, spend
from medialog.config import Settings
from medialog.embedded.stack import SIGNING_KID
from tests.integration.test_engagement import uploaded_clip

pytestmark = [
    pytest.mark.integration,
    # api/request_id.py stores its id under a str key: aiohttp warns, the suite makes it an error
    pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning"),
]

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16
TINY = {"rate_limit_uploads": "2/minute", "rate_limit_views": "3/minute",
        "rate_limit_writes": "3/minute", "rate_limit_reads": "3/minute"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(title: str = "Rate limited") -> dict[str, Any]:
    return {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": len(CLIP),
            "title": title}


@contextlib.asynccontextmanager
async def api(stack: Any, **limits: str) -> AsyncIterator[str]:
    """An api on the session stack's services, in this process, with ``limits``; its base URL.
    ClickHouse: a chDB of its own (the stack's belongs to the ``medialog dev`` process)."""
    state = stack.state()
    with tempfile.TemporaryDirectory(prefix="medialog-rl-chdb-") as chdb:
        settings = Settings.from_env(**{
            **dict(stack.settings()),
            "signing_keys": f"{SIGNING_KID}:{state['signing_secret']}",
            "viewer_salt": state["viewer_salt"],
            "clickhouse_url": f"chdb://{chdb}/chdb",
            **TINY, **limits,
        })
        server = TestServer(create_app(settings, frozenset({"api"})), host="127.0.0.1")
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/")
        finally:
            await server.close()


def limit_headers(r: aiohttp.ClientResponse) -> tuple[str | None, ...]:
    return tuple(r.headers.get(h) for h in
                 ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))


async def test_an_upload_over_the_limit_is_refused_with_429_and_writes_nothing(http, stack):
    user = f"rl-{uuid.uuid4().hex[:8]}"
    token = stack.token(user, "creator")
    async with api(stack) as base:
        for remaining in ("1", "0"):
            async with http.post(f"{base}/v1/uploads", json=upload(), headers=auth(token)) as r:
                assert r.status == 202, await r.text()
                limit, left, reset = limit_headers(r)
                assert (limit, left) == ("2", remaining)
                assert reset is not None and 0 < int(reset) <= 60
        key = f"rl-{uuid.uuid4().hex}"
        async with http.post(f"{base}/v1/uploads", json=upload(),
                             headers={**auth(token), "Idempotency-Key": key}) as r:
            assert r.status == 429
            body = await r.json()
            headers = r.headers
        assert body["error"]["code"] == "RATE_LIMITED"
        assert set(body["error"]) == {"code", "message", "details"}
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("2", "0")
        assert 0 < int(headers["RateLimit-Reset"]) <= 60
        async with http.get(f"{base}/v1/assets", params={"owner": user}, headers=auth(token)) as r:
            assert r.status == 200
            listed = await r.json()
        assert listed["total"] == 2
    # The refused request claimed nothing: its Idempotency-Key, sent to the session's stack
    # (other budgets, same PostgreSQL) with ANOTHER body, is still free (else 422).
    async with http.post(f"{stack.base_url}/v1/uploads", json=upload("Another title"),
                         headers={**auth(token), "Idempotency-Key": key}) as r:
        assert r.status == 202, await r.text()


async def test_principals_and_anonymous_addresses_have_budgets_of_their_own(http, stack):
    alice, bob = (auth(stack.token(f"rl-{n}-{uuid.uuid4().hex[:8]}", "viewer"))
                  for n in ("alice", "bob"))
    async with api(stack) as base:
        statuses = []
        for headers in (alice, alice, alice, alice, bob, bob, bob, bob):
            async with http.get(f"{base}/v1/assets", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 200, 429] * 2
        anonymous = []
        for _ in range(4):
            async with http.get(f"{base}/v1/assets") as r:
                anonymous.append(r.status)
        assert anonymous == [200, 200, 200, 429]
        # a token that does not verify is limited as its address (then the handler refuses it)
        async with http.get(f"{base}/v1/assets/{uuid.uuid4()}/history",
                            headers=auth("not.a.token")) as r:
            assert r.status == 429


async def test_route_classes_have_budgets_of_their_own(http, stack):
    headers = auth(stack.token(f"rl-{uuid.uuid4().hex[:8]}", "creator"))
    missing = uuid.uuid4()
    async with api(stack) as base:
        for _ in range(3):
            async with http.get(f"{base}/v1/assets", headers=headers) as r:
                assert r.status == 200
        async with http.get(f"{base}/v1/assets", headers=headers) as r:
            assert r.status == 429
        # writes, views and uploads still have their whole budget: the handlers run (404, 202)
        async with http.patch(f"{base}/v1/assets/{missing}", json={"title": "New title"},
                              headers=headers) as r:
            assert r.status == 404
        view = {"session_id": "s-1", "watch_seconds": 5}
        async with http.post(f"{base}/v1/assets/{missing}/views", json=view,
                             headers=headers) as r:
            assert r.status == 404
        async with http.post(f"{base}/v1/uploads", json=upload(), headers=headers) as r:
            assert r.status == 202
            assert r.headers["RateLimit-Limit"] == "2"


async def test_health_is_never_limited_and_an_empty_limit_is_none(http, stack):
    async with api(stack, rate_limit_reads="1/minute", rate_limit_writes="") as base:
        for _ in range(5):
            for path in ("/health", "/health/ready"):
                async with http.get(f"{base}{path}") as r:
                    assert r.status == 200, path
                    assert "RateLimit-Limit" not in r.headers
        async with http.get(f"{base}/v1/assets") as r:
            assert r.status == 200
            assert r.headers["RateLimit-Limit"] == "1"
        async with http.get(f"{base}/v1/assets") as r:
            assert r.status == 429
        for _ in range(5):  # writes: unlimited
            async with http.patch(f"{base}/v1/assets/{uuid.uuid4()}", json={"title": "Abc"}) as r:
                assert r.status == 401
                assert "RateLimit-Limit" not in r.headers


# -- a view report's session budget ------------------------------------------------------------

async def folded_reports(stack: Any, asset_id: str) -> dict[tuple[bool, str], int]:
    """(signed in, session) → reports folded, of the asset's sessions in the read model."""
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    try:
        rows = await conn.fetch("SELECT signed_in, session_id, reports FROM view_sessions "
                                "WHERE asset_id = $1", asset_id)
    finally:
        await conn.close()
    return {(r["signed_in"], r["session_id"]): r["reports"] for r in rows}


async def test_a_view_session_over_its_budget_is_refused_and_writes_nothing(http, stack, clip):
    asset = await uploaded_clip(http, stack, f"rl-owner-{uuid.uuid4().hex[:8]}", clip)
    alice = auth(stack.token(f"rl-viewer-{uuid.uuid4().hex[:8]}", "viewer"))
    one, two = (f"s_{uuid.uuid4().hex[:12]}" for _ in range(2))

    async def view(base: str, session: str, headers: dict[str, str]
                   ) -> tuple[int, tuple[str | None, ...], Any, str | None]:
        async with http.post(f"{base}/v1/assets/{asset}/views", headers=headers,
                             json={"session_id": session, "watch_seconds": 1}) as r:
            return r.status, limit_headers(r)[:2], await r.json(), r.headers.get("Retry-After")

    async with api(stack, rate_limit_views="10/minute",
                   rate_limit_view_sessions="2/minute") as base:
        seen = [(await view(base, one, alice))[:2] for _ in range(2)]
        # the headers describe the budget closest to exhaustion: the session's
        assert seen == [(202, ("2", "1")), (202, ("2", "0"))]
        status, headers, body, retry_after = await view(base, one, alice)
        assert (status, headers, body["error"]["code"]) == (429, ("2", "0"), "RATE_LIMITED")
        assert retry_after is not None and 1 <= int(retry_after) <= 60
        # another session of the same viewer, and the same session id from another viewer (an
        # anonymous one), have budgets of their own
        assert (await view(base, two, alice))[:2] == (202, ("2", "1"))
        assert (await view(base, one, {}))[:2] == (202, ("2", "1"))
    async with api(stack, rate_limit_views="3/minute", rate_limit_view_sessions="") as base:
        # unlimited sessions: the caller's views budget alone, in the headers too
        assert [(await view(base, one, alice))[:2] for _ in range(4)] == [
            (202, ("3", "2")), (202, ("3", "1")), (202, ("3", "0")), (429, ("3", "0"))]
    # Nothing of the refused reports reached the log: events.views is keyed by asset, so once
    # the last accepted report is folded, so would be any refused one before it.
    expected = {(True, one): 5, (True, two): 1, (False, one): 1}
    deadline = time.monotonic() + 30
    while (folded := await folded_reports(stack, asset)) != expected:
        assert time.monotonic() < deadline, folded
        await asyncio.sleep(0.2)


# -- two api instances, one budget in Redis ------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real ``redis-server`` on a free port, in a temporary directory, nothing persisted."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.geteuid() == 0:
            pytest.fail("redis-server is missing: run scripts/system-deps.sh (as root)")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="medialog-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
                assert proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server not ready in 10 s"
                time.sleep(0.05)
            yield f"async+redis://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait(10)


async def ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def session_report(request: web.Request) -> web.Response:
    """A handler spending the ``view_sessions`` budget of the session in its path."""
    refused = await spend(request, "view_sessions", request.match_info["session"])
    return refused or web.json_response({"ok": True}, status=202)


@contextlib.asynccontextmanager
async def instance(redis: str) -> AsyncIterator[str]:
    """One api instance's rate limiting (its own settings object, its own limiter) in front of
    trivial routes; its base URL."""
    settings = Settings.from_env(rate_limit_storage=redis, rate_limit_reads="3/minute",
                                 rate_limit_view_sessions="2/minute")
    app = web.Application(middlewares=[edge_middleware])
    app[keys.SETTINGS] = settings
    app[keys.ROUTES] = ()
    app.cleanup_ctx.append(rate_limits_ctx)
    app.router.add_get("/v1/things", ok)
    app.router.add_post("/v1/sessions/{session}", session_report)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_two_instances_share_one_budget_through_redis(http, redis_url):
    async with instance(redis_url) as a, instance(redis_url) as b:
        seen = []
        for base in (a, b, a, b, a):
            async with http.get(f"{base}/v1/things") as r:
                seen.append((r.status, r.headers.get("RateLimit-Remaining")))
        assert seen == [(200, "2"), (200, "1"), (200, "0"), (429, "0"), (429, "0")]
        session = f"s-{uuid.uuid4().hex}"  # a handler's budget: shared the same way
        seen = []
        for base in (a, b, a):
            async with http.post(f"{base}/v1/sessions/{session}") as r:
                seen.append((r.status, r.headers.get("RateLimit-Remaining")))
        assert seen == [(202, "1"), (202, "0"), (429, "0")]
        async with http.post(f"{b}/v1/sessions/{session}-other") as r:
            assert (r.status, r.headers.get("RateLimit-Limit")) == (202, "2")


async def test_an_unreachable_storage_lets_requests_pass(http):
    async with instance(f"async+redis://127.0.0.1:{_free_port()}") as base:
        for _ in range(5):
            async with http.get(f"{base}/v1/things") as r:
                assert r.status == 200
                assert "RateLimit-Limit" not in r.headers
