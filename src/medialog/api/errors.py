"""The one error shape: ``{"error": {"code", "message", "details"}}`` for every 4xx/5xx.

Domain errors map to a status here, and only here (``error_answer``, from the api's middleware,
``medialog.api.edge``)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from medialog.domain import errors as e

log = logging.getLogger(__name__)

STATUS: dict[type[e.MedialogError], int] = {
    e.ValidationError: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.Unprocessable: 422,
    e.Unavailable: 503,
}
_HTTP_CODES = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}
RETRY_AFTER_S = "5"  # every 503: a dependency away; clients retry (with the same Idempotency-Key)


def error_response(
    status: int, code: str, message: str, details: list[Any] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    resp = web.json_response(body, status=status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="medialog"'
    elif status == 503:
        resp.headers["Retry-After"] = RETRY_AFTER_S
    return resp


def status_of(exc: e.MedialogError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The answer to ``exc``, raised while handling ``request``: a domain error's status and
    code; aiohttp's own HTTP errors (404, 405, 413…) in the same shape; anything else a logged
    500 ``INTERNAL_ERROR``. Redirects (aiohttp exceptions under 400) are not errors: the caller
    lets them through."""
    if isinstance(exc, e.MedialogError):
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s %s", request.method, request.path, exc.code, exc.message)
        return error_response(status, exc.code, exc.message, exc.details)
    if isinstance(exc, web.HTTPException):
        code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
        resp = error_response(exc.status, code, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")
