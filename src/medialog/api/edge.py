"""What every api request goes through around its handler, in one middleware: each middleware
is a coroutine per request, and a frame every resume of the handler passes through.

``edge_middleware``, in order:

1. the request gets its id (``request_id.assign``), set in the log context for its lines;
2. a CORS preflight is answered (``cors.preflight``), and nothing else runs;
3. the caller's rate limit is spent (``rate_limit.admit``): over it, 429 and no handler;
4. the handler; an exception becomes its answer in the one error shape
   (``errors.error_answer``), a redirect passes;
5. the ``RateLimit-*`` headers (``rate_limit.stamp``), and the request is counted and timed
   by route template and the status answered (``metrics.observe``). A cancelled request (the
   client left) is not counted.

``prepare_headers`` (the app's ``on_response_prepare``) sets what every answer carries, errors,
redirects and streamed answers included: the request id and the security headers."""

from __future__ import annotations

from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler

from medialog.api import cors, rate_limit, request_id
from medialog.api.errors import error_answer
from medialog.api.metrics import observe
from medialog.api.security_headers import set_security_headers
from medialog.runtime.logs import REQUEST_ID


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = perf_counter()
    token = REQUEST_ID.set(request_id.assign(request))
    response: web.StreamResponse
    try:
        preflight = cors.preflight(request)
        if preflight is not None:
            response = preflight
        else:
            try:
                response = await rate_limit.admit(request) or await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    observe(request, exc.status, start)
                    raise
                response = error_answer(request, exc)
            except Exception as exc:
                response = error_answer(request, exc)
            rate_limit.stamp(request, response)
    finally:
        REQUEST_ID.reset(token)
    observe(request, response.status, start)
    return response


async def prepare_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    rid = request.get(request_id.KEY)
    if rid is not None:  # a request that never reached the middleware has none
        headers[request_id.HEADER] = rid
    set_security_headers(request, headers)
