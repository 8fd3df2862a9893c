"""Status tokens: what lets a browser's ``EventSource``, which cannot send ``Authorization``,
open ``GET /v1/assets/{id}/status?access_token=…``.

``POST /v1/assets/{id}/status-token`` (authenticated, the same read check as the stream)
answers ``{"token", "expires_at"}``, valid ``TTL_S`` seconds. The token names the asset, the
caller and whether the caller is an admin, and is an HMAC under the api's stream URL keys
(``Settings.signing_keys``: the first signs, every one verifies) with its own domain tag, so it
is neither a stream URL signature nor a bearer token and opens nothing but that asset's status
stream. The stream checks it, then reads the asset as that caller (a change of visibility since
still counts). Format, one URL-safe string::

    {kid}.{expires}.{u|a}.{base64url(user id)}.{mac}

``mac``: unpadded base64url of HMAC-SHA256(secret, ``"medialog-status-v1\\n{kid}\\n{asset id}\\n
{expires}\\n{u|a}\\n{user id}"``) — every field but the last is of a restricted alphabet, so the
encoding is injective. A bad token is 401 ``STATUS_TOKEN_INVALID`` (malformed, unknown key,
mismatch, another asset) or ``STATUS_TOKEN_EXPIRED``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from medialog.api import keys
from medialog.api.assets import parse_asset_id, readable_asset, viewer_of
from medialog.api.requests import optional_principal, principal
from medialog.domain.access import Viewer
from medialog.domain.errors import Unauthenticated
from medialog.signing import SigningKeys
from medialog.timefmt import iso

TTL_S: Final = 300
QUERY: Final = "access_token"  # the query parameter (redacted in the access log)
INVALID: Final = "STATUS_TOKEN_INVALID"
EXPIRED: Final = "STATUS_TOKEN_EXPIRED"
_PREFIX: Final = "medialog-status-v1\n"
_TOKEN: Final = re.compile(
    r"([A-Za-z0-9_-]{1,32})\.(0|[1-9][0-9]{0,11})\.([ua])\.([A-Za-z0-9_-]{1,700})\."
    r"([A-Za-z0-9_-]{43})")


def _mac(secret: bytes, kid: str, asset_id: str, expires: str, role: str, user: str) -> str:
    message = f"{_PREFIX}{kid}\n{asset_id}\n{expires}\n{role}\n{user}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint(signing: SigningKeys, asset_id: str, viewer: Viewer, expires: int) -> str:
    """A token for ``viewer`` (signed in) to open ``asset_id``'s status stream until
    ``expires`` (Unix seconds)."""
    assert viewer.user_id is not None
    kid, secret = signing.keys[0]
    role = "a" if viewer.is_admin else "u"
    user = base64.urlsafe_b64encode(viewer.user_id.encode()).rstrip(b"=").decode("ascii")
    mac = _mac(secret, kid, asset_id, str(expires), role, viewer.user_id)
    return f"{kid}.{expires}.{role}.{user}.{mac}"


def verify(signing: SigningKeys, asset_id: str, token: str, *, now: float) -> Viewer:
    """The viewer a valid token for ``asset_id`` names; ``Unauthenticated`` otherwise (module
    docstring). Expiry is told only for an authentic token."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise Unauthenticated("malformed status token", code=INVALID)
    kid, expires, role, user_b64, presented = match.groups()
    secret = dict(signing.keys).get(kid)
    try:
        user = base64.urlsafe_b64decode(user_b64 + "=" * (-len(user_b64) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("malformed status token", code=INVALID) from None
    if secret is None or not hmac.compare_digest(
            _mac(secret, kid, asset_id, expires, role, user), presented):
        raise Unauthenticated("the status token is not valid for this asset", code=INVALID)
    if now >= int(expires):
        raise Unauthenticated("the status token has expired", code=EXPIRED)
    return Viewer(user_id=user, is_admin=role == "a")


async def create_status_token(request: web.Request) -> web.Response:
    """``POST /v1/assets/{asset_id}/status-token``: 201 ``{"token", "expires_at"}`` for a
    signed-in caller who may read the asset (else as GET: 404)."""
    viewer = viewer_of(await principal(request))
    row = await readable_asset(request, viewer)
    expires = int(time.time()) + TTL_S
    token = mint(request.app[keys.SIGNING], row["asset_id"], viewer, expires)
    return web.json_response(
        {"token": token, "expires_at": iso(datetime.fromtimestamp(expires, UTC))}, status=201,
        headers={"Cache-Control": "no-store"})


async def status_viewer(request: web.Request) -> Viewer:
    """Who opens the status stream: the ``access_token`` query's viewer when there is one,
    else the bearer token's (or anyone)."""
    token = request.query.get(QUERY)
    if token is None:
        return viewer_of(await optional_principal(request))
    asset_id = parse_asset_id(request.match_info["asset_id"])
    return verify(request.app[keys.SIGNING], asset_id, token, now=time.time())
