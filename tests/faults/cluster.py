"""The fault suite's system: the embedded services and medialog's two processes, each started by
the test itself so that any one of them can be SIGKILLed and started again.

* The services are an :class:`EmbeddedStack` in the test's own process (SeaweedFS, PostgreSQL,
  Kafka with one or three nodes).
* medialog runs as production runs it: ``medialog run --roles api,analytics`` (the process that
  owns chDB) and ``medialog run --roles actors,projections,workers``.

``kill(target)`` SIGKILLs a target's whole process tree at once (a PostgreSQL backend, or an
ffmpeg of the transcoder, dies with its parent, as when a machine or container dies), and
``restart(target)`` starts it again on the same ports and data and returns once it answers.
``freeze(target)`` SIGSTOPs the tree instead (a process that hangs: a long collector pause, an
overloaded host, a network partition that heals) and ``thaw(target)`` lets it go on where it
stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from medialog.config import Settings
from medialog.embedded.processes import ManagedProcess, free_port
from medialog.embedded.stack import EmbeddedStack
from medialog.issuer import ensure_private_key, load_private_key, mint_token

TARGETS = ("api", "roles", "kafka", "postgres", "seaweedfs")
API_ROLES, OTHER_ROLES = "api,analytics", "actors,projections,workers"
START_TIMEOUT_S = 180.0


def _children() -> dict[int, list[int]]:
    """Every live process's children, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children, tree, i = _children(), [pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and all its descendants, stopped first so that none reacts to another's
    death; returns the pids killed."""
    tree = _tree(pid)
    _signal(tree, signal.SIGSTOP)
    _signal(tree, signal.SIGKILL)
    return tree


async def gone(pids: list[int], timeout: float = 30.0) -> None:
    """Return once none of ``pids`` is alive (a zombie counts as gone: it has exited, and waits
    for whatever adopted it, as a detached PostgreSQL does); RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        if not alive:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"processes {alive} still running after {timeout:.0f}s")


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url) as r:
                return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class FaultStack:
    """See the module docstring. ``overrides``: settings of the suite's own (``Settings``
    field names)."""

    def __init__(self, data_dir: Path, *, brokers: int, overrides: Mapping[str, object]) -> None:
        self.data_dir = data_dir
        self.stack = EmbeddedStack(data_dir, kafka_brokers=brokers)
        self.overrides = dict(overrides)
        self.settings: Settings | None = None
        self.api: ManagedProcess | None = None
        self.roles: ManagedProcess | None = None
        self.api_port = self.roles_port = 0
        self.logs = data_dir / "logs"
        # (target, node) → the process tree killed or frozen there
        self._killed: dict[tuple[str, int], list[int]] = {}
        self._frozen: dict[tuple[str, int], list[int]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def token(self, user: str, *roles: str) -> str:
        assert self.settings is not None and self.settings.jwt_private_key_file is not None
        return str(mint_token(load_private_key(self.settings.jwt_private_key_file), user=user,
                          roles=list(roles), issuer=self.settings.jwt_issuer,
                          audience=self.settings.jwt_audience, ttl_s=3600))

    def env(self, port: int) -> dict[str, str]:
        assert self.settings is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
        env.update(self.settings.as_env(), MEDIALOG_API_HOST="127.0.0.1",
                   MEDIALOG_API_PORT=str(port))
        return env

    async def start(self) -> None:
        """The services, the topics and migrations, then both medialog processes."""
        await self.stack.start()
        self.api_port = free_port()
        self.roles_port = free_port(exclude={self.api_port})
        self.settings = Settings.from_env(**{**Settings.from_env().model_dump(),
                                             **self.stack.settings_overrides(),
                                             **self.overrides, "api_port": self.api_port})
        assert self.settings.jwt_private_key_file is not None
        ensure_private_key(self.settings.jwt_private_key_file)
        for command in ("topics", "migrate"):
            code, out = await self.run(command)
            if code != 0:
                raise RuntimeError(f"medialog {command} failed:\n{out}")
        python = [sys.executable, "-m", "medialog", "run", "--roles"]
        stop_timeout = self.settings.shutdown_timeout_s + 10
        self.api = ManagedProcess("api", [*python, API_ROLES], log_file=self.logs / "api.log",
                                  env=self.env(self.api_port), stop_timeout=stop_timeout)
        self.roles = ManagedProcess("roles", [*python, OTHER_ROLES],
                                    log_file=self.logs / "roles.log",
                                    env=self.env(self.roles_port), stop_timeout=stop_timeout)
        await asyncio.gather(self._start("api"), self._start("roles"))

    def process(self, name: str) -> ManagedProcess:
        proc = {"api": self.api, "roles": self.roles}[name]
        assert proc is not None
        return proc

    async def _start(self, name: str) -> None:
        port = self.api_port if name == "api" else self.roles_port
        url = f"http://127.0.0.1:{port}/health/ready"
        await self.process(name).start(lambda: _answers(url), timeout=START_TIMEOUT_S)

    def kill(self, target: str, node: int = 0) -> str:
        """SIGKILL ``target`` (one of ``TARGETS``; ``node``: which Kafka node, 0-based) and
        return what was killed."""
        pid, label = self._pid(target, node)
        self._killed[target, node] = kill_tree(pid)
        return label

    def freeze(self, target: str, node: int = 0) -> str:
        """SIGSTOP ``target``'s process tree (as ``kill`` names it) and return what was
        frozen."""
        pid, label = self._pid(target, node)
        self._frozen[target, node] = tree = _tree(pid)
        _signal(tree, signal.SIGSTOP)
        return label

    def thaw(self, target: str, node: int = 0) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        _signal(self._frozen.pop((target, node)), signal.SIGCONT)

    def _pid(self, target: str, node: int) -> tuple[int, str]:
        """The pid at the root of ``target``'s process tree, and a label for it."""
        if target in ("api", "roles"):
            pid = self.process(target).pid
            label = target
        elif target == "kafka":
            pid = self.stack.kafka_nodes[node].pid
            label = f"kafka node {node + 1}"
        elif target == "postgres":
            assert self.stack.postgres is not None
            pid = self.stack.postgres.server_pid
            label = target
        else:
            assert self.stack.seaweedfs is not None
            pid = self.stack.seaweedfs.pid
            label = target
        assert pid is not None, f"{label} is not running"
        return pid, label

    async def restart(self, target: str, node: int = 0) -> None:
        """Start ``target`` again after :meth:`kill`, once every process it had is gone."""
        await gone(self._killed.pop((target, node)))
        if target in ("api", "roles"):
            await self.process(target).wait()  # reaped: it may start again
            await self._start(target)
        elif target == "kafka":
            broker = self.stack.kafka_nodes[node]
            await broker.stop()
            await broker.start(timeout=START_TIMEOUT_S)
        elif target == "postgres":
            assert self.stack.postgres is not None
            await self.stack.postgres.start(timeout=START_TIMEOUT_S)
        else:
            assert self.stack.seaweedfs is not None
            await self.stack.seaweedfs.stop()
            await self.stack.seaweedfs.start(timeout=START_TIMEOUT_S)

    async def stop_process(self, name: str) -> None:
        """Stop one medialog process gracefully (SIGTERM: it drains)."""
        await self.process(name).stop()

    async def run(self, *args: str) -> tuple[int, str]:
        """``medialog <args>`` against this system: its exit code and output."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "medialog", *args, env=self.env(self.api_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def stop(self) -> None:
        for target, node in list(self._frozen):  # a test that failed while something hung
            self.thaw(target, node)
        for proc in (self.api, self.roles):
            if proc is not None:
                await proc.stop()
        await self.stack.stop()
