"""CORS: pages served from ``Settings.cors_origins`` may call the api from a browser.

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  (``preflight``, from the api's middleware) before any handler: from an allowed origin 204 with
  ``Access-Control-Allow-Origin`` (that origin), ``-Allow-Methods`` (those of the routes the path
  matches), ``-Allow-Headers`` (``ALLOW_HEADERS``) and ``-Max-Age``; from any other origin (every
  origin when none is configured) 403 ``CORS_ORIGIN_NOT_ALLOWED``, and nothing runs. A
  preflight for a path no route serves goes on to its 404.
* Every other answer to an allowed origin, errors and streamed answers included, carries
  ``Access-Control-Allow-Origin`` and ``-Expose-Headers`` (``add_cors_headers``, on the app's
  ``on_response_prepare`` signal: a streamed answer's headers leave at ``prepare``, before a
  middleware could see them). An answer that sets its own ``Access-Control-Allow-Origin`` (stream
  URLs: any origin, the signature is the credential) keeps it.
* With origins configured, every answer says ``Vary: Origin``: a cache must not hand an answer
  made for one origin (or for none) to another. Without, ``add_cors_headers`` is not installed
  and only preflights are answered (403).
No cookies are used (bearer tokens), so credentials are never allowed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from aiohttp import web

from medialog.api import keys
from medialog.api.errors import error_response

ALLOW_HEADERS: Final = ("Authorization, Content-Type, Idempotency-Key, Prefer, X-Request-Id, "
                        "If-None-Match, Range")
EXPOSE_HEADERS: Final = ("Location, Retry-After, RateLimit-Limit, RateLimit-Remaining, "
                         "RateLimit-Reset, X-Request-Id, Preference-Applied, WWW-Authenticate")
MAX_AGE_S: Final = "600"
NOT_ALLOWED: Final = "CORS_ORIGIN_NOT_ALLOWED"
_ALLOW_ORIGIN: Final = "Access-Control-Allow-Origin"


@lru_cache(maxsize=8)
def allowed_origins(spec: str) -> frozenset[str]:
    """``Settings.cors_origins`` (validated and normalised at start) as a set."""
    return frozenset(spec.split(",")) if spec else frozenset()


def _vary_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Origin"
    elif "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin"


def _route_methods(request: web.Request) -> set[str] | None:
    """The methods of the routes ``request``'s path matches, when none takes its method."""
    exc = request.match_info.http_exception
    return exc.allowed_methods if isinstance(exc, web.HTTPMethodNotAllowed) else None


def preflight(request: web.Request) -> web.Response | None:
    """The answer to a preflight (module docstring), or None: not a preflight, or one for a
    path no route serves (it goes on to its 404)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = request.headers.get("Origin")
    methods = _route_methods(request)
    if origin is None or methods is None:
        return None
    if origin not in allowed_origins(request.app[keys.SETTINGS].cors_origins):
        return error_response(403, NOT_ALLOWED, "this origin may not call the api")
    return web.Response(status=204, headers={
        _ALLOW_ORIGIN: origin,
        "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE_S,
        "Vary": "Origin",
    })


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``, only when origins are configured: ``Vary: Origin``, and the CORS
    headers of an answer to an allowed origin."""
    spec = request.app[keys.SETTINGS].cors_origins
    _vary_origin(response)
    origin = request.headers.get("Origin")
    if (origin is not None and _ALLOW_ORIGIN not in response.headers
            and origin in allowed_origins(spec)):
        response.headers[_ALLOW_ORIGIN] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
