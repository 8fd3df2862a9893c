"""``python -m tests.faults.chdb_query DSN``: run the JSON list of SQL queries read from stdin
against ClickHouse and print their rows as one JSON list. chDB allows one process per path and
the test's own process must not hold it (the api opens it again after), so queries run here."""

from __future__ import annotations

import asyncio
import json
import sys

from medialog.clickhouse import Analytics


async def main(dsn: str, queries: list[str]) -> list[list[list[object]]]:
    analytics = Analytics(dsn)
    await analytics.open()
    try:
        return [[list(row) for row in await analytics.query(sql)] for sql in queries]
    finally:
        await analytics.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.load(sys.stdin))), default=str))
