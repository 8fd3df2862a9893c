"""Bearer-token authentication: who is calling (``Principal``) and what they may do (``require``).

Contracts:

* ``bearer_token(header)`` returns the token of an ``Authorization: Bearer <token>`` header.
  No header (or a blank one) raises ``Unauthenticated(code="TOKEN_MISSING")``; anything else that
  is not exactly ``Bearer`` + one RFC 6750 token raises ``code="TOKEN_MALFORMED"``.
* ``TokenVerifier.verify(token)`` returns a ``Principal`` or raises ``Unauthenticated`` with one of
  the ``TOKEN_*`` codes below. Checks, in order:

  1. the token is a compact JWS (``TOKEN_MISSING`` / ``TOKEN_MALFORMED``);
  2. the header ``alg`` is in ``Settings.allowed_algorithms`` (``RS256`` and/or ``HS256``) before
     anything else is looked at; ``none`` and everything else are refused
     (``TOKEN_ALGORITHM_NOT_ALLOWED``);
  3. the key is chosen by the algorithm's family, never by the token: HS256 verifies only with
     ``Settings.jwt_hs256_secret``; RS256 only with an RSA public key found by the header ``kid``
     in the local JWKS (medialog as issuer; looked up first) or in the JWKS at
     ``Settings.jwt_jwks_url`` (``TOKEN_UNKNOWN_KEY``; ``TOKEN_KEYS_UNAVAILABLE`` when that JWKS
     cannot be fetched). Header ``jwk``/``jku``/``x5u`` are ignored;
  4. the signature (``TOKEN_BAD_SIGNATURE``);
  5. the claims: ``exp``, ``iat``, ``sub`` are required; ``exp``/``nbf``/``iat`` are checked with
     ``jwt_leeway_s`` (``TOKEN_EXPIRED`` / ``TOKEN_NOT_YET_VALID``); ``iss`` must equal
     ``jwt_issuer`` (``TOKEN_WRONG_ISSUER``, also when absent); ``aud`` must contain
     ``jwt_audience`` (``TOKEN_WRONG_AUDIENCE``, also when absent); ``roles`` must be a list of
     strings holding at least one known role, unknown ones being ignored
     (``TOKEN_INVALID_CLAIMS``, as for any other bad claim).

  Messages are fixed sentences: they never contain the token, a claim value, or a secret. Tokens
  are never logged.
* The remote JWKS is cached for ``jwt_jwks_cache_s`` and refetched when it is older than that or
  when a token names an unknown ``kid``, but never more than once per ``refetch_min_interval_s``
  (10 s): a flood of made-up kids costs the issuer at most one request per 10 s. Concurrent
  callers share one fetch. If a refetch fails, the keys already known keep working.
* Verified tokens are remembered (``token_cache_size`` entries, least recently used evicted,
  keyed by the SHA-256 of the whole token, so another signature is another entry) for at most
  ``token_cache_s`` (60 s) and never past the token's ``exp`` (leeway does not extend a cached
  entry; a token inside its leeway is verified in full again). Refusals are never remembered. A
  remembered RS256 token is served only while its ``kid`` still resolves (same rules as above:
  JWKS expiry, refetch) to the very key that verified it, so a key dropped from the JWKS stops
  its tokens as before. Everything else a verification checks depends only on the token's
  bytes and the clock, so a remembered answer is the answer a full verification would give.
* ``require(principal, *roles)`` passes when the principal has any of ``roles`` or is admin, and
  raises ``Forbidden(code="FORBIDDEN_ROLE")`` otherwise.

This module knows no HTTP status: the api error middleware maps the domain errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
import yarl
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import HMACAlgorithm

from medialog.config import Settings
from medialog.domain.errors import Forbidden, Unauthenticated
from medialog.issuer import ADMIN, CREATOR, KNOWN_ROLES, ROLES_CLAIM, VIEWER

__all__ = [
    "ADMIN",
    "CREATOR",
    "KNOWN_ROLES",
    "VIEWER",
    "Principal",
    "TokenVerifier",
    "bearer_token",
    "parse_jwks",
    "require",
]

log = logging.getLogger(__name__)

HS256: Final = "HS256"
RS256: Final = "RS256"
SUPPORTED_ALGORITHMS: Final = frozenset({HS256, RS256})

MAX_TOKEN_CHARS: Final = 8192
MIN_HS256_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: at least the hash output size
MIN_RSA_BITS: Final = 2048
REFETCH_MIN_INTERVAL_S: Final = 10.0
JWKS_FETCH_TIMEOUT_S: Final = 5.0
MAX_JWKS_BYTES: Final = 1024 * 1024
TOKEN_CACHE_SIZE: Final = 10_000
TOKEN_CACHE_S: Final = 60.0

_REQUIRED_CLAIMS: Final = ("exp", "iat", "sub")
_JWS: Final = jwt.PyJWS()  # structure-only parsing (no signature check) in verify() step 1
# RFC 6750 §2.1 b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


# -- principal and roles --------------------------------------------------------------------------


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


# -- header parsing -------------------------------------------------------------------------------


def bearer_token(authorization_header: str | None) -> str:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive)."""
    if authorization_header is None or not authorization_header.strip():
        raise Unauthenticated("an Authorization: Bearer token is required", code="TOKEN_MISSING")
    parts = authorization_header.strip().split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not _B64TOKEN.fullmatch(parts[1]):
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'", code="TOKEN_MALFORMED"
        )
    return parts[1]


# -- keys -----------------------------------------------------------------------------------------


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


class _KeysUnavailable(Exception):
    """The remote JWKS could not be fetched or parsed (the reason is in the message)."""


def _redacted(url: str) -> str:
    """``url`` without user info, query or fragment (they may hold credentials), for logs."""
    try:
        return str(yarl.URL(url).with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


class _RemoteJwks:
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
                except _KeysUnavailable as exc:
                    self._last_failed = True
                    log.warning("jwks fetch from %s failed: %s", self._log_url, exc)
                else:
                    self._fetched_at = now
                    self._last_failed = False
                    log.info("jwks fetched from %s: %d key(s)", self._log_url, len(self._keys))
            if kid in self._keys:
                return self._keys[kid]  # possibly stale when the refetch failed: still trusted
        if self._last_failed:
            raise _refuse("TOKEN_KEYS_UNAVAILABLE", "the token signing keys are unavailable")
        raise _refuse("TOKEN_UNKNOWN_KEY", "the token's signing key is unknown")

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
                    raise _KeysUnavailable(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _KeysUnavailable(f"document larger than {MAX_JWKS_BYTES} bytes")
        except aiohttp.ClientConnectorError as exc:  # its text names host:port only
            raise _KeysUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # only the type: some texts (InvalidURL, …) would repeat the URL and its credentials
            raise _KeysUnavailable(type(exc).__name__) from exc
        try:
            keys = parse_jwks(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError too
            raise _KeysUnavailable(f"invalid JWKS document: {type(exc).__name__}") from exc
        if not keys:
            raise _KeysUnavailable("the JWKS holds no usable RS256 key")
        return keys

    async def close(self) -> None:
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None


# -- verifier -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    """A remembered successful verification (see the module docstring)."""

    principal: Principal
    key: bytes | rsa.RSAPublicKey
    kid: str | None  # None: HS256
    exp: int  # the token's exp as pyjwt reads it (wall clock, seconds)
    valid_until: float  # verifier clock (monotonic)


def _refuse(code: str, message: str) -> Unauthenticated:
    log.debug("token refused: %s", code)
    return Unauthenticated(message, code=code)


class TokenVerifier:
    """Verifies bearer JWTs against one issuer/audience; see the module docstring for the rules.

    Construction fails (``ValueError``) on a configuration that could never verify safely:
    HS256 allowed without a secret of at least 32 bytes (or with a PEM/SSH key as secret), or
    RS256 allowed with neither a local JWKS nor a JWKS URL.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        allowed_algorithms: frozenset[str],
        hs256_secret: str = "",
        local_jwks: Mapping[str, Any] | None = None,
        jwks_url: str = "",
        http: aiohttp.ClientSession | None = None,
        jwks_cache_s: float = 300.0,
        leeway_s: float = 30.0,
        refetch_min_interval_s: float = REFETCH_MIN_INTERVAL_S,
        fetch_timeout_s: float = JWKS_FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        token_cache_size: int = TOKEN_CACHE_SIZE,
        token_cache_s: float = TOKEN_CACHE_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        unsupported = set(allowed_algorithms) - SUPPORTED_ALGORITHMS
        if not allowed_algorithms or unsupported:
            raise ValueError("allowed algorithms must be a non-empty subset of {HS256, RS256}")
        self._issuer = issuer
        self._audience = audience
        self._allowed = frozenset(allowed_algorithms)
        self._leeway_s = leeway_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache_size = max(0, token_cache_size)
        self._cache_s = token_cache_s
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()

        self._hs256_key: bytes | None = None
        if HS256 in self._allowed:
            secret = hs256_secret.encode("utf-8")
            if len(secret) < MIN_HS256_SECRET_BYTES:
                raise ValueError(
                    f"HS256 is allowed but jwt_hs256_secret is shorter than "
                    f"{MIN_HS256_SECRET_BYTES} bytes"
                )
            try:  # pyjwt refuses PEM/SSH public keys as HMAC secrets; fail at startup, not later
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
            except jwt.InvalidKeyError:
                raise ValueError("jwt_hs256_secret must not be a PEM or SSH key") from None
            self._hs256_key = secret

        self._local_keys: dict[str, rsa.RSAPublicKey] = {}
        self._remote: _RemoteJwks | None = None
        if RS256 in self._allowed:
            if local_jwks is not None:
                self._local_keys = parse_jwks(local_jwks)
                if not self._local_keys:
                    raise ValueError("the local JWKS holds no usable RS256 key")
            if jwks_url:
                self._remote = _RemoteJwks(
                    jwks_url,
                    http=http,
                    cache_s=jwks_cache_s,
                    min_interval_s=refetch_min_interval_s,
                    timeout_s=fetch_timeout_s,
                    clock=clock,
                )
            if not self._local_keys and self._remote is None:
                raise ValueError(
                    "RS256 is allowed but there is neither a local JWKS nor a JWKS URL"
                )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: aiohttp.ClientSession | None = None,
        local_jwks: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenVerifier:
        """Build from ``Settings.jwt_*``; ``http`` is used for the JWKS URL (else one is owned)."""
        return cls(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            allowed_algorithms=settings.allowed_algorithms,
            hs256_secret=settings.jwt_hs256_secret.get_secret_value(),
            local_jwks=local_jwks,
            jwks_url=settings.jwt_jwks_url,
            http=http,
            jwks_cache_s=settings.jwt_jwks_cache_s,
            leeway_s=settings.jwt_leeway_s,
            clock=clock,
        )

    async def close(self) -> None:
        """Close the HTTP session this verifier created itself (never one passed in)."""
        if self._remote is not None:
            await self._remote.close()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid ``token``; ``Unauthenticated`` with a ``TOKEN_*`` code else."""
        if not isinstance(token, str) or not token:
            raise _refuse("TOKEN_MISSING", "a bearer token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise _refuse("TOKEN_MALFORMED", "the token is too long")
        if not self._cache_size:
            return (await self._verify(token))[0]
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            if await self._still_valid(hit):
                if digest in self._cache:  # (the lookup may have awaited a JWKS fetch)
                    self._cache.move_to_end(digest)
                return hit.principal
            if self._cache.get(digest) is hit:
                del self._cache[digest]
        principal, key, kid, exp = await self._verify(token)
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            valid_until = self._clock() + self._cache_s
            # pyjwt compares int(exp) (already checked to convert) with the wall clock
            self._cache[digest] = _Verified(principal, key, kid, int(exp), valid_until)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    async def _still_valid(self, hit: _Verified) -> bool:
        """Whether a remembered verification still holds: in time, and (RS256) its kid still
        names the key that verified it. May raise what the key lookup raises, as uncached."""
        if self._clock() >= hit.valid_until or self._wall_clock() >= hit.exp:
            return False
        if hit.kid is None:  # HS256: the one configured secret
            return True
        return await self._rsa_key(hit.kid) is hit.key

    async def _verify(
        self, token: str
    ) -> tuple[Principal, bytes | rsa.RSAPublicKey, str | None, object]:
        """Full verification: the principal, the key and kid (None for HS256), the raw exp."""
        # 1. Structure only (nothing trusted yet): header + payload must be JSON objects.
        try:
            unverified = _JWS.decode_complete(token, options={"verify_signature": False})
            header: dict[str, Any] = unverified["header"]
            if not isinstance(json.loads(unverified["payload"]), dict):
                raise ValueError("payload is not a JSON object")
        except (jwt.InvalidTokenError, ValueError, RecursionError):
            raise _refuse("TOKEN_MALFORMED", "the token is not a well-formed JWT") from None

        # 2. Algorithm allow-list, before any key is looked at.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _refuse("TOKEN_ALGORITHM_NOT_ALLOWED", "the token's algorithm is not accepted")

        # 3. The key follows from the algorithm family; the verify call is pinned to that family.
        key: bytes | rsa.RSAPublicKey
        if alg == HS256:
            if self._hs256_key is None:  # unreachable: HS256 allowed ⇒ secret checked in __init__
                raise _refuse(
                    "TOKEN_ALGORITHM_NOT_ALLOWED", "the token's algorithm is not accepted"
                )
            key, pinned, kid = self._hs256_key, HS256, None
        else:
            kid = header.get("kid")
            key, pinned = await self._rsa_key(kid), RS256
            assert isinstance(kid, str)  # _rsa_key refuses anything else

        # 4. Signature and registered claims.
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[pinned],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise _refuse("TOKEN_BAD_SIGNATURE", "the token signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise _refuse("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _refuse("TOKEN_NOT_YET_VALID", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _refuse("TOKEN_WRONG_AUDIENCE", "the token is not meant for this api") from None
        except jwt.InvalidIssuerError:
            raise _refuse("TOKEN_WRONG_ISSUER", "the token comes from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise _refuse("TOKEN_WRONG_AUDIENCE", "the token names no audience") from None
            if exc.claim == "iss":
                raise _refuse("TOKEN_WRONG_ISSUER", "the token names no issuer") from None
            raise _refuse(
                "TOKEN_INVALID_CLAIMS", f"the token lacks the required claim {exc.claim!r}"
            ) from None
        except jwt.InvalidAlgorithmError:  # cannot happen: alg is pinned and allowed
            raise _refuse(
                "TOKEN_ALGORITHM_NOT_ALLOWED", "the token's algorithm is not accepted"
            ) from None
        except jwt.PyJWTError:
            # Structure was checked in step 1, so what is left is a badly typed claim
            # (exp/nbf/iat not a number, sub/jti not a string, …) or an unusable key.
            raise _refuse("TOKEN_INVALID_CLAIMS", "the token claims are invalid") from None

        # 5. medialog's own claim rules.
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise _refuse("TOKEN_INVALID_CLAIMS", "the token subject is empty")
        if claims.get("iss") != self._issuer:  # exact match, whatever pyjwt's version does
            raise _refuse("TOKEN_WRONG_ISSUER", "the token comes from another issuer")
        roles = claims.get(ROLES_CLAIM)
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _refuse("TOKEN_INVALID_CLAIMS", "the token roles must be a list of strings")
        known = frozenset(roles) & KNOWN_ROLES
        if not known:
            raise _refuse("TOKEN_INVALID_CLAIMS", "the token carries no known role")
        return Principal(user_id=subject, roles=known), key, kid, claims.get("exp")

    async def _rsa_key(self, kid: object) -> rsa.RSAPublicKey:
        if not isinstance(kid, str) or not kid:
            raise _refuse("TOKEN_UNKNOWN_KEY", "the token names no signing key (kid)")
        local = self._local_keys.get(kid)
        if local is not None:
            return local
        if self._remote is None:
            raise _refuse("TOKEN_UNKNOWN_KEY", "the token's signing key is unknown")
        return await self._remote.key(kid)
