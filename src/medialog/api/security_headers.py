"""Security headers on every answer of the app, errors and streamed answers included (set as it
is prepared, from the app's ``on_response_prepare`` receiver in ``medialog.api.edge``: a
streamed answer's headers leave at ``prepare``, before any middleware sees it). Why: the api
serves JSON and media, never pages, so a browser must not sniff, frame or run any of it, nor
leak its URLs (stream signatures, status tokens) as a referrer.

``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` everywhere; outside
``/docs`` (a page with its own policy) ``Content-Security-Policy: default-src 'none';
frame-ancestors 'none'``. A header the handler set itself wins."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from multidict import CIMultiDict, istr

CSP: Final = "default-src 'none'; frame-ancestors 'none'"
DOCS: Final = "/docs"
# Header names as istr: multidict then skips case-folding them on every answer.
_NOSNIFF, _REFERRER, _CSP = (istr("X-Content-Type-Options"), istr("Referrer-Policy"),
                             istr("Content-Security-Policy"))


def set_security_headers(request: web.Request, headers: CIMultiDict[str]) -> None:
    headers.setdefault(_NOSNIFF, "nosniff")
    headers.setdefault(_REFERRER, "no-referrer")
    path = request.path
    if not (path == DOCS or path.startswith("/docs/")):
        headers.setdefault(_CSP, CSP)
