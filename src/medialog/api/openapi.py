"""``GET /openapi.json``: the OpenAPI 3.1 document, built from the route table
(``medialog.api.routes``), the request models that validate bodies and the response models
(``medialog.api.responses``). Built once per application, when it starts."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from medialog.api import keys, responses
from medialog.api.operation import Param, Route
from medialog.config import Settings

_DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("openapi_document", dict)
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{model}"
TOKEN_CODES = (
    "TOKEN_MISSING", "TOKEN_MALFORMED", "TOKEN_BAD_SIGNATURE", "TOKEN_EXPIRED",
    "TOKEN_NOT_YET_VALID", "TOKEN_WRONG_ISSUER", "TOKEN_WRONG_AUDIENCE", "TOKEN_INVALID_CLAIMS",
    "TOKEN_ALGORITHM_NOT_ALLOWED", "TOKEN_UNKNOWN_KEY", "TOKEN_KEYS_UNAVAILABLE",
)
UNAVAILABLE_CODES = ("DB_UNAVAILABLE", "LOG_UNAVAILABLE", "STORE_UNAVAILABLE")
_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 206: "Partial content",
                304: "Not modified", 400: "Bad request", 401: "Not authenticated", 403: "Forbidden",
                404: "Not found", 409: "Conflict", 413: "Too large", 416: "Range not satisfiable",
                422: "Unprocessable", 429: "Rate limited", 503: "A dependency is unavailable"}
_HEADERS = {
    "Idempotency-Key": {"type": "string", "pattern": "^[A-Za-z0-9._:\\-]{1,128}$"},
    "Prefer": {"type": "string", "pattern": "^wait=[0-9]+(\\.[0-9]+)?$"},
}


def _error_codes(route: Route) -> dict[int, list[str]]:
    """Every code ``route`` can answer, by status: its own and those of what it takes."""
    codes: dict[int, list[str]] = {}

    def add(status: int, *names: str) -> None:
        codes.setdefault(status, [])
        codes[status] += [n for n in names if n not in codes[status]]

    if route.body is not None:
        add(400, "MALFORMED_JSON", getattr(route.body, "ERROR_CODE", "VALIDATION_ERROR"))
        add(413, "BODY_TOO_LARGE")
    if route.query:
        add(400, "VALIDATION_ERROR")
    if route.idempotent:
        add(400, "BAD_IDEMPOTENCY_KEY")
        add(422, "IDEMPOTENCY_KEY_REUSED")
    if route.auth != "none":
        add(401, *TOKEN_CODES)
    if route.roles:
        add(403, "FORBIDDEN_ROLE")
    for status, names in route.errors.items():
        add(status, *names)
    if route.limited:
        add(429, "RATE_LIMITED")
    if route.path.startswith("/v1/"):
        add(503, *UNAVAILABLE_CODES)
    if route.path.startswith(("/v1/analytics/", "/v1/trending")):
        add(503, "ANALYTICS_UNAVAILABLE")
    return dict(sorted(codes.items()))


def _query_schema(param: Param, settings: Settings) -> dict[str, Any]:
    schema = dict(param.schema)
    if param.maximum_setting is not None:
        schema["maximum"] = getattr(settings, param.maximum_setting)
    return schema


def _parameters(route: Route, settings: Settings) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"} if name == "asset_id"
         else {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    params += [{"name": p.name, "in": "query", "required": False,
                "schema": _query_schema(p, settings),
                "description": p.description} for p in route.query]
    headers = ["Idempotency-Key"] * route.idempotent + ["Prefer"] * route.waits
    params += [{"name": h, "in": "header", "required": False, "schema": _HEADERS[h]}
               for h in headers]
    return params


def _sse(data: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "event": {"type": "string"}, "id": {"type": "string"},
        "retry": {"type": "integer"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }}


def _success(route: Route, refs: dict[type[BaseModel], Any]) -> dict[str, Any]:
    """The 2xx/304 answers (``responses.RESPONSES``), and the non-error others."""
    key = (route.method, route.path)
    media = responses.MEDIA_TYPES.get(key, ("application/json",))
    out: dict[str, Any] = {}
    for status, model in responses.RESPONSES.get(key, {200: None}).items():
        answer: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "OK")}
        if key in responses.SSE_EVENTS:  # each message: {event, id, data: JSON}
            answer["content"] = {m: {"schema": _sse(refs[responses.SSE_EVENTS[key]])}
                                 for m in media}
        elif model is not None:
            answer["content"] = {m: {"schema": refs[model]} for m in media}
        elif status != 304 and media != ("application/json",):
            answer["content"] = {m: {"schema": {"type": "string"}} for m in media}
        out[str(status)] = answer
    for status, model in responses.OTHER_RESPONSES.get(key, {}).items():
        out[str(status)] = {"description": _STATUS_TEXT.get(status, "See the body"),
                            "content": {m: {"schema": refs[model]} for m in media}}
    return out


def _operation(route: Route, refs: dict[type[BaseModel], Any],
               settings: Settings) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.handler.__module__.rsplit('.', 1)[-1]}.{route.handler.__name__}",
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route, settings),
        "responses": _success(route, refs),
    }
    if route.handler.__doc__:
        op["description"] = " ".join(route.handler.__doc__.split())
    if route.auth == "bearer":
        op["security"] = [{"bearer": []}]
    elif route.auth == "optional":
        op["security"] = [{}, {"bearer": []}]
    else:
        op["security"] = []
    if route.roles:
        op["x-roles"] = list(route.roles)
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required,
                             "content": {"application/json": {"schema": refs[route.body]}}}
    for status, names in _error_codes(route).items():
        op["responses"][str(status)] = {
            "description": f"{_STATUS_TEXT.get(status, 'Error')}: {', '.join(names)}",
            "x-error-codes": names,
            "content": {"application/json": {"schema": refs[responses.ErrorBody]}},
        }
    return op


def build(routes: tuple[Route, ...], settings: Settings) -> dict[str, Any]:
    """The document for ``routes``, with the limits ``settings`` configure."""
    models: list[type[BaseModel]] = [responses.ErrorBody]
    for route in routes:
        if route.body is not None:
            models.append(route.body)
        key = (route.method, route.path)
        models += [m for m in responses.RESPONSES.get(key, {}).values() if m is not None]
        models += list(responses.OTHER_RESPONSES.get(key, {}).values())
        models += [responses.SSE_EVENTS[key]] if key in responses.SSE_EVENTS else []
    unique = list(dict.fromkeys(models))
    key_map, schemas = models_json_schema([(m, "validation") for m in unique],
                                          ref_template=_REF)
    refs = {m: key_map[(m, "validation")] for m in unique}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "medialog", "version": version("medialog"),
                 "description": "Uploads, transcoding, signed playback, engagement and "
                                "analytics. Errors: `{\"error\": {\"code\", \"message\", "
                                "\"details\"}}`; each response lists its codes."},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


async def prepare(app: web.Application) -> None:
    """On startup: the document of the routes ``setup_routes`` put in ``keys.ROUTES``."""
    app[_DOCUMENT] = build(app[keys.ROUTES], app[keys.SETTINGS])


async def serve(request: web.Request) -> web.Response:
    return web.json_response(request.app[_DOCUMENT])
