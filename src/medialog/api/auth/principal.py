"""Who is calling (``Principal``) and what they may do (``require``); the role names come from
``medialog.issuer`` (the token vocabulary) and are re-exported here.

* ``require(principal, *roles)`` passes when the principal has any of ``roles`` or is admin, and
  raises ``Forbidden(code="FORBIDDEN_ROLE")`` otherwise.

This package knows no HTTP status: the api's middleware maps the domain errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from medialog.domain.errors import Forbidden
from medialog.issuer import ADMIN, CREATOR, KNOWN_ROLES, VIEWER

__all__ = ["ADMIN", "CREATOR", "KNOWN_ROLES", "VIEWER", "Principal", "require"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's ``sub`` and its known roles (never empty)."""

    user_id: str
    roles: frozenset[str]

    def has_any(self, *roles: str) -> bool:
        """True when the principal holds at least one of ``roles`` (literally; no admin rule)."""
        return not self.roles.isdisjoint(roles)


def require(principal: Principal, *roles: str) -> None:
    """Pass when ``principal`` has one of ``roles`` or is admin; else ``Forbidden``.

    ``roles`` must be non-empty known role names (a typo is a programming error: ``ValueError``).
    """
    if not roles:
        raise ValueError("require() needs at least one role")
    unknown = set(roles) - KNOWN_ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    if principal.has_any(ADMIN, *roles):
        return
    raise Forbidden(
        f"this action needs one of the roles: {', '.join(sorted(set(roles)))}",
        code="FORBIDDEN_ROLE",
    )
