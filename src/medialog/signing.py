"""Signed streaming (playback) URLs: pure signing and verification logic, no HTTP framework.

URL shape (keys: ``medialog.domain.layout``)::

    {base_url}/v1/stream/{asset_id}/{expires}/{token}/{path}

``path`` is e.g. ``hls/master.m3u8``, ``hls/720p/seg_00001.ts`` or ``thumb.jpg``. The token
covers the asset id and the expiry (and the client address when the URL is IP-bound) but *not*
the path, so the relative playlist and segment URIs inside HLS playlists resolve under the
same signature with no playlist rewriting. The route reads S3 key ``{asset_id}/{path}`` in the
previews bucket after :func:`safe_object_path` has cleaned ``path``, so a URL can never reach
outside its asset's prefix.

Token format (compact, URL-safe, one path segment)::

    {kid}.{flag}.{mac}

* ``kid`` -- key id, 1-32 characters of ``[A-Za-z0-9_-]``; selects the verifying secret, which
  is what makes key rotation possible (old kids keep verifying while they stay listed).
* ``flag`` -- ``a`` (any client) or ``i`` (bound to the client IP address given at signing).
* ``mac`` -- unpadded base64url of HMAC-SHA256(secret, message): always exactly 43 characters.

The MAC input is ASCII, one field per line, with a version tag for domain separation::

    "medialog-stream-v1\\n{kid}\\n{flag}\\n{asset_id}\\n{expires}\\n{ip}"

where ``expires`` is canonical decimal Unix seconds and ``ip`` is the canonical text of the
bound address (IPv4-mapped IPv6 folded to IPv4), empty when ``flag`` is ``a``. No field may
contain a newline (each is validated to a restricted alphabet), so the encoding is injective.
A URL is valid while ``now < expires``.

Errors: verification failures raise :class:`~medialog.domain.errors.Forbidden` with code
``SIGNATURE_INVALID`` (malformed, unknown key id, MAC mismatch, address mismatch) or
``SIGNATURE_EXPIRED`` (authentic but past its expiry); a bad object path raises ``Forbidden``
with code ``PATH_INVALID``; an unsatisfiable ``Range`` raises
:class:`~medialog.domain.errors.ValidationError` with code ``RANGE_NOT_SATISFIABLE``. Programming
errors on the issuing side (bad key string, bad asset id, negative expiry) raise ``ValueError``.
No message ever contains a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from medialog.domain.errors import Forbidden, ValidationError
from medialog.domain.layout import MASTER_PLAYLIST

__all__ = [
    "MIN_SECRET_BYTES",
    "SigningKeys",
    "parse_range",
    "safe_object_path",
    "sign_stream",
    "stream_url",
    "verify_stream",
]

MIN_SECRET_BYTES = 32
"""Shortest accepted secret, in bytes of its UTF-8 encoding (256 bits, the HMAC-SHA256 size)."""

SIGNATURE_INVALID = "SIGNATURE_INVALID"
SIGNATURE_EXPIRED = "SIGNATURE_EXPIRED"
PATH_INVALID = "PATH_INVALID"
RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"

_FLAG_ANY = "a"
_FLAG_IP = "i"
_MAC_PREFIX = "medialog-stream-v1\n"
_MAX_TOKEN_CHARS = 32 + 1 + 1 + 1 + 43

_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
# Asset ids are UUIDs in practice; accept any id of a safe alphabet without '.', so an id can
# never be '.' or '..' and never contain '/', which keeps ``{asset_id}/{path}`` inside the prefix.
_ASSET_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Canonical decimal only: no sign, no leading zeros, no whitespace or '_' (which int() accepts).
_EXPIRES_RE = re.compile(r"0|[1-9][0-9]{0,11}")
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{1,32})\.([ai])\.([A-Za-z0-9_-]{43})")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")

_MAX_PATH_CHARS = 512
_MAX_PATH_SEGMENTS = 8


# -- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SigningKeys:
    """An ordered, non-empty set of HMAC keys: the first signs, every one verifies.

    Build it with :meth:`parse` from ``Settings.signing_keys`` (``"kid:secret[,kid:secret…]"``).
    Rotation: put the new key first and keep the old one listed until every URL it signed has
    expired, then drop it. ``repr()`` shows only key ids, never secrets.
    """

    keys: tuple[tuple[str, bytes], ...]
    _macs: Mapping[str, hmac.HMAC] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("signing_keys: at least one 'kid:secret' key is required")
        seen: set[str] = set()
        for index, (kid, secret) in enumerate(self.keys, start=1):
            if not isinstance(kid, str) or _KID_RE.fullmatch(kid) is None:
                # The text is not echoed: a mangled entry may hold (part of) a secret.
                raise ValueError(
                    f"signing_keys: entry {index} has an invalid key id "
                    "(1-32 characters of A-Z a-z 0-9 _ -)"
                )
            if kid in seen:
                raise ValueError(f"signing_keys: duplicate key id {kid!r}")
            seen.add(kid)
            if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"signing_keys: the secret of key id {kid!r} is shorter than "
                    f"{MIN_SECRET_BYTES} bytes"
                )
        # One keyed HMAC state per key; signing copies it, which skips re-deriving the pads.
        macs = {kid: hmac.new(secret, digestmod=hashlib.sha256) for kid, secret in self.keys}
        object.__setattr__(self, "_macs", MappingProxyType(macs))

    @classmethod
    def parse(cls, value: str) -> SigningKeys:
        """Parse ``"kid:secret[,kid:secret…]"``.

        Entries are split on ``,``; each on its first ``:`` (so a secret may contain ``:`` but
        not ``,``). Whitespace around entries, key ids and secrets is ignored. The secret is
        used as its UTF-8 bytes and must be at least :data:`MIN_SECRET_BYTES` long.

        Raises ``ValueError`` for an empty string, an empty entry, an entry without ``kid:``,
        an invalid or duplicate key id, or a short secret; the message names the entry's
        position or key id, never the secret.
        """
        if not value or not value.strip():
            raise ValueError("signing_keys is empty: set it to 'kid:secret[,kid:secret…]'")
        pairs: list[tuple[str, bytes]] = []
        for index, entry in enumerate(value.split(","), start=1):
            kid, sep, secret = entry.strip().partition(":")
            if not sep:
                what = "is empty" if not entry.strip() else "is not of the form 'kid:secret'"
                raise ValueError(f"signing_keys: entry {index} {what}")
            kid = kid.strip()
            if _KID_RE.fullmatch(kid) is None:
                raise ValueError(
                    f"signing_keys: entry {index} has an invalid key id "
                    "(1-32 characters of A-Z a-z 0-9 _ -)"
                )
            pairs.append((kid, secret.strip().encode("utf-8")))
        return cls(tuple(pairs))

    @property
    def active_kid(self) -> str:
        """The key id that signs new URLs (the first listed)."""
        return self.keys[0][0]

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id, in order; all of them verify."""
        return tuple(kid for kid, _ in self.keys)

    def __repr__(self) -> str:
        return f"SigningKeys(kids={self.kids!r})"

    def _mac(self, kid: str, message: bytes) -> bytes | None:
        template = self._macs.get(kid)
        if template is None:
            return None
        mac = template.copy()
        mac.update(message)
        return mac.digest()


# -- signing -------------------------------------------------------------------------------------


def _canonical_ip(value: str) -> str | None:
    """Canonical text of an IP address (IPv4-mapped IPv6 folded to IPv4), or None if invalid."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:  # a zone index is local to a host; never bind to it
            return None
    return str(address)


def _mac_input(kid: str, flag: str, asset_id: str, expires: str, ip: str) -> bytes:
    """The exact bytes the HMAC covers (see the module docstring). Inputs are pre-validated."""
    return f"{_MAC_PREFIX}{kid}\n{flag}\n{asset_id}\n{expires}\n{ip}".encode("ascii")


def _b64(mac: bytes) -> str:
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_stream(
    keys: SigningKeys, asset_id: str, expires: int, client_ip: str | None = None
) -> str:
    """Return the token ``{kid}.{flag}.{mac}`` for ``asset_id`` valid while ``now < expires``.

    Signs with ``keys.active_kid``. With ``client_ip`` the token is IP-bound (flag ``i``) and
    verifies only for that address; without it (flag ``a``) it verifies for any client.

    Raises ``ValueError`` for an asset id outside ``[A-Za-z0-9_-]{1,128}``, an ``expires``
    that is not a non-negative int below 10**12, or an unparsable ``client_ip``.
    """
    if _ASSET_RE.fullmatch(asset_id) is None:
        raise ValueError("asset_id must be 1-128 characters of A-Z a-z 0-9 _ -")
    if type(expires) is not int or not 0 <= expires < 10**12:
        raise ValueError("expires must be an int of Unix seconds in [0, 10**12)")
    if client_ip is None:
        flag, ip = _FLAG_ANY, ""
    else:
        canonical = _canonical_ip(client_ip)
        if canonical is None:
            raise ValueError("client_ip is not an IP address")
        flag, ip = _FLAG_IP, canonical
    kid = keys.active_kid
    mac = keys._mac(kid, _mac_input(kid, flag, asset_id, str(expires), ip))
    assert mac is not None  # the active kid is always present
    return f"{kid}.{flag}.{_b64(mac)}"


def stream_url(
    base_url: str,
    keys: SigningKeys,
    asset_id: str,
    expires: int,
    path: str = MASTER_PLAYLIST,
    client_ip: str | None = None,
) -> str:
    """Return ``{base_url}/v1/stream/{asset_id}/{expires}/{token}/{path}``.

    ``base_url`` is the public origin (``Settings.base_url``), trailing ``/`` ignored. ``path``
    must pass :func:`safe_object_path` (its cleaned form is used); it needs no escaping since
    every allowed character is URL-safe. Raises ``ValueError`` as :func:`sign_stream` does, and
    for an invalid ``path``.
    """
    token = sign_stream(keys, asset_id, expires, client_ip)
    try:
        clean = safe_object_path(path)
    except Forbidden as exc:
        raise ValueError(f"invalid stream path: {exc.message}") from None
    return f"{base_url.rstrip('/')}/v1/stream/{asset_id}/{expires}/{token}/{clean}"


# -- verification --------------------------------------------------------------------------------


def _invalid(message: str) -> Forbidden:
    return Forbidden(message, code=SIGNATURE_INVALID)


def verify_stream(
    keys: SigningKeys,
    asset_id: str,
    expires: str,
    token: str,
    *,
    now: float,
    client_ip: str | None,
) -> None:
    """Check a streaming URL's ``asset_id``, ``expires`` and ``token`` path segments.

    ``now`` is the current Unix time (the caller's clock, injected for testability);
    ``client_ip`` is the requesting client's address, or None if unknown. Parsing is strict:
    ``expires`` must be canonical decimal, the token exactly ``{kid}.{a|i}.{43 base64url}``.

    The MAC is compared with :func:`hmac.compare_digest`. Expiry is checked only after the
    MAC, so ``SIGNATURE_EXPIRED`` is reported only for authentic tokens.

    Raises ``Forbidden`` with code ``SIGNATURE_INVALID`` (malformed segment, unknown key id,
    MAC mismatch, or an IP-bound token presented from another or unknown address) or
    ``SIGNATURE_EXPIRED`` (``now >= expires``). Returns None when the URL is valid.
    """
    if len(token) > _MAX_TOKEN_CHARS:
        raise _invalid("malformed signature")
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise _invalid("malformed signature")
    kid, flag, presented = match.groups()
    if _ASSET_RE.fullmatch(asset_id) is None:
        raise _invalid("malformed asset id")
    if _EXPIRES_RE.fullmatch(expires) is None:
        raise _invalid("malformed expiry")
    if flag == _FLAG_IP:
        ip = _canonical_ip(client_ip) if client_ip is not None else None
        if ip is None:
            raise _invalid("signature is bound to a client address; none usable was given")
    else:
        ip = ""
    mac = keys._mac(kid, _mac_input(kid, flag, asset_id, expires, ip))
    if mac is None:
        raise _invalid("unknown signing key")
    # Comparing the canonical encodings also rejects non-canonical base64 (stray low bits).
    if not hmac.compare_digest(_b64(mac).encode("ascii"), presented.encode("ascii")):
        raise _invalid("signature does not match")
    if now >= int(expires):
        raise Forbidden("signed URL has expired", code=SIGNATURE_EXPIRED)


# -- object path ---------------------------------------------------------------------------------


def _path_invalid(message: str) -> Forbidden:
    return Forbidden(message, code=PATH_INVALID)


def safe_object_path(path: str) -> str:
    """Clean the client path that follows the signature into a relative object path.

    The path is percent-decoded exactly once, then rejected (``Forbidden``, code
    ``PATH_INVALID``) if it is empty, longer than 512 characters, absolute, contains a
    backslash or NUL, has more than 8 segments, or has a segment that is empty (``a//b``,
    trailing ``/``), ``.`` or ``..``, or not made of ``[A-Za-z0-9._-]``. Since ``%`` is not
    allowed either, double encoding (``%252e``) is rejected too.

    Returns the path (unchanged after decoding); ``{asset_id}/{result}`` always stays inside
    the asset's prefix.
    """
    if not path:
        raise _path_invalid("empty object path")
    if len(path) > 3 * _MAX_PATH_CHARS:  # bound the work before decoding
        raise _path_invalid("object path too long")
    try:
        decoded = unquote(path, encoding="utf-8", errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        raise _path_invalid("object path is not valid percent-encoded UTF-8") from None
    if not decoded:
        raise _path_invalid("empty object path")
    if len(decoded) > _MAX_PATH_CHARS:
        raise _path_invalid("object path too long")
    if "\x00" in decoded or "\\" in decoded:
        raise _path_invalid("object path contains a forbidden character")
    if decoded.startswith("/"):
        raise _path_invalid("object path must be relative")
    segments = decoded.split("/")
    if len(segments) > _MAX_PATH_SEGMENTS:
        raise _path_invalid("object path has too many segments")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise _path_invalid("object path has an empty, '.' or '..' segment")
        if _SEGMENT_RE.fullmatch(segment) is None:
            raise _path_invalid("object path segment has a forbidden character")
    return decoded


# -- HTTP helpers the streaming route needs ------------------------------------------------------

_RANGE_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)")
_BIG = 10**18  # beyond any object size; caps int() on absurdly long digit strings


def _to_int(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _BIG if len(digits) > 18 else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse an HTTP ``Range`` header against an object of ``size`` bytes (RFC 9110 §14).

    Returns the inclusive ``(start, end)`` to serve for a single byte range: ``bytes=a-b``
    (``end`` clamped to ``size - 1``), ``bytes=a-`` or ``bytes=-n`` (the last ``n`` bytes, the
    whole object if ``n >= size``). Returns None -- serve the whole object with 200 -- when
    there is no header, the unit is not ``bytes``, the header is syntactically invalid
    (including ``a > b``), or it asks for more than one range.

    Raises ``ValidationError`` with code ``RANGE_NOT_SATISFIABLE`` (the route answers 416 with
    ``Content-Range: bytes */{size}``; ``details`` is ``[{"size": size}]``) when ``start >=
    size``, for ``bytes=-0``, and for any range on an empty object. ``ValueError`` if
    ``size < 0``.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if header is None:
        return None
    unit, sep, spec_list = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec_list.split(",")]
    specs = [s for s in specs if s]  # the list grammar allows empty elements
    if len(specs) != 1:
        return None  # none, or a multi-range request: serve the whole object
    match = _RANGE_SPEC_RE.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last n bytes
        n = _to_int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size - 1
    start = _to_int(first)
    if last:
        end = _to_int(last)
        if end < start:
            return None  # invalid range-spec: ignore the header
    else:
        end = size - 1
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(end, size - 1)


def _unsatisfiable(size: int) -> ValidationError:
    return ValidationError(
        f"range not satisfiable for an object of {size} bytes",
        code=RANGE_NOT_SATISFIABLE,
        details=[{"size": size}],
    )
