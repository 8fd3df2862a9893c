"""Dependencies down, answers honest; SIGTERM drains. On a ``medialog dev`` of this module's own
(the session's shared stack is left alone), whose PostgreSQL, Kafka and SeaweedFS are frozen
(SIGSTOP: a server that does not answer, the slowest failure) or killed in turn:

* PostgreSQL frozen: a write and a read answer 503 ``DB_UNAVAILABLE`` with ``Retry-After``
  within ``MEDIALOG_POSTGRES_TIMEOUT_S`` (plus a little), and the refused write left nothing;
* Kafka frozen: a view report and an upload answer 503 ``LOG_UNAVAILABLE`` within the producer's
  request timeout, and the upload retried with its Idempotency-Key is one asset;
* SIGTERM with a request in flight: it completes, new connections are refused, the process
  exits 0 within its drain, and the projections' Kafka offsets are those stored with their
  effects (committed on stop: nothing is read twice);
* SeaweedFS killed: a stream answers 503 ``STORE_UNAVAILABLE``.

The tests run in file order (each builds on the state the previous one left)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from medialog.config import Settings
from medialog.embedded.stack import EmbeddedStack
from tests.conftest import DevStack, running_stack

pytestmark = pytest.mark.integration

PG_TIMEOUT_S = 2.0
KAFKA_TIMEOUT_MS = 4_000
DRAIN_S = 12.0
ENV = {"MEDIALOG_POSTGRES_TIMEOUT_S": str(PG_TIMEOUT_S),
       "MEDIALOG_KAFKA_REQUEST_TIMEOUT_MS": str(KAFKA_TIMEOUT_MS),
       "MEDIALOG_SHUTDOWN_TIMEOUT_S": str(DRAIN_S)}
BOUND_S = 15.0  # the longest a 503 may take
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16


@pytest.fixture(scope="module")
def dev() -> Iterator[DevStack]:
    # SeaweedFS gets killed: SIGKILL reaps what is left
    with running_stack("medialog-down-", stop_signal=signal.SIGKILL, env=ENV) as stack:
        yield stack


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What one test leaves for the next (an asset id)."""
    return {}


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def auth(dev: DevStack, user: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev.token(user, 'creator')}", **extra}


def upload_body() -> dict[str, Any]:
    return {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": len(VIDEO),
            "title": "Down and up", "visibility": "public"}


async def timed(http: Any, method: str, url: str, **kw: Any) -> tuple[int, Any, Any, float]:
    """status, JSON body, headers and seconds of one request."""
    started = time.monotonic()
    async with http.request(method, url, **kw) as r:
        body = await r.json()
        return r.status, body, r.headers, time.monotonic() - started


def assert_unavailable(answer: tuple[int, Any, Any, float], code: str) -> None:
    status, body, headers, seconds = answer
    assert (status, body["error"]["code"]) == (503, code), body
    assert headers["Retry-After"] == "5"
    assert seconds < BOUND_S, seconds


def pid_in(data_dir: Path, name: str) -> int:
    (found,) = data_dir.rglob(name)
    return int(found.read_text().split()[0])


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster and every server process it started."""
    pointer = data_dir / "postgres.location"
    root = Path(pointer.read_text().strip()) if pointer.exists() else data_dir / "postgres"
    postmaster = pid_in(root, "postmaster.pid")
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == postmaster]
    return [postmaster, *children]


def _ppid(pid: str) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def until_ready(http: Any, dev: DevStack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(f"{dev.base_url}/health/ready") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, dev.log_tail()
        await asyncio.sleep(0.5)


async def owned_assets(http: Any, dev: DevStack, user: str) -> int:
    async with http.get(f"{dev.base_url}/v1/assets", params={"owner": user},
                        headers=auth(dev, user)) as r:
        assert r.status == 200, await r.text()
        return int((await r.json())["total"])


async def ready_asset(http: Any, dev: DevStack, user: str, clip: Path) -> str:
    """Upload ``clip``, complete it and wait until it is transcoded; its id."""
    body = {"filename": "clip.mp4", "content_type": "video/mp4",
            "size_bytes": clip.stat().st_size, "title": "Stream me", "visibility": "public"}
    status, up, _, _ = await timed(http, "POST", f"{dev.base_url}/v1/uploads", json=body,
                                   headers=auth(dev, user, Prefer="wait=20"))
    assert status == 202, up
    async with http.put(up["upload_url"], data=clip.read_bytes(), headers=up["headers"]) as r:
        assert r.status == 200, await r.text()
    asset = f"{dev.base_url}/v1/assets/{up['asset_id']}"
    status, done, _, _ = await timed(http, "POST", f"{asset}/complete",
                                     headers=auth(dev, user, Prefer="wait=20"))
    assert status == 202, done
    deadline = time.monotonic() + 120
    while True:
        status, got, _, _ = await timed(http, "GET", asset, headers=auth(dev, user))
        if got["status"] == "ready":
            return str(up["asset_id"])
        assert got["status"] != "failed" and time.monotonic() < deadline, got
        await asyncio.sleep(0.5)


async def test_postgres_frozen_answers_db_unavailable_and_writes_nothing(http, dev, shared,
                                                                         clip):
    user = "pg-down"
    shared["asset_id"] = await ready_asset(http, dev, user, clip)
    up = {"asset_id": shared["asset_id"]}
    with frozen(postgres_pids(dev.data_dir)):
        write = await timed(http, "POST", f"{dev.base_url}/v1/uploads", json=upload_body(),
                            headers=auth(dev, user, **{"Idempotency-Key": str(uuid.uuid4())}))
        read = await timed(http, "GET", f"{dev.base_url}/v1/assets/{up['asset_id']}",
                           headers=auth(dev, user))
    print(f"PostgreSQL frozen: write 503 in {write[3]:.2f}s, read 503 in {read[3]:.2f}s")
    assert_unavailable(write, "DB_UNAVAILABLE")
    assert_unavailable(read, "DB_UNAVAILABLE")
    await until_ready(http, dev)
    await asyncio.sleep(3)  # a command sent after all would be an asset by now
    assert await owned_assets(http, dev, user) == 1  # the ready one only


async def test_kafka_frozen_answers_log_unavailable(http, dev, shared):
    asset_id = shared["asset_id"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with frozen([pid_in(dev.data_dir, "kafka.pid")]):
        view = await timed(http, "POST", f"{dev.base_url}/v1/assets/{asset_id}/views",
                           json={"session_id": "session-down", "watch_seconds": 3},
                           headers=auth(dev, "pg-down"))
        upload = await timed(http, "POST", f"{dev.base_url}/v1/uploads", json=upload_body(),
                             headers=auth(dev, "kafka-down", **key))
    print(f"Kafka frozen: view 503 in {view[3]:.2f}s, upload 503 in {upload[3]:.2f}s")
    assert_unavailable(view, "LOG_UNAVAILABLE")
    assert_unavailable(upload, "LOG_UNAVAILABLE")
    await until_ready(http, dev)
    # Not acknowledged is not "not written": the idempotent producer may still deliver it.
    # The same request again (same Idempotency-Key) makes sure, and is applied once.
    status, again, _, _ = await timed(http, "POST", f"{dev.base_url}/v1/uploads",
                                      json=upload_body(),
                                      headers=auth(dev, "kafka-down", Prefer="wait=20", **key))
    assert status == 202 and again["command"]["projected"], again
    assert await owned_assets(http, dev, "kafka-down") == 1


async def test_sigterm_drains_in_flight_requests_and_commits_positions(http, dev, shared):
    await until_ready(http, dev)
    asset_id = shared["asset_id"]
    reported = []

    async def keep_reporting() -> None:
        """View reports until the api stops taking them: the engagement projection applies
        some in its last second, which the periodic commit has not covered yet."""
        headers = auth(dev, "pg-down")
        with contextlib.suppress(aiohttp.ClientError):
            while True:
                async with http.post(f"{dev.base_url}/v1/assets/{asset_id}/views", json={
                        "session_id": f"session-{len(reported):04d}", "watch_seconds": 1},
                        headers=headers) as r:
                    if r.status != 202:
                        return
                    reported.append(r.status)
                await asyncio.sleep(0.01)

    reporting = asyncio.create_task(keep_reporting())
    pending = asyncio.create_task(timed(
        http, "GET", f"{dev.base_url}/v1/commands/{uuid.uuid4()}",
        headers=auth(dev, "viewer", Prefer="wait=5")))
    await asyncio.sleep(1.5)
    assert dev.proc is not None
    proc, port = dev.proc, dev.port
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(1)
    with pytest.raises(OSError):  # refused: the sites stopped accepting
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    status, body, _, seconds = await pending
    await reporting
    assert len(reported) > 20, reported
    assert (status, body["status"]) == (200, "pending") and seconds >= 4.5, (status, body)
    code = await asyncio.to_thread(proc.wait, DRAIN_S + 30)
    exited = time.monotonic() - started
    print(f"SIGTERM: in-flight request answered after {seconds:.2f}s, exit {code} "
          f"in {exited:.2f}s")
    dev.proc = None
    assert code == 0, dev.log_tail()
    assert exited < DRAIN_S + 15, exited  # the drain, then stopping the embedded services
    stored, committed = await positions(dev)
    assert stored and committed == stored


async def positions(dev: DevStack) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per (projection, topic, partition): the next offset stored with the projection's effects
    in PostgreSQL, and its group's offset committed to Kafka (the services alone, no roles)."""
    settings = dev.settings()
    stack = EmbeddedStack(dev.data_dir.resolve(), cache_dir=Settings().cache_dir)
    await stack.start()
    try:
        pool = await asyncpg.connect(stack.postgres_dsn)
        try:
            rows = await pool.fetch('SELECT consumer, topic, partition, "offset" '
                                    "FROM consumer_offsets WHERE consumer LIKE 'projection.%'")
        finally:
            await pool.close()
        stored = {(r["consumer"], r["topic"], r["partition"]): r["offset"] + 1 for r in rows}
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            deadline = time.monotonic() + 30  # a restarted broker loads its groups first
            while True:
                committed = {}
                for name in {consumer for consumer, _, _ in stored}:
                    group = f"{settings.consumer_group}.{name}"
                    offsets = await admin.list_consumer_group_offsets(group)
                    committed.update({(name, tp.topic, tp.partition): meta.offset
                                      for tp, meta in offsets.items()
                                      if (name, tp.topic, tp.partition) in stored})
                if committed.keys() == stored.keys() or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
    finally:
        await stack.stop()
    return stored, committed


async def test_object_store_killed_answers_store_unavailable(http, dev, shared):
    dev.start()
    status, playback, _, _ = await timed(
        http, "GET", f"{dev.base_url}/v1/assets/{shared['asset_id']}/playback",
        headers=auth(dev, "pg-down"))
    assert status == 200, playback
    async with http.get(playback["hls_url"]) as r:
        assert r.status == 200, await r.text()
    os.kill(pid_in(dev.data_dir, "weed.pid"), signal.SIGKILL)
    started = time.monotonic()
    async with http.get(playback["hls_url"]) as r:
        stream = (r.status, await r.json(), r.headers, time.monotonic() - started)
    print(f"SeaweedFS killed: stream 503 in {stream[3]:.2f}s")
    assert_unavailable(stream, "STORE_UNAVAILABLE")
