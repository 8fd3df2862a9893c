"""A dependency out of reach is a 503 with ``Retry-After`` and a code naming it, in the one error
shape: the failures of PostgreSQL, Kafka and ClickHouse as the domain's ``Unavailable``."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import asyncpg
import asyncpg.exceptions as pg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiokafka import errors as kafka
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from medialog.api.commands import _acknowledged
from medialog.api.errors import error_answer
from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.domain.errors import Unavailable
from medialog.runtime.pg_pool import Pool, db_unavailable, open_pool
from medialog.runtime.publisher import Publisher


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed"),
    ConnectionResetError(104, "reset by peer"),
    TimeoutError(),
    pg.CannotConnectNowError("the database system is starting up"),
    pg.AdminShutdownError("terminating connection due to administrator command"),
    pg.CrashShutdownError("crash"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.ConnectionFailureError("failure"),
    pg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("pool is closing"),
])
def test_a_database_out_of_reach_is_db_unavailable(exc: BaseException) -> None:
    unavailable = db_unavailable(exc)
    assert isinstance(unavailable, Unavailable)
    assert unavailable.code == "DB_UNAVAILABLE"


@pytest.mark.parametrize("exc", [
    pg.UniqueViolationError("duplicate key"),
    pg.UndefinedTableError("no such table"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("a bug"),
])
def test_a_wrong_statement_stays_what_it_is(exc: BaseException) -> None:
    assert db_unavailable(exc) is None


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on return: connecting is refused


async def test_the_pool_raises_db_unavailable_when_postgres_is_gone() -> None:
    pool = Pool(f"postgresql://medialog@127.0.0.1:{_refused_port()}/medialog", min_size=0,
                max_size=1, max_queries=1, max_inactive_connection_lifetime=0, loop=None,
                connection_class=asyncpg.Connection, record_class=asyncpg.Record, timeout=2)
    pool.acquire_timeout = 2
    await pool
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        assert raised.value.code == "DB_UNAVAILABLE"
        assert time.monotonic() - started < 2
        with pytest.raises(Unavailable):
            await pool.fetchval("SELECT 1")  # the pool's own shortcuts acquire the same way
    finally:
        await pool.close()


async def test_a_postgres_down_at_start_stops_the_start() -> None:
    settings = Settings.from_env(
        postgres_dsn=f"postgresql://medialog@127.0.0.1:{_refused_port()}/medialog",
        postgres_timeout_s=2)
    with pytest.raises(OSError):
        await open_pool(settings)


@pytest.mark.parametrize("exc", [
    kafka.KafkaConnectionError("no broker"),
    kafka.KafkaTimeoutError("batch expired"),
    kafka.RequestTimedOutError(),
    kafka.NotLeaderForPartitionError(),
    kafka.NotEnoughReplicasError(),
    kafka.ProducerClosed(),
])
def test_a_write_the_broker_did_not_acknowledge_is_log_unavailable(exc: Exception) -> None:
    with pytest.raises(Unavailable) as raised, _acknowledged("events.views", "event"):
        raise exc
    assert raised.value.code == "LOG_UNAVAILABLE"


class _SilentBroker:
    """A producer whose records are never acknowledged (a broker that does not answer)."""

    async def send(self, topic: str, value: bytes, **kw: Any) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


async def test_an_append_the_broker_never_acknowledges_ends_at_the_request_timeout() -> None:
    publisher = Publisher(Settings.from_env(kafka_request_timeout_ms=300))
    await publisher.producer.stop()  # never started: closes its client
    publisher.producer = _SilentBroker()  # type: ignore[assignment]
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised, _acknowledged("events.views", "event"):
        await publisher.append("events.views", "asset-1", [b"{}", b"{}"])
    assert raised.value.code == "LOG_UNAVAILABLE"
    assert 0.3 <= time.monotonic() - started < 1.0


class _Client:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def query(self, sql: str, parameters: Any = None) -> Any:
        raise self.exc


async def test_clickhouse_out_of_reach_is_analytics_unavailable() -> None:
    analytics = Analytics("http://127.0.0.1:1/db")
    analytics._client = _Client(OperationalError("connection refused"))  # type: ignore[assignment]
    try:
        with pytest.raises(Unavailable) as raised:
            await analytics.query("SELECT 1")
        assert raised.value.code == "ANALYTICS_UNAVAILABLE"
        analytics._client = _Client(DatabaseError("syntax error"))  # type: ignore[assignment]
        with pytest.raises(DatabaseError):  # a bad query is not an outage
            await analytics.query("SELEC 1")
    finally:
        analytics._client = None
        await analytics.close()


@pytest.mark.parametrize("code", ["DB_UNAVAILABLE", "LOG_UNAVAILABLE", "STORE_UNAVAILABLE",
                                  "ANALYTICS_UNAVAILABLE"])
def test_every_503_has_retry_after_and_the_one_error_shape(code: str) -> None:
    response = error_answer(make_mocked_request("GET", "/v1/assets"),
                            Unavailable("the dependency did not answer", code=code))
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert isinstance(response, web.Response) and response.text is not None
    assert json.loads(response.text) == {"error": {
        "code": code, "message": "the dependency did not answer", "details": []}}


def test_other_errors_carry_no_retry_after() -> None:
    response = error_answer(make_mocked_request("GET", "/v1/assets"), RuntimeError("a bug"))
    assert response.status == 500
    assert "Retry-After" not in response.headers
