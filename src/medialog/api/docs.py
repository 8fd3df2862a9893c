"""``GET /docs``: Swagger UI over ``/openapi.json``. Its assets ship with medialog (the
swagger-ui-py package's copy of swagger-ui-dist), so the page needs no CDN; its own script is a
file too, so the page's Content-Security-Policy allows no inline code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

# Scripts, styles and the document from this origin only; nothing inline, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'none'")
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>medialog API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""
_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
});
"""


def assets_dir() -> Path:
    """swagger-ui-py's static folder (found without importing the package)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def page(_: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html",
                        headers={"Content-Security-Policy": CSP})


async def init_script(_: web.Request) -> web.Response:
    return web.Response(text=_INIT, content_type="text/javascript",
                        headers={"Content-Security-Policy": CSP})


def setup_static(app: web.Application) -> None:
    """The page's script and the Swagger UI assets (not in the document: they are not API)."""
    app.router.add_get("/docs/init.js", init_script)
    app.router.add_static("/docs/static", assets_dir())
