"""The embedded backing services of ``medialog dev`` and the test suite, under one data dir.

Layout of ``data_dir``::

    stack.json      secrets and ports of this stack (mode 0600), written on first start
    s3-credentials  the S3 key as an AWS shared credentials file (mode 0600, profile default)
    stack.lock      held while the stack runs: one stack per data dir
    seaweedfs/      weed mini (S3: buckets staging, masters, previews)
    kafka/          Apache Kafka (KRaft, one node): server.properties and data/
    kafka-2/, …     with ``kafka_brokers=3``: nodes 2 and 3 (node 1 in kafka/), logs/kafka-N.log
    postgres/       PostgreSQL cluster (role and database ``medialog``); see below when root
    logs/           one log per service
    chdb/, keys/    used by medialog itself (only their paths are given here)

Contract: ``start()`` brings up SeaweedFS, PostgreSQL and Kafka (in parallel), then the
buckets, and returns when all answer; on failure it stops what it started and raises
:class:`EmbeddedError`. ``stop()`` stops them all and is idempotent. Starting again on the same
data dir reuses the data, the secrets and, when still free, the ports. Kafka's jars live in
``cache_dir``, outside the data dir (fetched once per machine).

Kafka is one node, or with ``kafka_brokers=3`` a cluster of three (for fault tests: one can be
killed and no acknowledged write is lost): a static quorum of the three, a smaller heap each
(``CLUSTER_HEAP_MB``), and the topics medialog creates replicated to all three
(``settings_overrides()``). The count is fixed when the data dir is made (``stack.json``); a
start with another count is refused.

PostgreSQL refuses to run as root, so as root it runs as ``postgres``, which must be able to
reach its directory. When it cannot (the data dir is under a 0700 folder, as a checkout in
/root is), the cluster lives in ``/var/lib/medialog/postgres-<stack id>`` instead, and
``postgres.location`` in the data dir names it.
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

from medialog.embedded.kafka_broker import KafkaBroker, new_cluster_id
from medialog.embedded.postgres import PG_USER, Postgres, user_can_reach
from medialog.embedded.processes import EmbeddedError, free_port, port_is_free
from medialog.embedded.seaweedfs import SeaweedFS, SeaweedPorts
from medialog.storage import READ_METHODS, UPLOAD_METHODS

log = logging.getLogger(__name__)

BUCKETS = ("staging", "masters", "previews")
BUCKET_CORS = {"staging": UPLOAD_METHODS, "masters": READ_METHODS, "previews": READ_METHODS}
EXTERNAL_PG_ROOT = Path("/var/lib/medialog")
SIGNING_KID = "k1"
REGION = "us-east-1"
KAFKA_BROKERS = (1, 3)  # the counts a stack may have
CLUSTER_HEAP_MB = 384  # each node's heap in a cluster (one node alone: KafkaBroker's 512)


def _kafka_port_names(node: int) -> tuple[str, str]:
    """The ``stack.json`` names of node ``node``'s client and controller ports (node 1 keeps
    the one-node names, so a one-node data dir reads as before)."""
    if node == 1:
        return "kafka", "kafka_controller"
    return f"kafka_{node}", f"kafka_controller_{node}"


def kafka_bootstrap_of(state: dict[str, Any]) -> str:
    """Every Kafka node's client address, comma-separated, from a ``stack.json``'s contents."""
    nodes = range(1, int(state.get("kafka_brokers", 1)) + 1)
    return ",".join(f"127.0.0.1:{state['ports'][_kafka_port_names(n)[0]]}" for n in nodes)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class EmbeddedStack:
    """SeaweedFS + Kafka + PostgreSQL under ``data_dir``; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        *,
        s3_port: int | None = None,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        cache_dir: Path = Path("~/.cache/medialog"),
        cors_origins: tuple[str, ...] = (),
        kafka_brokers: int = 1,
    ) -> None:
        if kafka_brokers not in KAFKA_BROKERS:
            raise EmbeddedError(f"the embedded Kafka has 1 or 3 brokers, not {kafka_brokers}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.kafka_brokers = kafka_brokers
        self.cors_origins = cors_origins  # the buckets' CORS (``Settings.cors_origins``)
        self.cache_dir = Path(cache_dir).expanduser()
        self._fixed = {"s3": s3_port, "kafka": kafka_port, "postgres": postgres_port}
        self._state: dict[str, Any] | None = None
        self._lock: IO[str] | None = None
        self.seaweedfs: SeaweedFS | None = None
        self.kafka: KafkaBroker | None = None  # node 1
        self.kafka_nodes: list[KafkaBroker] = []  # every node, node 1 first
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
        if state.get("ports") and "kafka_cluster_id" not in state:
            raise EmbeddedError(
                f"{self.data_dir} was made by an older medialog whose embedded log cannot be "
                "carried over to Kafka (the read models would skip the new log's first records); "
                "start from a new data dir: remove it (make clean) or choose another (--data-dir)")
        made_with = int(state.get("kafka_brokers", 1)) if state.get("ports") else None
        if made_with is not None and made_with != self.kafka_brokers:
            raise EmbeddedError(
                f"{self.data_dir} was made with {made_with} Kafka broker(s) and cannot be started "
                f"with {self.kafka_brokers}: the count is fixed when the data dir is made (start "
                f"it with --brokers {made_with}, or choose another data dir with --data-dir)")
        state["kafka_brokers"] = self.kafka_brokers
        state.setdefault("stack_id", secrets.token_hex(8))
        state.setdefault("kafka_cluster_id", new_cluster_id())
        state["ports"] = self._choose_ports(state.get("ports", {}))
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        _write_private(self._state_file, json.dumps(state, indent=2))
        _write_private(self.s3_credentials_file,
                       f"[default]\naws_access_key_id = {state['s3_access_key']}\n"
                       f"aws_secret_access_key = {state['s3_secret_key']}\n")

    @property
    def s3_credentials_file(self) -> Path:
        """For S3 tools: ``AWS_SHARED_CREDENTIALS_FILE=<this> aws --endpoint-url … s3 ls``."""
        return self.data_dir / "s3-credentials"

    def _choose_ports(self, previous: dict[str, Any]) -> dict[str, Any]:
        """Fixed ports win; else the previous run's if free; else fresh free ones."""
        taken: set[int] = set()
        chosen: dict[str, Any] = {}
        kafka = [name for n in range(1, self.kafka_brokers + 1) for name in _kafka_port_names(n)]
        for name in ("s3", *kafka, "postgres"):
            fixed, old = self._fixed.get(name), previous.get(name)
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
        lock = open(self.data_dir / "stack.lock", "w")
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
            state["s3_access_key"], state["s3_secret_key"], REGION,
            cors_origins=self.cors_origins)
        pg_root = await self._postgres_root(state["stack_id"])
        pg_log = logs / "postgres.log"
        if not pg_root.is_relative_to(self.data_dir):  # the server must write its log there
            pg_log.unlink(missing_ok=True)
            pg_log.symlink_to(pg_root / "postgres.log")
            pg_log = pg_root / "postgres.log"
        self.postgres = Postgres(pg_root, ports["postgres"], pg_log)
        self.kafka_nodes = self._kafka_nodes(state, logs)
        self.kafka = self.kafka_nodes[0]
        results = await asyncio.gather(
            self.seaweedfs.start(), self.postgres.start(), *(k.start() for k in self.kafka_nodes),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.seaweedfs.create_buckets(BUCKETS)
        await self.seaweedfs.apply_cors(BUCKET_CORS)

    def _kafka_nodes(self, state: dict[str, Any], logs: Path) -> list[KafkaBroker]:
        """One node as it always was, or the three nodes of a cluster (node 1 in ``kafka/``)."""
        ports = state["ports"]
        if self.kafka_brokers == 1:
            return [KafkaBroker(
                self.data_dir / "kafka", ports["kafka"], ports["kafka_controller"],
                state["kafka_cluster_id"], logs / "kafka.log", self.cache_dir)]
        names = {n: _kafka_port_names(n) for n in range(1, self.kafka_brokers + 1)}
        quorum = {n: ports[controller] for n, (_, controller) in names.items()}
        return [KafkaBroker(
            self.data_dir / ("kafka" if n == 1 else f"kafka-{n}"), ports[client],
            ports[controller], state["kafka_cluster_id"], logs / f"kafka-{n}.log",
            self.cache_dir, heap_mb=CLUSTER_HEAP_MB, node_id=n, quorum=quorum)
            for n, (client, controller) in names.items()]

    async def _postgres_root(self, stack_id: str) -> Path:
        """Where PostgreSQL keeps its cluster: in the data dir unless, as root, the ``postgres``
        user cannot reach it (see the module docstring)."""
        inside, pointer = self.data_dir / "postgres", self.data_dir / "postgres.location"
        if os.geteuid() != 0 or (inside / "data").exists() or await user_can_reach(
                PG_USER, self.data_dir):
            return inside
        outside = EXTERNAL_PG_ROOT / f"postgres-{stack_id}"
        pointer.write_text(f"{outside}\n")
        log.info("user %r cannot reach %s: PostgreSQL keeps its cluster in %s", PG_USER,
                 self.data_dir, outside)
        return outside

    async def stop(self) -> None:
        """Stop Kafka, SeaweedFS and PostgreSQL (controlled or fast shutdowns). Idempotent.

        Every service is asked to stop even if another fails to; the first error is re-raised.
        A cluster's nodes stop together: their controllers stay up while each broker's
        controlled shutdown needs a quorum.
        """
        services = [s.stop() for s in (*self.kafka_nodes, self.seaweedfs, self.postgres)
                    if s is not None]
        errors = [r for r in await asyncio.gather(*services, return_exceptions=True)
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
        return kafka_bootstrap_of(self._require_state())

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://medialog@127.0.0.1:{self._require_state()['ports']['postgres']}/medialog"

    def pids(self) -> dict[str, int | None]:
        """Process ids of the running services (for measurements and diagnostics); Kafka's
        nodes 2 and 3 of a cluster as ``kafka_2``, ``kafka_3``."""
        pids = {
            "seaweedfs": self.seaweedfs.pid if self.seaweedfs else None,
            "kafka": self.kafka.pid if self.kafka else None,
            "postgres": self.postgres.server_pid if self.postgres else None,
        }
        for node in self.kafka_nodes[1:]:
            pids[f"kafka_{node.node_id}"] = node.pid
        return pids

    def settings_overrides(self) -> dict[str, Any]:
        """Values for ``Settings.from_env(**overrides)`` pointing medialog at this stack.

        Contains secrets (S3 keys, signing key): do not log the result. With three brokers,
        ``topic_replication`` is 3 too.
        """
        state = self._require_state()
        replicated = {"topic_replication": self.kafka_brokers} if self.kafka_brokers > 1 else {}
        return {
            **replicated,
            "data_dir": self.data_dir,
            "kafka_bootstrap": self.kafka_bootstrap,
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
