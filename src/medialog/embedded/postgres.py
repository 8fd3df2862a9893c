"""PostgreSQL cluster under the data dir, started with ``pg_ctl``.

Contract: ``Postgres(root, port, ...).start()`` runs ``initdb`` once (trust auth, superuser
``postgres``, UTF8), starts the server on 127.0.0.1:``port`` with its unix socket inside
``root``, and makes sure role ``medialog`` and database ``medialog`` (owned by it) exist.
``stop()`` is a fast shutdown and idempotent. initdb and postgres refuse to run as root, so when
euid is 0 every PostgreSQL program runs as the ``postgres`` user (``runuser``), ``root`` is
chowned to it, and that user must be able to traverse to ``root``.

Limit: ``pg_ctl`` detaches the server, so a supervisor killed with SIGKILL leaves it running;
the next ``start()`` on the same directory stops such a leftover server first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
from pathlib import Path

from medialog.embedded.processes import EmbeddedError, log_tail

log = logging.getLogger(__name__)

ROLE = "medialog"
DATABASE = "medialog"
PG_USER = "postgres"
MAX_SOCKET_PATH = 107  # sun_path limit, including ".s.PGSQL.<port>"


def find_pg_bin_dir() -> Path:
    """Newest ``/usr/lib/postgresql/<major>/bin`` holding initdb, else the directory of
    ``initdb`` on PATH."""
    candidates = [
        p for p in Path("/usr/lib/postgresql").glob("*/bin")
        if p.parent.name.isdigit() and (p / "initdb").is_file() and (p / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=lambda p: int(p.parent.name))
    initdb = shutil.which("initdb")
    if initdb is None:
        raise EmbeddedError(
            "PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin, no initdb on PATH); "
            "install them, e.g. apt-get install -y postgresql")
    return Path(initdb).resolve().parent


async def user_can_reach(user: str, path: Path) -> bool:
    """Whether ``user`` can enter ``path`` (asked as that user, so every ancestor counts)."""
    proc = await asyncio.create_subprocess_exec(
        "runuser", "-u", user, "--", "test", "-x", str(path), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd="/")
    return await proc.wait() == 0


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Postgres:
    """A PostgreSQL cluster in ``root/data`` listening on 127.0.0.1:``port``."""

    def __init__(self, root: Path, port: int, log_file: Path, bin_dir: Path | None = None) -> None:
        self.root = root
        self.port = port
        self.pgdata = root / "data"
        self.socket_dir = root / "run"
        self._log_file = log_file
        self._ctl_log = log_file.with_name("postgres-ctl.log")
        self._bin_dir = bin_dir
        self._as_root = os.geteuid() == 0
        # Keep PG* variables (PGPORT, PGDATA, PGHOST ...) of the caller out of the tools.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _bin(self, name: str) -> str:
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin_dir()
        return str(self._bin_dir / name)

    def _bin_major(self) -> str | None:
        """The major version of the binaries when their directory says it (Debian layout)."""
        bin_dir = Path(self._bin(""))
        if bin_dir.parent.parent.name == "postgresql" and bin_dir.parent.name.isdigit():
            return bin_dir.parent.name
        return None

    async def _run(self, *argv: str) -> int:
        """Run a PostgreSQL tool (as ``postgres`` when root); output goes to the ctl log.

        Output goes to a file, not a pipe: ``pg_ctl start`` leaves the server running, and a
        server that inherited our pipe would keep ``communicate()`` from ever returning.
        """
        cmd = ["runuser", "-u", PG_USER, "--", *argv] if self._as_root else list(argv)
        with open(self._ctl_log, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.root, env=self._env)  # cwd: postgres must be able to read its cwd
        return await proc.wait()

    async def _check_reachable(self) -> None:
        """As root: fail clearly when ``postgres`` cannot traverse to ``root``."""
        if await self._run("test", "-x", str(self.root), "-a", "-w", str(self.root)) == 0:
            return
        for ancestor in [*reversed(self.root.parents), self.root]:
            if await self._run("test", "-x", str(ancestor)) != 0:
                mode = oct(ancestor.stat().st_mode & 0o777)
                raise EmbeddedError(
                    f"PostgreSQL runs as user '{PG_USER}', which cannot enter {ancestor} "
                    f"(mode {mode}) on the way to {self.root}. Use a data dir every user can "
                    f"traverse to, or run: chmod o+x {ancestor}")
        raise EmbeddedError(f"user '{PG_USER}' cannot write to {self.root}")

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.mkdir(exist_ok=True, mode=0o700)
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_file.touch(exist_ok=True)
        self._ctl_log.touch(exist_ok=True)
        sock = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(sock).encode()) > MAX_SOCKET_PATH:
            raise EmbeddedError(
                f"data dir path too long for PostgreSQL's unix socket {str(sock)!r} "
                f"(more than {MAX_SOCKET_PATH} bytes); use a shorter data dir")
        if self._as_root:
            try:
                pw = pwd.getpwnam(PG_USER)
            except KeyError:
                raise EmbeddedError(
                    f"running as root needs a '{PG_USER}' system user to run PostgreSQL "
                    "(apt-get install -y postgresql creates it), or run medialog as non-root"
                ) from None
            for path in (self.root, self.socket_dir, self._log_file):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            if self.pgdata.exists() and self.pgdata.stat().st_uid != pw.pw_uid:
                for dirpath, _, files in os.walk(self.pgdata):
                    for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                        os.chown(p, pw.pw_uid, pw.pw_gid)

    async def _initdb(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            have = version_file.read_text().strip()
            major = self._bin_major()
            if major is not None and major != have:
                raise EmbeddedError(
                    f"{self.pgdata} was created by PostgreSQL {have} but the binaries in "
                    f"{self._bin_dir} are {major}; install {have} or remove {self.root}")
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedError(f"{self.pgdata} is not empty and holds no cluster; remove it")
        log.info("initialising PostgreSQL cluster in %s", self.pgdata)
        rc = await self._run(self._bin("initdb"), "-D", str(self.pgdata), "-U", PG_USER,
                             "--auth=trust", "-N", "-E", "UTF8", "--no-locale")
        if rc != 0:
            raise EmbeddedError(f"initdb failed; see {self._ctl_log}:\n{log_tail(self._ctl_log)}")
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# medialog: per-start settings\ninclude_if_exists = 'medialog.conf'\n")

    def _write_conf(self) -> None:
        path = self.pgdata / "medialog.conf"
        path.write_text(
            "# written by medialog on every start\n"
            f"port = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = {_quote(str(self.socket_dir))}\n")
        if self._as_root:
            pw = pwd.getpwnam(PG_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    async def start(self, timeout: float = 60.0) -> None:
        """initdb if needed, start the server, ensure role and database exist."""
        self._prepare_dirs()
        if self._as_root:
            await self._check_reachable()
        await self._initdb()
        pg_ctl = self._bin("pg_ctl")
        if await self._run(pg_ctl, "-D", str(self.pgdata), "status") == 0:
            log.warning("stopping a PostgreSQL server left running on %s", self.pgdata)
            await self._run(pg_ctl, "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        self._write_conf()  # settings live in a file: pg_ctl -o goes through a shell
        log.info("starting PostgreSQL on 127.0.0.1:%d (log %s)", self.port, self._log_file)
        rc = await self._run(pg_ctl, "-D", str(self.pgdata), "-l", str(self._log_file), "-w",
                             "-t", str(int(timeout)), "start")
        if rc != 0:
            raise EmbeddedError(
                f"PostgreSQL did not start; see {self._log_file}:\n{log_tail(self._log_file)}")
        await self._ensure_database()

    async def _ensure_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                                     database="postgres", ssl=False, timeout=10)
        try:
            if not await conn.fetchval("select 1 from pg_roles where rolname = $1", ROLE):
                await conn.execute(f'create role "{ROLE}" login')
                log.info("created role %s", ROLE)
            if not await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE):
                await conn.execute(f'create database "{DATABASE}" owner "{ROLE}"')
                log.info("created database %s", DATABASE)
        finally:
            await conn.close()

    @property
    def server_pid(self) -> int | None:
        """The postmaster's pid, from postmaster.pid (None when not running)."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    async def stop(self) -> None:
        """Fast shutdown (rolls back open transactions). Idempotent."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        log.info("stopping PostgreSQL")
        rc = await self._run(self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                             "-t", "60", "stop")
        if rc != 0 and (self.pgdata / "postmaster.pid").exists():
            log.warning("pg_ctl stop failed; see %s", self._ctl_log)
