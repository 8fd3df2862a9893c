"""The fault suite's exact checks: the read models and the log against what the clients were
told (``load``), each difference a :class:`Findings` entry of a kind: ``lost`` (an accepted
write without its effect), ``double`` (an effect twice), ``ghost`` (the effect of a write
refused with nothing written) or ``other``."""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from medialog.envelope import decode_event
from tests.faults.cluster import FaultStack
from tests.faults.load import Views
from tests.kafka_log import read_topic

PUBLIC_TOPICS = ("events.asset", "events.engagement", "events.views", "events.access")


@dataclass
class Findings:
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.items.append((kind, message))

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.items)

    def __iadd__(self, other: Findings) -> Findings:
        self.items += other.items
        return self

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "; ".join(f"{kind}: {message}" for kind, message in self.items[:10])


async def converged(check: Callable[[], Awaitable[Findings]], timeout: float) -> Findings:
    """``check()``'s findings once there are none, or the last ones at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1.0)


async def postgres(pg: asyncpg.Connection, assets: list[str], views: Views,
                   liked: dict[tuple[str, str], bool | None]) -> Findings:
    """Where PostgreSQL's views and likes differ from what the clients were told."""
    found = Findings()
    sessions = {r["session_id"]: r for r in await pg.fetch(
        "SELECT session_id, views, reports FROM view_sessions WHERE asset_id = ANY($1)", assets)}
    for session in views.accepted:
        row = sessions.get(session)
        if row is None or row["views"] == 0:
            found.add("lost", f"PostgreSQL: accepted report {session} not counted")
        elif (row["views"], row["reports"]) != (1, 1):
            found.add("double", f"PostgreSQL: accepted report {session}: {dict(row)}")
    for session in views.abandoned:
        if session in sessions:
            found.add("ghost", f"PostgreSQL: abandoned report {session}: {dict(sessions[session])}")
    stats = {r["asset_id"]: r for r in await pg.fetch(
        "SELECT asset_id, view_count, like_count FROM asset_stats WHERE asset_id = ANY($1)",
        assets)}
    per_asset = collections.Counter(views.accepted.values())
    for asset in assets:
        seen = stats[asset]["view_count"] if asset in stats else 0
        if seen != per_asset[asset]:
            found.add("other", f"PostgreSQL: {asset} view_count {seen}, {per_asset[asset]} sent")
        known = {v for (_, a), v in liked.items() if a == asset}
        likes = sum(v is True for (_, a), v in liked.items() if a == asset)
        seen = stats[asset]["like_count"] if asset in stats else 0
        if None not in known and seen != likes:
            found.add("other", f"PostgreSQL: {asset} like_count {seen}, {likes} liked")
    state = {(r["user_id"], r["asset_id"]): r["liked"] for r in await pg.fetch(
        "SELECT user_id, asset_id, liked FROM likes WHERE asset_id = ANY($1)", assets)}
    for (user, asset), want in liked.items():
        if want is not None and state.get((user, asset), False) != want:
            found.add("lost", f"PostgreSQL: {user} on {asset}: liked "
                              f"{state.get((user, asset), False)}, the last accepted command "
                              f"left {want}")
    return found


async def asset_history(pg: asyncpg.Connection) -> Findings:
    """Event ids twice in the asset history, or histories whose sequence has a gap."""
    found = Findings()
    for row in await pg.fetch(
            "SELECT event_id, count(*) AS n FROM asset_events GROUP BY 1 HAVING count(*) > 1"):
        found.add("double", f"PostgreSQL asset_events: {row['event_id']} {row['n']} times")
    for row in await pg.fetch(
            "SELECT a.asset_id, a.version, count(e.sequence) AS n, max(e.sequence) AS last "
            "FROM assets a LEFT JOIN asset_events e USING (asset_id) GROUP BY 1, 2 "
            "HAVING count(e.sequence) <> a.version OR max(e.sequence) <> a.version"):
        found.add("lost", f"PostgreSQL asset_events: a gap in {dict(row)}")
    return found


async def log(settings: Any) -> tuple[set[str], dict[str, int], Findings]:
    """Every event id on the public topics; each aggregate's last sequence number (an asset:
    its id; an engagement: ``asset/user``); and the aggregates whose sequence on the log has
    a gap or two different events at one number (a re-published event has its id again)."""
    ids: set[str] = set()
    numbered: dict[str, dict[int, set[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(set))
    for topic in PUBLIC_TOPICS:
        for record in await read_topic(settings, topic):
            event = decode_event(record.value)[0]
            ids.add(event.id)
            if event.sequence is not None:
                user = getattr(event.data, "user_id", None)
                aggregate = f"{event.subject}/{user}" if user else event.subject
                numbered[aggregate][event.sequence].add(event.id)
    found = Findings()
    for aggregate, by_number in numbered.items():
        if sorted(by_number) != list(range(1, len(by_number) + 1)):
            found.add("lost", f"log: {aggregate}'s sequence {sorted(by_number)}")
        for number, events in by_number.items():
            if len(events) > 1:
                found.add("double", f"log: {aggregate}'s {number} is {len(events)} events")
    return ids, {a: len(n) for a, n in numbered.items()}, found


async def versions(pg: asyncpg.Connection, last: dict[str, int]) -> Findings:
    """Read models whose aggregate version is not the log's last sequence number."""
    rows = await pg.fetch("SELECT asset_id AS aggregate, version FROM assets UNION ALL "
                          "SELECT engagement_key, version FROM likes")
    have = {r["aggregate"]: r["version"] for r in rows}
    found = Findings()
    for aggregate, n in last.items():
        if have.get(aggregate) != n:
            kind = "lost" if (have.get(aggregate) or 0) < n else "double"
            found.add(kind, f"PostgreSQL: {aggregate} at version {have.get(aggregate)}, "
                            f"the log at {n}")
    return found


async def caught_up(system: FaultStack, timeout: float) -> None:
    """Return once every projection of both processes has no lag."""
    deadline = time.monotonic() + timeout
    lags: dict[str, Any] = {}
    urls = [f"http://127.0.0.1:{port}/health/ready"
            for port in (system.api_port, system.roles_port)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while time.monotonic() < deadline:
            lags = {}
            for url in urls:
                async with http.get(url) as r:
                    lags.update((await r.json()).get("projections", {}))
            if lags and all(lag["total"] == 0 for lag in lags.values()):
                return
            await asyncio.sleep(1.0)
    raise AssertionError(f"projections still behind after {timeout:.0f}s: {lags}")


async def clickhouse(system: FaultStack, assets: list[str], views: Views,
                     log_ids: set[str]) -> Findings:
    """Where ClickHouse differs from the clients and from the log. chDB allows one process per
    path, so the api (which holds it) must be stopped; the queries run in a child process."""
    assert system.settings is not None
    in_assets = ", ".join(f"'{a}'" for a in assets)  # uuids minted by the api
    queries = [
        "SELECT session_id, countIf(verdict = 'counted'), count() FROM views FINAL "
        f"WHERE asset_id IN ({in_assets}) GROUP BY session_id",
        "SELECT count(), uniqExact(id) FROM events FINAL",
        "SELECT id FROM events FINAL",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.faults.chdb_query", system.settings.clickhouse_dsn,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=system.env(system.api_port))
    out, err = await proc.communicate(json.dumps(queries).encode())
    assert proc.returncode == 0, err.decode()
    session_rows, [(rows, unique)], id_rows = json.loads(out)
    sessions = {s: (counted, n) for s, counted, n in session_rows}
    found = Findings()
    for session in views.accepted:
        counted, n = sessions.get(session, (0, 0))
        if counted == 0:
            found.add("lost", f"ClickHouse: accepted report {session} not counted")
        elif counted > 1 or n > 1:
            found.add("double", f"ClickHouse: accepted report {session}: {n} rows")
    for session in views.abandoned:
        if session in sessions:
            found.add("ghost", f"ClickHouse: abandoned report {session}: {sessions[session]}")
    if rows != unique:
        found.add("double", f"ClickHouse events: {rows} rows for {unique} event ids")
    stored = {i for (i,) in id_rows}
    if log_ids - stored:
        found.add("lost", f"ClickHouse events: {len(log_ids - stored)} events of the log missing")
    if stored - log_ids:
        found.add("other", f"ClickHouse events: {len(stored - log_ids)} not on the log")
    return found
