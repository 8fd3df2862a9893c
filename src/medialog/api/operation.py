"""What one operation of the api is: its handler, and all the OpenAPI document says of it (who
may call it, its parameters, its body model, the error codes it can answer). Declared once per
route in ``medialog.api.routes``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["none", "optional", "bearer"]


@dataclass(frozen=True)
class Param:
    """A query parameter: its JSON Schema and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str
    maximum_setting: str | None = None  # the Settings field that bounds it, when configurable


@dataclass(frozen=True, kw_only=True)
class Route:
    method: str
    path: str  # an OpenAPI path template; ``{path}`` (the stream's object) spans slashes
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "bearer"
    roles: tuple[str, ...] = ()  # any of these; empty: any signed-in caller
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: tuple[Param, ...] = ()
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    idempotent: bool = False  # takes an Idempotency-Key
    waits: bool = False  # takes Prefer: wait=N
    limited: bool = True  # subject to the rate limits
