"""Asset queries on the PostgreSQL read model (``assets``, ``asset_events``, ``asset_stats``).

Who may see what is ``medialog.domain.access``; a listing applies it in SQL, built from its
sets: others see the public assets whose upload completed, the owner and admins every status;
expired and deleted assets are left out unless the caller filters on that status, which then
lists only the caller's own (everything for admins).

The parsing and SQL building are pure (tested in tests/unit/test_asset_queries.py); the few
``async`` functions run them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from medialog.domain.access import GONE_STATUSES, HIDDEN_FROM_OTHERS, LISTED_VISIBILITY, Viewer
from medialog.domain.asset import AssetStatus
from medialog.domain.errors import ValidationError
from medialog.domain.metadata import TAG_MAX, VISIBILITIES
from medialog.domain.text import check_text

STATUSES = tuple(s.value for s in AssetStatus if s is not AssetStatus.NEW)
# sort parameter → ORDER BY (the asset id last, so pages are stable)
SORTS: dict[str, str] = {
    "-created_at": "a.created_at DESC, a.asset_id DESC",
    "created_at": "a.created_at ASC, a.asset_id ASC",
    "-views": "view_count DESC, a.created_at DESC, a.asset_id DESC",
    "-likes": "like_count DESC, a.created_at DESC, a.asset_id DESC",
}
LIMIT_DEFAULT, LIMIT_MAX, PAGE_MAX, Q_MAX = 20, 100, 10_000, 100
HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX = 100, 1000
SEQUENCE_MAX = 2**31 - 1  # asset_events.sequence is a PostgreSQL integer

_SELECT = (
    "SELECT a.*, coalesce(s.view_count, 0) AS view_count, coalesce(s.like_count, 0) AS like_count "
    "FROM assets a LEFT JOIN asset_stats s ON s.asset_id = a.asset_id"
)


def _sql_list(values: frozenset[str]) -> str:
    """Constants of ``medialog.domain.access`` as an SQL list literal, sorted: ``('a', 'b')``."""
    return "(" + ", ".join(f"'{v}'" for v in sorted(values)) + ")"


_NOT_GONE = f"a.status NOT IN {_sql_list(GONE_STATUSES)}"
_SHOWN_TO_OTHERS = (f"a.visibility = '{LISTED_VISIBILITY}' "
                    f"AND a.status NOT IN {_sql_list(HIDDEN_FROM_OTHERS)}")


@dataclass(frozen=True, kw_only=True)
class ListQuery:
    owner: str | None = None
    status: str | None = None
    visibility: str | None = None
    tag: str | None = None
    q: str | None = None
    sort: str = "-created_at"
    page: int = 1
    limit: int = LIMIT_DEFAULT


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern whose escape character is ``\\``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _int(raw: str | None, name: str, default: int, low: int, high: int,
         problems: list[dict[str, Any]]) -> int:
    """ASCII digits only: ``int()`` would also take "٣", " 3", "+3" and "1_0"."""
    if raw is None:
        return default
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 18  # int() refuses > 4300 digits
    value = int(raw) if digits else low - 1
    if not low <= value <= high:
        problems.append({"field": name, "error": f"an integer from {low} to {high}"})
        return default
    return value


def _clean(value: str | None, name: str, problems: list[dict[str, Any]]) -> str | None:
    """``value``, or None (and a problem) if it holds a control character or a lone surrogate:
    ``%00`` decodes to NUL, which PostgreSQL refuses in text."""
    if value is not None:
        try:
            check_text(value, name)
        except ValidationError as exc:
            problems.extend(exc.details)
            return None
    return value


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Validate ``GET /v1/assets`` parameters; every problem is listed at once."""
    problems: list[dict[str, Any]] = []
    known = {"owner", "status", "visibility", "tag", "q", "sort", "page", "limit"}
    unknown = sorted(set(params) - known)
    if unknown:
        problems.append({"field": unknown, "error": "unknown parameters"})
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        problems.append({"field": "status", "error": "unknown status", "allowed": list(STATUSES)})
    visibility = params.get("visibility") or None
    if visibility is not None and visibility not in VISIBILITIES:
        problems.append({"field": "visibility", "allowed": list(VISIBILITIES)})
    owner = _clean(params.get("owner") or None, "owner", problems)
    tag = params.get("tag")
    tag = " ".join(tag.lower().split()) if tag is not None else None
    if tag is not None and not 1 <= len(tag) <= TAG_MAX:
        problems.append({"field": "tag", "error": f"1–{TAG_MAX} characters"})
    tag = _clean(tag, "tag", problems)
    q = _clean((params.get("q") or "").strip() or None, "q", problems)
    if q is not None and len(q) > Q_MAX:
        problems.append({"field": "q", "error": f"at most {Q_MAX} characters"})
    sort = params.get("sort") or "-created_at"
    if sort not in SORTS:
        problems.append({"field": "sort", "allowed": list(SORTS)})
    page = _int(params.get("page"), "page", 1, 1, PAGE_MAX, problems)
    limit = _int(params.get("limit"), "limit", LIMIT_DEFAULT, 1, LIMIT_MAX, problems)
    if problems:
        raise ValidationError("invalid query parameters", details=problems)
    return ListQuery(owner=owner, status=status, visibility=visibility,
                     tag=tag, q=q, sort=sort, page=page, limit=limit)


def parse_history_query(params: Mapping[str, str]) -> tuple[int, int]:
    """``after`` (a sequence, 0…SEQUENCE_MAX, default 0) and ``limit`` (1…HISTORY_LIMIT_MAX) of
    ``GET /v1/assets/{id}/history``; every problem is listed at once."""
    problems: list[dict[str, Any]] = []
    after = _int(params.get("after"), "after", 0, 0, SEQUENCE_MAX, problems)
    limit = _int(params.get("limit"), "limit", HISTORY_LIMIT_DEFAULT, 1, HISTORY_LIMIT_MAX,
                 problems)
    if problems:
        raise ValidationError("invalid query parameters", details=problems)
    return after, limit


def list_where(query: ListQuery, viewer: Viewer) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and its arguments ($1…) for a listing."""
    conds: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.status is not None:
        conds.append(f"a.status = {arg(query.status)}")
    else:
        conds.append(_NOT_GONE)
    if not viewer.is_admin:
        me = arg(viewer.user_id)  # NULL for anonymous callers: never equal to an owner
        if query.status in GONE_STATUSES:
            conds.append(f"a.owner_id = {me}")
        else:
            conds.append(f"(a.owner_id = {me} OR ({_SHOWN_TO_OTHERS}))")
    if query.owner is not None:
        conds.append(f"a.owner_id = {arg(query.owner)}")
    if query.visibility is not None:
        conds.append(f"a.visibility = {arg(query.visibility)}")
    if query.tag is not None:
        conds.append(f"a.tags @> ARRAY[{arg(query.tag)}]::text[]")
    if query.q is not None:
        conds.append(f"a.title ILIKE {arg('%' + escape_like(query.q) + '%')} ESCAPE '\\'")
    return " AND ".join(conds), args


def list_sql(query: ListQuery, viewer: Viewer) -> tuple[str, str, list[Any]]:
    """(page SQL, count SQL, arguments): the page takes two more arguments, limit and offset."""
    where, args = list_where(query, viewer)
    n = len(args)
    page = (f"{_SELECT} WHERE {where} ORDER BY {SORTS[query.sort]} "
            f"LIMIT ${n + 1} OFFSET ${n + 2}")
    count = f"SELECT count(*) FROM assets a WHERE {where}"
    return page, count, args


async def fetch_asset(conn: asyncpg.Connection, asset_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(f"{_SELECT} WHERE a.asset_id = $1", asset_id)
    return row


async def list_assets(
    conn: asyncpg.Connection, query: ListQuery, viewer: Viewer
) -> tuple[list[asyncpg.Record], int]:
    page, count, args = list_sql(query, viewer)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = int(await conn.fetchval(count, *args))
        rows = await conn.fetch(page, *args, query.limit, (query.page - 1) * query.limit)
    return list(rows), total


async def fetch_history(
    conn: asyncpg.Connection, asset_id: str, after: int, limit: int
) -> list[asyncpg.Record]:
    """The asset's events in sequence order, those after ``after``."""
    rows = await conn.fetch(
        "SELECT sequence, event_id, type, time, actor_id, causation_id, data FROM asset_events "
        "WHERE asset_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        asset_id, after, limit,
    )
    return list(rows)
