"""The ClickHouse model's verify and replay as jobs (``medialog verify|replay analytics``): run
here on an ``Analytics`` (``analytics_work``: what the api's admin routes run in the process that
holds ClickHouse), or, from the CLI, through that process's api when it holds the chDB store
(chDB allows one process per path), else directly (``analytics_job``). Reports travel as the
JSON of ``api.responses.ReadModelReport``; ``tables_of`` turns one back into ``TableResult``s
for the CLI's one report with PostgreSQL's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.migrate import migrate_clickhouse
from medialog.read_model_jobs import run_job
from medialog.runtime.progress import Progress
from projections.clickhouse.rederive import in_use
from projections.clickhouse.replay import replay
from projections.clickhouse.verify import report_json, verify
from projections.postgres.verify import TableResult


def tables_of(report: Mapping[str, Any]) -> tuple[Any, ...]:
    """The ``TableResult``s of a read-model job's report (``responses.ReadModelReport``)."""
    return tuple(TableResult(t["table"], t["live_rows"], t["log_rows"], t["equal"],
                             tuple((k["key"], k["how"]) for k in t["first_differing"]))
                 for t in report["tables"])


async def analytics_job(settings: Settings, kind: str, check_only: bool,
                        progress: Callable[[int], Progress] | None) -> dict[str, Any]:
    """A verify or replay of the ClickHouse model: through the api of the process holding the
    chDB store when one does (chDB allows one process per path), else here."""
    if in_use(settings.clickhouse_dsn) is not None:
        return await run_job(settings, kind, check_only, progress)
    analytics = Analytics(settings.clickhouse_dsn)
    await analytics.open()
    try:
        await migrate_clickhouse(analytics)
        return await analytics_work(analytics, settings, None, kind, check_only, progress)
    finally:
        await analytics.close()


async def analytics_work(analytics: Analytics, settings: Settings, live: Any, kind: str,
                         check_only: bool, progress: Callable[[int], Any] | None
                         ) -> dict[str, Any]:
    """A verify or replay of the ClickHouse model on ``analytics`` (``live``: the projection's
    pause hook when it runs in this process), its report as JSON."""
    if kind == "verify":
        checked = await verify(analytics, settings, progress=progress)
        return report_json(checked.tables, checked.lines(), records=checked.records,
                           seconds=checked.seconds)
    replayed = await replay(analytics, settings, live, check_only=check_only, progress=progress)
    return report_json(replayed.tables, replayed.lines(), records=replayed.records,
                       seconds=replayed.seconds, swapped=replayed.swapped,
                       behind=list(replayed.behind))
