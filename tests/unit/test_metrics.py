"""The api's middleware labels requests by route template (never the raw path), the lock-free
histogram renders as prometheus_client's own would, the projections' lag becomes a gauge, and
building applications twice in one process defines nothing twice. A real aiohttp server on a
local port; no stack."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from medialog.api.app import create_app
from medialog.api.edge import edge_middleware
from medialog.api.metrics import UNMATCHED
from medialog.config import Settings
from medialog.runtime.metrics import FAST_BUCKETS, LoopHistogram, exposition

VIEWS = "/v1/assets/{asset_id}/views"


def samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in ``text``, by its sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples if s.name == name}


def requests(route: str, method: str, status: int) -> float:
    key = (("method", method), ("route", route), ("status", str(status)))
    return samples(exposition({}), "medialog_http_requests_total").get(key, 0.0)


async def accepted(_: web.Request) -> web.Response:
    return web.json_response({}, status=202)


async def redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[edge_middleware])
    app.router.add_post(VIEWS, accepted)
    app.router.add_get("/moved", redirect)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_requests_are_labelled_by_route_template_and_status(client) -> None:
    before = requests(VIEWS, "POST", 202)
    for asset in ("a1", "b2", "c3"):
        async with client.post(f"/v1/assets/{asset}/views") as r:
            assert r.status == 202
    assert requests(VIEWS, "POST", 202) == before + 3
    text = exposition({}).decode()
    assert '="a1"' not in text and "/v1/assets/b2/views" not in text  # ids are no labels


async def test_unmatched_routes_methods_and_redirects_get_fixed_labels(client) -> None:
    before = {k: requests(*k) for k in [(UNMATCHED, "GET", 404), (UNMATCHED, "GET", 405),
                                        (UNMATCHED, "other", 405), ("/moved", "GET", 302)]}
    async with client.get("/v1/nothing/here/42") as r:
        assert r.status == 404
    async with client.get("/v1/assets/x/views") as r:  # the path exists, not for GET
        assert r.status == 405
    async with client.request("PROPFIND", "/v1/assets/x/views") as r:
        assert r.status == 405
    async with client.get("/moved", allow_redirects=False) as r:
        assert r.status == 302
    assert {k: requests(*k) - v for k, v in before.items()} == {k: 1.0 for k in before}


async def test_request_latency_is_a_histogram_of_each_label_set(client) -> None:
    key = (("method", "POST"), ("route", VIEWS), ("status", "202"))
    count = samples(exposition({}), "medialog_http_request_duration_seconds_count").get(key, 0)
    async with client.post("/v1/assets/z/views"):
        pass
    text = exposition({})
    assert samples(text, "medialog_http_request_duration_seconds_count")[key] == count + 1
    assert samples(text, "medialog_http_request_duration_seconds_sum")[key] > 0
    infinite = (("le", "+Inf"), *key[:2], key[2])
    assert samples(text, "medialog_http_request_duration_seconds_bucket")[
        tuple(sorted(infinite))] == count + 1


def test_a_loop_histogram_renders_as_prometheus_clients_own() -> None:
    ours = LoopHistogram("test_loop_seconds", "doc", ["k"], FAST_BUCKETS)
    theirs_registry = CollectorRegistry()
    theirs = Histogram("test_loop_seconds", "doc", ["k"], buckets=FAST_BUCKETS,
                       registry=theirs_registry)
    for value in (0.0, 0.0005, 0.0007, 0.01, 0.3, 2.0, 30.0, 31.0, 1e6):
        ours.labels("v").observe(value)
        theirs.labels("v").observe(value)
    try:
        mine = {n: samples(exposition({}), f"test_loop_seconds_{n}")
                for n in ("bucket", "count", "sum")}
    finally:
        REGISTRY.unregister(ours)
    expected = {n: samples(generate_latest(theirs_registry), f"test_loop_seconds_{n}")
                for n in ("bucket", "count", "sum")}
    assert mine == expected
    with pytest.raises(ValueError):
        ours.labels("v", "extra")


def test_projection_lag_is_a_gauge_per_partition_of_the_last_report() -> None:
    lags = {"projection.assets": {"total": 7, "partitions": {"p.events.asset/0": 5,
                                                             "p.events.asset/1": 2}}}
    first = samples(exposition(lags), "medialog_projection_lag_records")
    assert first == {
        (("partition", "0"), ("projection", "projection.assets"), ("topic", "p.events.asset")): 5,
        (("partition", "1"), ("projection", "projection.assets"), ("topic", "p.events.asset")): 2,
    }
    assert samples(exposition({}), "medialog_projection_lag_records") == {}


def test_two_applications_in_one_process_define_no_metric_twice() -> None:
    settings = Settings.from_env()
    for _ in range(2):
        app = create_app(settings, frozenset({"api"}))
        assert any(r.canonical == "/metrics" for r in app.router.resources())
    families = {f.name for f in text_string_to_metric_families(exposition({}).decode())}
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= families
