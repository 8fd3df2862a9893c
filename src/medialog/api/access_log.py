"""The api's access log: aiohttp's, without the credentials some URLs carry.

A stream URL's ``{signature}`` segment is a bearer credential (valid until the URL expires, not
bound to an address by default), and so is a status stream's ``access_token`` query parameter:
both are logged as ``REDACTED``. Everything else is as aiohttp's default format logs it."""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, Request, StreamResponse

from medialog.api.request_id import KEY
from medialog.runtime.logs import REQUEST_ID

REDACTED = "REDACTED"
SECRET_SEGMENTS = ("signature",)  # route parameters that are credentials
SECRET_QUERY = "access_token"  # the query parameter that is one (``api.status_token``)


def logged_path(request: BaseRequest) -> str:
    """``path_qs`` with the route's credential segments and query parameters replaced."""
    path = request.path_qs
    if "?" in path and SECRET_QUERY in request.query:  # however the client encoded its name
        path = str(request.rel_url.update_query({SECRET_QUERY: REDACTED}))
    if isinstance(request, Request):
        for name in SECRET_SEGMENTS:
            secret = request.match_info.get(name)
            if secret:
                path = path.replace(f"/{secret}/", f"/{REDACTED}/", 1)
    return path


class AccessLog(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        """aiohttp calls :meth:`log` only when this is true: nothing is formatted for a logger
        that would drop the line (as aiohttp's own access logger does)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        rid = request.get(KEY)
        token = REQUEST_ID.set(rid) if rid else None  # the line is the request's, too
        try:
            self.logger.info('%s "%s %s HTTP/%d.%d" %d %d "%s" %.6fs',
                             request.remote or "-", request.method, logged_path(request),
                             request.version.major, request.version.minor, response.status,
                             response.body_length, request.headers.get("User-Agent", "-"), time)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)
