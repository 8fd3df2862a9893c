"""``medialog replay analytics``: rebuild the ClickHouse read model from the log into a shadow
database while everything runs, and swap it in once built and checked. Why: a damaged model is
replaced without stopping the projection and without ever serving a half-built table. Where it
runs (the process owning ClickHouse, through its admin routes): ``verify`` in this package.

Procedure (the building blocks are ``verify``'s):

1. A shadow database ``replay_<12 hex>`` gets empty copies of ``events``, ``views``,
   ``projection_positions`` and ``view_rule``.
2. Every partition of the projection's topics is folded from offset 0 up to its end offset E
   read at the start, by the projection's own code through the shadow's client (progress to
   the ``Meter``); the shadow's positions are stored, and ``view_rule`` records the rule as
   derived.
3. Once the live projection's stored positions reach E (at most ``live_wait_s``: a stopped one
   is not waited for), its gate (``projection.Live``) is taken: the batch in flight ends, the
   next waits. Paused, the live projection stores the positions it applied (``flush``), so its
   rows are exactly those at or below its positions P; the shadow folds the records from E up to
   P, and ``verify``'s comparison runs between live and shadow (a difference is reported: it is
   what the replay repairs).
4. One call on the ``Analytics`` thread runs one ``EXCHANGE TABLES`` of the four pairs and makes
   the live projection ``reset`` (it re-reads its positions, the shadow's, and its sessions from
   the new tables). Each pair is exchanged atomically; no query of this process runs between
   them (every one goes through that thread), so the api never sees a mix. The gate is released
   and the shadow database, now holding the old tables, dropped. Live continues from the
   positions it reads: where the fold went past P (live lagged), records are folded again but
   not written; nothing is applied twice or skipped.

Interrupted (the job cancelled, the CLI stopped) before the exchange, nothing live changed: the
shadow database is dropped (one a killed process left is dropped by the next run); the exchange
and the reset are one call on the thread, which a cancellation does not cut. Run where no live
projection runs in this process (the CLI on a ClickHouse server or a free chDB path), nothing
is paused: the replay refuses to swap if the stored positions moved meanwhile (an analytics role
elsewhere is writing; run the replay through its api instead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.domain.views import ViewRule
from projections.clickhouse.projection import ClickHouseProjection, Live
from projections.clickhouse.rederive import rule_json
from projections.clickhouse.verify import (
    COPIED,
    Meter,
    Positions,
    Shadow,
    compare,
    fold,
    log_reader,
    quoted,
    rule_of,
    shadow_run,
    stored_positions,
    targets,
)
from projections.postgres.replay import ReplayReport
from projections.postgres.verify import VerifyError

log = logging.getLogger(__name__)


async def replay(analytics: Analytics, settings: Settings, live: Live | None, *,
                 check_only: bool = False, stall_s: float = 60.0, live_wait_s: float = 30.0,
                 progress: Callable[[int], Meter] | None = None) -> ReplayReport:
    """Rebuild the ClickHouse model in a shadow database and swap it in (``check_only``:
    compare only); see the module doc. ``live``: the live projection of this process (None:
    none runs here). ``progress`` is called with the number of records to fold up to the end
    offsets; the ``Meter`` it returns is advanced, and closed. Raises ``VerifyError`` when the
    fold cannot be made (nothing live changed)."""
    began = time.monotonic()
    rule = rule_of(settings) if live is None or live.projection is None else live.projection.rule
    async with shadow_run(analytics, settings, "replay_") as shadow:
        projection = ClickHouseProjection(rule)
        async with log_reader(settings) as consumer:
            ends = await targets(settings, consumer, None)
            meter = None if progress is None else progress(sum(ends.values()))
            try:
                records = await fold(analytics, shadow, projection, consumer, ends, meter,
                                     stall_s)
            finally:
                if meter is not None:
                    meter.close()
            folded = {(tp.topic, tp.partition): o - 1 for tp, o in ends.items()}
            if live is not None:
                await _live_reaches(analytics, shadow.live, folded, live_wait_s)
            async with (live.gate if live is not None else asyncio.Lock()):
                if live is not None and live.projection is not None:
                    running = live.projection
                    await analytics.run(lambda c: running.flush(c))
                at = await analytics.run(partial(stored_positions, database=shadow.live))
                upto = {TopicPartition(t, p): o + 1 for (t, p), o in at.items()}
                records += await fold(analytics, shadow, projection, consumer, upto, None,
                                      stall_s, ends)
                behind = tuple(f"{t}/{p}" for (t, p), o in sorted(folded.items())
                               if o > at.get((t, p), -1))
                results = await analytics.run(partial(compare, shadow=shadow, bound=at,
                                                      rule=rule))
                if not check_only:
                    if live is None:
                        await _still(analytics, shadow.live, at)
                    await asyncio.shield(analytics.run(partial(
                        _swap, shadow=shadow, rule=rule,
                        running=None if live is None else live.projection)))
    report = ReplayReport(results, records, not check_only, behind, time.monotonic() - began)
    log.info("replay analytics: %s", report.lines()[-1])
    return report


async def _live_reaches(analytics: Analytics, database: str, folded: Positions,
                        wait_s: float) -> None:
    """Wait (at most ``wait_s``) until the live stored positions are at or past ``folded``, so
    that the pause finds the shadow behind live, where it can catch up."""
    deadline = time.monotonic() + wait_s
    while True:
        at = await analytics.run(partial(stored_positions, database=database))
        if all(at.get(k, -1) >= o for k, o in folded.items()) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def _still(analytics: Analytics, database: str, at: Positions) -> None:
    """With no live projection here to pause: refuse if another process moves the positions
    (it would write past the shadow's positions into the tables swapped out)."""
    await asyncio.sleep(2.0)  # longer than POSITIONS_EVERY_S: a running projection stores one
    if await analytics.run(partial(stored_positions, database=database)) != at:
        raise VerifyError("the stored positions moved during the replay: an analytics role "
                          "runs elsewhere; run the replay through its api (nothing changed)")


def _swap(client: Client, shadow: Shadow, rule: ViewRule,
          running: ClickHouseProjection | None) -> None:
    """Record the rule as derived in the shadow, exchange the four tables in one statement, and
    make the live projection forget what it read of the old ones."""
    shadow.client.insert("view_rule", [[rule_json(rule), 1, "", 1]],
                         column_names=["rule", "derived", "cursor", "step"])
    client.command("EXCHANGE TABLES " + ", ".join(
        f"{quoted(shadow.live)}.{t} AND {quoted(shadow.name)}.{t}" for t in COPIED))
    if running is not None:
        running.reset()
