"""Shared fixtures. Integration tests run against the real embedded stack, started ONCE per
session as a real ``medialog dev`` process (so restarts and kills are real too)."""

from __future__ import annotations

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
from medialog.issuer import key_id, load_private_key, mint_token

READY_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevStack:
    """A ``medialog dev`` process on its own data directory and api port."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "dev.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
        env["MEDIALOG_LOG_LEVEL"] = "INFO"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medialog", "dev", "--data-dir", str(self.data_dir),
             "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"medialog dev exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"medialog dev not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 90) -> int:
        """Stop the whole process group (the app and the services it started)."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(30)
        if sig == signal.SIGKILL:
            _reap_group_leftovers(self.data_dir)
        self.proc = None
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
            kafka_bootstrap=f"127.0.0.1:{st['ports']['kafka']}",
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


def _reap_group_leftovers(data_dir: Path) -> None:
    """After a SIGKILL of the group, PostgreSQL (own session via pg_ctl) may survive: stop it."""
    pgdata = data_dir / "postgres" / "data"
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        except (OSError, ValueError):
            pass
        for _ in range(100):
            if not pid_file.exists():
                break
            time.sleep(0.1)


@pytest.fixture(scope="session")
def stack() -> Iterator[DevStack]:
    data_dir = Path(tempfile.mkdtemp(prefix="medialog-test-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    dev = DevStack(data_dir, _free_port())
    dev.start()
    yield dev
    if dev.proc is not None:
        dev.stop()
    if os.environ.get("MEDIALOG_KEEP_TEST_DATA") != "1":
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session
