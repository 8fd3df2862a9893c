"""Shared fixtures. Integration tests run against the real embedded stack, started ONCE per
session as a real ``medialog dev`` process (so restarts and kills are real too)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from medialog.config import Settings
from medialog.embedded.stack import kafka_bootstrap_of
from medialog.issuer import key_id, load_private_key, mint_token
from tests.media_tools import ffmpeg

READY_TIMEOUT_S = 180
START_ATTEMPTS = 3  # a start is retried only when its api port was taken before the bind
REAP_TIMEOUT_S = 15


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts a stack of its own, a minute or two (deselect: -m 'not slow')")
    config.addinivalue_line(
        "markers", "faults: the fault-injection suite, tests/faults (deselect: -m 'not faults')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PortTaken(RuntimeError):
    """Another process bound the api port between its choice and ``medialog dev``'s bind."""


class DevStack:
    """A ``medialog dev`` process on its own data directory, on a fresh api port each start."""

    browser_origin = "http://app.medialog.test"  # MEDIALOG_CORS_ORIGINS

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.env = dict(env or {})  # MEDIALOG_* of this stack's own (they win)
        self.args = args  # more options of ``medialog dev`` (``--brokers 3``)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "dev.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start ``medialog dev`` and wait until it is ready. On any failure, kill the process
        group, reap what it started and raise. The api port is chosen before ``medialog dev``
        binds it; if someone else took it meanwhile, the start is retried on another port."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()
            try:
                self._launch_and_wait()
                return
            except BaseException as exc:
                if self.proc is not None:
                    self.stop(signal.SIGKILL)
                if attempt == START_ATTEMPTS or not isinstance(exc, _PortTaken):
                    raise

    def _launch_and_wait(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
        env["MEDIALOG_LOG_LEVEL"] = "INFO"
        # the suite calls from 127.0.0.1 as a few users, far faster than people: budgets it
        # never spends (tests/integration/test_rate_limits.py tests the limits in-process)
        env.update({f"MEDIALOG_RATE_LIMIT_{name}": "1000000/minute"
                    for name in ("UPLOADS", "VIEWS", "VIEW_SESSIONS", "WRITES", "READS")})
        # a browser app's origin; a reverse proxy on 127.0.0.1 (integration/test_browser.py)
        env["MEDIALOG_CORS_ORIGINS"] = self.browser_origin
        env["MEDIALOG_TRUSTED_PROXIES"] = "127.0.0.1"
        env.update(self.env)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medialog", "dev", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # a port taken is an exit too, before any start
                error = _PortTaken if self._port_taken(log_offset) else RuntimeError
                raise error(f"medialog dev exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"medialog dev not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def _port_taken(self, log_offset: int) -> bool:
        """Whether this start's output (from ``log_offset``) says its api port was in use."""
        with open(self.log_path, "rb") as log:
            log.seek(log_offset)
            output = log.read().decode(errors="replace")
        return f"api port {self.port} is in use" in output

    def stop(self, sig: int = signal.SIGINT, timeout: float = 90) -> int:
        """Stop the app with ``sig`` (SIGKILL: its whole process group) and return its exit code.
        The group is SIGKILLed when a graceful stop times out. Whenever a SIGKILL was sent, the
        services living in sessions of their own are reaped too (``_reap_leftovers``)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        killed = sig == signal.SIGKILL
        if killed:
            _kill_group(proc.pid)
        else:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            killed = True
            code = proc.wait(30)
        if killed:
            _reap_leftovers(self.data_dir)
        return code

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def state(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "stack.json").read_text())

    def settings(self) -> Settings:
        st = self.state()
        return Settings.from_env(
            data_dir=self.data_dir,
            postgres_dsn=f"postgresql://medialog@127.0.0.1:{st['ports']['postgres']}/medialog",
            kafka_bootstrap=kafka_bootstrap_of(st),
            s3_endpoint=f"http://127.0.0.1:{st['ports']['s3']}",
            s3_access_key=st["s3_access_key"],
            s3_secret_key=st["s3_secret_key"],
            jwt_private_key_file=self.data_dir / "keys" / "jwt-private.pem",
        )

    def token(self, user: str, *roles: str, ttl_s: int = 600) -> str:
        """A token from the stack's own issuer key; ``ttl_s`` < 0 gives one already expired."""
        s = self.settings()
        assert s.jwt_private_key_file is not None
        key = load_private_key(s.jwt_private_key_file)
        if ttl_s > 0:
            return mint_token(key, user=user, roles=list(roles), issuer=s.jwt_issuer,
                              audience=s.jwt_audience, ttl_s=ttl_s)
        now = int(time.time())
        claims = {"iss": s.jwt_issuer, "aud": s.jwt_audience, "sub": user, "roles": list(roles),
                  "iat": now + ttl_s - 60, "nbf": now + ttl_s - 60, "exp": now + ttl_s}
        return jwt.encode(claims, key, algorithm="RS256",
                          headers={"kid": key_id(key.public_key())})


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # every member already gone
        os.killpg(pgid, signal.SIGKILL)


def _processes_in(data_dir: Path) -> dict[int, str]:
    """Live processes working in ``data_dir`` (their cwd is in it, or their command line names
    it), with their command lines. PostgreSQL, SeaweedFS and Kafka all run from inside it."""
    root = str(data_dir.resolve())
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")  # fails for zombies: they hold nothing
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/") or root in cmdline:
            found[int(entry)] = cmdline.strip()
    return found


def _wait_gone(data_dir: Path, timeout: float) -> dict[int, str]:
    """``_processes_in(data_dir)`` once it is empty, or what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := _processes_in(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _reap_leftovers(data_dir: Path) -> None:
    """After a SIGKILL of the group, stop what outlived it and raise if anything survives.

    PostgreSQL runs in a session of its own (``pg_ctl``): it gets SIGQUIT, its immediate
    shutdown. SeaweedFS and Kafka get SIGTERM from the kernel when their parent dies; an ffmpeg
    of the transcoder may still run. Whatever is still there after ``REAP_TIMEOUT_S`` is
    SIGKILLed."""
    pid_file = data_dir / "postgres" / "data" / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        postmaster = None
    if postmaster in _processes_in(data_dir):  # not a stale file whose pid was reused
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGQUIT)
    left = _wait_gone(data_dir, REAP_TIMEOUT_S)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = _wait_gone(data_dir, 5)
    if left:
        raise RuntimeError(
            f"processes of the killed stack in {data_dir} survive SIGKILL: {left} "
            f"(PostgreSQL's {pid_file}: postmaster pid {postmaster})")


@contextlib.contextmanager
def running_stack(prefix: str, *, stop_signal: int = signal.SIGINT,
                  **options: Any) -> Iterator[DevStack]:
    """A started ``medialog dev`` (``DevStack(data_dir, **options)``) on a fresh data
    directory, stopped with ``stop_signal`` and removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    dev = DevStack(data_dir, **options)
    try:
        dev.start()  # cleans up its own processes when it fails
        try:
            yield dev
        finally:  # a failed test too: its stack must not outlive the data dir
            if dev.proc is not None:
                dev.stop(stop_signal)
    finally:
        if os.environ.get("MEDIALOG_KEEP_TEST_DATA") != "1":
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)


@pytest.fixture(scope="session")
def stack() -> Iterator[DevStack]:
    with running_stack("medialog-test-") as dev:
        yield dev


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of small video (one rung: its short side is under 360), cheap to transcode."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x72:rate=10:duration=4", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path
