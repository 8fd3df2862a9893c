"""Rate limits: every api request but the health, metrics, docs and JWKS routes spends one unit
of its caller's budget for its route class, before its handler runs.

* The caller is the principal of a valid bearer token (``user:<id>``), else the client address
  (``addr:<address>``, from ``client_address``): an invalid token is limited as anonymous and
  left to the handler to refuse. A verified principal is kept on the request
  (``requests.verified_principal``), so the handler does not verify it again.
* Route classes (``route_class``): ``uploads`` (``POST /v1/uploads``), ``views`` (``POST
  /v1/assets/{asset_id}/views``), ``reads`` (``GET``/``HEAD``), ``writes`` (any other method).
  Each has its own limit (``Settings.rate_limit_<class>``, the ``limits`` notation, e.g.
  ``100/day``; empty: unlimited) and its own budget per caller.
* A handler may spend a budget of its own keyed by what it alone knows (``spend``): a view
  report, once its body is read, spends ``view_sessions`` (``Settings.rate_limit_view_sessions``)
  keyed by viewer, asset and session, so one player session cannot flood its viewer's budget.
* Over a limit: 429 ``RATE_LIMITED`` (the one error shape) with ``Retry-After``, before the
  handler runs (``admit``, from the api's middleware; or, for ``spend``, before the handler
  writes anything), so nothing is written. Every other answer to a limited request, errors
  included but not streamed ones, carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
  ``RateLimit-Reset`` (seconds until the window resets) of the budget closest to exhaustion it
  spent from (``stamp``), as does the 429 of the budget it exceeded.
* The strategy is the fixed window (``limits``' ``FixedWindowRateLimiter``): one counter per
  caller, class and window, O(1) memory per caller, an atomic ``INCR`` on Redis; a moving
  window keeps a timestamp per request (600 per anonymous address at the default views limit)
  for an exactness abuse protection does not need. The price: up to twice the limit across a
  window boundary. A hit is that strategy's two storage calls done directly (the count and the
  window's end), its key built once per hit: the strategy's ``hit`` then ``get_window_stats``
  cost three calls and three keys (27 µs a hit in memory, three Redis round trips).
* Storage: ``Settings.rate_limit_storage``. ``memory://`` counts in this process (each api
  instance has its own budgets) with ``MemoryCounters``; any ``limits`` async URI (e.g.
  ``async+redis://host:6379``) shares the budgets between instances. When that storage fails,
  requests pass unlimited (logged at most once a minute): the limiter never takes the api down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.storage.redis.coredis import CoredisBridge
from limits.errors import StorageError
from limits.storage import storage_from_string
from multidict import CIMultiDict, istr

from medialog.api import keys
from medialog.api.client_address import client_address
from medialog.api.errors import error_response
from medialog.api.requests import verified_principal
from medialog.config import Settings
from medialog.runtime.metrics import RATE_LIMIT_REJECTIONS

log = logging.getLogger(__name__)

RouteClass = Literal["uploads", "views", "writes", "reads"]
LimitName = RouteClass | Literal["view_sessions"]
MEMORY: Final = "memory://"
_READS: Final = frozenset({"GET", "HEAD"})
_STORAGE_WARNING_EVERY_S: Final = 60.0


def route_class(method: str, path: str, unlimited: frozenset[str] = frozenset()
                ) -> RouteClass | None:
    """The class of a request to ``path`` (a route's canonical path, ``{asset_id}`` and all),
    or None for routes never limited: ``unlimited`` (the route table's ``limited=False``:
    health, metrics, the API description, the JWKS), the docs page's assets and CORS preflights
    (``OPTIONS``)."""
    if path in unlimited or path.startswith("/docs") or method == "OPTIONS":
        return None
    if method == "POST":
        if path == "/v1/uploads":
            return "uploads"
        if path == "/v1/assets/{asset_id}/views":
            return "views"
    return "reads" if method in _READS else "writes"


class MemoryCounters:
    """Fixed-window counters in this process's memory: one synchronous call a hit, which the
    hot path needs (``limits``' ``MemoryStorage`` sweeps every key on nearly every hit, 1.1 ms a
    hit with 10,000 callers, and its async wrappers cost more than the count). A counter expires
    when it is next hit; expired ones are dropped at most every ``sweep_s``. Single event loop:
    each call is atomic."""

    def __init__(self, sweep_s: float = 10.0) -> None:
        # key → (count, window end (wall clock)): tuples of numbers, which the collector stops
        # tracking, where a list per counter (one per view session) would stay on its books
        self._counters: dict[str, tuple[int, float]] = {}
        self._sweep_s = sweep_s
        self._next_sweep = time.time() + sweep_s

    def hit(self, key: str, window_s: int, now: float) -> tuple[int, float]:
        """Count one hit on ``key`` at ``now``: the window's count so far and its end."""
        if now >= self._next_sweep:
            self._counters = {k: c for k, c in self._counters.items() if c[1] > now}
            self._next_sweep = now + self._sweep_s
        counter = self._counters.get(key)
        if counter is None or counter[1] <= now:
            counter = self._counters[key] = (1, now + window_s)
        else:
            counter = self._counters[key] = (counter[0] + 1, counter[1])
        return counter


def storage_of(uri: str) -> Storage:
    """The ``limits`` async storage of ``uri`` (its errors wrapped as ``StorageError``). Opens
    no connection."""
    storage = storage_from_string(uri, wrap_exceptions=True)
    if not isinstance(storage, Storage):
        raise ValueError(f"rate_limit_storage {uri!r} is not an async storage (async+…://)")
    return storage


@dataclass(frozen=True, slots=True)
class Limit:
    """A route class's limit (or a handler's, ``view_sessions``), with what each hit needs of
    it."""

    name: LimitName
    item: RateLimitItem
    key_prefix: str  # a caller's counter is key_prefix + caller
    window_s: int
    amount_header: str  # RateLimit-Limit

    @classmethod
    def of(cls, name: LimitName, value: str) -> Limit:
        item = parse(value)
        return cls(name, item, item.key_for(name) + "/", item.get_expiry(), str(item.amount))


class Spent(NamedTuple):
    """One hit's outcome: whether it was within ``limit``, what is left of it and the seconds
    until its window resets. A tuple: made on every request, cheaper than a dataclass."""

    limit: Limit
    allowed: bool
    remaining: int
    reset_s: int


def _spent(limit: Limit, count: int, reset_at: float, now: float) -> Spent:
    """A hit's outcome: the window's ``count`` so far (this hit included), ending at
    ``reset_at`` (wall clock)."""
    amount = limit.item.amount
    return Spent(limit, count <= amount, max(0, amount - count),
                 max(0, math.ceil(reset_at - now)))


class RateLimits:
    """The limit of each route class (and of ``view_sessions``) and the counters they are spent
    from."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.rate_limit_storage
        self.memory = MemoryCounters() if uri == MEMORY else None
        self.storage = None if self.memory is not None else storage_of(uri)
        configured: dict[LimitName, str] = {
            "uploads": settings.rate_limit_uploads,
            "views": settings.rate_limit_views,
            "writes": settings.rate_limit_writes,
            "reads": settings.rate_limit_reads,
            "view_sessions": settings.rate_limit_view_sessions,
        }
        self.limits = {name: Limit.of(name, value) for name, value in configured.items() if value}
        self._routes: dict[AbstractRoute, Limit | None] = {}
        self._unlimited: frozenset[str] = frozenset()
        self._warned_at = -math.inf

    def index_routes(self, router: web.UrlDispatcher, unlimited: frozenset[str]) -> None:
        """Resolve each route's limit once (the router is frozen by then)."""
        self._unlimited = unlimited
        for route in router.routes():
            name = route_class(route.method, route.resource.canonical if route.resource else "",
                               unlimited)
            self._routes[route] = self.limits.get(name) if name else None

    def limit_of(self, request: web.Request) -> Limit | None:
        """The limit a request spends from; None when it is not limited."""
        route = request.match_info.route
        if route in self._routes:
            return self._routes[route]
        name = route_class(request.method, request.path, self._unlimited)  # 404 or 405
        return self.limits.get(name) if name else None

    def hit_memory(self, limit: Limit, caller: str) -> Spent:
        """Spend one unit of ``caller``'s budget for ``limit`` on ``memory://``, without a
        coroutine: the hot path's way."""
        assert self.memory is not None
        now = time.time()
        return _spent(limit, *self.memory.hit(limit.key_prefix + caller, limit.window_s, now),
                      now)

    async def hit_shared(self, limit: Limit, caller: str) -> Spent | None:
        """``hit_memory`` on the shared storage; None when it failed."""
        now = time.time()
        shared = await self._shared_hit(limit.key_prefix + caller, limit.window_s)
        return None if shared is None else _spent(limit, *shared, now)

    async def _shared_hit(self, key: str, window_s: int) -> tuple[int, float] | None:
        assert self.storage is not None
        try:
            return (await self.storage.incr(key, window_s),
                    await self.storage.get_expiry(key))
        except StorageError as exc:
            now = time.monotonic()
            if now - self._warned_at >= _STORAGE_WARNING_EVERY_S:
                self._warned_at = now
                log.warning("rate limit storage failed, requests pass unlimited: %s", exc)
            return None

    async def close(self) -> None:
        """Close the storage's connections (``limits`` has no close of its own)."""
        storage = self.storage
        bridge = storage.bridge if isinstance(storage, RedisStorage) else None
        if isinstance(bridge, CoredisBridge):
            bridge.get_connection().connection_pool.disconnect()


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)  # here, not in keys: keys would import us


async def rate_limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the limiter from the settings, its routes indexed; closed on exit."""
    limits = RateLimits(app[keys.SETTINGS])
    unlimited = frozenset(r.path for r in app[keys.ROUTES] if not r.limited)
    limits.index_routes(app.router, unlimited)
    app[RATE_LIMITS] = limits
    yield
    await limits.close()


# The budget closest to exhaustion a request spent from (None: none yet).
_SPENT: Final[web.RequestKey[Spent | None]] = web.RequestKey("rate_limit_spent")
# Header names as istr: multidict then skips case-folding them on every request.
_LIMIT, _REMAINING, _RESET = (istr("RateLimit-Limit"), istr("RateLimit-Remaining"),
                              istr("RateLimit-Reset"))


def _headers(headers: CIMultiDict[str], spent: Spent) -> None:
    headers[_LIMIT] = spent.limit.amount_header
    headers[_REMAINING] = str(spent.remaining)
    headers[_RESET] = str(spent.reset_s)


def _refusal(spent: Spent) -> web.Response:
    retry_s = max(1, spent.reset_s)
    RATE_LIMIT_REJECTIONS.labels(route_class=spent.limit.name).inc()
    refused = error_response(
        429, "RATE_LIMITED",
        f"too many {spent.limit.name} requests (at most {spent.limit.item}); retry in {retry_s} s")
    refused.headers["Retry-After"] = str(retry_s)
    _headers(refused.headers, spent)
    return refused


async def spend(request: web.Request, name: LimitName, key: str) -> web.Response | None:
    """Spend one unit of the budget ``name`` keyed by ``key`` (what identifies the spender: the
    handler builds it) for ``request``: the 429 to answer when it is spent, else None (also when
    ``name`` is unlimited or the storage failed). Call it before writing anything."""
    limits = request.app.get(RATE_LIMITS)
    limit = None if limits is None else limits.limits.get(name)
    if limit is None or limits is None:
        return None
    spent = (limits.hit_memory(limit, key) if limits.memory is not None
             else await limits.hit_shared(limit, key))
    if spent is None:
        return None
    current = request.get(_SPENT)  # admit's, when the route's class is limited
    if current is None or not spent.allowed or spent.remaining < current.remaining:
        request[_SPENT] = spent
    return None if spent.allowed else _refusal(spent)


async def admit(request: web.Request) -> web.Response | None:
    """Spend the caller's budget for ``request``'s route class, before its handler runs: the
    429 ``RATE_LIMITED`` to answer when it is spent, else None (also when the route is not
    limited or the storage failed). What was spent is kept on the request for ``stamp``."""
    request[_SPENT] = None
    limits = request.app.get(RATE_LIMITS)
    limit = None if limits is None else limits.limit_of(request)
    if limit is None or limits is None:
        return None
    who = await verified_principal(request)
    caller = f"addr:{client_address(request)}" if who is None else f"user:{who.user_id}"
    spent = (limits.hit_memory(limit, caller) if limits.memory is not None
             else await limits.hit_shared(limit, caller))
    if spent is None:
        return None
    if not spent.allowed:
        return _refusal(spent)
    request[_SPENT] = spent
    return None


def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """The ``RateLimit-*`` headers of the budget closest to exhaustion that ``request`` spent
    from (``admit``'s, or a handler's ``spend``), on ``response`` unless it is already sent."""
    spent = request[_SPENT]
    if spent is not None and not response.prepared:
        _headers(response.headers, spent)
