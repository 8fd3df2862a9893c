"""The api and the buckets from a browser, on the real embedded stack: CORS for the configured
origin only (preflights, actual answers, errors), security headers on every kind of answer
(JSON, error, Server-Sent Events), the client's address through a trusted proxy only, and
the status stream opened with a status token, as an ``EventSource`` must.

The session's stack allows ``stack.browser_origin`` and trusts a proxy on 127.0.0.1 (see
``tests/conftest.py``); a request from 127.0.0.2 comes from an untrusted peer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from medialog.api import status_token
from medialog.domain.access import Viewer
from medialog.domain.view_reports import anonymous_viewer_key
from medialog.signing import SigningKeys
from tests.integration.test_engagement import eventually, ready_asset

pytestmark = pytest.mark.integration
EVIL = "http://evil.medialog.test"
CSP = "default-src 'none'; frame-ancestors 'none'"


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
async def pg(stack: Any) -> Any:
    conn = await asyncpg.connect(stack.settings().postgres_dsn.get_secret_value())
    yield conn
    await conn.close()


async def new_upload(http: Any, stack: Any, owner: str) -> dict[str, Any]:
    payload = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 3}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload,
                         headers=auth(stack.token(owner, "creator"))) as r:
        body: dict[str, Any] = await r.json()
    assert r.status == 202, body
    return body


def preflight(origin: str, method: str, headers: str = "") -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return asked


def assert_security_headers(headers: Any) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == CSP


# -- CORS on the api -----------------------------------------------------------------------------


async def test_preflight_from_the_allowed_origin(http, stack):
    origin = stack.browser_origin
    async with http.options(f"{stack.base_url}/v1/uploads",
                            headers=preflight(origin, "POST", "authorization,content-type")) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert r.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key", "prefer",
                "x-request-id"} <= allowed
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in r.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in r.headers
    # the methods are those of the route the path matches
    async with http.options(f"{stack.base_url}/v1/assets/{uuid.uuid4()}",
                            headers=preflight(origin, "PATCH")) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Methods"] == "DELETE, GET, HEAD, PATCH"


async def test_preflight_from_another_origin_is_refused(http, stack):
    async with http.options(f"{stack.base_url}/v1/uploads",
                            headers=preflight(EVIL, "POST", "authorization")) as r:
        body = await r.json()
        assert r.status == 403
        assert body["error"]["code"] == "CORS_ORIGIN_NOT_ALLOWED"
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Access-Control-Allow-Methods" not in r.headers
        assert r.headers["X-Request-Id"]
    # without a preflight's headers an OPTIONS is what it always was
    async with http.options(f"{stack.base_url}/v1/uploads") as r:
        assert r.status == 405


async def test_actual_answers_carry_cors_only_for_the_allowed_origin(http, stack):
    origin = stack.browser_origin
    payload = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 3}
    async with http.post(f"{stack.base_url}/v1/uploads", json=payload,
                         headers=auth(stack.token("browser1", "creator"), Origin=origin)) as r:
        assert r.status == 202
        assert r.headers["Access-Control-Allow-Origin"] == origin
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                "RateLimit-Reset", "X-Request-Id"} <= exposed
        assert "Origin" in r.headers["Vary"]
    for headers in ({"Origin": EVIL}, {}):
        async with http.get(f"{stack.base_url}/v1/assets?limit=1", headers=headers) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers
            assert "Access-Control-Expose-Headers" not in r.headers


async def test_error_answers_carry_cors(http, stack):
    origin = {"Origin": stack.browser_origin}
    cases = [
        ("GET", f"/v1/assets/{uuid.uuid4()}", origin, 404, "ASSET_NOT_FOUND"),
        ("POST", "/v1/uploads", {**origin, "Authorization": "Bearer nope"}, 401, None),
        ("PUT", "/v1/uploads", origin, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/nowhere", origin, 404, "ROUTE_NOT_FOUND"),
    ]
    for method, path, headers, status, code in cases:
        async with http.request(method, f"{stack.base_url}{path}", headers=headers) as r:
            body = await r.json()
            assert r.status == status, (path, body)
            assert code is None or body["error"]["code"] == code
            assert r.headers["Access-Control-Allow-Origin"] == stack.browser_origin
            assert "WWW-Authenticate" in r.headers["Access-Control-Expose-Headers"]
            assert_security_headers(r.headers)


# -- security headers ------------------------------------------------------------------------------


async def test_security_headers_on_json_and_errors(http, stack):
    for path, status in (("/health", 200), ("/v1/assets?limit=1", 200),
                         (f"/v1/assets/{uuid.uuid4()}", 404), ("/v1/assets?limit=x", 400)):
        async with http.get(f"{stack.base_url}{path}") as r:
            assert r.status == status, path
            assert_security_headers(r.headers)


# -- the status stream from a browser --------------------------------------------------------------


async def first_status(http: Any, url: str, headers: dict[str, str] | None = None) -> Any:
    """The response and the first ``event: status`` message of a status stream."""
    async with http.get(url, headers=headers or {}) as r:
        if r.status != 200:
            return r, await r.json()
        lines: list[str] = []
        while "event: status" not in lines or lines[-1] != "":
            lines.append((await asyncio.wait_for(r.content.readline(), 10)).decode().rstrip("\n"))
        return r, lines


async def test_status_stream_opens_with_a_status_token(http, stack):
    owner = "browser2"
    asset = (await new_upload(http, stack, owner))["asset_id"]
    url = f"{stack.base_url}/v1/assets/{asset}/status-token"
    async with http.post(url, headers=auth(stack.token(owner, "creator"))) as r:
        minted = await r.json()
    assert r.status == 201, minted
    assert minted["expires_at"].endswith("Z") and minted["token"]
    marker = uuid.uuid4().hex
    stream = (f"{stack.base_url}/v1/assets/{asset}/status?access_token={minted['token']}"
              f"&probe={marker}")
    r, lines = await first_status(http, stream, {"Origin": stack.browser_origin,
                                                 "X-Request-Id": f"sse-{marker}"})
    assert r.status == 200, lines
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Access-Control-Allow-Origin"] == stack.browser_origin
    assert r.headers["X-Request-Id"] == f"sse-{marker}"  # a streamed answer echoes it too
    assert_security_headers(r.headers)
    assert "event: status" in lines and any(asset in line for line in lines)

    # the token is a credential: the access log names the request, never the token
    async def logged() -> str:
        lines = [line for line in stack.log_path.read_text(errors="replace").splitlines()
                 if marker in line]
        return lines[0] if lines else ""
    line = await eventually(logged)
    assert "access_token=REDACTED" in line
    assert minted["token"] not in stack.log_path.read_text(errors="replace")

    # private asset: without a credential the stream is not found
    r, body = await first_status(http, f"{stack.base_url}/v1/assets/{asset}/status")
    assert r.status == 404


async def test_status_tokens_that_do_not_open_the_stream(http, stack):
    owner = "browser3"
    first = (await new_upload(http, stack, owner))["asset_id"]
    other = (await new_upload(http, stack, owner))["asset_id"]
    async with http.post(f"{stack.base_url}/v1/assets/{first}/status-token",
                         headers=auth(stack.token(owner, "creator"))) as r:
        token = (await r.json())["token"]
    state = stack.state()
    keys = SigningKeys.parse(f"k1:{state['signing_secret']}")
    expired = status_token.mint(keys, first, Viewer(user_id=owner), int(time.time()) - 5)
    foreign = status_token.mint(SigningKeys.parse("k1:" + "x" * 40), first, Viewer(user_id=owner),
                                int(time.time()) + 60)
    cases = [
        (other, token, "STATUS_TOKEN_INVALID"),  # minted for another asset
        (first, expired, "STATUS_TOKEN_EXPIRED"),
        (first, foreign, "STATUS_TOKEN_INVALID"),  # not our key
        (first, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "STATUS_TOKEN_INVALID"),
        (first, "garbage", "STATUS_TOKEN_INVALID"),
        (first, "", "STATUS_TOKEN_INVALID"),
    ]
    for asset, presented, code in cases:
        r, body = await first_status(
            http, f"{stack.base_url}/v1/assets/{asset}/status?access_token={presented}")
        assert r.status == 401, (code, body)
        assert body["error"]["code"] == code
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # the token is no bearer token
    async with http.get(f"{stack.base_url}/v1/assets/{first}",
                        headers=auth(token)) as r:
        assert r.status == 401


async def test_minting_a_status_token_needs_read_access(http, stack):
    asset = (await new_upload(http, stack, "browser4"))["asset_id"]
    url = f"{stack.base_url}/v1/assets/{asset}/status-token"
    async with http.post(url) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "TOKEN_MISSING"
    async with http.post(url, headers=auth(stack.token("someone-else", "creator"))) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "ASSET_NOT_FOUND"
    async with http.post(url, headers=auth(stack.token("an-admin", "admin"))) as r:
        assert r.status == 201


# -- the client's address behind a trusted proxy ---------------------------------------------------


async def test_forwarded_address_names_anonymous_viewers_only_from_a_trusted_peer(stack, pg):
    asset = await ready_asset(stack, pg)
    salt = stack.state()["viewer_salt"].encode()
    sessions: dict[str, str] = {}  # session → the address its viewer key must be made from

    async def send(session: str, local: str, headers: dict[str, str]) -> None:
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=connector) as http, http.post(
                f"{stack.base_url}/v1/assets/{asset}/views", headers=headers,
                json={"session_id": session, "watch_seconds": 1}) as r:
            assert r.status == 202, await r.text()

    cases = [
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"}, "203.0.113.9"),
        ("127.0.0.1", {"Forwarded": 'for="[2001:db8::5]:443";proto=https'}, "2001:db8::5"),
        ("127.0.0.1", {"X-Forwarded-For": "not-an-address"}, "127.0.0.1"),
        ("127.0.0.1", {}, "127.0.0.1"),
        ("127.0.0.2", {"X-Forwarded-For": "198.51.100.7"}, "127.0.0.2"),  # untrusted peer
    ]
    for local, headers, address in cases:
        session = "s_" + uuid.uuid4().hex[:16]
        sessions[session] = address
        await send(session, local, headers)

    async def keys_of_sessions() -> dict[str, str]:
        rows = await pg.fetch("SELECT session_id, viewer_key FROM view_sessions "
                              "WHERE asset_id = $1", asset)
        return {r["session_id"]: r["viewer_key"] for r in rows} if len(rows) == len(
            sessions) else {}
    found = await eventually(keys_of_sessions)
    for session, address in sessions.items():
        assert found[session] == anonymous_viewer_key(salt, address), address
    assert found[next(iter(sessions))] != found[list(sessions)[-1]]


# -- CORS on the buckets ---------------------------------------------------------------------------


async def test_bucket_cors_on_the_embedded_s3(http, stack):
    origin = stack.browser_origin
    upload = await new_upload(http, stack, "browser5")
    put_url = upload["upload_url"]
    async with http.options(put_url, headers=preflight(origin, "PUT", "content-type")) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
    async with http.options(put_url, headers=preflight(EVIL, "PUT", "content-type")) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
    async with http.put(put_url, data=b"abc",
                        headers={**upload["headers"], "Origin": origin}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    s3 = stack.settings().s3_endpoint
    for bucket in ("masters", "previews"):
        url = f"{s3}/{bucket}/some/object"
        async with http.options(url, headers=preflight(origin, "GET", "range")) as r:
            assert r.status == 200, bucket
            assert r.headers["Access-Control-Allow-Origin"] == origin
        async with http.options(url, headers=preflight(EVIL, "GET")) as r:
            assert r.status == 403, bucket
        # SeaweedFS answers 200 without Access-Control-Allow-Methods: a browser refuses
        async with http.options(url, headers=preflight(origin, "PUT")) as r:
            assert "PUT" not in r.headers.get("Access-Control-Allow-Methods", ""), bucket
