"""Supervise one child process on the asyncio event loop.

Contract of :class:`ManagedProcess`:

* ``start()`` launches the command with stdout and stderr appended to ``log_file`` (or, with
  none, to this process's own), in a new session unless ``new_session`` is false (so a Ctrl-C in
  the terminal of ``medialog dev`` reaches only medialog, which then stops the services in
  order), and returns once ``ready`` says so. If the process exits or
  is not ready within ``timeout``, it is stopped and :class:`EmbeddedError` is raised naming the
  log file.
* ``wait()`` returns the exit code once the process has exited.
* ``stop()`` sends ``stop_signal``, waits ``stop_timeout`` seconds, then SIGKILLs. It is
  idempotent.
* With ``pid_file`` set, a process left running by a crashed previous run (same pid file, same
  executable) is stopped before the new one starts.

On Linux the child is started through ``setpriv --pdeathsig TERM`` when available, so the
services go away if the supervising process is SIGKILLed. Limit: the signal is tied to the
*thread* that forked, so the event loop must outlive the services (it does when the stack is
stopped before the loop closes, which both ``medialog dev`` and the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


class EmbeddedError(RuntimeError):
    """An embedded service could not be started or used; the message says what to do."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``.

    SO_REUSEADDR is set like the services do, so a port still in TIME_WAIT from our own previous
    run counts as free. Limit: another process may take the port between this check and the
    service's bind; the service then fails to start and says so in its log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", exclude: Collection[int] = ()) -> int:
    """A port the OS considers free now (same race as :func:`port_is_free`), not in ``exclude``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise EmbeddedError("could not find a free TCP port")


async def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, for error messages ('' when unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One long-running child process with a log file, readiness wait and graceful stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pid_file: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 15.0,
        new_session: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.pid_file = pid_file
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.new_session = new_session
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, ready: ReadyCheck | int, timeout: float = 60.0) -> None:
        """Launch and wait until ``ready`` (an async predicate, or a TCP port that must accept)."""
        if self.running:
            return
        if self.pid_file is not None:
            await self._reap_stale()
        argv = self.argv
        if sys.platform == "linux" and (setpriv := shutil.which("setpriv")):
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        log.info("starting %s (log %s)", self.name, self.log_file or "here")
        with contextlib.ExitStack() as files:
            out = None
            if self.log_file is not None:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                out = files.enter_context(open(self.log_file, "ab"))
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                out.write(f"\n==== {stamp} starting {self.name}\n".encode())
                out.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT if out is not None else None,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(f"{self._proc.pid}\n")
        check: ReadyCheck = ready if callable(ready) else functools.partial(port_accepts, ready)
        try:
            await self._wait_ready(check, timeout)
        except BaseException:
            await self.stop()
            raise
        log.info("%s ready (pid %d)", self.name, self._proc.pid)

    async def _wait_ready(self, check: ReadyCheck, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.returncode is not None:
                raise EmbeddedError(
                    f"{self.name} exited with code {self._proc.returncode} during start; "
                    f"{self._see_log()}")
            if await check():
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"{self.name} not ready within {timeout:.0f}s; {self._see_log()}")
            await asyncio.sleep(0.1)

    def _see_log(self) -> str:
        if self.log_file is None:
            return "see its output above"
        return f"see {self.log_file}:\n{log_tail(self.log_file)}"

    async def wait(self) -> int:
        """The exit code, once the process has exited (``RuntimeError`` if none was started)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return await self._proc.wait()

    async def stop(self) -> None:
        """Stop gracefully (``stop_signal``), SIGKILL after ``stop_timeout``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            log.info("stopping %s (pid %d)", self.name, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(proc.wait(), timeout=self.stop_timeout)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", self.name, self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.pid_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    async def _reap_stale(self) -> None:
        """Stop a leftover process recorded in ``pid_file`` if it still runs our executable."""
        assert self.pid_file is not None
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return  # no pid file, no such process, or not Linux
        exe = os.path.basename(self.argv[0]).encode()
        if not any(os.path.basename(arg) == exe for arg in cmdline[:4]):
            return  # the pid was reused by something else
        log.warning("stopping leftover %s (pid %d) from a previous run", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.1)
