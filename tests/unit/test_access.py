"""The access policy (``medialog.domain.access``): who may read, engage with, manage and play an
asset, for every status × visibility × kind of viewer."""

from __future__ import annotations

import pytest

from medialog.domain.access import (
    ANYONE,
    GONE_STATUSES,
    HIDDEN_FROM_OTHERS,
    LISTED_VISIBILITY,
    PLAYABLE_STATUSES,
    SHARED_VISIBILITIES,
    AssetFacts,
    Viewer,
    is_playable,
    may_engage,
    may_manage,
    may_read,
    may_stream,
    needs_owner_audience,
    not_found,
)
from medialog.domain.asset import AssetStatus
from medialog.domain.errors import NotFound
from medialog.domain.metadata import VISIBILITIES
from medialog.domain.view_reports import AssetRef

OWNER = Viewer(user_id="u1")
ADMIN = Viewer(user_id="root", is_admin=True)
OTHER = Viewer(user_id="u2")
VIEWERS = {"owner": OWNER, "admin": ADMIN, "other": OTHER, "anonymous": ANYONE}

# status: (others may read it when public or unlisted, it is gone)
STATUSES = {
    "awaiting_upload": (False, False),
    "uploaded": (True, False),
    "promoted": (True, False),
    "processing": (True, False),
    "ready": (True, False),
    "failed": (True, False),
    "expired": (False, True),
    "deleted": (False, True),
}
SHARED = {"public": True, "unlisted": True, "private": False}
CASES = [(s, v, k) for s in STATUSES for v in SHARED for k in VIEWERS]


def facts(status: str, visibility: str) -> AssetFacts:
    return AssetFacts(owner_id="u1", status=status, visibility=visibility)


def test_the_tables_cover_every_status_and_visibility():
    assert set(STATUSES) == {s.value for s in AssetStatus} - {"new"}
    assert set(SHARED) == set(VISIBILITIES)


def test_the_status_sets():
    assert GONE_STATUSES == {"deleted", "expired"}
    assert HIDDEN_FROM_OTHERS == {"awaiting_upload", "deleted", "expired"}
    assert PLAYABLE_STATUSES == {"ready", "processing"}
    assert SHARED_VISIBILITIES == {"public", "unlisted"} and LISTED_VISIBILITY == "public"
    for statuses in (GONE_STATUSES, HIDDEN_FROM_OTHERS, PLAYABLE_STATUSES):
        assert all(type(s) is str for s in statuses)  # plain text: SQL literals and arguments


@pytest.mark.parametrize("status, visibility, kind", CASES)
def test_who_may_read(status, visibility, kind):
    """The owner and admins always; anyone else a shared asset whose upload completed and that
    is not gone."""
    others, _ = STATUSES[status]
    expected = kind in ("owner", "admin") or (others and SHARED[visibility])
    assert may_read(VIEWERS[kind], facts(status, visibility)) is expected


@pytest.mark.parametrize("status, visibility, kind", CASES)
def test_who_may_engage(status, visibility, kind):
    """Whoever may read, and no one once the asset is gone."""
    others, gone = STATUSES[status]
    expected = not gone and (kind in ("owner", "admin") or (others and SHARED[visibility]))
    assert may_engage(VIEWERS[kind], facts(status, visibility)) is expected


@pytest.mark.parametrize("status, visibility, owner_audience", [
    (s, v, a) for s in STATUSES for v in SHARED for a in (False, True)])
def test_which_stream_urls_play(status, visibility, owner_audience):
    """Never once gone; an owner-audience URL otherwise; any other while anyone may read."""
    others, gone = STATUSES[status]
    expected = not gone and (owner_audience or (others and SHARED[visibility]))
    assert may_stream(facts(status, visibility), owner_audience=owner_audience) is expected


@pytest.mark.parametrize("status, visibility, owner_audience", [
    ("ready", "public", False),
    ("ready", "unlisted", False),
    ("processing", "public", False),
    ("ready", "private", True),
    ("awaiting_upload", "public", True),
    ("deleted", "public", True),
])
def test_the_audience_a_stream_url_is_issued_to(status, visibility, owner_audience):
    assert needs_owner_audience(facts(status, visibility)) is owner_audience


@pytest.mark.parametrize("status, renditions, playable", [
    ("ready", 0, True),
    ("ready", 3, True),
    ("ready", None, True),
    ("processing", 1, True),
    ("processing", 0, False),
    ("processing", None, True),  # not known: the lowest rung comes first, within seconds
    *[(s, n, False) for s in STATUSES if s not in ("ready", "processing") for n in (0, 2, None)],
])
def test_what_plays(status, renditions, playable):
    assert is_playable(status, renditions) is playable


@pytest.mark.parametrize("viewer, admin_ok, expected", [
    (OWNER, True, True),
    (OWNER, False, True),
    (ADMIN, True, True),
    (ADMIN, False, False),
    (Viewer(user_id="u1", is_admin=True), False, True),
    (OTHER, True, False),
    (ANYONE, True, False),
])
def test_who_may_manage(viewer, admin_ok, expected):
    assert may_manage(viewer, "u1", admin_ok=admin_ok) is expected


def test_an_anonymous_viewer_owns_nothing():
    assert not ANYONE.owns("") and not Viewer(user_id=None).owns("u1")


def test_an_asset_ref_carries_the_access_facts():
    ref = AssetRef(asset_id="a", owner_id="u1", status="ready", visibility="private",
                   duration_s=None)
    assert may_engage(OWNER, ref) and not may_engage(OTHER, ref)


def test_whoever_may_not_is_told_the_asset_does_not_exist():
    err = not_found()
    assert isinstance(err, NotFound)
    assert err.code == "ASSET_NOT_FOUND" and err.message == "no such asset"
