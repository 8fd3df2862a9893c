"""medialog as its own token issuer (the embedded default).

When ``Settings.jwt_private_key_file`` is set, medialog holds one RSA key, serves its public half
as a JWKS document at ``/.well-known/jwks.json`` and can mint RS256 access tokens that
``medialog.api.auth.verifier.TokenVerifier`` accepts.

Contracts:

* ``ensure_private_key(path)`` creates an RSA-2048 PKCS#8 PEM at ``path`` (mode 0600, parent
  directories created) unless a file is already there; an existing file is never touched or
  validated. Safe against a concurrent creator: the key appears atomically, complete or not at all.
* ``load_private_key(path)`` returns the RSA private key or raises ``ValueError`` (not PEM, not
  RSA, encrypted, or shorter than 2048 bits).
* ``key_id(public_key)`` is the RFC 7638 JWK thumbprint (SHA-256, base64url without padding): it
  depends only on the key, so every process derives the same ``kid``.
* ``public_jwks(private_key)`` is ``{"keys": [{kty, n, e, kid, use: "sig", alg: "RS256"}]}``;
  it never carries private members.
* ``VIEWER``/``CREATOR``/``ADMIN`` (``KNOWN_ROLES``) are the role names tokens carry in the
  ``roles`` claim; ``medialog.api.auth.principal`` re-exports them.
* ``mint_token(...)`` signs RS256 with a ``kid`` header and the claims iss, aud, sub, iat, nbf,
  exp (= iat + ttl_s), jti (random) and ``roles`` (a list of known roles, duplicates removed).
  Unknown roles, an empty role list, an empty user or a non-positive ttl raise ``ValueError``.

Nothing here runs at import time; the only I/O is in the two functions taking a path.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ADMIN",
    "CREATOR",
    "KEY_BITS",
    "KNOWN_ROLES",
    "ROLES_CLAIM",
    "VIEWER",
    "ensure_private_key",
    "key_id",
    "load_private_key",
    "mint_token",
    "public_jwks",
]

log = logging.getLogger(__name__)

KEY_BITS = 2048
_ALGORITHM = "RS256"

# The token vocabulary, shared with ``medialog.api.auth.principal`` (which re-exports it). It
# lives here, in a module importing nothing from medialog, so neither module can form an import
# cycle.
VIEWER: Final = "viewer"
CREATOR: Final = "creator"
ADMIN: Final = "admin"
KNOWN_ROLES: Final[frozenset[str]] = frozenset({VIEWER, CREATOR, ADMIN})
ROLES_CLAIM: Final = "roles"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    """Unsigned big-endian, minimal octets (RFC 7518 §2 "Base64urlUInt")."""
    return _b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def ensure_private_key(path: Path) -> None:
    """Create an RSA-2048 private key PEM at ``path`` (mode 0600) unless a file exists there."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    # Write a private temporary file, then link it into place: the key appears atomically, and
    # if another process won the race its key is kept (os.link never overwrites).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            log.info("private key %s was created concurrently; keeping that one", path)
            return
        except OSError:
            # Filesystems without hard links: fall back to a rename (tiny race, same content type).
            if path.exists():
                return
            os.replace(tmp, path)
            return
        log.info("generated a new RSA-%d token signing key at %s", KEY_BITS, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an unencrypted PEM RSA private key of at least 2048 bits; ``ValueError`` otherwise."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} does not hold an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an RSA private key")
    if key.key_size < KEY_BITS:
        raise ValueError(f"{path} holds a {key.key_size}-bit RSA key; at least {KEY_BITS} needed")
    return key


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint of an RSA public key (SHA-256, base64url, no padding)."""
    numbers = public_key.public_numbers()
    # Required members only, lexicographic order, no whitespace (RFC 7638 §3.2).
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwks(private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The JWKS document served at ``/.well-known/jwks.json`` (public members only)."""
    public_key = private_key.public_key()
    numbers = public_key.public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
                "kid": key_id(public_key),
                "use": "sig",
                "alg": _ALGORITHM,
            }
        ]
    }


def mint_token(
    private_key: rsa.RSAPrivateKey,
    *,
    user: str,
    roles: Sequence[str],
    issuer: str,
    audience: str,
    ttl_s: int,
) -> str:
    """Sign an RS256 access token for ``user`` with ``roles`` valid for ``ttl_s`` seconds."""
    if not isinstance(user, str) or not user:
        raise ValueError("user must be a non-empty string")
    if isinstance(roles, str):
        raise ValueError("roles must be a sequence of role names, not a string")
    wanted = list(dict.fromkeys(roles))
    if not wanted:
        raise ValueError("at least one role is required")
    unknown = [r for r in wanted if r not in KNOWN_ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}; known: {sorted(KNOWN_ROLES)}")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": secrets.token_urlsafe(16),
        ROLES_CLAIM: wanted,
    }
    return jwt.encode(
        claims,
        private_key,
        algorithm=_ALGORITHM,
        headers={"kid": key_id(private_key.public_key())},
    )
