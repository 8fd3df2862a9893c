"""Running ``medialog`` commands from tests as separate processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys


def _default_sigint() -> None:
    # A child of a shell's background job inherits SIGINT ignored, and Python then leaves it
    # ignored: the interruption tests need Ctrl-C's behaviour whatever ran the suite.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m medialog ARGS`` with pipes for its output, interruptible by SIGINT."""
    return subprocess.Popen([sys.executable, "-m", "medialog", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


async def run(args: list[str], env: dict[str, str], timeout: float = 180
              ) -> tuple[int, list[str], str]:
    """Run ``medialog ARGS`` to its end: exit status, stdout lines, stderr."""
    proc = start(args, env)
    out, err = await asyncio.to_thread(proc.communicate, timeout=timeout)
    return proc.returncode, out.splitlines(), err
