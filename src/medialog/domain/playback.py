"""Rules of signed playback: what a playback request may ask for, and when an asset can be
played. Pure functions (who may read the asset at all is ``medialog.domain.access.may_read``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from medialog.domain.access import is_playable
from medialog.domain.errors import Conflict, ValidationError
from medialog.domain.layout import MASTER_PLAYLIST, stream_path

MIN_TTL_S = 60
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, kw_only=True)
class PlaybackParams:
    expires_in: int  # seconds the URLs stay valid
    bind_ip: bool  # URLs verify only for the requesting client's address


@dataclass(frozen=True, kw_only=True)
class Playable:
    """What the read model says about an asset's previews (keys relative to the bucket)."""

    asset_id: str
    status: str
    renditions: int
    master_playlist_key: str | None
    thumbnail_key: str | None


def parse_params(query: Mapping[str, str], *, default_ttl_s: int, max_ttl_s: int) -> PlaybackParams:
    """``expires_in`` (MIN_TTL_S … ``max_ttl_s``, default ``default_ttl_s``) and ``bind_ip``
    (true/false/1/0, default false). Raises ValidationError naming the bad parameter."""
    raw_ttl = query.get("expires_in")
    expires_in = default_ttl_s
    if raw_ttl is not None:
        if not (raw_ttl.isascii() and raw_ttl.isdigit()) or len(raw_ttl) > 9:  # "²", "٣": no
            raise ValidationError("expires_in must be a whole number of seconds",
                                  details=[{"field": "expires_in"}])
        expires_in = int(raw_ttl)
    if not MIN_TTL_S <= expires_in <= max_ttl_s:
        raise ValidationError(f"expires_in must be between {MIN_TTL_S} and {max_ttl_s} seconds",
                              details=[{"field": "expires_in", "min": MIN_TTL_S, "max": max_ttl_s}])
    raw_bind = query.get("bind_ip", "false").strip().lower()
    if raw_bind not in _BOOLS:
        raise ValidationError("bind_ip must be true or false", details=[{"field": "bind_ip"}])
    return PlaybackParams(expires_in=expires_in, bind_ip=_BOOLS[raw_bind])


def check_playable(asset: Playable) -> None:
    """Ready assets play; so does one still processing once a rendition is done (the lowest
    rung comes first: ``access.is_playable``). Anything else: Conflict ``ASSET_NOT_PLAYABLE``."""
    if is_playable(asset.status, asset.renditions):
        return
    raise Conflict(
        f"the asset cannot be played yet (it is {asset.status})",
        code="ASSET_NOT_PLAYABLE",
        details=[{"status": asset.status, "renditions": asset.renditions}],
    )


def hls_path(asset: Playable) -> str | None:
    """The master playlist's stream path, or None when the asset has no HLS (an image)."""
    if asset.master_playlist_key:
        return stream_path(asset.asset_id, asset.master_playlist_key)
    return MASTER_PLAYLIST if asset.renditions > 0 else None


def thumbnail_path(asset: Playable) -> str | None:
    return stream_path(asset.asset_id, asset.thumbnail_key) if asset.thumbnail_key else None
