"""A crash at any moment loses nothing and counts nothing twice: real load while every process
of the system is SIGKILLed in turn, at random moments, then exact counts.

The system (``cluster.FaultStack``) is the embedded services with a three-node Kafka
(``MEDIALOG_FAULTS_BROKERS``, default 3) and medialog's two processes. The load
(``load``): a flood of view reports from many sessions, signed in and anonymous; likes and
unlikes by many users; uploads of short clips through transcode. Meanwhile a seeded generator
kills the api, the roles process, a Kafka node, PostgreSQL and SeaweedFS (each at least once,
in a random order), each after a random pause, and starts it again after a random delay. Then,
in a random order: ``EXTRA_KILLS`` random kills; ``FREEZES`` random targets hung (SIGSTOP) for
a while, then let go on; and ``OVERLAPS`` kills of a second target while a first is still
down (started again services first). The seed is printed; ``MEDIALOG_FAULTS_SEED=<seed>``
replays the same faults, order and load choices (the timings of a run cannot be replayed
exactly).

Once the load has ended and the system converged, it asserts exactly:

* every view report answered 202 is counted once in PostgreSQL and once in ClickHouse, and
  none abandoned on a ``503 DB_UNAVAILABLE`` is counted;
* every completed upload is ``ready``, or ``failed`` with a reason;
* like counts equal the final like state of every user;
* no event id is twice in a read model, and every aggregate's sequence on the log and in the
  read models runs 1…n without a gap;
* ``medialog verify`` finds the read models equal to a fresh fold of the log;

and prints one summary line: the kills and freezes per target, the requests sent, accepted and
refused, events lost (0) and double counts (0)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.faults import checks
from tests.faults.cluster import TARGETS, FaultStack
from tests.faults.load import (
    REQUEST_TIMEOUT_S,
    Client,
    Ledger,
    Upload,
    Views,
    like_toggles,
    upload,
    view_flood,
)
from tests.media_tools import ffmpeg

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BROKERS = int(os.environ.get("MEDIALOG_FAULTS_BROKERS", "3"))
EXTRA_KILLS = 2  # after one kill of each target
FREEZES = 2
OVERLAPS = 1
PAUSE_S = (2.0, 6.0)  # before each fault
DOWN_S = (0.5, 4.0)  # from a kill to the restart
FROZEN_S = (1.0, 6.0)  # from a freeze to the thaw
BETWEEN_S = (0.2, 2.0)  # from an overlap's first kill to its second
RESTART_ORDER = ("kafka", "postgres", "seaweedfs", "roles", "api")  # what the others need first
PLAYERS = 8  # concurrent view reporters
FANS = 12  # users liking and unliking
UPLOADS = 6  # started at random moments of the faults (besides the two the load plays)
UPLOADS_WITHIN_S = 60.0
SETTLE_S = 180.0  # after the faults: retries stop, and the system must have converged
WATCH_S = 3.0  # a view of the 4 s clip (threshold: half its duration)
OVERRIDES = {
    # the load calls from one address as a few users, far faster than people
    **{f"rate_limit_{name}": "" for name in ("uploads", "views", "view_sessions", "writes",
                                            "reads")},
    "postgres_timeout_s": 3.0,
    "kafka_request_timeout_ms": 8_000,
    "shutdown_timeout_s": 10.0,
}


@pytest.fixture
def media(tmp_path: Path) -> bytes:
    path = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x72:rate=10:duration=4", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path.read_bytes()


@pytest.mark.timeout(900)
async def test_crashes_lose_nothing_and_count_nothing_twice(
        media: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("MEDIALOG_FAULTS_SEED") or secrets.randbelow(2**32))
    with capsys.disabled():  # on the terminal even when it passes
        print(f"\nfault suite: seed {seed} (MEDIALOG_FAULTS_SEED={seed} replays it), "
              f"{BROKERS} Kafka node(s)")
    data_dir = Path(tempfile.mkdtemp(prefix="medialog-faults-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    system = FaultStack(data_dir, brokers=BROKERS, overrides=OVERRIDES)
    try:
        await system.start()
        await _run(system, seed, media, capsys)
    finally:
        await system.stop()
        if os.environ.get("MEDIALOG_KEEP_TEST_DATA") != "1":
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)


async def _run(system: FaultStack, seed: int, media: bytes,
               capsys: pytest.CaptureFixture[str]) -> None:
    ledger, views = Ledger(), Views()
    liked: dict[tuple[str, str], bool | None] = {}
    kills: collections.Counter[str] = collections.Counter()
    freezes: collections.Counter[str] = collections.Counter()
    creator = system.token("fault-creator", "creator")
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        client = Client(http, system.base_url, ledger)
        played = await asyncio.gather(*(upload(client, http, creator, f"play-{seed}-{i}", media)
                                        for i in range(2)))
        assets = [u.asset_id for u in played]
        assert all(u.completed for u in played), played
        for asset in assets:
            assert await _terminal(client, creator, asset, 120) == "ready", asset

        rng = random.Random(seed)
        stop = asyncio.Event()
        viewers = [system.token(f"viewer-{i}", "viewer") for i in range(4)]
        fans = {f"fan-{i}": system.token(f"fan-{i}", "viewer") for i in range(FANS)}
        load = [asyncio.create_task(view_flood(client, assets, viewers, random.Random(
                    f"{seed}/player/{i}"), stop, views, WATCH_S)) for i in range(PLAYERS)]
        load += [asyncio.create_task(like_toggles(client, user, token, assets, random.Random(
                    f"{seed}/fan/{user}"), stop, liked)) for user, token in fans.items()]
        uploads = [asyncio.create_task(_upload_at(client, http, creator, f"fault-{seed}-{i}",
                                                  media, rng.uniform(0, UPLOADS_WITHIN_S)))
                   for i in range(UPLOADS)]
        began = time.monotonic()
        await _chaos(system, rng, kills, freezes)
        chaos_s = time.monotonic() - began
        stop.set()
        client.deadline = time.monotonic() + SETTLE_S
        await asyncio.gather(*load)
        completed: list[Upload] = list(await asyncio.gather(*uploads))
        statuses = {u.asset_id: await _terminal(client, creator, u.asset_id, SETTLE_S)
                    for u in completed if u.completed}
        failures = await _failures(system, list(statuses))

    summary = (
        f"seed {seed}: kills {dict(sorted(kills.items()))}, freezes "
        f"{dict(sorted(freezes.items()))} in {chaos_s:.0f}s; requests sent "
        f"{ledger.sent}, accepted {ledger.accepted}, refused {ledger.refused} "
        f"({dict(ledger.answers.most_common())}); view reports accepted {len(views.accepted)}, "
        f"abandoned {len(views.abandoned)}; like states known "
        f"{sum(v is not None for v in liked.values())}; "
        f"uploads {collections.Counter(statuses.values())}")
    print(summary)
    assert not ledger.unresolved, f"no definite answer within {SETTLE_S:.0f}s after the faults: " \
        f"{ledger.unresolved[:5]}; {summary}"
    assert not ledger.unexpected, f"{ledger.unexpected[:5]}; {summary}"
    assert all(u.completed for u in completed), [u.steps for u in completed if not u.completed]
    assert set(statuses.values()) <= {"ready", "failed"}, f"{statuses}; {summary}"
    assert all(failures[a] for a, s in statuses.items() if s == "failed"), failures

    settings = system.settings
    assert settings is not None
    pg = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        found = await checks.converged(
            lambda: checks.postgres(pg, assets, views, liked), SETTLE_S)
        log_ids, last, found_on_log = await checks.log(settings)
        found += found_on_log
        found += await checks.asset_history(pg)
        found += await checks.versions(pg, last)
    finally:
        await pg.close()
    await checks.caught_up(system, SETTLE_S)
    await system.stop_process("api")  # ClickHouse (chDB) is then free for this test to read
    found += await checks.clickhouse(system, assets, views, log_ids)
    code, out = await system.run("verify", "all")
    with capsys.disabled():
        print(f"fault suite: kills {', '.join(f'{t} {kills[t]}' for t in TARGETS)}; freezes "
              f"{', '.join(f'{t} {n}' for t, n in sorted(freezes.items())) or 'none'}; requests "
              f"sent {ledger.sent}, accepted {ledger.accepted}, refused {ledger.refused}; "
              f"events lost {found.count('lost')}; double counts {found.count('double')}; "
              f"refused but counted {found.count('ghost')} (seed {seed})")
    assert not found, f"{found}; {summary}"
    assert code == 0, f"medialog verify all exited {code}:\n{out}"


async def _upload_at(client: Client, http: aiohttp.ClientSession, token: str, key: str,
                     media: bytes, after_s: float) -> Upload:
    await asyncio.sleep(after_s)
    return await upload(client, http, token, key, media)


async def _chaos(system: FaultStack, rng: random.Random, kills: collections.Counter[str],
                 freezes: collections.Counter[str]) -> None:
    """Kill each target once in a random order; then the other faults (module docstring) in a
    random order. Each fault after a random pause; what was killed is started again after a
    random delay, what was frozen let go on."""
    plan: list[tuple[str, ...]] = [("kill", target) for target in TARGETS]
    rng.shuffle(plan)
    others: list[tuple[str, ...]] = [("kill", rng.choice(TARGETS)) for _ in range(EXTRA_KILLS)]
    others += [("freeze", rng.choice(TARGETS)) for _ in range(FREEZES)]
    others += [("kill", *rng.sample(TARGETS, 2)) for _ in range(OVERLAPS)]
    rng.shuffle(others)
    for action, *targets in plan + others:
        await asyncio.sleep(rng.uniform(*PAUSE_S))
        hit = [(target, rng.randrange(BROKERS) if target == "kafka" else 0)
               for target in targets]
        if action == "freeze":
            label = system.freeze(*hit[0])
            freezes[hit[0][0]] += 1
            frozen = rng.uniform(*FROZEN_S)
            print(f"  froze {label}; letting it go on in {frozen:.1f}s")
            await asyncio.sleep(frozen)
            system.thaw(*hit[0])
            continue
        for n, (target, node) in enumerate(hit):
            if n:
                await asyncio.sleep(rng.uniform(*BETWEEN_S))
            print(f"  killed {system.kill(target, node)}")
            kills[target] += 1
        down = rng.uniform(*DOWN_S)
        print(f"  starting {', '.join(t for t, _ in hit)} again in {down:.1f}s")
        await asyncio.sleep(down)
        for target, node in sorted(hit, key=lambda h: RESTART_ORDER.index(h[0])):
            await system.restart(target, node)


async def _terminal(client: Client, token: str, asset: str, timeout: float) -> str:
    """The asset's status once ready or failed (or the last seen at ``timeout``)."""
    deadline, status = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        answer = await client.definite("GET", f"/v1/assets/{asset}", token=token)
        status = answer.body.get("status", "") if answer.accepted else str(answer.status)
        if status in ("ready", "failed"):
            return status
        await asyncio.sleep(1.0)
    return status


async def _failures(system: FaultStack, assets: list[str]) -> dict[str, Any]:
    """Each asset's recorded failure (reason), from PostgreSQL."""
    assert system.settings is not None
    pg = await asyncpg.connect(system.settings.postgres_dsn.get_secret_value())
    try:
        rows = await pg.fetch("SELECT asset_id, failure FROM assets WHERE asset_id = ANY($1)",
                              assets)
    finally:
        await pg.close()
    return {r["asset_id"]: json.loads(r["failure"]).get("reason") if r["failure"] else None
            for r in rows}


