"""Times in JSON answers: ISO 8601 in UTC with a ``Z`` (what the event envelope writes too)."""

from __future__ import annotations

from datetime import datetime


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso(value)
