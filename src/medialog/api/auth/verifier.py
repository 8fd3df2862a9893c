"""Bearer-token verification: ``TokenVerifier`` turns a JWT into a ``Principal`` or refuses it.

Contracts:

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
* Verified tokens are remembered (``token_cache_size`` entries, least recently used evicted,
  keyed by the SHA-256 of the whole token, so another signature is another entry) for at most
  ``token_cache_s`` (60 s) and never past the token's ``exp`` (leeway does not extend a cached
  entry; a token inside its leeway is verified in full again). Refusals are never remembered. A
  remembered RS256 token is served only while its ``kid`` still resolves (same rules as in ``jwks``:
  JWKS expiry, refetch) to the very key that verified it, so a key dropped from the JWKS stops
  its tokens as before. Everything else a verification checks depends only on the token's
  bytes and the clock, so a remembered answer is the answer a full verification would give.
  ``remembered(token)`` gives it without a coroutine when no key lookup can change it (HS256,
  or a local key), else None: then ``verify`` decides.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import HMACAlgorithm

from medialog.api.auth.jwks import (
    JWKS_FETCH_TIMEOUT_S,
    REFETCH_MIN_INTERVAL_S,
    RS256,
    RemoteJwks,
    parse_jwks,
    refuse,
)
from medialog.api.auth.principal import KNOWN_ROLES, Principal
from medialog.config import Settings
from medialog.issuer import ROLES_CLAIM

__all__ = ["TokenVerifier"]

HS256: Final = "HS256"
SUPPORTED_ALGORITHMS: Final = frozenset({HS256, RS256})

MAX_TOKEN_CHARS: Final = 8192
MIN_HS256_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: at least the hash output size
TOKEN_CACHE_SIZE: Final = 10_000
TOKEN_CACHE_S: Final = 60.0

_REQUIRED_CLAIMS: Final = ("exp", "iat", "sub")
_JWS: Final = jwt.PyJWS()  # structure-only parsing (no signature check) in verify() step 1


@dataclass(frozen=True, slots=True)
class _Verified:
    """A remembered successful verification (see the module docstring)."""

    principal: Principal
    key: bytes | rsa.RSAPublicKey
    kid: str | None  # None: HS256
    exp: int  # the token's exp as pyjwt reads it (wall clock, seconds)
    valid_until: float  # verifier clock (monotonic)


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
        self._remote: RemoteJwks | None = None
        if RS256 in self._allowed:
            if local_jwks is not None:
                self._local_keys = parse_jwks(local_jwks)
                if not self._local_keys:
                    raise ValueError("the local JWKS holds no usable RS256 key")
            if jwks_url:
                self._remote = RemoteJwks(
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
            raise refuse("TOKEN_MISSING", "a bearer token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise refuse("TOKEN_MALFORMED", "the token is too long")
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

    def remembered(self, token: str) -> Principal | None:
        """``verify``'s answer for a token it remembers, when giving it needs no I/O (an HS256
        token, or an RS256 one whose kid names the same local key): else None, and ``verify``
        decides. Why: a player reports every few seconds with one token; no coroutine for it."""
        if not self._cache_size or not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._cache.get(digest)
        if hit is None or not self._in_time(hit):
            return None
        if hit.kid is not None and self._local_keys.get(hit.kid) is not hit.key:
            return None
        self._cache.move_to_end(digest)
        return hit.principal

    def _in_time(self, hit: _Verified) -> bool:
        return self._clock() < hit.valid_until and self._wall_clock() < hit.exp

    async def _still_valid(self, hit: _Verified) -> bool:
        """Whether a remembered verification still holds: in time, and (RS256) its kid still
        names the key that verified it. May raise what the key lookup raises, as uncached."""
        if not self._in_time(hit):
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
            raise refuse("TOKEN_MALFORMED", "the token is not a well-formed JWT") from None

        # 2. Algorithm allow-list, before any key is looked at.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise refuse("TOKEN_ALGORITHM_NOT_ALLOWED", "the token's algorithm is not accepted")

        # 3. The key follows from the algorithm family; the verify call is pinned to that family.
        key: bytes | rsa.RSAPublicKey
        if alg == HS256:
            if self._hs256_key is None:  # unreachable: HS256 allowed ⇒ secret checked in __init__
                raise refuse(
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
            raise refuse("TOKEN_BAD_SIGNATURE", "the token signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise refuse("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise refuse("TOKEN_NOT_YET_VALID", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise refuse("TOKEN_WRONG_AUDIENCE", "the token is not meant for this api") from None
        except jwt.InvalidIssuerError:
            raise refuse("TOKEN_WRONG_ISSUER", "the token comes from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise refuse("TOKEN_WRONG_AUDIENCE", "the token names no audience") from None
            if exc.claim == "iss":
                raise refuse("TOKEN_WRONG_ISSUER", "the token names no issuer") from None
            raise refuse(
                "TOKEN_INVALID_CLAIMS", f"the token lacks the required claim {exc.claim!r}"
            ) from None
        except jwt.InvalidAlgorithmError:  # cannot happen: alg is pinned and allowed
            raise refuse(
                "TOKEN_ALGORITHM_NOT_ALLOWED", "the token's algorithm is not accepted"
            ) from None
        except jwt.PyJWTError:
            # Structure was checked in step 1, so what is left is a badly typed claim
            # (exp/nbf/iat not a number, sub/jti not a string, …) or an unusable key.
            raise refuse("TOKEN_INVALID_CLAIMS", "the token claims are invalid") from None

        # 5. medialog's own claim rules.
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise refuse("TOKEN_INVALID_CLAIMS", "the token subject is empty")
        if claims.get("iss") != self._issuer:  # exact match, whatever pyjwt's version does
            raise refuse("TOKEN_WRONG_ISSUER", "the token comes from another issuer")
        roles = claims.get(ROLES_CLAIM)
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise refuse("TOKEN_INVALID_CLAIMS", "the token roles must be a list of strings")
        known = frozenset(roles) & KNOWN_ROLES
        if not known:
            raise refuse("TOKEN_INVALID_CLAIMS", "the token carries no known role")
        return Principal(user_id=subject, roles=known), key, kid, claims.get("exp")

    async def _rsa_key(self, kid: object) -> rsa.RSAPublicKey:
        if not isinstance(kid, str) or not kid:
            raise refuse("TOKEN_UNKNOWN_KEY", "the token names no signing key (kid)")
        local = self._local_keys.get(kid)
        if local is not None:
            return local
        if self._remote is None:
            raise refuse("TOKEN_UNKNOWN_KEY", "the token's signing key is unknown")
        return await self._remote.key(kid)
