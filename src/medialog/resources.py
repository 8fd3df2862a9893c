"""Where the project's contract files live: ``schemas/`` (event JSON Schemas, SQL migrations).

In a checkout (editable install) they are the repository's ``schemas/``; a wheel carries the
same tree as ``medialog/_schemas``."""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).parent / "_schemas"
_CHECKOUT = Path(__file__).resolve().parents[2] / "schemas"


def schemas_dir() -> Path:
    return _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT
