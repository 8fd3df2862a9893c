"""Retrying transient failures: capped exponential backoff with jitter, and which errors are
transient. A consumer reads its partitions in order, so waiting out an outage is the right
back-pressure; passing the record over would lose its effect."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError

from medialog.domain.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


class PermanentFailure(Exception):
    """An effect that retrying cannot fix: logged loudly, and the record is passed over."""


def is_transient(exc: BaseException) -> bool:
    """Unreachable or restarting services (the object store's failures are ``Unavailable``),
    and conflicts a retry resolves (deadlock, serialization): waiting is right. Anything else
    is a fact about the record."""
    return isinstance(exc, (Unavailable, KafkaError, OSError, TimeoutError,
                            asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                            asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.TransactionRollbackError,
                            ClickHouseOperationalError))


def backoff(attempt: int, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """The wait before retry ``attempt`` (1, 2, …): doubling from ``first_s`` up to ``max_s``,
    drawn from its upper half, so that consumers failing together do not retry together."""
    ceiling = min(first_s * 2 ** (attempt - 1), max_s)
    return random.uniform(ceiling / 2, ceiling)


async def retrying(what: str, action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action`` until it succeeds or fails for good (a non-transient error, raised).
    Transient failures are retried with ``backoff`` for as long as they last."""
    attempt = 0
    while True:
        try:
            return await action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            delay = backoff(attempt)
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc,
                        delay)
            await asyncio.sleep(delay)
