"""The request side of authentication: the bearer token of an ``Authorization`` header.

* ``bearer_token(header)`` returns the token of an ``Authorization: Bearer <token>`` header.
  No header (or a blank one) raises ``Unauthenticated(code="TOKEN_MISSING")``; anything else that
  is not exactly ``Bearer`` + one RFC 6750 token raises ``code="TOKEN_MALFORMED"``.
"""

from __future__ import annotations

import re

from medialog.domain.errors import Unauthenticated

__all__ = ["bearer_token"]

# RFC 6750 §2.1 b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(authorization_header: str | None) -> str:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive)."""
    if authorization_header is None or not authorization_header.strip():
        raise Unauthenticated("an Authorization: Bearer token is required", code="TOKEN_MISSING")
    parts = authorization_header.strip().split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not _B64TOKEN.fullmatch(parts[1]):
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'", code="TOKEN_MALFORMED"
        )
    return parts[1]
