"""The embedded backing services of ``medialog dev`` and the test suite, under one data dir.

Layout of ``data_dir``::

    stack.json      secrets and ports of this stack (mode 0600), written on first start
    stack.lock      held while the stack runs: one stack per data dir
    seaweedfs/      weed mini (S3: buckets staging, masters, previews, tansu)
    postgres/       PostgreSQL cluster (role and database ``medialog``)
    logs/           one log per service
    chdb/, keys/    used by medialog itself (only their paths are given here)

Contract: ``start()`` brings up SeaweedFS and PostgreSQL (in parallel), the buckets, then tansu
with its log in SeaweedFS, and returns when all answer; on failure it stops what it started and
raises :class:`EmbeddedError`. ``stop()`` stops tansu, then SeaweedFS and PostgreSQL, and is
idempotent. Starting again on the same data dir reuses the data, the secrets and, when still
free, the ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from medialog.embedded.postgres import Postgres
from medialog.embedded.processes import EmbeddedError, free_port, port_is_free
from medialog.embedded.seaweedfs import SeaweedFS, SeaweedPorts
from medialog.embedded.tansu import Tansu

log = logging.getLogger(__name__)

BUCKETS = ("staging", "masters", "previews", "tansu")
TANSU_BUCKET = "tansu"
SIGNING_KID = "k1"
REGION = "us-east-1"


class EmbeddedStack:
    """SeaweedFS + tansu + PostgreSQL under ``data_dir``; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        *,
        s3_port: int | None = None,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._fixed = {"s3": s3_port, "kafka": kafka_port, "postgres": postgres_port}
        self._state: dict[str, Any] | None = None
        self._lock: IO[str] | None = None
        self.seaweedfs: SeaweedFS | None = None
        self.tansu: Tansu | None = None
        self.postgres: Postgres | None = None

    # -- state -----------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.data_dir / "stack.json"

    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as exc:
            raise EmbeddedError(f"cannot read {self._state_file}: {exc}") from exc
        state.setdefault("s3_access_key", "ML" + secrets.token_hex(9).upper())
        state.setdefault("s3_secret_key", secrets.token_urlsafe(30))
        state.setdefault("signing_secret", secrets.token_urlsafe(32))
        state.setdefault("viewer_salt", secrets.token_urlsafe(32))
        state["ports"] = self._choose_ports(state.get("ports", {}))
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._state_file)

    def _choose_ports(self, previous: dict[str, Any]) -> dict[str, Any]:
        """Fixed ports win; else the previous run's if free; else fresh free ones."""
        taken: set[int] = set()
        chosen: dict[str, Any] = {}
        for name in ("s3", "kafka", "postgres"):
            fixed, old = self._fixed[name], previous.get(name)
            if fixed is not None:
                if not port_is_free(fixed):
                    raise EmbeddedError(f"{name} port {fixed} is already in use")
                port = fixed
            elif isinstance(old, int) and old not in taken and port_is_free(old):
                port = old
            else:
                port = free_port(exclude=taken)
            chosen[name] = port
            taken.add(port)
        weed = SeaweedPorts.choose(chosen["s3"], previous.get("seaweedfs", {}), taken)
        chosen["seaweedfs"] = {k: v for k, v in vars(weed).items() if k != "s3"}
        return chosen

    def _require_state(self) -> dict[str, Any]:
        if self._state is None:
            raise EmbeddedError("the embedded stack has not been started")
        return self._state

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every service (see module docstring); no-op when already started."""
        if self._lock is not None:
            return
        began = time.monotonic()
        for tool in ("ffmpeg", "ffprobe"):
            if shutil.which(tool) is None:
                raise EmbeddedError(
                    f"{tool} not found on PATH; install it (Debian: apt-get install -y ffmpeg)")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._acquire_lock()
        try:
            await self._start_services()
        except BaseException:
            with contextlib.suppress(Exception):  # stop() logs its own errors
                await self.stop()
            raise
        log.info("embedded stack ready in %.1fs (data dir %s)", time.monotonic() - began,
                 self.data_dir)

    def _acquire_lock(self) -> None:
        lock = open(self.data_dir / "stack.lock", "w")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise EmbeddedError(
                f"{self.data_dir} is in use by another running medialog stack") from None
        self._lock = lock

    async def _start_services(self) -> None:
        self._state = state = self._load_state()
        self._save_state(state)
        ports, logs = state["ports"], self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        self.seaweedfs = SeaweedFS(
            self.data_dir / "seaweedfs", logs / "seaweedfs.log",
            SeaweedPorts(s3=ports["s3"], **ports["seaweedfs"]),
            state["s3_access_key"], state["s3_secret_key"], REGION)
        self.postgres = Postgres(self.data_dir / "postgres", ports["postgres"],
                                 logs / "postgres.log")
        results = await asyncio.gather(
            self.seaweedfs.start(), self.postgres.start(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.seaweedfs.create_buckets(BUCKETS)
        self.tansu = Tansu(
            ports["kafka"], logs / "tansu.log", self.data_dir / "tansu",
            self.seaweedfs.endpoint, state["s3_access_key"], state["s3_secret_key"], REGION,
            bucket=TANSU_BUCKET)
        await self.tansu.start()

    async def stop(self) -> None:
        """Stop tansu, then SeaweedFS and PostgreSQL (fast shutdown). Idempotent.

        Every service is asked to stop even if another fails to; the first error is re-raised.
        """
        errors: list[BaseException] = []
        if self.tansu is not None:
            try:
                await self.tansu.stop()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        rest = [s.stop() for s in (self.seaweedfs, self.postgres) if s is not None]
        errors += [r for r in await asyncio.gather(*rest, return_exceptions=True)
                   if isinstance(r, BaseException)]
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        for error in errors:
            log.error("error while stopping the embedded stack: %s", error)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> EmbeddedStack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what clients need -----------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._require_state()['ports']['s3']}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self._require_state()['ports']['kafka']}"

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://medialog@127.0.0.1:{self._require_state()['ports']['postgres']}/medialog"

    def pids(self) -> dict[str, int | None]:
        """Process ids of the running services (for measurements and diagnostics)."""
        return {
            "seaweedfs": self.seaweedfs.pid if self.seaweedfs else None,
            "tansu": self.tansu.pid if self.tansu else None,
            "postgres": self.postgres.server_pid if self.postgres else None,
        }

    def settings_overrides(self) -> dict[str, Any]:
        """Values for ``Settings.from_env(**overrides)`` pointing medialog at this stack.

        Contains secrets (S3 keys, signing key): do not log the result.
        """
        state = self._require_state()
        return {
            "data_dir": self.data_dir,
            "kafka_bootstrap": self.kafka_bootstrap,
            # Short group timeouts: tansu makes joins wait out the session (INFRA.md).
            "kafka_session_timeout_ms": 6000,
            "kafka_heartbeat_interval_ms": 1000,
            "kafka_rebalance_timeout_ms": 6000,
            # One process per consumer group reads every partition here, so more partitions add
            # no parallelism, and tansu stores one S3 object per partition per produce request:
            # at ~1,500 reports/s, 1 partition halved both SeaweedFS's CPU and produce latency.
            "topic_partitions": 1,
            "postgres_dsn": self.postgres_dsn,
            "clickhouse_url": "chdb://" + str(self.data_dir / "chdb"),
            "s3_endpoint": self.s3_endpoint,
            "s3_region": REGION,
            "s3_access_key": state["s3_access_key"],
            "s3_secret_key": state["s3_secret_key"],
            "signing_keys": f"{SIGNING_KID}:{state['signing_secret']}",
            "viewer_salt": state["viewer_salt"],
            "jwt_private_key_file": self.data_dir / "keys" / "jwt-private.pem",
        }
