"""Soak test of the whole system: ``medialog dev`` under a steady load of playback reports for
minutes on end, its last minute against its first.

Run: ``.venv/bin/python bench/soak.py [--minutes 10] [--rate 1000]``.

Starts ``medialog dev`` on a fresh temporary data dir and a free loopback port, makes the
bench's ready assets and signed-in viewers (as ``bench/ingest.py`` does), then offers
``--rate`` playback reports/s (``POST /v1/assets/{id}/views`` with RS256 JWTs, each report a
new session crossing the view threshold) for ``--minutes`` one-minute windows. After each window
it prints the achieved rate, the lag from each 202 to its view being counted in PostgreSQL
(p50/p99, measured as ``bench/ingest.py``'s lag phase: a window ends once its reports are
visible, so the next one starts on a system that has caught up) and the RSS of each process of
the stack. At the end every accepted report must have been folded exactly once: the session of
each 202 has one row in ``view_sessions`` holding one report and one view, and the assets'
counters equal the sum of their sessions.

Goal (exit status 1 when missed, or when a report is lost or folded twice): the last minute's
p99 lag within 1.5 times the first's, and the stack's total RSS after the last minute within
10 % of that after the first, because a backlog or a leak that grows under a steady load (a
queue, a cache, the log, a table's bloat) takes a long run to show.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from ingest import (
    ASSETS,
    Load,
    client,
    dev_argv,
    free_port,
    lag_run,
    postgres_dsn,
    process,
    ready_assets,
    temporary_data_dir,
)
from proctree import per_name, rss_kb, stack_pids

GOAL_P99 = 1.5  # last minute's p99 lag ÷ the first's, at most
GOAL_RSS = 1.10  # total RSS after the last minute ÷ after the first, at most
WINDOW_S = 60.0
POLL_S = 0.02  # how often the lag's poll reads the counters
MAX_INFLIGHT = 512
SETTLE_S = 120.0  # at most this long for the last reports to be folded
WATCH_S = 12.0  # each report's watch time (``lag_run``'s)


def window_lines(n: int, lag: dict[str, Any], rss: dict[str, float]) -> str:
    """Minute ``n``'s rate, lag and RSS of each process of the stack (MB)."""
    return (f"minute {n}: {lag['achieved']:.0f} reports/s (offered {lag['offered']:g}), "
            f"202s {lag['acked']}, errors {lag['errors']}; lag 202 → PostgreSQL p50 "
            f"{lag['p50'] * 1e3:.0f} ms, p99 {lag['p99'] * 1e3:.0f} ms "
            f"(visible {lag['visible']}/{lag['acked']})\n  RSS MB: "
            + ", ".join(f"{label} {kb / 1024:.0f}" for label, kb in rss.items())
            + f"; total {sum(rss.values()) / 1024:.0f}")


async def folded_once(pool: asyncpg.Pool, assets: list[str], sessions: list[str]
                      ) -> dict[str, Any]:
    """Once the projections caught up (at most ``SETTLE_S``): how many of ``sessions`` (every
    202's) are missing from ``view_sessions`` or hold other than one report and one view, and
    whether ``asset_stats`` counts the views and watch time of the sessions stored."""
    accepted = set(sessions)
    deadline = time.monotonic() + SETTLE_S
    while True:
        rows = await pool.fetch("SELECT session_id, reports, views FROM view_sessions "
                                "WHERE asset_id = ANY($1::text[])", assets)
        stored = {session: (reports, views) for session, reports, views in rows}
        missing = len(accepted - stored.keys())
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    views, watched = await pool.fetchrow(
        "SELECT coalesce(sum(view_count), 0), coalesce(sum(watch_seconds_total), 0) "
        "FROM asset_stats WHERE asset_id = ANY($1::text[])", assets)
    counters = (int(views) == sum(v for _, v in stored.values())
                and float(watched) == WATCH_S * sum(r for r, _ in stored.values()))
    return {"accepted": len(accepted), "missing": missing,
            "twice": sum(1 for s in accepted & stored.keys() if stored[s] != (1, 1)),
            "others": len(stored.keys() - accepted), "counters": counters}


async def soak(args: argparse.Namespace, data_dir: Path, dev_pid: int, api: str
               ) -> tuple[list[dict[str, Any]], list[float], dict[str, Any]]:
    """Every window's lag and the stack's total RSS (KiB) after it, and the final check."""
    load = Load(data_dir)
    lags: list[dict[str, Any]] = []
    totals: list[float] = []
    async with client(MAX_INFLIGHT // 2) as http:
        pool = await asyncpg.create_pool(postgres_dsn(data_dir), min_size=1, max_size=2)
        try:
            load.assets = await ready_assets(data_dir, pool, ASSETS)
            for n in range(1, args.minutes + 1):
                lag = await lag_run(http, api, load.assets, load.tokens, pool, args.rate,
                                    WINDOW_S, POLL_S, MAX_INFLIGHT, tag=f"soak{n}")
                rss = per_name(stack_pids(dev_pid, data_dir), rss_kb)
                print(window_lines(n, lag, rss), flush=True)
                lags.append(lag)
                totals.append(sum(rss.values()))
            check = await folded_once(pool, load.assets,
                                      [s for lag in lags for s in lag["sessions"]])
        finally:
            await pool.close()
    return lags, totals, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="one-minute windows")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered reports/s")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data directory (logs) for inspection")
    args = parser.parse_args(argv)
    args.minutes = min(max(args.minutes, 1), 240)
    args.rate = min(max(args.rate, 1.0), 5000.0)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with temporary_data_dir("medialog-soak-", args.keep_data) as data_dir, process(
            dev_argv(data_dir, port), f"{api}/health/ready", data_dir / "dev.log") as dev:
        print(f"stack up (data dir {data_dir}); {args.minutes} minutes at {args.rate:g} "
              f"reports/s", flush=True)
        lags, totals, check = asyncio.run(soak(args, data_dir, dev.pid, api))
    print(f"folded: {check['accepted']} accepted reports, {check['missing']} missing, "
          f"{check['twice']} folded more than once, {check['others']} other sessions stored; "
          f"counters {'equal' if check['counters'] else 'DIFFER from'} the sessions' sums")
    p99 = lags[-1]["p99"] / lags[0]["p99"]
    rss = totals[-1] / totals[0]
    print(f"p99 last/first = {p99:.2f} (goal <= {GOAL_P99}); "
          f"RSS last/first = {rss:.2f} (goal <= {GOAL_RSS:.2f})")
    once = not check["missing"] and not check["twice"] and check["counters"]
    return 0 if p99 <= GOAL_P99 and rss <= GOAL_RSS and once else 1


if __name__ == "__main__":
    sys.exit(main())
