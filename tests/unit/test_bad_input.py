"""Bad input at the edge gets a 4xx with a code and changes nothing (security review F4, F5):
JSON bodies that arrive in pieces, deep nesting, NUL and lone surrogates in parameters, Unicode
digits, out-of-range integers, and an object store that answers 403/5xx while streaming.

The HTTP tests run the real handlers on a local aiohttp server, with in-memory stand-ins for
what they would reach only after the input was checked."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError, EndpointConnectionError

from medialog.api import keys
from medialog.api.auth.principal import Principal
from medialog.api.commands import get_command
from medialog.api.edge import edge_middleware
from medialog.api.queries import SEQUENCE_MAX, parse_history_query, parse_list_query
from medialog.api.requests import MAX_JSON_BYTES, read_json
from medialog.api.streaming import stream_object
from medialog.config import Settings
from medialog.domain.errors import ValidationError
from medialog.domain.playback import parse_params
from medialog.domain.text import check_text
from medialog.signing import SigningKeys, sign_stream
from medialog.storage import BlobStore

ASSET = "0b6f7c1e-1a2b-4c3d-8e9f-0123456789ab"


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json(request)})


def echo_app() -> web.Application:
    app = web.Application(middlewares=[edge_middleware])
    app.router.add_post("/echo", echo)
    return app


async def raw_http(server: TestServer, *pieces: bytes, pause_s: float = 0.2) -> tuple[int, Any]:
    """Send ``pieces`` as separate TCP writes ``pause_s`` apart; (status, JSON body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(pause_s)
            writer.write(piece)
            await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def request_head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\n{framing}\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# -- F4: the whole body, however it arrives ------------------------------------------------------

BODY = json.dumps({"title": "a title", "description": "d" * 3000}).encode()


async def test_a_body_in_two_tcp_writes_is_read_whole() -> None:
    async with serve(echo_app()) as server:
        status, answer = await raw_http(server, request_head(len(BODY)) + BODY[:100], BODY[100:])
    assert status == 200, answer
    assert answer == {"got": json.loads(BODY)}


async def test_a_chunked_body_is_read_whole() -> None:
    async with serve(echo_app()) as server:
        status, answer = await raw_http(server, request_head(None) + chunk(BODY[:100]),
                                        chunk(BODY[100:]) + chunk(b""))
    assert status == 200, answer
    assert answer == {"got": json.loads(BODY)}


async def test_a_chunked_body_from_the_aiohttp_client_is_read_whole() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(BODY), 512):
            yield BODY[i:i + 512]
            await asyncio.sleep(0.01)

    async with serve(echo_app()) as server, aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/echo"), data=pieces()) as resp:
            assert resp.status == 200 and await resp.json() == {"got": json.loads(BODY)}


async def test_the_64_kib_cap_holds_by_header_and_by_bytes_read() -> None:
    big = b'"' + b"x" * MAX_JSON_BYTES + b'"'
    just = b'"' + b"x" * (MAX_JSON_BYTES - 2) + b'"'
    async with serve(echo_app()) as server:
        status, answer = await raw_http(server, request_head(len(big)))  # no body needed
        assert (status, answer["error"]["code"]) == (413, "BODY_TOO_LARGE")
        status, answer = await raw_http(  # chunked: no Content-Length to judge by
            server, request_head(None) + chunk(big[:40_000]), chunk(big[40_000:]) + chunk(b""))
        assert (status, answer["error"]["code"]) == (413, "BODY_TOO_LARGE")
        status, answer = await raw_http(
            server, request_head(None) + chunk(just[:40_000]), chunk(just[40_000:]) + chunk(b""))
        assert status == 200 and len(answer["got"]) == MAX_JSON_BYTES - 2


# -- F5: malformed bodies ------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"[" * 60_000,  # RecursionError in the parser (was 500)
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"{", b"", b'{"title": "\xed\xa0\x80"}',  # not JSON; an encoded surrogate is not UTF-8
])
async def test_bodies_that_are_not_json_are_malformed_json(raw: bytes) -> None:
    async with serve(echo_app()) as server:
        status, answer = await raw_http(server, request_head(len(raw)) + raw)
    assert (status, answer["error"]["code"]) == (400, "MALFORMED_JSON")


# -- F5: free text in query parameters -----------------------------------------------------------

@pytest.mark.parametrize("params, field", [
    ({"q": "\x00"}, "q"), ({"q": "abc\x00def"}, "q"), ({"q": "\ud800"}, "q"),
    ({"owner": "\x00"}, "owner"), ({"owner": "u\udc80"}, "owner"),
    ({"tag": "\x00"}, "tag"), ({"tag": "rock\x00"}, "tag"), ({"tag": "\udfff"}, "tag"),
    ({"q": "a\x1bb"}, "q"), ({"page": "٣"}, "page"), ({"limit": "²"}, "limit"),
    ({"limit": "1_0"}, "limit"),
])
def test_list_parameters_with_nul_surrogates_or_unicode_digits_are_refused(
    params: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        parse_list_query(params)
    assert err.value.code == "VALIDATION_ERROR"
    assert [d["field"] for d in err.value.details] == [field]


def test_list_parameters_that_are_fine_stay_fine() -> None:
    query = parse_list_query({"q": "ça va", "owner": "user-1", "tag": " Live  Set ", "page": "2"})
    assert (query.q, query.owner, query.tag, query.page) == ("ça va", "user-1", "live set", 2)


@pytest.mark.parametrize("params, field", [
    ({"after": "3000000000"}, "after"), ({"after": str(SEQUENCE_MAX + 1)}, "after"),
    ({"after": "-1"}, "after"), ({"after": "²"}, "after"), ({"after": "9" * 5000}, "after"),
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "٣"}, "limit"),
])
def test_history_parameters_stay_in_range(params: dict[str, str], field: str) -> None:
    # after=3000000000 was a DataError from the int32 bind, so 500.
    with pytest.raises(ValidationError) as err:
        parse_history_query(params)
    assert err.value.code == "VALIDATION_ERROR"
    assert [d["field"] for d in err.value.details] == [field]


def test_history_parameters_defaults_and_bounds() -> None:
    assert parse_history_query({}) == (0, 100)
    last = parse_history_query({"after": str(SEQUENCE_MAX), "limit": "1000"})
    assert last == (SEQUENCE_MAX, 1000)


@pytest.mark.parametrize("ttl", ["²²²", "٣٦٠٠", "３６００", "3_600"])
def test_playback_expires_in_takes_ascii_digits_only(ttl: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_params({"expires_in": ttl}, default_ttl_s=3600, max_ttl_s=86400)
    assert err.value.details[0]["field"] == "expires_in"


def test_check_text_is_the_one_rule() -> None:
    for bad in ("\x00", "a\x1fb", "\x7f", "\x80", "\x9f", "\ud800", "x\udbff"):
        with pytest.raises(ValidationError):
            check_text(bad, "f")
    assert check_text("a\tb\nc\r", "f", multiline=True) == "a\tb\nc\r"
    with pytest.raises(ValidationError):
        check_text("a\tb", "f")
    with pytest.raises(ValidationError):
        check_text("a\x00b\n", "f", multiline=True)
    assert check_text("é 👩\u200d💻 \u00a0 \ufeff", "f") == "é 👩\u200d💻 \u00a0 \ufeff"


# -- F5: GET /v1/commands/%00 --------------------------------------------------------------------

class FakeConn:
    """Refuses NUL as PostgreSQL does; otherwise knows no command."""

    async def fetchrow(self, _sql: str, *args: Any) -> None:
        if any(isinstance(a, str) and "\x00" in a for a in args):
            raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")
        return None


class FakePool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield FakeConn()


class FakeVerifier:
    """Takes every token for alice's (``TokenVerifier``'s two entry points)."""

    def remembered(self, _token: str) -> Principal | None:
        return None

    async def verify(self, _token: str) -> Principal:
        return Principal(user_id="alice", roles=frozenset({"viewer"}))


async def test_a_command_id_with_nul_is_refused() -> None:
    app = web.Application(middlewares=[edge_middleware])
    app[keys.PG] = FakePool()  # type: ignore[assignment]
    app[keys.VERIFIER] = FakeVerifier()  # type: ignore[assignment]
    app.router.add_get("/v1/commands/{command_id}", get_command)
    auth = {"Authorization": "Bearer abc.def.ghi"}
    async with serve(app) as server, aiohttp.ClientSession(headers=auth) as http:
        async with http.get(server.make_url("/v1/commands/%00")) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "VALIDATION_ERROR"
        ok = "5f0c0a5e-3e5c-4e0e-9a37-1c1f3b0c2d4e"
        async with http.get(server.make_url(f"/v1/commands/{ok}")) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "pending"


# -- F5: the object store failing while streaming ------------------------------------------------

KEYS = SigningKeys.parse("k1:s1-" + "A" * 40)


class OneAssetPool:
    """The read model as the stream route reads it (``fetch_asset_ref``): ASSET, public, ready."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[OneAssetPool]:
        yield self

    async def fetchrow(self, _sql: str, asset_id: str) -> dict[str, Any] | None:
        if asset_id != ASSET:
            return None
        return {"asset_id": ASSET, "owner_id": "o", "status": "ready", "visibility": "public",
                "duration_s": None}


class FailingS3:
    """The S3 driver under a real ``BlobStore``, failing every object request with ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def head_object(self, **_: Any) -> None:
        raise self.exc

    get_object = head_object


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "no"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject")


@pytest.mark.parametrize("exc", [
    client_error(403, "403"), client_error(403, "AccessDenied"), client_error(500, "500"),
    client_error(503, "SlowDown"), EndpointConnectionError(endpoint_url="http://s3.invalid"),
])
async def test_the_object_store_failing_while_streaming_is_503(
        exc: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medialog.storage.boto3.client", lambda *_, **__: FailingS3(exc))
    app = web.Application(middlewares=[edge_middleware])
    app[keys.SIGNING] = KEYS
    app[keys.SETTINGS] = SimpleNamespace(bucket_previews="previews",  # type: ignore[assignment]
                                         trusted_proxies="")
    app[keys.BLOBS] = BlobStore(Settings())
    app[keys.PG] = OneAssetPool()  # type: ignore[assignment]
    app.router.add_get("/v1/stream/{asset}/{expires}/{signature}/{path:.*}", stream_object)
    expires = int(time.time()) + 3600
    path = f"/v1/stream/{ASSET}/{expires}/{sign_stream(KEYS, ASSET, expires)}/hls/360p/seg_00001.ts"
    async with serve(app) as server, aiohttp.ClientSession() as http:
        for method in (http.get, http.head):
            async with method(server.make_url(path)) as resp:
                assert resp.status == 503
                if resp.method == "GET":
                    body = await resp.json()
                    assert body["error"]["code"] == "STORE_UNAVAILABLE"
                    assert "s3.invalid" not in json.dumps(body)

