"""Errors owned by medialog. Each carries a machine-readable ``code``; the api maps the class to
an HTTP status in one place (``medialog.api.errors``, from the api's middleware). Nothing below
``api/`` knows HTTP."""

from __future__ import annotations

from typing import Any


class MedialogError(Exception):
    """Root of every error medialog raises on purpose."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: list[Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: list[Any] = details or []


class ValidationError(MedialogError):
    """The input is malformed or breaks a limit; nothing was changed."""

    code = "VALIDATION_ERROR"


class Unauthenticated(MedialogError):
    """No credentials, or credentials that do not verify (bad signature, expired, wrong
    audience…)."""

    code = "UNAUTHENTICATED"


class Forbidden(MedialogError):
    """Authenticated, but this principal may not do this (role or ownership)."""

    code = "FORBIDDEN"


class NotFound(MedialogError):
    code = "NOT_FOUND"


class Conflict(MedialogError):
    """The aggregate's current state does not allow the command."""

    code = "CONFLICT"


class Unprocessable(MedialogError):
    """Well-formed, but not something this request may do (e.g. an idempotency key reused for
    another request)."""

    code = "UNPROCESSABLE"


class PayloadTooLarge(MedialogError):
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(MedialogError):
    """A dependency (broker, database, store) did not answer; the request changed nothing."""

    code = "UNAVAILABLE"
