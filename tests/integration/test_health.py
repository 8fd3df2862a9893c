"""``/health/ready`` against the real embedded stack's PostgreSQL, Kafka and S3, with ffmpeg and
ffprobe behind wrappers that record every start: the endpoint is unauthenticated, so it must not
start a process per request, nor check the dependencies more than once a second."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from medialog.api import health, keys
from medialog.api.app import _blobs, _postgres, _publisher
from medialog.config import Settings
from medialog.kafka import Lags

pytestmark = pytest.mark.integration

CALLS = 25


def recording_tool(directory: Path, tool: str, log: Path, *, works: bool = True) -> Path:
    """An executable that appends its name to ``log`` on every start, then runs the real
    ``tool`` (or, when not ``works``, exits 1)."""
    real = shutil.which(tool)
    assert real, f"{tool} is needed (scripts/system-deps.sh)"
    path = directory / tool
    then = f'exec "{real}" "$@"' if works else "exit 1"
    path.write_text(f'#!/bin/sh\necho {tool} >> "{log}"\n{then}\n')
    path.chmod(0o755)
    return path


def starts(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@asynccontextmanager
async def readiness_app(stack: Any, ffmpeg: Path, ffprobe: Path) -> AsyncIterator[str]:
    """A process's readiness endpoint on the stack's real clients (the api app's own cleanup
    contexts), with the given ffmpeg and ffprobe; yields its URL."""
    settings = Settings.from_env(**{**stack.settings().model_dump(), "ffmpeg_bin": str(ffmpeg),
                                    "ffprobe_bin": str(ffprobe)})
    app = web.Application()
    app[keys.SETTINGS] = settings
    app[keys.PEERS] = {}
    app[health.TOOLS] = health.tools_of(settings)
    app[health.READY] = health.ReadyCache()
    app[keys.LAGS] = Lags()
    app.cleanup_ctx.extend([_postgres, _blobs, _publisher])
    app.router.add_get("/health/ready", health.ready)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/health/ready"))
    finally:
        await server.close()


async def ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def test_ready_starts_ffmpeg_once_however_often_it_is_asked(stack, http, tmp_path):
    log = tmp_path / "starts.log"
    ffmpeg = recording_tool(tmp_path, "ffmpeg", log)
    ffprobe = recording_tool(tmp_path, "ffprobe", log)
    async with readiness_app(stack, ffmpeg, ffprobe) as url:
        answers = [await ready(http, url) for _ in range(CALLS)]  # one after another
        answers += await asyncio.gather(*(ready(http, url) for _ in range(CALLS)))  # at once
    for status, body in answers:
        assert status == 200, body
        assert set(body["dependencies"]) == {"kafka", "postgres", "s3", "ffmpeg"}
        assert all(d["status"] == "up" for d in body["dependencies"].values()), body
    assert starts(log) == ["ffmpeg", "ffprobe"]  # once each, for 2 × CALLS requests


async def test_a_failed_ffmpeg_check_is_repeated_only_after_a_pause(stack, http, tmp_path,
                                                                     monkeypatch):
    """A broken ffmpeg is reported down, the other dependencies still up, and is not started
    again per request; once the pause is over the next request checks again, and a repaired
    ffmpeg is then reported up (and, from then on, not started again)."""
    monkeypatch.setattr(health, "READY_CACHE_S", 0.0)  # every request checks
    log = tmp_path / "starts.log"
    ffmpeg = recording_tool(tmp_path, "ffmpeg", log, works=False)
    ffprobe = recording_tool(tmp_path, "ffprobe", log)
    async with readiness_app(stack, ffmpeg, ffprobe) as url:
        for _ in range(CALLS):
            status, body = await ready(http, url)
            assert status == 503 and body["status"] == "unavailable", body
            deps = body["dependencies"]
            assert deps["ffmpeg"] == {"status": "down", "error": "RuntimeError",
                                      "latency_ms": deps["ffmpeg"]["latency_ms"]}
            assert {n: d["status"] for n, d in deps.items() if n != "ffmpeg"} == {
                "kafka": "up", "postgres": "up", "s3": "up"}
        assert starts(log) == ["ffmpeg"]  # the first failure ends the probe, ffprobe not run

        recording_tool(tmp_path, "ffmpeg", log)  # repaired
        status, _ = await ready(http, url)
        assert status == 503 and starts(log) == ["ffmpeg"]  # still within the pause

        monkeypatch.setattr(health, "TOOLS_RECHECK_S", 0.0)  # the pause is over
        for _ in range(CALLS):
            status, body = await ready(http, url)
            assert status == 200, body
    assert starts(log) == ["ffmpeg", "ffmpeg", "ffprobe"]


async def test_ready_says_what_runs_and_reuses_its_answer_for_a_second(stack, http, tmp_path):
    """The answer names the version, the uptime and the resident memory. Requests within
    ``READY_CACHE_S`` of a check, one after another or at once, get that check's very answer
    (its time, latencies and uptime); the first request after it gets a new check."""
    log = tmp_path / "starts.log"
    ffmpeg = recording_tool(tmp_path, "ffmpeg", log)
    ffprobe = recording_tool(tmp_path, "ffprobe", log)
    async with readiness_app(stack, ffmpeg, ffprobe) as url:
        status, first = await ready(http, url)
        began = time.monotonic()  # the check ended before: the reuse lasts at least until then+1 s
        again = [await ready(http, url) for _ in range(3)]
        again += await asyncio.gather(*(ready(http, url) for _ in range(CALLS)))
        assert time.monotonic() - began < health.READY_CACHE_S, "too slow to test the reuse"
        await asyncio.sleep(health.READY_CACHE_S + 0.1)
        _, later = await ready(http, url)
    assert status == 200, first
    assert first["version"] == version("medialog")
    assert first["memory_rss_bytes"] > 0 and first["uptime_s"] >= 0
    assert first["peers"] == {}
    assert all(answer == (200, first) for answer in again)
    assert datetime.fromisoformat(later["checked_at"]) > datetime.fromisoformat(
        first["checked_at"])
    assert later["uptime_s"] >= first["uptime_s"] + health.READY_CACHE_S


async def test_ready_names_what_runs_in_the_peer_too(stack, http):
    """``medialog dev``'s readiness adds its roles process's version, uptime and memory."""
    status, body = await ready(http, f"{stack.base_url}/health/ready")
    assert status == 200, body
    roles = body["peers"]["roles"]
    assert roles["version"] == body["version"] == version("medialog")
    assert roles["uptime_s"] > 0 and roles["memory_rss_bytes"] > 0
    assert body["uptime_s"] > 0 and body["memory_rss_bytes"] > 0


async def test_ready_reports_each_projections_lag_per_partition(stack, http):
    """The dev stack's readiness names its three projections (the ClickHouse one in the api's
    process, the PostgreSQL ones in its roles process) with every partition they read; idle,
    they have applied everything."""
    from projections.clickhouse import projection as clickhouse
    from projections.postgres import assets, engagement

    partitions = stack.settings().topic_partitions
    wanted = {p.NAME: {f"{t}/{n}" for t in getattr(p, "TOPICS", ("events.asset",))
                       for n in range(partitions)} for p in (assets, clickhouse, engagement)}

    async def settled() -> dict[str, Any]:
        for _ in range(100):
            status, body = await ready(http, f"{stack.base_url}/health/ready")
            lags = body["projections"]
            if status == 200 and all(lags.get(n, {}).get("total", 1) == 0 for n in wanted):
                return lags
            await asyncio.sleep(0.2)
        raise AssertionError(f"projections not caught up: {body}")

    lags = await settled()
    assert {n: set(lags[n]["partitions"]) for n in wanted} == wanted
    assert all(v == 0 for n in wanted for v in lags[n]["partitions"].values())


async def test_lag_is_the_end_offset_minus_what_was_applied(stack):
    """``Lags`` against the real broker: a partition not applied yet counts from the group's
    committed offset (none: 0), an applied one from its next offset."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = stack.settings().kafka_bootstrap
    topic = f"lag-probe-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(topic, b"x", partition=0)
        await producer.send_and_wait(topic, b"y", partition=1)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        lags = Lags()
        applied = lags.track("probe", consumer)
        assert (await lags.report())["probe"] == {
            "total": 6, "partitions": {f"{topic}/0": 5, f"{topic}/1": 1}}
        applied[TopicPartition(topic, 0)] = 3
        assert (await lags.report())["probe"]["partitions"] == {f"{topic}/0": 2, f"{topic}/1": 1}
        lags.forget("probe")
        assert await lags.report() == {}
    finally:
        await consumer.stop()
