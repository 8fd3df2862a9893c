"""The PostgreSQL pool every role opens. Whatever keeps a statement from reaching the database —
a refused or lost connection, a server shutting down, starting up or out of connections, a
connect, a wait for a pooled connection or a statement outliving ``postgres_timeout_s`` — is
raised as the domain's ``Unavailable`` (``DB_UNAVAILABLE``: the api answers 503, consumers retry).

It is the pool's ``acquire`` that translates, for the acquiring and for everything done in its
``async with`` block, so no handler can forget it: every use of the pool goes through it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import asyncpg.exceptions as pg

from medialog.config import Settings
from medialog.domain.errors import Unavailable

# OSError: refused, reset, unreachable; TimeoutError: connect, pooled wait, statement.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pg.PostgresConnectionError,  # lost (ConnectionDoesNotExistError), refused by the server
    pg.OperatorInterventionError,  # shutting down, crashed, starting up (CannotConnectNowError)
    pg.TooManyConnectionsError,
)
# InterfaceError is also a misuse (another operation in progress): only these say "unreachable".
_GONE = ("connection is closed", "pool is closed", "pool is closing")


def db_unavailable(exc: BaseException) -> Unavailable | None:
    """``exc`` as ``Unavailable`` ``DB_UNAVAILABLE`` when it means the database is out of reach,
    else None (a bad statement, a constraint: the caller's error, raised as it is)."""
    if isinstance(exc, _UNREACHABLE) or (
            isinstance(exc, asyncpg.InterfaceError) and str(exc).startswith(_GONE)):
        return Unavailable(f"the database did not answer ({type(exc).__name__})",
                           code="DB_UNAVAILABLE")
    return None


class Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types for it
    """``asyncpg.Pool`` whose ``acquire`` waits at most the pool's timeout and raises
    :func:`db_unavailable`'s error instead of a connection failure."""

    acquire_timeout: float | None = None

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[Any]:
        try:
            async with super().acquire(timeout=timeout or self.acquire_timeout) as conn:
                try:
                    yield conn
                except Exception as exc:
                    if db_unavailable(exc) is not None:
                        # not reset on release: that would wait as long again. A connection
                        # lost mid-statement may be back in the pool already: nothing to end.
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise
        except Exception as exc:
            unavailable = db_unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc


async def open_pool(settings: Settings) -> Pool:
    """The process's pool: one connection at first, up to ``postgres_pool_max``; connecting,
    waiting for a connection and each statement bounded by ``postgres_timeout_s``. A database
    unreachable at start fails here (the process does not start)."""
    timeout = settings.postgres_timeout_s
    pool = Pool(settings.postgres_dsn.get_secret_value(), min_size=1,
                max_size=settings.postgres_pool_max, max_queries=50_000,
                max_inactive_connection_lifetime=300.0, loop=None,
                connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                timeout=timeout, command_timeout=timeout)
    pool.acquire_timeout = timeout
    await pool
    return pool
