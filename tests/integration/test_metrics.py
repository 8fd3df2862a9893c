"""``GET /metrics`` on the real ``medialog dev`` stack: the api process (api and the ClickHouse
projection) and the roles process (actors, workers, PostgreSQL projections), each scraped before
and after an upload transcoded to ready, playback reports and a 404. Every family is there, and
what those requests touch moved."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 180  # shared 2-core machines: generous
VIEWS = "/v1/assets/{asset_id}/views"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def roles_base_url(dev_pid: int) -> str:
    """The roles process ``medialog dev`` started: its api port is in its environment
    (``RolesProcess`` gives it a free one)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == dev_pid and b"--roles" in cmdline:
            port = next(v for v in environ if v.startswith(b"MEDIALOG_API_PORT="))
            return f"http://127.0.0.1:{port.partition(b'=')[2].decode()}"
    raise AssertionError(f"no roles process under medialog dev (pid {dev_pid})")


async def scrape(http: aiohttp.ClientSession, base_url: str) -> tuple[set[str], Samples]:
    """The families (by name) and the samples (by name, then sorted labels) of ``/metrics``."""
    async with http.get(f"{base_url}/metrics") as r:
        assert r.status == 200 and r.content_type == "text/plain", r.content_type
        text = await r.text()
    families, found = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return families, found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for k, v in samples.get(name, {}).items() if set(labels.items()) <= set(k))


async def upload_until_ready(http: aiohttp.ClientSession, base_url: str, auth: dict[str, str],
                             clip: Path) -> str:
    body = {"filename": clip.name, "content_type": "video/mp4",
            "size_bytes": clip.stat().st_size, "title": "metrics clip"}
    async with http.post(f"{base_url}/v1/uploads", json=body, headers=auth) as r:
        assert r.status == 202, await r.text()
        up = await r.json()
    async with http.put(up["upload_url"], data=clip.read_bytes(), headers=up["headers"]) as r:
        assert r.status == 200, await r.text()
    asset_id = str(up["asset_id"])
    async with http.post(f"{base_url}/v1/assets/{asset_id}/complete", headers=auth) as r:
        assert r.status == 202, await r.text()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        async with http.get(f"{base_url}/v1/assets/{asset_id}", headers=auth) as r:
            asset = await r.json()
        if asset.get("status") in ("ready", "failed"):
            assert asset["status"] == "ready", asset
            return asset_id
        assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S}s: {asset}"
        await asyncio.sleep(0.2)


async def test_every_process_exposes_its_metrics_and_they_move(http, stack, clip) -> None:
    assert stack.proc is not None
    api, roles = stack.base_url, roles_base_url(stack.proc.pid)
    _, api_before = await scrape(http, api)
    _, roles_before = await scrape(http, roles)

    auth = {"Authorization": f"Bearer {stack.token(f'metrics-{uuid.uuid4().hex[:6]}', 'creator')}"}
    asset_id = await upload_until_ready(http, api, auth, clip)
    for _ in range(3):
        report = {"session_id": uuid.uuid4().hex, "watch_seconds": 2}
        async with http.post(f"{api}/v1/assets/{asset_id}/views", json=report,
                             headers=auth) as r:
            assert r.status == 202, await r.text()
    async with http.get(f"{api}/v1/no/such/route/{asset_id}") as r:
        assert r.status == 404

    api_families, api_after = await scrape(http, api)
    roles_families, roles_after = await scrape(http, roles)

    def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # Requests, by route template (never the raw path) and status.
    views = {"route": VIEWS, "method": "POST", "status": "202"}
    assert moved(api_before, api_after, "medialog_http_requests_total", **views) == 3
    assert moved(api_before, api_after, "medialog_http_request_duration_seconds_count",
                 **views) == 3
    assert moved(api_before, api_after, "medialog_http_requests_total",
                 route="/v1/uploads", method="POST", status="202") == 1
    assert moved(api_before, api_after, "medialog_http_requests_total",
                 route="unmatched", status="404") == 1
    assert not any(asset_id in dict(k).get("route", "")
                   for k in api_after["medialog_http_requests_total"])
    # The roles process serves /metrics (and /health) too: what it answered is counted there.
    assert total(roles_after, "medialog_http_requests_total", route="/metrics") >= 1

    # Appends to the log: the api's view reports and commands, the workers' jobs.
    assert moved(api_before, api_after, "medialog_produce_duration_seconds_count",
                 topic="events.views") == 3
    assert moved(api_before, api_after, "medialog_produce_duration_seconds_count",
                 topic="commands.asset") >= 2
    assert moved(roles_before, roles_after, "medialog_produce_duration_seconds_count",
                 topic="jobs.transcode") >= 1

    # Projections: the PostgreSQL ones in the roles process, ClickHouse's in the api's.
    for projection in ("projection.assets", "projection.engagement"):
        assert moved(roles_before, roles_after,
                     "medialog_projection_batch_duration_seconds_count",
                     projection=projection) >= 1, projection
        lags = {dict(k)["partition"]: v for k, v in
                roles_after["medialog_projection_lag_records"].items()
                if dict(k)["projection"] == projection}
        assert lags and all(v >= 0 for v in lags.values()), projection
    assert moved(api_before, api_after, "medialog_projection_batch_duration_seconds_count",
                 projection="projection.clickhouse") >= 1
    assert any(dict(k)["projection"] == "projection.clickhouse"
               for k in api_after["medialog_projection_lag_records"])

    # Transcoding: the clip's one rung was timed; the queue and dead-letter families exist.
    assert moved(roles_before, roles_after, "medialog_transcode_rung_duration_seconds_count") >= 1
    assert {"medialog_transcode_jobs_waiting", "medialog_transcode_dead_lettered"} <= \
        roles_families
    assert roles_after["medialog_transcode_jobs_waiting"][()] >= 0

    # Rate limiting (counted by the api) and the process's CPU and memory, in both.
    assert "medialog_rate_limit_rejections" in api_families
    for families, after in ((api_families, api_after), (roles_families, roles_after)):
        assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= families
        assert after["process_cpu_seconds_total"][()] > 0
        assert after["process_resident_memory_bytes"][()] > 0
