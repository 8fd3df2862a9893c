"""Rules for free text from clients (titles, descriptions, query strings). Pure."""

from __future__ import annotations

import re
import unicodedata

from medialog.domain.errors import ValidationError

TITLE_MIN, TITLE_MAX = 3, 200
# What no free text may hold: control characters (Unicode Cc: C0, DEL, C1; NUL can be stored
# neither in PostgreSQL text nor in jsonb) and lone surrogates (Cs: not encodable as UTF-8).
# Multi-line text (a description) may keep tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(text: str, field: str, *, multiline: bool = False) -> str:
    """``text`` unchanged, unless it holds a control character or a lone surrogate (see
    ``_CONTROL``): then ValidationError naming ``field``. The one check for every free-text
    input, body field or query parameter, so nothing reaches the log that a store refuses."""
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(text):
        raise ValidationError(
            f"{field} must not contain control characters or lone surrogates",
            details=[{"field": field, "error": "control character or lone surrogate"}],
        )
    return text


def clean_title(raw: object, *, field: str = "title") -> str:
    if not isinstance(raw, str):
        raise ValidationError(f"{field} must be a string", details=[{"field": field}])
    title = check_text(" ".join(unicodedata.normalize("NFC", raw).split()), field)
    if not TITLE_MIN <= len(title) <= TITLE_MAX:
        raise ValidationError(
            f"{field} must be {TITLE_MIN}–{TITLE_MAX} characters",
            details=[{"field": field, "min": TITLE_MIN, "max": TITLE_MAX}],
        )
    return title
