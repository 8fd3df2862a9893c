"""Idle memory of the embedded default: `medialog dev` (the api and analytics, and its child
process running the other roles) plus the services it starts (SeaweedFS, tansu, PostgreSQL),
summed RSS after the stack settles.

    .venv/bin/python bench/memory.py [--settle 20]

Prints each process's RSS, the total, and whether it is under the 1.5 GB budget."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from proctree import cmdline, rss_kb, stack_pids

BUDGET_MB = 1536


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before measuring")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="medialog-mem-"))
    data.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data / "dev.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "medialog", "dev", "--data-dir", str(data),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            print("stack not ready", file=sys.stderr)
            return 1
        time.sleep(args.settle)
        pids = stack_pids(proc.pid, data)
        total = 0
        for pid in sorted(pids):
            kb = rss_kb(pid)
            total += kb
            if kb > 10_000:
                print(f"{kb / 1024:8.1f} MB  {cmdline(pid)}")
        print(f"{total / 1024:8.1f} MB  total ({len(pids)} processes); "
              f"budget {BUDGET_MB} MB: {'MET' if total / 1024 < BUDGET_MB else 'EXCEEDED'}")
        return 0 if total / 1024 < BUDGET_MB else 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(data)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
