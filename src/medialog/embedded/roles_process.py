"""``medialog dev``'s second process: the roles the dev process does not host itself.

The dev process serves the roles that open ClickHouse (``config.CLICKHOUSE_ROLES``: the api and
the ClickHouse projection; chDB allows one process per path). The actors, workers and PostgreSQL
projections run in a child ``medialog run --roles actors,projections,workers``, as production
runs roles in processes of their own: with every role on one event loop, the api and the agents
slowed each other down: the lag from a playback report to PostgreSQL grew several-fold against
the api in a process of its own (see ``bench/ingest.py``; figures in docs/performance.md).

Contract of :class:`RolesProcess`:

* ``start()`` launches the child with the dev process's settings (``Settings.as_env``, its own
  health port) and returns; the child's output goes to the dev process's own. The child is in
  the dev process's process group (Ctrl-C or a signal to the group reaches both) and gets SIGTERM
  if the dev process dies alone (``ManagedProcess``). ``health_url`` is its ``/health/ready``,
  which the dev process includes in its own readiness.
* A child that fails (exits non-zero or by a signal) is started again, after a pause that doubles
  from 1 s up to 30 s while it keeps failing; one that exits 0 stopped on purpose (SIGINT, SIGTERM)
  and is left stopped.
* ``stop()`` stops it: SIGTERM, then SIGKILL after ``stop_timeout``. Idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time

from medialog.config import Role, Settings
from medialog.embedded.processes import ManagedProcess, free_port

log = logging.getLogger(__name__)

RESTART_PAUSE_S, RESTART_PAUSE_MAX_S = 1.0, 30.0


async def _started() -> bool:
    return True  # readiness is the dev process's /health/ready, which includes the child's


class RolesProcess:
    def __init__(self, settings: Settings, roles: frozenset[Role], *, stop_timeout: float) -> None:
        port = free_port(exclude={settings.api_port})
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
        env.update(settings.as_env(), MEDIALOG_API_HOST="127.0.0.1", MEDIALOG_API_PORT=str(port))
        names = ",".join(sorted(roles))
        self.health_url = f"http://127.0.0.1:{port}/health/ready"
        self._process = ManagedProcess(
            f"roles {names}", [sys.executable, "-m", "medialog", "run", "--roles", names],
            log_file=None, env=env, stop_timeout=stop_timeout, new_session=False,
        )
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._process.start(_started)
        self._supervisor = asyncio.create_task(self._restart_failures())

    async def _restart_failures(self) -> None:
        pause = RESTART_PAUSE_S
        while True:
            began = time.monotonic()
            code = await self._process.wait()
            if code == 0:
                log.info("%s stopped", self._process.name)
                return
            if time.monotonic() - began > RESTART_PAUSE_MAX_S:
                pause = RESTART_PAUSE_S  # it ran for a while: not a crash loop
            log.error("%s exited with code %d; starting it again in %.0fs",
                      self._process.name, code, pause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, RESTART_PAUSE_MAX_S)
            try:
                await self._process.start(_started)
            except OSError:  # not started: wait() returns the old exit code, next round
                log.exception("%s could not be started", self._process.name)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._process.stop()
