"""Every request gets an id: the client's ``X-Request-Id`` when it is a sane token (the same
characters as an ``Idempotency-Key``), else a new UUID. It is echoed in the response's
``X-Request-Id`` (error responses included), carried by every log line of the request
(``medialog.runtime.logs``) and by the events the request causes (``correlationid``)."""

from __future__ import annotations

import re
from random import getrandbits

from aiohttp import web
from aiohttp.typedefs import Handler

from medialog.runtime.logs import REQUEST_ID

HEADER = "X-Request-Id"
KEY: web.RequestKey[str] = web.RequestKey("request_id")
_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_V4_KEEP = ((1 << 128) - 1) ^ (0xF000 << 64) ^ (0xC000 << 48)  # all but version and variant
_V4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_request_id() -> str:
    """A random (version 4) UUID, from the process's pseudo-random generator: an id is a label,
    not a secret, and ``uuid.uuid4`` (a system call and a UUID object) costs three times as
    much on every request without one."""
    h = f"{getrandbits(128) & _V4_KEEP | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def request_id_of(request: web.Request) -> str:
    """The id the middleware gave ``request``."""
    return request[KEY]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    asked = request.headers.get(HEADER, "")
    rid = asked if _SANE.match(asked) else new_request_id()
    request[KEY] = rid
    token = REQUEST_ID.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own (e.g. a redirect): keep the id on it
        exc.headers[HEADER] = rid
        raise
    finally:
        REQUEST_ID.reset(token)
    response.headers[HEADER] = rid
    return response
