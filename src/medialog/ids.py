"""Random identifiers: ``random_uuid()``, a version 4 UUID in its canonical text form."""

from __future__ import annotations

import os
from typing import Final

_V4_KEEP: Final = ((1 << 128) - 1) ^ (0xF000 << 64) ^ (0xC000 << 48)  # all but version, variant
_V4_SET: Final = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def random_uuid() -> str:
    """``str(uuid.uuid4())``: 122 bits from the operating system's generator, without building a
    ``UUID`` object, which costs twice the draw on every view report (its request id and its
    report id)."""
    h = f"{int.from_bytes(os.urandom(16), 'big') & _V4_KEEP | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
