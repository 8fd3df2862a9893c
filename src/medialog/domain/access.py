"""Who may read, engage with and play an asset: the one access policy, for every route and the
stream route. Pure: a viewer and the asset's facts in, a yes or no out.

- The owner and admins read an asset in every status and visibility.
- Anyone else (anonymous callers too) reads a public or unlisted asset by id once its upload
  completed: not in ``HIDDEN_FROM_OTHERS`` (nothing there yet, or gone). Listings and trending
  show others only ``LISTED_VISIBILITY`` assets; listings leave out gone ones
  (``GONE_STATUSES``) unless asked for that status (``medialog.api.queries.list_where``).
- Engaging (view reports, likes, counters) needs reading, and no one engages with a gone asset,
  its owner neither.
- Media plays when the asset is ready, or processing once a rendition is done (``is_playable``).
- A stream URL names its audience when issued (``needs_owner_audience``) and plays while that
  audience may still read the asset (``may_stream``).

Whoever may not is told the asset does not exist (``not_found``, never 403: ids of assets one
may not see cannot be probed)."""

from __future__ import annotations

from dataclasses import dataclass

from medialog.domain.asset import AssetStatus
from medialog.domain.errors import NotFound

S = AssetStatus
GONE_STATUSES = frozenset({S.DELETED.value, S.EXPIRED.value})  # gone for everyone, owners too
# Read by no one but the owner and admins: nothing there yet, or gone.
HIDDEN_FROM_OTHERS = GONE_STATUSES | {S.AWAITING_UPLOAD.value}
# Statuses with media a player can play (processing: once its lowest rung is done).
PLAYABLE_STATUSES = frozenset({S.READY.value, S.PROCESSING.value})
SHARED_VISIBILITIES = frozenset({"public", "unlisted"})  # others may read these by id
LISTED_VISIBILITY = "public"  # others find these in listings and trending


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """Who reads: a user id (None: anonymous) and whether they are an admin."""

    user_id: str | None
    is_admin: bool = False

    def owns(self, owner_id: str) -> bool:
        return self.user_id is not None and self.user_id == owner_id


ANYONE = Viewer(user_id=None)


@dataclass(frozen=True, kw_only=True)
class AssetFacts:
    """What access depends on: the asset's owner, status and visibility (from a read model)."""

    owner_id: str
    status: str
    visibility: str


def may_manage(viewer: Viewer, owner_id: str, *, admin_ok: bool = True) -> bool:
    """The owner, or an admin where ``admin_ok``: who may change an asset or download its
    master."""
    return viewer.owns(owner_id) or (admin_ok and viewer.is_admin)


def may_read(viewer: Viewer, asset: AssetFacts) -> bool:
    """Whether ``viewer`` may read the asset by id: the owner and admins always; anyone else a
    shared asset not hidden from others."""
    if may_manage(viewer, asset.owner_id):
        return True
    return asset.status not in HIDDEN_FROM_OTHERS and asset.visibility in SHARED_VISIBILITIES


def may_engage(viewer: Viewer, asset: AssetFacts) -> bool:
    """Whether ``viewer`` may report views of, like or see the counters of the asset: whoever may
    read it, unless it is gone."""
    return asset.status not in GONE_STATUSES and may_read(viewer, asset)


def is_playable(status: str, renditions: int | None = None) -> bool:
    """Whether an asset in ``status`` has media to play: ready, or processing with a rendition
    done (``renditions`` None, not known: taken as done, the lowest rung comes first)."""
    if status not in PLAYABLE_STATUSES:
        return False
    return status == S.READY.value or renditions is None or renditions > 0


def needs_owner_audience(asset: AssetFacts) -> bool:
    """Whether a stream URL issued now must name the owner's audience (the owner or an admin):
    anyone else may not read the asset."""
    return not may_read(ANYONE, asset)


def may_stream(asset: AssetFacts, *, owner_audience: bool) -> bool:
    """Whether a stream URL of this audience may play the asset now: never once it is gone; an
    owner-audience URL otherwise; any other while anyone may read the asset."""
    return asset.status not in GONE_STATUSES and (owner_audience or may_read(ANYONE, asset))


def not_found() -> NotFound:
    """The answer to whoever may not see an asset (or names none): 404 ``ASSET_NOT_FOUND``."""
    return NotFound("no such asset", code="ASSET_NOT_FOUND")
