"""The pure parts of asset queries and write answers: listing parameters, the SQL a listing runs
(who may read what by id: tests/unit/test_access.py), and how a rejected command maps back to
its error."""

from __future__ import annotations

import pytest

from medialog.api.commands import rejection
from medialog.api.errors import status_of
from medialog.api.history import sse
from medialog.api.queries import ListQuery, escape_like, list_sql, list_where, parse_list_query
from medialog.domain.access import Viewer
from medialog.domain.asset import STATUS_AFTER, AssetStatus
from medialog.domain.errors import Conflict, Forbidden, ValidationError
from medialog.domain.events.asset import ASSET_EVENTS as EVENTS
from medialog.outcomes import Outcome

STRANGER = Viewer(user_id="u2")
ADMIN = Viewer(user_id="root", is_admin=True)
ANON = Viewer(user_id=None)


def test_escape_like_makes_wildcards_literal():
    assert escape_like("100%_done\\x") == "100\\%\\_done\\\\x"


def test_parse_list_query_defaults_and_normalises():
    assert parse_list_query({}) == ListQuery()
    q = parse_list_query({"tag": "  Beach  Life ", "q": "  sun ", "limit": "100", "page": "3",
                          "sort": "-views", "status": "ready", "visibility": "unlisted",
                          "owner": "u1"})
    assert q == ListQuery(owner="u1", status="ready", visibility="unlisted", tag="beach life",
                          q="sun", sort="-views", page=3, limit=100)


def test_parse_list_query_lists_every_problem():
    with pytest.raises(ValidationError) as err:
        parse_list_query({"limit": "0", "page": "-1", "sort": "title", "status": "new",
                          "visibility": "x", "q": "x" * 101, "tag": " ", "extra": "1"})
    fields = [d["field"] for d in err.value.details]
    assert fields == [["extra"], "status", "visibility", "tag", "q", "sort", "page", "limit"]


def test_others_see_public_assets_whose_upload_completed():
    where, args = list_where(ListQuery(), STRANGER)
    assert where == ("a.status NOT IN ('deleted', 'expired') AND (a.owner_id = $1 OR "
                     "(a.visibility = 'public' AND a.status NOT IN "
                     "('awaiting_upload', 'deleted', 'expired')))")
    assert args == ["u2"]
    where, args = list_where(ListQuery(), ANON)
    assert args == [None]  # NULL never equals an owner


def test_admins_see_everything_but_gone_assets_unless_asked():
    where, args = list_where(ListQuery(), ADMIN)
    assert where == "a.status NOT IN ('deleted', 'expired')" and args == []
    where, args = list_where(ListQuery(status="deleted"), ADMIN)
    assert where == "a.status = $1" and args == ["deleted"]


def test_gone_assets_are_listed_only_to_their_owner():
    where, args = list_where(ListQuery(status="expired"), STRANGER)
    assert where == "a.status = $1 AND a.owner_id = $2" and args == ["expired", "u2"]


def test_filters_become_parameters_never_sql():
    query = ListQuery(owner="o'; DROP TABLE assets; --", visibility="public", tag="x",
                      q="50%", sort="-likes", page=2, limit=10)
    page, count, args = list_sql(query, ADMIN)
    assert "DROP" not in page and "DROP" not in count
    assert args == ["o'; DROP TABLE assets; --", "public", "x", "%50\\%%"]
    assert "a.tags @> ARRAY[$3]::text[]" in page and "ILIKE $4 ESCAPE '\\'" in page
    assert page.endswith("ORDER BY like_count DESC, a.created_at DESC, a.asset_id DESC "
                         "LIMIT $5 OFFSET $6")
    assert count.startswith("SELECT count(*) FROM assets a WHERE")


def test_a_rejected_outcome_maps_to_its_domain_error():
    conflict = rejection(Outcome(command_id="c", status="rejected", error_code="UPLOAD_MISSING",
                                 error_message="nothing", error_class="Conflict",
                                 error_details=[{"a": 1}]))
    assert isinstance(conflict, Conflict) and status_of(conflict) == 409
    assert conflict.code == "UPLOAD_MISSING" and conflict.details == [{"a": 1}]
    forbidden = rejection(Outcome(command_id="c", status="rejected", error_code="NOT_OWNER",
                                  error_message="no", error_class="Forbidden"))
    assert isinstance(forbidden, Forbidden) and status_of(forbidden) == 403
    # Rows from before the class was recorded.
    legacy = rejection(Outcome(command_id="c", status="rejected", error_code="NOT_OWNER"))
    assert status_of(legacy) == 403
    assert status_of(rejection(Outcome(command_id="c", status="rejected",
                                       error_code="INVALID_TRANSITION"))) == 409


def test_the_status_map_names_known_events_and_every_status_but_new():
    types = {cls.TYPE for cls in EVENTS}
    assert set(STATUS_AFTER) <= types
    assert set(STATUS_AFTER.values()) == set(AssetStatus) - {AssetStatus.NEW}


def test_sse_framing():
    assert sse("status", {"a": 1}, 3) == b'id: 3\nevent: status\ndata: {"a":1}\n\n'
