"""Apache Kafka (KRaft, combined broker + controller nodes) as the embedded log.

Contract:

* :func:`ensure_distribution` puts the broker's jars (``kafka-broker.pom.xml``, next to this
  module) in ``cache_dir/kafka-<version>/lib`` with Maven, once per machine: the data dir can
  be removed without downloading them again. Concurrent callers wait for one download.
* ``KafkaBroker(...).start()`` formats ``root/data`` the first time (cluster id given by the
  caller, kept with the stack), writes ``server.properties`` on every start (ports may change
  between runs: the quorum is static, so nothing on disk names them) and returns once the broker
  answers a metadata request naming itself. Topics, records and committed offsets live in
  ``root/data`` and survive a restart. ``stop()`` is a controlled shutdown (SIGTERM, SIGKILL
  after 30 s) and idempotent.

The heap is bounded (``heap_mb``). A node alone (the default) keeps every internal topic at
replication 1. Nodes of a cluster (``node_id`` and ``quorum``, the same static voters for each)
replicate the internal topics to every node, at most 3, with a minimum in-sync of
``min(2, nodes)``: one node lost loses no acknowledged write. They stop without a controlled
shutdown (SIGTERM still closes their logs cleanly): the stack stops them together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import re
import shutil
import uuid
from pathlib import Path

from medialog.embedded.processes import EmbeddedError, ManagedProcess, log_tail, port_accepts

log = logging.getLogger(__name__)

POM = Path(__file__).with_name("kafka-broker.pom.xml")
NODE_ID = 1  # a node alone
MIN_JAVA = 17


def kafka_version() -> str:
    """The broker version pinned in the pom."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if found is None:
        raise EmbeddedError(f"no <kafka.version> in {POM}")
    return found.group(1)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding, never starting with
    ``-`` (``format -t -x…`` would read it as an option; Kafka's ``Uuid.randomUuid`` avoids it
    too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise EmbeddedError(
            f"{tool} not found on PATH; the embedded Kafka broker needs it "
            f"(Debian: apt-get install -y {package}, or run scripts/system-deps.sh as root)")
    return found


async def _java_major(java: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        java, "-version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    found = re.search(rb'version "(\d+)', out)
    return int(found.group(1)) if found else 0


async def ensure_distribution(cache_dir: Path) -> Path:
    """The directory of the broker's jars, downloading them with Maven when missing."""
    version = kafka_version()
    home = cache_dir.expanduser() / f"kafka-{version}"
    lib, done = home / "lib", home / ".complete"
    if done.exists():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)  # another process downloading
        if done.exists():
            return lib
        mvn = _require("mvn", "maven")
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching Apache Kafka %s with Maven into %s (once per machine)", version, home)
        mvn_log = home / "mvn.log"
        with open(mvn_log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}", stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
            rc = await proc.wait()
        if rc != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            raise EmbeddedError(
                f"Maven could not fetch Apache Kafka {version} (exit {rc}); see {mvn_log}:\n"
                f"{log_tail(mvn_log)}")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        done.touch()
    return lib


LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


class KafkaBroker:
    """One KRaft node on 127.0.0.1:``port`` (clients) and ``controller_port``, data in ``root``;
    ``quorum`` maps every voter's node id to its controller port (default: this node alone)."""

    def __init__(
        self,
        root: Path,
        port: int,
        controller_port: int,
        cluster_id: str,
        log_file: Path,
        cache_dir: Path,
        *,
        heap_mb: int = 512,
        node_id: int = NODE_ID,
        quorum: dict[int, int] | None = None,
    ) -> None:
        self.root = root
        self.port = port
        self.controller_port = controller_port
        self.cluster_id = cluster_id
        self.heap_mb = heap_mb
        self.node_id = node_id
        self.quorum = quorum if quorum is not None else {node_id: controller_port}
        self._log_file = log_file
        self._cache_dir = cache_dir
        self._process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.root / "data"

    def server_properties(self) -> str:
        """The node's configuration: a static quorum, everything on 127.0.0.1."""
        voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in sorted(self.quorum.items()))
        replicas, min_isr = min(3, len(self.quorum)), min(2, len(self.quorum))
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # internal topics on every node (one alone: one replica), and fewer partitions than
            # the defaults (50 each) keep start-up and memory small
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
        }
        if len(self.quorum) > 1:
            props |= {
                # topics created without settings (auto-created) replicate too
                "default.replication.factor": replicas,
                "min.insync.replicas": min_isr,
                # the nodes stop together: a controlled shutdown (leaders moved away first)
                # serves no one then, and the last node's would wait for a quorum already gone
                "controlled.shutdown.enable": "false",
            }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    async def _java_argv(self, lib: Path, *main: str) -> list[str]:
        java = _require("java", f"openjdk-{MIN_JAVA}-jre-headless")
        if (major := await _java_major(java)) < MIN_JAVA:
            raise EmbeddedError(
                f"{java} is Java {major or '?'}; Apache Kafka {kafka_version()} needs Java "
                f"{MIN_JAVA} or newer")
        return [java, f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
                "-cp", f"{lib}/*", *main]

    async def _format(self, lib: Path, config: Path) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        log.info("formatting Kafka storage in %s", self.log_dir)
        argv = await self._java_argv(lib, "kafka.tools.StorageTool", "format", "-t",
                                     self.cluster_id, "-c", str(config), "--ignore-formatted")
        with open(self._log_file, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT)
            if await proc.wait() != 0:
                raise EmbeddedError(
                    f"formatting Kafka storage failed; see {self._log_file}:\n"
                    f"{log_tail(self._log_file)}")

    async def start(self, timeout: float = 90.0) -> None:
        """Fetch (once), format (once), start, and wait until the broker serves metadata."""
        lib = await ensure_distribution(self._cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        config = self.root / "server.properties"
        config.write_text(self.server_properties())
        (self.root / "log4j2.properties").write_text(LOG4J2)
        await self._format(lib, config)
        heap = [f"-Xms{min(128, self.heap_mb)}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true"]
        argv = await self._java_argv(lib, "kafka.Kafka", str(config))
        argv[1:1] = heap
        name = "kafka" if len(self.quorum) == 1 else f"kafka node {self.node_id}"
        self._process = ManagedProcess(
            name, argv, log_file=self._log_file, cwd=self.root,
            pid_file=self.root / "kafka.pid", stop_timeout=30.0)
        await self._process.start(self._serves_metadata, timeout=timeout)

    async def _serves_metadata(self) -> bool:
        """True once a metadata request lists this broker (it has registered with the quorum)."""
        from aiokafka.client import AIOKafkaClient
        from aiokafka.errors import KafkaError

        if not await port_accepts(self.port):  # spares the client's connection errors in the log
            return False
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await client.bootstrap()
            return any(b.nodeId == self.node_id for b in client.cluster.brokers())
        except (KafkaError, OSError):
            return False
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        """Controlled shutdown (SIGTERM, SIGKILL after 30 s). Idempotent."""
        if self._process is not None:
            await self._process.stop()
        self._process = None
