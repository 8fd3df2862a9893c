"""The composition root: given the settings and the roles, it builds what a process runs — the
HTTP application (``medialog.api.app``), the Faust app with the actors' and workers' agents, and
the projections' readers — and is the only module that imports ``api``, ``streams`` and
``projections``, which never import each other (``tests/unit/test_import_contract.py``).

The registries live here: which agents and which projections each role runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import faust
from aiohttp import web

from medialog.api import keys, read_models
from medialog.api.access_log import AccessLog
from medialog.api.app import create_app
from medialog.config import Role, Settings
from medialog.runtime.deps import Deps
from medialog.runtime.progress import Progress

__all__ = ["AccessLog", "build", "rebuild_engagement", "rederive_analytics",
           "replay_read_models", "verify_read_models"]

FAUST_ROLES: frozenset[Role] = frozenset({"actors", "workers"})
PROJECTION_ROLES: frozenset[Role] = frozenset({"projections", "analytics"})
FAUST = web.AppKey("faust", faust.App)
# The ClickHouse projection's pause hook (``projections.clickhouse.projection.Live``), when this
# process runs it: a replay through the api pauses it.
CLICKHOUSE_LIVE: web.AppKey[Any] = web.AppKey("clickhouse_live")
Reader = Callable[[], Awaitable[None]]


def build(settings: Settings, roles: frozenset[Role], *,
          peers: Mapping[str, str] | None = None) -> web.Application:
    """The application of a process running ``roles``: ``peers`` are the ``/health/ready`` URLs
    of the processes it runs with (``medialog dev``'s roles process)."""
    app = create_app(settings, roles, peers=peers)
    if "analytics" in roles:
        from projections.clickhouse.projection import Live

        app[CLICKHOUSE_LIVE] = Live()
    if "api" in roles:  # it opens ClickHouse: ``medialog verify|replay analytics`` ask it
        app[keys.READ_MODEL_WORK] = _read_model_work(app)
        app.cleanup_ctx.append(read_models.jobs_ctx)
    if roles & FAUST_ROLES:
        app.cleanup_ctx.append(_streams)
    if roles & PROJECTION_ROLES:
        app.cleanup_ctx.append(_projections)
    return app


def deps_of(app: web.Application) -> Deps:
    """What agents and projections need, from the clients the application opened."""
    return Deps(settings=app[keys.SETTINGS], pool=app[keys.PG], blobs=app[keys.BLOBS],
                publisher=app[keys.PUBLISHER], notifier=app[keys.NOTIFIER],
                analytics=app.get(keys.ANALYTICS),
                lags=app[keys.LAGS])


def faust_app_of(deps: Deps, roles: set[Role]) -> faust.App:
    """The Faust app of ``roles`` with their agents registered."""
    from streams import janitor, promoter
    from streams.actors import asset, engagement
    from streams.app import faust_app
    from streams.transcode import agents as transcoder

    app = faust_app(deps.settings, deps.settings.consumer_group_of(roles))
    if "actors" in roles:
        asset.register(app, deps)
        engagement.register(app, deps)
    if "workers" in roles:
        promoter.register(app, deps)
        janitor.register(app, deps)
        transcoder.register(app, deps)
    return app


def readers(deps: Deps, roles: set[Role], live: Any = None) -> dict[str, Reader]:
    """The projections the ``roles`` run, by name: each a reader to run until cancelled.
    ``live``: the ClickHouse projection's pause hook."""
    from projections.clickhouse import projection as clickhouse
    from projections.postgres import assets, engagement

    found: dict[str, Reader] = {}
    if "projections" in roles:
        found[assets.NAME] = lambda: assets.consume(deps)
        found[engagement.NAME] = lambda: engagement.consume(deps)
    if "analytics" in roles:
        found[clickhouse.NAME] = lambda: clickhouse.consume(deps, live)
    return found


async def _streams(app: web.Application) -> AsyncIterator[None]:
    roles: frozenset[Role] = app[keys.ROLES]
    faust_app = faust_app_of(deps_of(app), set(roles))
    app[FAUST] = faust_app
    await faust_app.start()
    yield
    await faust_app.stop()


async def _projections(app: web.Application) -> AsyncIterator[None]:
    """Each projection of the roles reads and applies the log in a task of its own."""
    from projections.reader import supervised

    roles: frozenset[Role] = app[keys.ROLES]
    tasks = [asyncio.create_task(supervised(name, run), name=name)
             for name, run in readers(deps_of(app), set(roles),
                                      app.get(CLICKHOUSE_LIVE)).items()]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def rebuild_engagement(settings: Settings, progress: Callable[[int], Progress] | None = None
                             ) -> tuple[int, float]:
    """``medialog rebuild engagement``: (records replayed, seconds). ``progress``: given
    the number of records to read, the ``Progress`` the rebuild advances."""
    from projections.postgres.engagement_rebuild import rebuild_with_settings

    report = await rebuild_with_settings(settings, progress=progress)
    return report.records, report.seconds


async def verify_read_models(settings: Settings, which: str,
                             progress: Callable[[int], Progress] | None = None
                             ) -> tuple[list[str], bool]:
    """``medialog verify``: (the report's lines, whether every table equals the log's fold).
    ``which``: assets, engagement, analytics or all (one report). Raises a ``RuntimeError``
    (``VerifyError``, ``JobFailed``) when the log cannot be folded again. ``progress``: given
    the number of records to fold, the ``Progress`` it advances."""
    from projections.clickhouse.jobs import analytics_job, tables_of
    from projections.postgres.verify import VerifyReport, verify

    parts: list[VerifyReport] = []
    if which != "analytics":
        parts.append(await verify(settings, "all" if which == "all" else which,
                                  progress=progress))
    if which in ("analytics", "all"):
        report = await analytics_job(settings, "verify", False, progress)
        parts.append(VerifyReport(tables_of(report), report["records"], report["seconds"]))
    merged = VerifyReport(tuple(t for p in parts for t in p.tables),
                          sum(p.records for p in parts), sum(p.seconds for p in parts))
    return merged.lines(), merged.equal


async def replay_read_models(settings: Settings, which: str, check_only: bool,
                             progress: Callable[[int], Progress] | None = None
                             ) -> tuple[list[str], bool]:
    """``medialog replay``: (the report's lines, whether live equalled the fold). ``which``:
    assets, engagement, analytics or all (PostgreSQL first, then ClickHouse; one report).
    Raises a ``RuntimeError`` (``VerifyError``, ``JobFailed``) when the log cannot be folded
    (nothing live changed in that store). ``progress``: given the number of records to fold,
    the ``Progress`` it advances."""
    from projections.clickhouse.jobs import analytics_job, tables_of
    from projections.postgres.replay import ReplayReport, replay

    parts: list[ReplayReport] = []
    if which != "analytics":
        parts.append(await replay(settings, "all" if which == "all" else which,
                                  check_only=check_only, progress=progress))
    if which in ("analytics", "all"):
        report = await analytics_job(settings, "replay", check_only, progress)
        parts.append(ReplayReport(tables_of(report), report["records"], report["swapped"],
                                  tuple(report["behind"]), report["seconds"]))
    merged = ReplayReport(tuple(t for p in parts for t in p.tables),
                          sum(p.records for p in parts), not check_only,
                          tuple(b for p in parts for b in p.behind),
                          sum(p.seconds for p in parts))
    return merged.lines(), merged.equal


def _read_model_work(app: web.Application) -> keys.ReadModelWork:
    """``keys.READ_MODEL_WORK``: a job of the api's ``read_models`` on this process's
    ClickHouse, pausing its projection if it runs here."""

    from projections.clickhouse.jobs import analytics_work

    async def work(kind: str, check_only: bool,
                   progress: Callable[[int], keys.ReadModelMeter]) -> dict[str, Any]:
        return await analytics_work(app[keys.ANALYTICS], app[keys.SETTINGS],
                                    app.get(CLICKHOUSE_LIVE), kind, check_only, progress)

    return work


async def rederive_analytics(settings: Settings, progress: Callable[[int], Progress] | None = None
                             ) -> tuple[int, dict[str, int], float]:
    """``medialog rebuild analytics``: (rows re-derived, verdict counts, seconds). Raises a
    ``RuntimeError`` (``StoreInUse``) while another process has the chDB store open.
    ``progress``: given the number of rows to read, the ``Progress`` the rebuild advances."""
    from projections.clickhouse.rederive import rederive_with_settings

    done = await rederive_with_settings(settings, progress=progress)
    return done.rows, dict(done.verdicts), done.seconds
