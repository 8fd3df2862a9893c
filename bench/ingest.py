"""Benchmark of playback-report ingestion through the real api, against a raw baseline.

Run: ``.venv/bin/python bench/ingest.py [--duration 10] [--concurrency 128] [--rate 2000]
[--instructions N] [--ratio-only]``. To measure another checkout's code, put its ``src`` and
root first on ``PYTHONPATH``: the bench, its servers and the stack import medialog from there.

Everything runs on a temporary data directory and free loopback ports, driven by one aiohttp
client in this process, in three phases:

1. WHOLE SYSTEM, on ``medialog dev`` (the embedded stack and every role: the api and the
   ClickHouse projection in the dev process, the other roles in its child):
   * LAG: reports offered open-loop at ``--rate``/s for ``--lag-duration`` s, each a new session
     whose one report crosses the threshold, and the time from its 202 to its counted view being
     visible in PostgreSQL (``asset_stats``, polled every ``--poll-ms``): p50/p99/max;
   * a closed loop while the projections fold the reports on the same cores.
2. THE RATIO, on the embedded services (SeaweedFS, Kafka, PostgreSQL) and the api role alone
   (``medialog run --roles api``, as the api is deployed: the projections are other processes,
   here stopped until phase 3):
   * RAW BASELINE: a bare aiohttp server (its own process) whose handler returns 202 and does
     nothing, driven by the same client, bodies, headers, concurrency and duration;
   * FLOOR: a bare aiohttp handler (its own process) that appends one view report, encoded as
     the api encodes them, through the api's producer and settings (acks=all, idempotent) to a
     topic of its own (``bench.floor``, partitioned as medialog's topics, which nothing reads),
     and answers as the api does. It does what the api's handler cannot skip and nothing else:
     floor ÷ raw is what the log write leaves of the raw rate, ingest ÷ floor what the api's
     own work leaves of that;
   * INGEST: ``POST /v1/assets/{id}/views`` with RS256 JWTs (signed-in viewers):
     authentication, asset lookup, validation, and a 202 only after the broker acknowledged
     (acks=all).
   The three take turns for ``--rounds`` rounds (raw, floor, api; then api, floor, raw; …): the
   speed of these machines drifts by half within minutes, so each round's ratios compare loops
   run seconds apart, and each ratio is the median round's. For each loop, over all rounds:
   requests/s, p50/p99 latency, how many cores each process kept busy and its CPU time per 202,
   and the rate at which their sum would fill every core; then ingest ÷ raw (goal ≥ 0.5),
   floor ÷ raw and ingest ÷ floor.
   INSTRUCTIONS (``--instructions N``, off by default): once those loops stopped, on the same
   stack, each of raw, floor and api again, one at a time, started as before but under
   valgrind's callgrind: after ``INSTRUCTIONS_WARMUP`` uncounted requests, exactly N counted
   ones at ``--instructions-concurrency``, every one a 202; the instructions its main thread
   (the event loop's) executed per 202, and ingest ÷ raw, ingest ÷ floor of those. Unlike the
   rates, these hardly depend on the machine's speed or load, so two runs tell a change of a
   few percent. One
   request at a time by default: each report is then a produce batch of its own, whereas with
   more in flight how many share a batch depends on timing (the linger), and a batch's cost is
   a large part of a report's (its lz4 compression zeroes a 256 KiB buffer, which callgrind
   counts byte by byte: instructions are not time).
3. NOTHING LOST: ``medialog dev`` again on the same data; once its projections caught up, every
   accepted report must be folded (the bench assets' total watch time equals the sum over every
   202) and exactly the lag sessions counted as views.

``--ratio-only`` runs phase 2 alone (``medialog dev`` only projects the bench assets first): for
A/B runs of the api's cost, where phases 1 and 3 would only take time.

Goal: ingest ÷ raw ≥ 0.5, because an api that keeps half of what a bare aiohttp handler
serves on the same cores spends its time on the log write, not on its own work. Exit 1 if the
ratio misses the goal or a report is missing (not looked for with ``--ratio-only``). Everything
is bounded (durations, concurrency, timeouts) and stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp import web
from proctree import cpu_s, descendants, name, per_name, stack_pids

if TYPE_CHECKING:
    from medialog.config import Settings

GOAL_RATIO = 0.5
LOOPS = ("raw", "floor", "api")  # phase 2's closed loops, in the order of even rounds
READY_TIMEOUT_S = 180
USERS = 50
ASSETS = 8  # the bench's assets, which every report goes to in turn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_data_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new temporary data directory that PostgreSQL, run as its own user when we are root,
    can reach; removed on the way out unless ``keep`` (then its path is printed)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir.chmod(0o755)
    try:
        yield data_dir
    finally:
        if keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def dev_argv(data_dir: Path, port: int) -> list[str]:
    """``medialog dev`` on ``data_dir``, its api on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "medialog", "dev", "--data-dir", str(data_dir), "--port",
            str(port)]


def stack_ports(data_dir: Path) -> dict[str, Any]:
    """The ports of the embedded services of the stack on ``data_dir`` (its ``stack.json``)."""
    ports: dict[str, Any] = json.loads((data_dir / "stack.json").read_text())["ports"]
    return ports


def postgres_dsn(data_dir: Path) -> str:
    return f"postgresql://medialog@127.0.0.1:{stack_ports(data_dir)['postgres']}/medialog"


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url} exited {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"{url} not ready in {timeout:g}s; see {log}")


# A load generator is one address with a few users: the rate limits stay on (their cost is part
# of what is measured) with budgets no run can spend.
UNREACHABLE_LIMITS = {f"MEDIALOG_RATE_LIMIT_{name}": "1000000000/minute"
                      for name in ("UPLOADS", "VIEWS", "VIEW_SESSIONS", "WRITES", "READS")}


@contextlib.contextmanager
def process(args: list[str], ready_url: str, log: Path, settings: dict[str, str] | None = None,
            ready_timeout: float = READY_TIMEOUT_S) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, stopped (SIGINT, then SIGKILL) on the way out; its
    only ``MEDIALOG_*`` variables are ``settings``, the log level and ``UNREACHABLE_LIMITS``. It
    runs in its log's directory: ``python -m`` puts the working directory first on the path,
    and the caller's (a checkout) must not shadow the code ``PYTHONPATH`` names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
    env.update(settings or {}, MEDIALOG_LOG_LEVEL="WARNING", **UNREACHABLE_LIMITS)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)
    try:
        wait_ready(ready_url, proc, log, ready_timeout)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


# -- the raw baseline server (run as: bench/ingest.py --serve-baseline PORT) ----------------------


async def _bare(request: web.Request) -> web.Response:
    return web.Response(status=202)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve_baseline(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/assets/{asset_id}/views", _bare)
    app.router.add_get("/health/ready", _ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the log-write floor (run as: bench/ingest.py --serve-floor PORT, with the api's settings) ----

FLOOR_TOPIC = "bench.floor"  # not a medialog topic: no projection reads what the floor writes
FLOOR_EVENTS = 1024
_FLOOR: web.AppKey[dict[str, Any]] = web.AppKey("floor", dict)


def floor_events(n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct view reports as the api encodes them (id, envelope): the floor's records
    are as large and compress as well as the api's."""
    import uuid
    from datetime import UTC, datetime

    from medialog.domain.events import ViewReported
    from medialog.envelope import encode_event, make_event

    out = []
    for i in range(n):
        asset = str(uuid.uuid4())
        event = make_event(
            ViewReported(asset_id=asset, owner_id="benchcreator", viewer_key=f"user{i % USERS}",
                         signed_in=True, session_id=f"floor-{i:012d}", watch_seconds=4.0,
                         duration_s=None, position=4.0, device="bench", country="DE"),
            subject=asset, event_id=str(uuid.uuid4()), time=datetime.now(UTC), sequence=None,
            actor_id=f"user{i % USERS}", actor_roles=["viewer"], correlation_id=str(uuid.uuid4()))
        out.append((event.id, encode_event(event)))
    return out


async def create_topic(settings: Settings, short: str) -> str:
    """Topic ``short`` (prefix applied) with the partitions and replication of medialog's own,
    unless it exists; its full name."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    topic: str = settings.topic(short)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, settings.topic_partitions,
                                                    settings.topic_replication)])
    finally:
        await admin.close()
    return topic


async def _floor_producer(app: web.Application) -> AsyncIterator[None]:
    from medialog.config import Settings
    from medialog.kafka import new_producer

    settings = Settings.from_env()
    topic = await create_topic(settings, FLOOR_TOPIC)
    producer = new_producer(settings)
    await producer.start()
    app[_FLOOR] = {"producer": producer, "topic": topic, "events": floor_events(FLOOR_EVENTS),
                   "n": 0}
    yield
    await producer.stop()


async def _floor(request: web.Request) -> web.Response:
    """Read the body, append one view report (the api's producer and settings, acks=all), and
    answer as the api does: the same work as the api's handler minus all of its own."""
    from medialog.envelope import CONTENT_TYPE

    await request.read()
    floor = request.app[_FLOOR]
    floor["n"] += 1
    event_id, value = floor["events"][floor["n"] % FLOOR_EVENTS]
    await floor["producer"].send_and_wait(
        floor["topic"], value=value, key=request.match_info["asset_id"].encode(),
        headers=[("content-type", CONTENT_TYPE.encode())])
    return web.json_response({"report_id": event_id}, status=202)


def serve_floor(port: int) -> None:
    app = web.Application()
    app.cleanup_ctx.append(_floor_producer)
    app.router.add_post("/v1/assets/{asset_id}/views", _floor)
    app.router.add_get("/health/ready", _ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- load ------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_body(tag: str, n: int) -> dict[str, Any]:
    """The ``n``-th closed-loop report of ``tag``: a session of its own, below the threshold."""
    return {"session_id": f"{tag}-{n:012d}", "watch_seconds": 4.0, "position": 4.0,
            "device": "bench", "country": "DE"}


async def closed_loop(http: aiohttp.ClientSession, url_of: Callable[[int], str],
                      headers_of: Callable[[int], dict[str, str]], concurrency: int,
                      duration: float, tag: str) -> dict[str, Any]:
    """``concurrency`` workers posting back to back for ``duration`` s; 202s/s and latencies."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop_at = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            n = next(counter)
            began = time.perf_counter()
            async with http.post(url_of(n), json=report_body(tag, n), headers=headers_of(n)) as r:
                await r.read()
                if r.status == 202:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors[r.status] = errors.get(r.status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rate": len(latencies) / elapsed, "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99), "accepted": len(latencies), "errors": errors,
            "latencies": latencies}


def pooled(loops: list[dict[str, Any]]) -> dict[str, Any]:
    """Loops of equal duration as one: mean rate and cores busy, percentiles of every latency,
    every 202 and error."""
    latencies = [x for r in loops for x in r["latencies"]]
    errors: dict[int, int] = {}
    for r in loops:
        for status, n in r["errors"].items():
            errors[status] = errors.get(status, 0) + n
    names = {k for r in loops for k in r["busy"]}
    return {"rate": sum(r["rate"] for r in loops) / len(loops), "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99), "accepted": sum(r["accepted"] for r in loops),
            "errors": errors, "latencies": latencies,
            "busy": {k: sum(r["busy"].get(k, 0.0) for r in loops) / len(loops) for k in names}}


async def view_counts(pool: asyncpg.Pool, assets: list[str]) -> dict[str, int]:
    """Each of ``assets``' counted views in PostgreSQL (0 before its first)."""
    rows = await pool.fetch("SELECT asset_id, view_count FROM asset_stats "
                            "WHERE asset_id = ANY($1::text[])", assets)
    return dict.fromkeys(assets, 0) | {asset_id: count for asset_id, count in rows}


async def lag_run(http: aiohttp.ClientSession, base: str, assets: list[str],
                  tokens: list[str], pool: asyncpg.Pool, rate: float, duration: float,
                  poll_s: float, max_inflight: int, tag: str = "lag") -> dict[str, Any]:
    """Open loop at ``rate``/s; each report opens a session (``tag``-n) and crosses the
    threshold, so each adds one to its asset's ``view_count``. A report's lag is the time from
    its 202 to the first poll that sees its asset's count include it (the k-th acknowledged
    report of an asset is paired with the count reaching k more than before the run: one
    partition per asset, applied in log order). Returns the lags' percentiles and the session
    of every 202."""
    acked: dict[str, list[float]] = {a: [] for a in assets}
    visible: dict[str, list[float]] = {a: [] for a in assets}
    sessions: list[str] = []
    errors = 0
    gate = asyncio.Semaphore(max_inflight)
    sending = True
    before = await view_counts(pool, assets)

    async def one(n: int) -> None:
        nonlocal errors
        asset, user, session = assets[n % len(assets)], n % USERS, f"{tag}-{n:012d}"
        try:
            async with gate, http.post(f"{base}/v1/assets/{asset}/views",
                                       json={"session_id": session, "watch_seconds": 12.0},
                                       headers={"Authorization": f"Bearer {tokens[user]}"}) as r:
                await r.read()
                accepted = r.status == 202
        except (aiohttp.ClientError, TimeoutError):
            accepted = False
        if accepted:
            acked[asset].append(time.perf_counter())
            sessions.append(session)
        else:
            errors += 1

    def behind() -> bool:
        return any(len(visible[a]) < len(acked[a]) for a in assets)

    async def poll() -> None:
        while sending or behind():
            counts = await view_counts(pool, assets)
            now = time.perf_counter()
            for asset, seen in visible.items():
                shown = min(counts[asset] - before[asset], len(acked[asset]))
                seen.extend([now] * (shown - len(seen)))
            await asyncio.sleep(poll_s)

    poller = asyncio.create_task(poll())
    tasks: list[asyncio.Task[None]] = []
    began = time.perf_counter()
    total = int(rate * duration)
    for n in range(total):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    sent_for = time.perf_counter() - began
    sending = False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poller, 60)
    lags = [v - a for asset in assets for a, v in zip(acked[asset], visible[asset], strict=False)]
    return {"offered": rate, "achieved": len(sessions) / sent_for, "acked": len(sessions),
            "visible": len(lags), "errors": errors, "p50": pct(lags, 0.5),
            "p99": pct(lags, 0.99), "max": max(lags, default=float("nan")),
            "sessions": sessions}


# -- instructions per 202, counted by callgrind ----------------------------------------------------

CALLGRIND_TIMEOUT_S = 600  # to be ready, and per request: valgrind runs the api's start slowly
INSTRUCTIONS_WARMUP = 400  # uncounted requests first: caches filled, connections open
QUIET_S = 1.0  # between the counted requests and a switch, so that no request's tail straddles it


def under_callgrind(argv: list[str], out: Path) -> list[str]:
    """``argv`` under callgrind, counting nothing until ``callgrind_control --instr=on``, each
    thread apart; its dumps go to ``out``.<pid>-<thread> (at exit) and
    ``out``.<pid>.<n>-<thread> (the n-th requested)."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out}.%p", *argv]


async def callgrind_control(pid: int, option: str) -> None:
    """``callgrind_control option pid``, done once it returns (it asks through vgdb and waits
    for the answer); the bench stops if it was not done (the tool exits 0 regardless)."""
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", option, str(pid), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0 or b"OK." not in out:
        sys.exit(f"callgrind_control {option} {pid} failed: {out.decode(errors='replace')}")


def callgrind_total(out: Path, pid: int) -> int:
    """The instructions (``Ir``) the main thread of process ``pid`` (the event loop's: every
    request and every append runs there) executed while instrumented: the sum of the
    ``totals:`` of its dumps, each of which counts from the one before. The other threads are
    left out: the api's in-process ClickHouse (chDB) works in threads of its own, on its own
    clock, whatever the requests."""
    dumps = [out.with_name(f"{out.name}.{pid}-01"), *out.parent.glob(f"{out.name}.{pid}.*-01")]
    return sum(int(line.split()[1]) for dump in dumps if dump.exists()
               for line in dump.read_text(errors="replace").splitlines()
               if line.startswith("totals:"))


async def counted_requests(http: aiohttp.ClientSession, url_of: Callable[[int], str],
                           headers_of: Callable[[int], dict[str, str]], n: int,
                           concurrency: int, tag: str) -> dict[str, Any]:
    """Exactly ``n`` reports (the closed loops' bodies), ``concurrency`` at a time: the 202s,
    the other statuses and the time taken."""
    accepted, todo = 0, iter(range(n))
    errors: dict[int, int] = {}

    async def worker() -> None:
        nonlocal accepted
        for i in todo:
            async with http.post(url_of(i), json=report_body(tag, i), headers=headers_of(i)) as r:
                await r.read()
                if r.status == 202:
                    accepted += 1
                else:
                    errors[r.status] = errors.get(r.status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"accepted": accepted, "errors": errors, "elapsed": time.perf_counter() - began}


async def instructions(args: argparse.Namespace, data_dir: Path, tag: str, argv: list[str],
                       settings: dict[str, str] | None, port: int, load: Load) -> dict[str, Any]:
    """Server ``tag`` (``argv`` and ``settings``, listening on ``port``) started under callgrind:
    ``INSTRUCTIONS_WARMUP`` requests uncounted, then ``--instructions`` counted, all 202, then
    stopped. The instructions it executed in all and per 202, and every 202 it gave."""
    out, url = data_dir / f"{tag}.callgrind", f"http://127.0.0.1:{port}"
    n, concurrency = args.instructions, args.instructions_concurrency
    with contextlib.ExitStack() as up:
        proc = await asyncio.to_thread(up.enter_context, process(
            under_callgrind(argv, out), f"{url}/health/ready", data_dir / f"{tag}.callgrind.log",
            settings, CALLGRIND_TIMEOUT_S))
        async with client(concurrency, timeout_s=CALLGRIND_TIMEOUT_S) as http:
            warm = await counted_requests(http, load.url(url), load.headers_of,
                                          INSTRUCTIONS_WARMUP, concurrency, f"cg-warm-{tag}")
            await asyncio.sleep(QUIET_S)
            await callgrind_control(proc.pid, "--instr=on")
            counted = await counted_requests(http, load.url(url), load.headers_of, n,
                                             concurrency, f"cg-{tag}")
            await asyncio.sleep(QUIET_S)
            await callgrind_control(proc.pid, "--instr=off")
            await callgrind_control(proc.pid, "--dump")
        await asyncio.to_thread(up.close)
    if counted["accepted"] != n:
        sys.exit(f"{tag} under callgrind: {counted['accepted']} of {n} requests got a 202, "
                 f"the others {counted['errors']}; see {data_dir / f'{tag}.callgrind.log'}")
    total = callgrind_total(out, proc.pid)
    return {"total": total, "per_202": total / n, "elapsed": counted["elapsed"],
            "accepted": warm["accepted"] + counted["accepted"]}


# -- main ------------------------------------------------------------------------------------------


async def ready_assets(data_dir: Path, pool: asyncpg.Pool, n: int) -> list[str]:
    """``n`` ready assets (of unknown duration: a view takes the 10 s threshold): each one's
    upload request and completed transcode appended to ``events.asset`` as the asset actor
    appends them, once projected (the stack on ``data_dir`` runs with no ``MEDIALOG_*``
    settings, so topics have no prefix). Reports are accepted only for assets with something
    to play; measuring their ingestion needs no media."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from aiokafka import AIOKafkaProducer

    from medialog.domain.events import TranscodeCompleted, UploadRequested
    from medialog.envelope import encode_event, make_event

    now, owner = datetime.now(UTC), "benchcreator"
    assets = [str(uuid.uuid4()) for _ in range(n)]
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack_ports(data_dir)['kafka']}",
                                acks="all")
    await producer.start()
    try:
        for asset in assets:
            for seq, payload in enumerate((
                UploadRequested(asset_id=asset, owner_id=owner, kind="video",
                                filename="bench.mp4", content_type="video/mp4", size_bytes=1000,
                                title="bench", staging_key=f"uploads/{owner}/{asset}/original.mp4",
                                upload_expires_at=now + timedelta(minutes=15)),
                TranscodeCompleted(asset_id=asset, job_id=str(uuid.uuid4()), renditions=[],
                                   master_playlist_key=None, thumbnail_key=None, duration_s=None,
                                   width=None, height=None, probe={}),
            ), 1):
                event = make_event(payload, subject=asset, event_id=str(uuid.uuid4()), time=now,
                                   sequence=seq)
                await producer.send_and_wait("events.asset", encode_event(event),
                                             key=asset.encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while await pool.fetchval("SELECT count(*) FROM assets WHERE asset_id = ANY($1::text[]) "
                              "AND status = 'ready'", assets) < n:
        if time.monotonic() > deadline:
            sys.exit(f"the bench assets were not projected in {READY_TIMEOUT_S}s")
        await asyncio.sleep(0.2)
    return assets


def closed_loop_line(what: str, r: dict[str, Any]) -> str:
    return (f"  {what:44s} {r['rate']:8.0f} req/s   p50 {r['p50'] * 1e3:6.1f} ms   "
            f"p99 {r['p99'] * 1e3:6.1f} ms   non-202: {r['errors'] or 0}")


def cores_line(r: dict[str, Any]) -> str:
    """The cores each process kept busy and its CPU time per 202; their sum per 202, and the
    rate at which that sum would keep every core of the machine busy (the ceiling the closed
    loop cannot pass, whoever is faster)."""
    busy, rate, cores = r["busy"], max(r["rate"], 1e-9), os.cpu_count() or 1
    ranked = sorted(((v, k) for k, v in busy.items() if v >= 0.01), reverse=True)
    per_202 = sum(busy.values()) / rate
    return (f"    cores busy ({cores} on this machine; the client is 'ingest.py'), CPU per 202: "
            + ", ".join(f"{k} {v:.2f} ({v / rate * 1e6:.0f} µs)" for v, k in ranked)
            + f"\n    in all {per_202 * 1e6:.0f} µs a 202: every core busy at "
              f"{cores / per_202:.0f} req/s")


async def measured_loop(http: aiohttp.ClientSession, url_of: Callable[[int], str],
                        headers_of: Callable[[int], dict[str, str]], pids: dict[int, str],
                        args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """A 1 s warm-up, then the closed loop, with the cores each of ``pids`` kept busy."""
    warm = await closed_loop(http, url_of, headers_of, args.concurrency, 1.0, f"warm-{tag}")
    before, began = per_name(pids, cpu_s), time.perf_counter()
    result = await closed_loop(http, url_of, headers_of, args.concurrency, args.duration, tag)
    after, elapsed = per_name(pids, cpu_s), time.perf_counter() - began
    result["busy"] = {k: (after[k] - before.get(k, 0.0)) / elapsed for k in after}
    result["accepted"] += warm["accepted"]  # every 202 is a report the projections must fold
    return result


class Load:
    """The bench's viewers (RS256 tokens of the stack's own key) and the URLs they post to."""

    def __init__(self, data_dir: Path) -> None:
        sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))  # after PYTHONPATH
        from medialog.issuer import load_private_key, mint_token

        key = load_private_key(data_dir / "keys" / "jwt-private.pem")
        self.tokens = [mint_token(key, user=f"user{i}", roles=["viewer"], issuer="medialog",
                                  audience="medialog-api", ttl_s=3600) for i in range(USERS)]
        self.assets: list[str] = []

    def headers_of(self, n: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[n % USERS]}"}

    def url(self, base: str) -> Callable[[int], str]:
        return lambda n: f"{base}/v1/assets/{self.assets[n % len(self.assets)]}/views"


def client(concurrency: int, timeout_s: float = 30.0) -> aiohttp.ClientSession:
    """The load's HTTP client: ``concurrency`` requests at once on twice as many connections,
    each answered within ``timeout_s``."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def whole_system(args: argparse.Namespace, data_dir: Path, dev_pid: int, api: str,
                       load: Load) -> dict[str, Any] | None:
    """Phase 1, on ``medialog dev`` (every role): the bench assets, the lag, and a closed loop
    while the projections fold the reports on the same cores; with ``--ratio-only``, only the
    bench assets (None)."""
    async with client(args.concurrency) as http:
        pool = await asyncpg.create_pool(postgres_dsn(data_dir), min_size=1, max_size=2)
        try:
            load.assets = await ready_assets(data_dir, pool, ASSETS)
            if args.ratio_only:
                return None
            lag = await lag_run(http, api, load.assets, load.tokens, pool, args.rate,
                                args.lag_duration, args.poll_ms / 1000,
                                max_inflight=args.concurrency * 4)
        finally:
            await pool.close()
        pids = {pid: name(pid) for pid in stack_pids(dev_pid, data_dir) | {os.getpid()}}
        system = await measured_loop(http, load.url(api), load.headers_of, pids, args, "sys")
    return {"lag": lag, "system": system}


def server(tag: str, port: int,
           settings: Settings) -> tuple[list[str], dict[str, str] | None]:
    """How phase 2 starts server ``tag`` (raw, floor or api) listening on ``port``: its argv
    and its ``MEDIALOG_*`` settings (``settings``, the api's, on ``port``)."""
    if tag == "raw":
        return [sys.executable, __file__, "--serve-baseline", str(port)], None
    if tag == "floor":
        return [sys.executable, __file__, "--serve-floor", str(port)], settings.as_env()
    return ([sys.executable, "-m", "medialog", "run", "--roles", "api"],
            settings.as_env() | {"MEDIALOG_API_PORT": str(port)})


async def api_alone(args: argparse.Namespace, data_dir: Path, ports: dict[str, int],
                    load: Load) -> dict[str, Any]:
    """Phase 2, the ratio: the embedded services (SeaweedFS, Kafka, PostgreSQL) and the api role
    alone (``medialog run --roles api``), as the api is deployed on its own; the projections are
    stopped and fold the reports in phase 3. The raw baseline and the floor run on the same
    idle stack. With ``--instructions``, each server again under callgrind once the loops
    stopped (one api at a time: chDB allows one process per store)."""
    from medialog.config import Settings
    from medialog.embedded.stack import EmbeddedStack

    url = {tag: f"http://127.0.0.1:{port}" for tag, port in ports.items()}
    async with EmbeddedStack(data_dir) as stack:
        settings = Settings.from_env(**stack.settings_overrides(), api_host="127.0.0.1",
                                     api_port=ports["api"])
        with contextlib.ExitStack() as up:
            def start(tag: str) -> Any:
                argv, env = server(tag, ports[tag], settings)
                return up.enter_context(process(argv, f"{url[tag]}/health/ready",
                                                data_dir / f"{tag}.log", env))

            api_proc = await asyncio.to_thread(start, "api")
            raw_proc = await asyncio.to_thread(start, "raw")
            floor_proc = await asyncio.to_thread(start, "floor")
            pids = {pid: name(pid) for pid in ({os.getpid()} | descendants(api_proc.pid)
                                                | {p for p in stack.pids().values() if p})}
            pids[raw_proc.pid] = "bare server"
            pids[floor_proc.pid] = "floor server"
            loops: dict[str, list[dict[str, Any]]] = {tag: [] for tag in LOOPS}
            async with client(args.concurrency) as http:
                for n in range(args.rounds):
                    for tag in LOOPS if n % 2 == 0 else LOOPS[::-1]:
                        loops[tag].append(await measured_loop(
                            http, load.url(url[tag]), load.headers_of, pids, args, f"{tag}{n}"))
        counted = {}
        for tag in LOOPS if args.instructions else ():
            port = free_port()
            counted[tag] = await instructions(args, data_dir, tag, *server(tag, port, settings),
                                              port, load)
    return ({tag: pooled(runs) for tag, runs in loops.items()} | {"rounds": loops}
            | ({"instructions": counted} if counted else {}))


async def folded(args: argparse.Namespace, data_dir: Path, assets: list[str],
                 expected_s: float) -> tuple[int, float]:
    """Phase 3, on ``medialog dev`` again: once the projections caught up, the bench assets'
    counted views and total watch time in PostgreSQL (waits up to ``--settle`` s for the
    total to reach ``expected_s``: every accepted report folded)."""
    conn = await asyncpg.connect(postgres_dsn(data_dir))
    try:
        deadline = time.monotonic() + args.settle
        while True:
            views, watched = await conn.fetchrow(
                "SELECT coalesce(sum(view_count), 0), coalesce(sum(watch_seconds_total), 0) "
                "FROM asset_stats WHERE asset_id = ANY($1::text[])", assets)
            if float(watched) >= expected_s or time.monotonic() > deadline:
                return int(views), float(watched)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def round_ratios(second: dict[str, Any], top: str, bottom: str) -> tuple[float, str]:
    """``top`` ÷ ``bottom`` in each round (loops seconds apart): the median, and every round's."""
    ratios = [t["rate"] / b["rate"] for t, b in zip(second["rounds"][top],
                                                     second["rounds"][bottom], strict=True)]
    return sorted(ratios)[len(ratios) // 2], ", ".join(f"{r:.2f}" for r in ratios)


def lag_report(lag: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"lag, 202 → counted view visible in PostgreSQL (poll {args.poll_ms} ms): offered "
          f"{lag['offered']:.0f}/s, achieved {lag['achieved']:.0f}/s, visible "
          f"{lag['visible']}/{lag['acked']}, errors {lag['errors']}")
    print(f"  p50 {lag['p50'] * 1e3:.0f} ms   p99 {lag['p99'] * 1e3:.0f} ms   "
          f"max {lag['max'] * 1e3:.0f} ms")
    if lag["achieved"] < 0.95 * lag["offered"]:
        print("  saturated: the system accepted less than offered, so this is the lag at the "
              "achieved rate")


def instructions_report(counted: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Instructions per 202 of each server under callgrind, and the api's over the others'."""
    print(f"instructions per 202 under callgrind (main thread), each server alone: "
          f"{args.instructions} requests, {args.instructions_concurrency} concurrent, after "
          f"{INSTRUCTIONS_WARMUP} uncounted")
    for what, tag in (("raw baseline (bare aiohttp 202)", "raw"),
                      ("floor: bare handler + one acks=all append", "floor"),
                      ("ingest: api role (JWT, acks=all)", "api")):
        c = counted[tag]
        print(f"  {what:44s} {c['per_202'] / 1e6:8.3f} M instr/202   ({c['total'] / 1e6:.0f} M "
              f"in all, {c['elapsed']:.0f} s)")
    per = {tag: c["per_202"] for tag, c in counted.items()}
    print(f"  instructions ingest / raw: {per['api'] / per['raw']:.3f}; ingest / floor: "
          f"{per['api'] / per['floor']:.3f}; floor / raw: {per['floor'] / per['raw']:.3f}")


def report(first: dict[str, Any] | None, second: dict[str, Any],
           args: argparse.Namespace) -> float:
    """Print every figure (phase 1's only if it ran); the ratio ingest ÷ raw."""
    if first is not None:
        lag_report(first["lag"], args)
    print(f"closed loops: {args.concurrency} concurrent requests, {args.duration:g} s each; "
          f"{', '.join(LOOPS)} take turns for {args.rounds} rounds (the order reversed in odd "
          f"rounds); ratios are the median round's")
    for what, tag in (("raw baseline (bare aiohttp 202)", "raw"),
                      ("floor: bare handler + one acks=all append", "floor"),
                      ("ingest: api role (JWT, acks=all)", "api")):
        print(closed_loop_line(what, second[tag]))
        print(cores_line(second[tag]))
    ratio, rounds = round_ratios(second, "api", "raw")
    print(f"  ratio ingest / raw: {ratio:.2f}  (goal ≥ {GOAL_RATIO}); rounds: {rounds}")
    for what, top, bottom in (("floor / raw (what the log write leaves)", "floor", "raw"),
                              ("ingest / floor (what the api's own work leaves)", "api",
                               "floor")):
        median, rounds = round_ratios(second, top, bottom)
        print(f"  ratio {what}: {median:.2f}; rounds: {rounds}")
    if first is not None:
        system = first["system"]
        print(closed_loop_line("whole system (projections folding meanwhile)", system))
        print(cores_line(system))
        print(f"  ratio whole system / raw: {system['rate'] / second['raw']['rate']:.2f}")
    if "instructions" in second:
        instructions_report(second["instructions"], args)
    return ratio


def run(args: argparse.Namespace, data_dir: Path) -> int:
    """The three phases on ``data_dir`` (phase 2 alone with ``--ratio-only``); 0 if the ratio
    meets the goal and nothing is lost."""
    ports = {tag: free_port() for tag in LOOPS}
    dev_args = dev_argv(data_dir, ports["api"])
    api = f"http://127.0.0.1:{ports['api']}"
    ready = f"{api}/health/ready"
    with process(dev_args, ready, data_dir / "dev.log") as dev:
        print(f"stack up (data dir {data_dir}); cores: {os.cpu_count()}")
        load = Load(data_dir)
        first = asyncio.run(whole_system(args, data_dir, dev.pid, api, load))
    second = asyncio.run(api_alone(args, data_dir, ports, load))
    ratio = report(first, second, args)
    if first is None:
        return 0 if ratio >= GOAL_RATIO else 1
    callgrind_api = [second["instructions"]["api"]] if "instructions" in second else []
    accepted_s = 4.0 * sum(r["accepted"] for r in (first["system"], second["api"],
                                                    *callgrind_api))
    expected_s = 12.0 * first["lag"]["acked"] + accepted_s
    with process(dev_args, ready, data_dir / "dev.log"):
        views, watched = asyncio.run(folded(args, data_dir, load.assets, expected_s))
    print(f"folded after a restart: {views} counted views (expected {first['lag']['acked']}: "
          f"one per lag session, the closed loops' single 4 s reports stay below the "
          f"threshold), {watched:.0f} s watched (expected {expected_s:.0f}: every 202)")
    complete = views == first["lag"]["acked"] and round(watched) == round(expected_s)
    return 0 if ratio >= GOAL_RATIO and complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per closed loop")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3,
                        help="the raw, floor and api loops take turns this many times (odd: "
                             "a median)")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered reports/s (lag)")
    parser.add_argument("--lag-duration", type=float, default=10.0)
    parser.add_argument("--poll-ms", type=int, default=20)
    parser.add_argument("--settle", type=float, default=120.0,
                        help="at most this long for the projections to fold every report")
    parser.add_argument("--instructions", type=int, default=0, metavar="N",
                        help="also count, under callgrind, the instructions each of raw, floor "
                             "and api executes per 202 over N requests (0: off; slow)")
    parser.add_argument("--instructions-concurrency", type=int, default=1,
                        help="requests at once while counting instructions (above 1, how many "
                             "share a produce batch, and so the counts, vary from run to run)")
    parser.add_argument("--ratio-only", action="store_true",
                        help="phase 2 alone: skip the whole-system lag and loop and the "
                             "nothing-lost check")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data directory (logs) for inspection")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    args.duration = min(max(args.duration, 1.0), 60.0)
    args.lag_duration = min(max(args.lag_duration, 1.0), 60.0)
    args.concurrency = min(max(args.concurrency, 1), 512)
    args.rounds = min(max(args.rounds, 1), 9)
    args.instructions = min(max(args.instructions, 0), 100_000)
    args.instructions_concurrency = min(max(args.instructions_concurrency, 1), 512)

    with temporary_data_dir("medialog-bench-", args.keep_data) as data_dir:
        return run(args, data_dir)


if __name__ == "__main__":
    sys.exit(main())
