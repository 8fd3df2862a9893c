"""RS256 signing keys: a JWKS document parsed (``parse_jwks``) and the remote JWKS the verifier
looks unknown ``kid``s up in (``RemoteJwks``).

* The remote JWKS is cached for ``jwt_jwks_cache_s`` and refetched when it is older than that or
  when a token names an unknown ``kid``, but never more than once per ``refetch_min_interval_s``
  (10 s): a flood of made-up kids costs the issuer at most one request per 10 s. Concurrent
  callers share one fetch. If a refetch fails, the keys already known keep working.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Final

import aiohttp
import yarl
from cryptography.hazmat.primitives.asymmetric import rsa

from medialog.domain.errors import Unauthenticated

__all__ = ["RS256", "KeysUnavailable", "RemoteJwks", "parse_jwks", "refuse"]

log = logging.getLogger(__name__)

RS256: Final = "RS256"
MIN_RSA_BITS: Final = 2048
REFETCH_MIN_INTERVAL_S: Final = 10.0
JWKS_FETCH_TIMEOUT_S: Final = 5.0
MAX_JWKS_BYTES: Final = 1024 * 1024


def refuse(code: str, message: str) -> Unauthenticated:
    """A refusal with a ``TOKEN_*`` code, logged at debug (the code only, never the token)."""
    log.debug("token refused: %s", code)
    return Unauthenticated(message, code=code)


def _b64url_uint(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("not a base64url string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a base64url string") from exc
    return int.from_bytes(raw, "big")


def parse_jwks(document: object) -> dict[str, rsa.RSAPublicKey]:
    """RSA signing keys of a JWKS document, by ``kid``.

    Keeps entries with ``kty`` RSA, a non-empty ``kid``, ``use`` absent or ``sig``, ``alg`` absent
    or RS256 and a modulus of at least 2048 bits; only the public members ``n``/``e`` are read.
    Other entries are skipped (logged at debug); for a duplicate ``kid`` the first entry wins.
    ``ValueError`` when the document is not ``{"keys": [...]}``.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS document must be an object with a "keys" list')
    keys: dict[str, rsa.RSAPublicKey] = {}
    for index, entry in enumerate(document["keys"]):
        if not isinstance(entry, Mapping):
            log.debug("jwks entry %d skipped: not an object", index)
            continue
        kid = entry.get("kid")
        if entry.get("kty") != "RSA" or not isinstance(kid, str) or not kid:
            log.debug("jwks entry %d skipped: not an RSA key with a kid", index)
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", RS256) != RS256:
            log.debug("jwks entry %d skipped: not an RS256 signing key", index)
            continue
        if kid in keys:
            log.debug("jwks entry %d skipped: duplicate kid", index)
            continue
        try:
            public_key = rsa.RSAPublicNumbers(
                _b64url_uint(entry.get("e")), _b64url_uint(entry.get("n"))
            ).public_key()
        except ValueError:
            log.debug("jwks entry %d skipped: invalid n/e", index)
            continue
        if public_key.key_size < MIN_RSA_BITS:
            log.debug("jwks entry %d skipped: %d-bit modulus", index, public_key.key_size)
            continue
        keys[kid] = public_key
    return keys


class KeysUnavailable(Exception):
    """The remote JWKS could not be fetched or parsed (the reason is in the message)."""


def _redacted(url: str) -> str:
    """``url`` without user info, query or fragment (they may hold credentials), for logs."""
    try:
        return str(yarl.URL(url).with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


class RemoteJwks:
    """The JWKS at ``url``: cached, refetched on expiry/unknown kid, rate-limited, single-flight."""

    def __init__(
        self,
        url: str,
        *,
        http: aiohttp.ClientSession | None,
        cache_s: float,
        min_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._url = url
        self._log_url = _redacted(url)
        self._http = http
        self._own_http: aiohttp.ClientSession | None = None
        self._cache_s = cache_s
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._last_failed = False
        self._lock = asyncio.Lock()

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._cache_s

    async def key(self, kid: str) -> rsa.RSAPublicKey:
        """The key for ``kid``; ``Unauthenticated`` TOKEN_UNKNOWN_KEY / TOKEN_KEYS_UNAVAILABLE."""
        if self._fresh(self._clock()) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()  # re-read: another caller may have fetched while we waited
            if self._fresh(now) and kid in self._keys:
                return self._keys[kid]
            if self._attempted_at is None or now - self._attempted_at >= self._min_interval_s:
                self._attempted_at = now
                try:
                    self._keys = await self._fetch()
                except KeysUnavailable as exc:
                    self._last_failed = True
                    log.warning("jwks fetch from %s failed: %s", self._log_url, exc)
                else:
                    self._fetched_at = now
                    self._last_failed = False
                    log.info("jwks fetched from %s: %d key(s)", self._log_url, len(self._keys))
            if kid in self._keys:
                return self._keys[kid]  # possibly stale when the refetch failed: still trusted
        if self._last_failed:
            raise refuse("TOKEN_KEYS_UNAVAILABLE", "the token signing keys are unavailable")
        raise refuse("TOKEN_UNKNOWN_KEY", "the token's signing key is unknown")

    async def _fetch(self) -> dict[str, rsa.RSAPublicKey]:
        http = self._http
        if http is None:
            if self._own_http is None or self._own_http.closed:
                self._own_http = aiohttp.ClientSession()
            http = self._own_http
        try:
            async with http.get(
                self._url,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                headers={"Accept": "application/json"},
            ) as resp:
                if resp.status != 200:
                    raise KeysUnavailable(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise KeysUnavailable(f"document larger than {MAX_JWKS_BYTES} bytes")
        except aiohttp.ClientConnectorError as exc:  # its text names host:port only
            raise KeysUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # only the type: some texts (InvalidURL, …) would repeat the URL and its credentials
            raise KeysUnavailable(type(exc).__name__) from exc
        try:
            keys = parse_jwks(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError too
            raise KeysUnavailable(f"invalid JWKS document: {type(exc).__name__}") from exc
        if not keys:
            raise KeysUnavailable("the JWKS holds no usable RS256 key")
        return keys

    async def close(self) -> None:
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None
