"""The ``medialog`` program: ``dev`` (embedded stack + all roles), ``run`` (production roles),
``migrate``, ``topics``, ``token``, ``schemas``."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import signal
import socket
import sys
from collections.abc import Coroutine
from functools import partial
from pathlib import Path

import asyncpg
import click
from aiohttp import web

from medialog.config import ALL_ROLES, CLICKHOUSE_ROLES, Role, Settings
from medialog.read_model_jobs import API_URL_FILE
from medialog.runtime.logs import setup_logging

LISTEN_BACKLOG = 128  # aiohttp's default


def tune_gc() -> None:
    """For a long-running server: move everything alive after start-up out of the collector's
    way (``gc.freeze``) and collect the youngest generation less often. Projections and the
    ingest path allocate many short-lived objects per batch; with the default threshold (700)
    the collector re-scans them constantly, which slows each batch's Python work (see
    ``bench/projections.py``, which runs with these settings)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _logging(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format)


def _roles(value: str) -> frozenset[Role]:
    names = {r.strip() for r in value.split(",") if r.strip()}
    if names == {"all"}:
        return frozenset(ALL_ROLES)
    unknown = names - set(ALL_ROLES)
    if unknown or not names:
        raise click.BadParameter(f"roles are any of {','.join(ALL_ROLES)} or 'all'")
    return frozenset(names)  # type: ignore[arg-type]


async def migrate_all(settings: Settings, *, clickhouse: bool = True) -> list[str]:
    from medialog.clickhouse import Analytics
    from medialog.migrate import migrate_clickhouse, migrate_postgres

    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        applied = await migrate_postgres(conn)
    finally:
        await conn.close()
    if clickhouse:
        analytics = Analytics(settings.clickhouse_dsn)
        await analytics.open()
        try:
            applied += await migrate_clickhouse(analytics)
        finally:
            await analytics.close()
    return applied


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on ``host:port`` (one per address ``host`` resolves to, as asyncio's
    ``create_server`` would bind), made before anything is started: a port in use is then a
    prompt, clear error with nothing to undo, and nothing started later can take the port."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise click.ClickException(f"api host {host!r}: {exc}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"api port {port} is in use (on {host}); stop what listens there or choose "
                "another port (--port, MEDIALOG_API_PORT)") from exc
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    return sockets


async def serve(settings: Settings, roles: frozenset[Role], *, on_ready: object = None,
                on_stop: object = None, peers: dict[str, str] | None = None,
                sockets: list[socket.socket] | None = None) -> None:
    """Run the app until SIGINT/SIGTERM (then ``on_stop()``), then drain and stop every client.

    The api address is bound first (``sockets``, made by :func:`_listen` when not given), so a
    port in use fails before any client or consumer starts. Whatever started is stopped however
    serving ends: a failure while starting, a signal, or an error. The drain (docs/operations.md,
    "Stopping") takes at most ``shutdown_timeout_s``, in-flight requests half of it; the same
    signal again ends it at once."""
    from medialog.bootstrap import AccessLog, build

    log = logging.getLogger(__name__)
    timeout = settings.shutdown_timeout_s
    runner = web.AppRunner(build(settings, roles, peers=peers), handle_signals=False,
                           access_log_class=AccessLog, shutdown_timeout=timeout / 2)
    loop = asyncio.get_running_loop()
    received: list[int] = []  # the signal that stopped serving
    listening = _listen(settings.api_host, settings.api_port) if sockets is None else sockets
    try:
        # Until started, Ctrl-C is asyncio.run's: it cancels this task, and the finally below
        # stops what had started.
        await runner.setup()
        tune_gc()
        for sock in listening:
            await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
        stop = asyncio.Event()

        def stopping(sig: int) -> None:
            received.append(sig)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping, sig)
        if callable(on_ready):
            on_ready()
        await stop.wait()
        if callable(on_stop):
            on_stop()
    finally:
        log.info("stopping: draining for at most %gs", timeout)
        # Draining is bounded: the sites stop accepting, in-flight requests finish, Faust stops
        # its agents, projections commit what they applied (a batch in flight rolls back); every
        # effect is idempotent and positions are stored with effects (docs/architecture.md,
        # rule 6), so giving up on a stuck drain loses nothing.
        cleanup = asyncio.ensure_future(runner.cleanup())

        def again(sig: int) -> None:
            # Only the same signal again: Ctrl-C reaches ``medialog dev``'s roles process too,
            # which then gets the SIGTERM its parent sends it as well.
            if not received or sig in received:
                cleanup.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, again, sig)
        try:
            await asyncio.wait([cleanup], timeout=timeout)
            if not cleanup.done():
                log.error("shutdown did not finish in %gs; exiting anyway", timeout)
                cleanup.cancel()
            elif cleanup.cancelled():
                log.warning("signalled again: exiting without finishing the drain")
            else:
                cleanup.result()  # a failure while stopping is raised
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for sock in listening:  # the sites closed those they served; the rest here
                sock.close()


@click.group()
def main() -> None:
    """medialog: an event-sourced media backend."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="where the embedded services keep their data (MEDIALOG_DATA_DIR)")
@click.option("--port", type=int, default=None, help="api port (MEDIALOG_API_PORT)")
@click.option("--brokers", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="Kafka brokers: 3 for fault tests (topics replicated 3 times, "
                   "min.insync.replicas 2); fixed when the data dir is made")
def dev(data_dir: Path | None, port: int | None, brokers: str) -> None:
    """Start the embedded stack (SeaweedFS, Apache Kafka, PostgreSQL, chDB) and every role: the api
    and the ClickHouse projection here, the other roles in a child process."""
    base = _settings(**({"data_dir": data_dir} if data_dir else {}))
    _logging(base)
    asyncio.run(_dev(base, port, int(brokers)))


async def _dev(base: Settings, port: int | None, brokers: int = 1) -> None:
    from medialog.embedded.roles_process import RolesProcess
    from medialog.embedded.stack import EmbeddedStack
    from medialog.issuer import ensure_private_key, load_private_key, mint_token
    from medialog.kafka import ensure_topics

    data_dir = base.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    api_port = base.api_port if port is None else port
    # Bound before anything starts: a port in use ends here, promptly and with nothing to stop.
    sockets = _listen(base.api_host, api_port)
    stack = EmbeddedStack(data_dir, cache_dir=base.cache_dir, cors_origins=base.cors_origin_list,
                          kafka_brokers=brokers)
    try:
        await stack.start()
        overrides = {**base.model_dump(), **stack.settings_overrides(), "api_port": api_port}
        settings = Settings.from_env(**overrides)
        assert settings.jwt_private_key_file is not None
        ensure_private_key(settings.jwt_private_key_file)
        await ensure_topics(settings)
        await migrate_all(settings)
        token = mint_token(
            load_private_key(settings.jwt_private_key_file), user="dev", roles=["admin", "creator"],
            issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_s=24 * 3600,
        )

        def announce() -> None:
            # where ``medialog verify|replay analytics`` find the process holding chDB
            (data_dir / API_URL_FILE).write_text(settings.base_url + "\n")
            click.echo(f"\nmedialog is up: {settings.base_url}")
            click.echo(f"  data directory:  {data_dir}")
            click.echo(f"  Kafka bootstrap: {settings.kafka_bootstrap}  (topics events.asset, "
                       "events.engagement, events.views, events.access)")
            click.echo(f"  PostgreSQL:      {stack.postgres_dsn}")
            click.echo(f"  ClickHouse:      chDB, in this process, at {data_dir / 'chdb'}")
            click.echo(f"  S3 endpoint:     {settings.s3_endpoint}  (credentials: "
                       f"{stack.s3_credentials_file})")
            click.echo(f"  logs:            {data_dir / 'logs'}")
            click.echo(f"  dev token (user 'dev', roles admin+creator, 24 h):\n{token}\n")
            click.echo("  more tokens: medialog token --user U --role creator   (Ctrl-C stops)")

        roles = RolesProcess(settings, frozenset(ALL_ROLES) - CLICKHOUSE_ROLES,
                             stop_timeout=settings.shutdown_timeout_s + 5)
        await roles.start()
        roles_stopping: list[asyncio.Future[None]] = []

        def stop_roles() -> None:  # both processes drain at once: one drain's time, not two
            roles_stopping.append(asyncio.ensure_future(roles.stop()))

        try:
            await serve(settings, CLICKHOUSE_ROLES, on_ready=announce, on_stop=stop_roles,
                        peers={"roles": roles.health_url}, sockets=sockets)
        finally:
            await (roles_stopping[0] if roles_stopping else roles.stop())
    finally:
        (data_dir / API_URL_FILE).unlink(missing_ok=True)
        for sock in sockets:
            sock.close()
        await stack.stop()  # idempotent; stops what a failed start left too


@main.command()
@click.option("--roles", default="all", show_default=True,
              help="comma-separated: api,actors,workers,projections (or all)")
def run(roles: str) -> None:
    """Run roles against the services configured by MEDIALOG_* variables."""
    settings = _settings()
    _logging(settings)
    selected = _roles(roles)
    if settings.clickhouse_dsn.startswith("chdb:") and selected & CLICKHOUSE_ROLES not in (
            frozenset(), CLICKHOUSE_ROLES):
        click.echo("note: chDB allows one process per path: run the api and analytics roles in one "
                   "process, or use a ClickHouse server", err=True)
    asyncio.run(serve(settings, selected))


@main.command()
@click.option("--postgres-only", is_flag=True, help="skip ClickHouse")
def migrate(postgres_only: bool) -> None:
    """Apply PostgreSQL and ClickHouse migrations (idempotent)."""
    settings = _settings()
    applied = asyncio.run(migrate_all(settings, clickhouse=not postgres_only))
    click.echo("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


@main.command()
@click.argument("projection", type=click.Choice(["engagement", "analytics"]))
def rebuild(projection: str) -> None:
    """engagement: empty the PostgreSQL counters projection and fold it again from the log (safe
    while it runs). analytics: re-derive the ClickHouse view verdicts under the configured rule
    (refused while another process has the chDB store open). How far it is goes to stderr: a
    progress bar on a terminal, else a line every few seconds."""
    settings = _settings()
    _logging(settings)
    from medialog.bootstrap import rebuild_engagement, rederive_analytics
    from medialog.runtime.progress import Progress

    label = f"rebuild {projection}"
    if projection == "analytics":
        try:
            rows, verdicts, seconds = asyncio.run(rederive_analytics(
                settings, partial(Progress, label=label, unit="view reports")))
        except RuntimeError as exc:  # the chDB store is open in another process
            raise click.ClickException(str(exc)) from exc
        counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        click.echo(f"{projection}: {rows} view reports re-derived ({counts or 'none'}) "
                   f"in {seconds:.1f}s")
        return
    records, seconds = asyncio.run(rebuild_engagement(settings, partial(Progress, label=label)))
    click.echo(f"{projection}: {records} records replayed in {seconds:.1f}s")


VERIFY_FAILED = 2  # the exit status when the log could not be folded (1: a difference)


@main.command()
@click.argument("projection", type=click.Choice(["assets", "engagement", "analytics", "all"]),
                default="all")
def verify(projection: str) -> None:
    """Compare the live read models (PostgreSQL; analytics: ClickHouse) with a fresh fold of the
    log, table by table (safe while everything runs): one line per table, then the verdict;
    exit 0 if all are equal, 1 on any difference, 2 if the log could not be folded. How far the
    fold is goes to stderr, as for rebuild. Analytics, while another process holds the chDB
    store (medialog dev): run by that process, through its api (MEDIALOG_API_PORT)."""
    settings = _settings()
    _logging(settings)
    from medialog.bootstrap import verify_read_models
    from medialog.runtime.progress import Progress

    equal = _print_fold(verify_read_models(
        settings, projection, partial(Progress, label=f"verify {projection}")))
    sys.exit(0 if equal else 1)


def _print_fold(run: Coroutine[object, object, tuple[list[str], bool]]) -> bool:
    """Run a verify or replay, print its lines and return whether live equalled the fold; a
    fold that could not be made exits ``VERIFY_FAILED``."""
    try:
        lines, equal = asyncio.run(run)
    except RuntimeError as exc:  # VerifyError: the log lacks records, or stalled
        failed = click.ClickException(str(exc))
        failed.exit_code = VERIFY_FAILED
        raise failed from exc
    for line in lines:
        click.echo(line)
    return equal


@main.command()
@click.argument("projection", type=click.Choice(["assets", "engagement", "analytics", "all"]),
                default="all")
@click.option("--check-only", is_flag=True,
              help="build and compare, but do not swap (exit 1 on a difference)")
def replay(projection: str, check_only: bool) -> None:
    """Rebuild the read models (PostgreSQL; analytics: ClickHouse) from the log into shadow
    tables while everything runs, compare them with the live ones (live paused for that
    moment), then swap them in atomically: one line per table, then the verdict. Exit 0 once
    swapped (a difference is reported: it is what the replay repaired), 2 if the log could not
    be folded (nothing changed). Progress on stderr, as for rebuild; analytics as for verify."""
    settings = _settings()
    _logging(settings)
    from medialog.bootstrap import replay_read_models
    from medialog.runtime.progress import Progress

    equal = _print_fold(replay_read_models(
        settings, projection, check_only, partial(Progress, label=f"replay {projection}")))
    sys.exit(1 if check_only and not equal else 0)


@main.command()
@click.option("--check", is_flag=True, help="only verify; exit 1 if a topic is missing")
def topics(check: bool) -> None:
    """Create (or verify) the Kafka topics (docs/architecture.md, "Topics")."""
    from medialog.kafka import ensure_topics, missing_topics

    settings = _settings()
    if check:
        missing = asyncio.run(missing_topics(settings))
        if missing:
            raise click.ClickException("missing topics: " + ", ".join(missing))
        click.echo("all topics present")
        return
    created = asyncio.run(ensure_topics(settings))
    click.echo("created: " + (", ".join(created) if created else "nothing (all present)"))


@main.command()
@click.option("--user", required=True, help="the token's subject (user id)")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["viewer", "creator", "admin"]))
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(60, 30 * 86400),
              help="lifetime in seconds")
def token(user: str, roles: tuple[str, ...], ttl: int) -> None:
    """Print a token signed by this medialog's own key (the embedded issuer)."""
    from medialog.issuer import load_private_key, mint_token

    settings = _settings()
    key_file = settings.jwt_private_key_file or settings.data_dir / "keys" / "jwt-private.pem"
    if not key_file.exists():
        raise click.ClickException(f"no signing key at {key_file}: start `medialog dev` first "
                                   "or set MEDIALOG_JWT_PRIVATE_KEY_FILE")
    click.echo(mint_token(load_private_key(key_file), user=user, roles=list(roles),
                          issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_s=ttl))


@main.command()
@click.option("--write", is_flag=True, help="rewrite schemas/events from the models")
def schemas(write: bool) -> None:
    """Check (or write) the generated event JSON Schemas in schemas/events."""
    from medialog.envelope import event_json_schemas
    from medialog.resources import schemas_dir

    root = schemas_dir()
    stale = []
    for rel, schema in event_json_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        path = root / rel
        if not path.exists() or path.read_text() != text:
            stale.append(rel)
            if write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale and not write:
        click.echo("out of date: " + ", ".join(stale) + " (run: medialog schemas --write)")
        sys.exit(1)
    click.echo(("written: " + ", ".join(stale)) if stale else "schemas up to date")
