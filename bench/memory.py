"""Idle memory and start-up time of the embedded default: ``medialog dev`` (the api and
analytics, and its child process running the other roles) plus the services it starts
(SeaweedFS, Kafka's java, PostgreSQL).

Run: ``.venv/bin/python bench/memory.py [--settle 20]``.

Launches ``medialog dev`` on a fresh temporary data dir and a free loopback port, and prints the
seconds from the launch until ``/health/ready`` answers 200 (the broker's jars cached, as after
the first run on a machine; no goal, recorded), then, after ``--settle`` idle seconds, the RSS
of each process of the stack (summed per kind: every PostgreSQL process is ``postgres``) and the
total. Goal: the total under 1.5 GB (exit status 1 otherwise), so that the whole system runs on
a developer's laptop next to everything else.
"""

from __future__ import annotations

import argparse
import sys
import time

from ingest import dev_argv, free_port, process, temporary_data_dir
from proctree import per_name, rss_kb, stack_pids

BUDGET_MB = 1536


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before measuring")
    args = parser.parse_args()
    port = free_port()
    with temporary_data_dir("medialog-mem-") as data_dir:
        launched = time.monotonic()
        with process(dev_argv(data_dir, port), f"http://127.0.0.1:{port}/health/ready",
                     data_dir / "dev.log") as dev:
            print(f"start-up to ready: {time.monotonic() - launched:.1f} s (fresh data dir)")
            time.sleep(min(max(args.settle, 0.0), 600.0))
            pids = stack_pids(dev.pid, data_dir)
            rss = per_name(pids, rss_kb)
    for label, kb in rss.items():
        print(f"{kb / 1024:8.1f} MB  {label}")
    total_mb = sum(rss.values()) / 1024
    print(f"{total_mb:8.1f} MB  total ({len(pids)} processes); budget {BUDGET_MB} MB: "
          f"{'MET' if total_mb < BUDGET_MB else 'EXCEEDED'}")
    return 0 if total_mb < BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
