"""Every request gets an id: the client's ``X-Request-Id`` when it is a sane token (the same
characters as an ``Idempotency-Key``), else a new UUID (``assign``, from the api's middleware,
``medialog.api.edge``). It is echoed in the response's ``X-Request-Id`` (errors and streamed
answers included), carried by every log line of the request (``medialog.runtime.logs``) and by
the events the request causes (``correlationid``)."""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from multidict import istr

from medialog.ids import random_uuid

HEADER: Final = istr("X-Request-Id")  # istr: multidict does not case-fold it on every answer
KEY: web.RequestKey[str] = web.RequestKey("request_id")
_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def assign(request: web.Request) -> str:
    """Give ``request`` its id (see the module docstring) and return it."""
    asked = request.headers.get(HEADER, "")
    request[KEY] = rid = asked if _SANE.match(asked) else random_uuid()
    return rid


def request_id_of(request: web.Request) -> str:
    """The id ``assign`` gave ``request``."""
    return request[KEY]
