"""Parsing what a request brings: JSON bodies, the caller, ``Prefer: wait``, idempotency keys."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from medialog.api import keys
from medialog.api.auth.bearer import bearer_token
from medialog.api.auth.principal import Principal
from medialog.api.request_id import request_id_of
from medialog.domain.commands import CommandMeta
from medialog.domain.errors import (
    PayloadTooLarge,
    Unauthenticated,
    Unprocessable,
    ValidationError,
)
from medialog.ids import random_uuid

MAX_JSON_BYTES = 64 * 1024
MAX_WAIT_S = 30.0
_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_NAMESPACE = uuid.UUID("0b6b3f1e-3c1e-4c0a-8f0e-7a0f4f5e2d11")
_BODY: web.RequestKey[Any] = web.RequestKey("json_body")  # the parsed body, for the fingerprint
_PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")  # verified once
_CLAIM = (  # one round trip: the fingerprint stored for the command id, this one if it is new
    "WITH new AS (INSERT INTO idempotency_keys (command_id, fingerprint) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING RETURNING fingerprint) "
    "SELECT fingerprint FROM new UNION ALL "
    "SELECT fingerprint FROM idempotency_keys WHERE command_id = $1 LIMIT 1"
)


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"JSON body over {MAX_JSON_BYTES} bytes", code="BODY_TOO_LARGE")


async def _read_body(request: web.Request) -> bytes:
    """The whole body, however it arrives (several TCP segments, chunked): ``content.read(n)``
    returns what is buffered, so read until the end (b"") or ``Content-Length`` bytes, never
    more than MAX_JSON_BYTES + 1 bytes.
    Too large (by ``Content-Length``, or by the bytes read): PayloadTooLarge ``BODY_TOO_LARGE``."""
    length = request.content_length
    if length is not None and length > MAX_JSON_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while size != length and (chunk := await request.content.read(MAX_JSON_BYTES + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise _too_large()
    return b"".join(chunks)


async def read_json(request: web.Request) -> Any:
    """The JSON body: ``_read_body``, then 400 ``MALFORMED_JSON`` unless it is JSON in strict
    UTF-8 (RFC 8259; ``json.loads`` on bytes would also take UTF-16 and encoded surrogates), not
    nested too deep for the parser. What its strings may hold is each field's rule."""
    raw = await _read_body(request)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationError("body is not valid JSON", code="MALFORMED_JSON") from exc
    request[_BODY] = body
    return body


async def principal(request: web.Request) -> Principal:
    """The authenticated caller; raises Unauthenticated when absent or invalid. Verified once
    per request: the rate limiter may have done it already."""
    if _PRINCIPAL in request:
        return request[_PRINCIPAL]
    return await _verify(request)


async def _verify(request: web.Request) -> Principal:
    token = bearer_token(request.headers.get("Authorization"))
    verifier = request.app[keys.VERIFIER]
    who = verifier.remembered(token)
    if who is None:
        who = await verifier.verify(token)
    request[_PRINCIPAL] = who
    return who


async def verified_principal(request: web.Request) -> Principal | None:
    """The caller of a valid bearer token, else None (no token, or one that does not verify:
    the handler's ``principal`` refuses it). For code that must not refuse and comes first, the
    rate limiter: it verifies without looking for an earlier verification, which costs a
    ``KeyError`` (a request's ``in`` is ``Mapping``'s)."""
    if "Authorization" not in request.headers:
        return None
    try:
        return await _verify(request)
    except Unauthenticated:
        return None


async def optional_principal(request: web.Request) -> Principal | None:
    if "Authorization" not in request.headers:
        return None
    return await principal(request)


def prefer_wait(request: web.Request) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240), capped at 30; None when not asked."""
    match = _WAIT.search(request.headers.get("Prefer", ""))
    return min(float(match.group(1)), MAX_WAIT_S) if match else None


async def command_id(request: web.Request, who: Principal, scope: str) -> str:
    """A fresh id, or — with an ``Idempotency-Key`` — the same id for the same caller and key,
    so a retried request becomes the same command and the actor applies it once. The key is
    bound to the first request that used it (method, path and JSON body, as parsed: spacing and
    key order do not matter); the same key with another request raises ``Unprocessable``
    (``IDEMPOTENCY_KEY_REUSED``) before anything is sent. Call it after reading the body."""
    cmd_id = idempotent_id(request, who.user_id, scope)
    if "Idempotency-Key" in request.headers:
        fingerprint = hashlib.sha256(json.dumps(
            [request.method, request.path, request.get(_BODY)], sort_keys=True,
            separators=(",", ":")).encode()).hexdigest()
        async with request.app[keys.PG].acquire() as conn:
            stored = await conn.fetchval(_CLAIM, cmd_id, fingerprint)
        if stored != fingerprint:
            raise Unprocessable("this Idempotency-Key was used for another request; use a new "
                                "key for a new request", code="IDEMPOTENCY_KEY_REUSED")
    return cmd_id


def idempotent_id(request: web.Request, caller: str, scope: str) -> str:
    """``command_id`` for any caller identity (an anonymous viewer's key included)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return random_uuid()
    if not _IDEMPOTENCY_KEY.match(key):
        raise ValidationError(
            "Idempotency-Key must be 1–128 characters of [A-Za-z0-9._:-]",
            code="BAD_IDEMPOTENCY_KEY",
        )
    return str(uuid.uuid5(_NAMESPACE, f"{scope}\0{caller}\0{key}"))


def correlation_id(request: web.Request) -> str:
    """The request's id (``medialog.api.request_id``): the events it causes carry it."""
    return request_id_of(request)


def command_meta(request: web.Request, who: Principal, cmd_id: str, now: datetime) -> CommandMeta:
    """Who sent a command, when, and which request led to it."""
    return CommandMeta(
        command_id=cmd_id,
        issued_at=now,
        actor_id=who.user_id,
        actor_roles=tuple(sorted(who.roles)),
        correlation_id=correlation_id(request),
    )
