"""Typed application keys: every shared client lives under one of these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import asyncpg
from aiohttp import web

from medialog.api.auth.verifier import TokenVerifier
from medialog.api.operation import Route
from medialog.clickhouse import Analytics
from medialog.config import Role, Settings
from medialog.kafka import Lags
from medialog.runtime.notifier import Notifier
from medialog.runtime.publisher import Publisher
from medialog.signing import SigningKeys
from medialog.storage import BlobStore


class ReadModelMeter(Protocol):
    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


# A read-model job of this process (``medialog.api.read_models``), wired by the composition
# root: (kind "verify" or "replay", check_only, given the records to fold the meter it advances)
# → the report as JSON.
ReadModelWork = Callable[[str, bool, Callable[[int], ReadModelMeter]], Awaitable[dict[str, Any]]]

SETTINGS = web.AppKey("settings", Settings)
ROLES: web.AppKey[frozenset[Role]] = web.AppKey("roles")
PG = web.AppKey("pg", asyncpg.Pool)
BLOBS = web.AppKey("blobs", BlobStore)
ANALYTICS = web.AppKey("analytics", Analytics)
PUBLISHER = web.AppKey("publisher", Publisher)  # the process's one producer
HTTP = web.AppKey("http", aiohttp.ClientSession)
VERIFIER = web.AppKey("verifier", TokenVerifier)
NOTIFIER = web.AppKey("notifier", Notifier)
LOCAL_JWKS = web.AppKey("local_jwks", dict[str, Any])
PEERS: web.AppKey[Mapping[str, str]] = web.AppKey("peers")  # name → its /health/ready URL
LAGS = web.AppKey("lags", Lags)  # the projections this process runs: their lag
SIGNING = web.AppKey("signing", SigningKeys)  # keys of signed streaming URLs, parsed at start
ROUTES: web.AppKey[tuple[Route, ...]] = web.AppKey("routes")  # the api's route table
READ_MODEL_WORK: web.AppKey[ReadModelWork] = web.AppKey("read_model_work")
