"""Random identifiers: ``random_uuid()``, a version 4 UUID in its canonical text form."""

from __future__ import annotations

import os


def random_uuid() -> str:
    """``str(uuid.uuid4())``: 122 bits from the operating system's generator, without building a
    ``UUID`` object, which costs twice the draw on every view report (its request id and its
    report id)."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40  # version 4
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
