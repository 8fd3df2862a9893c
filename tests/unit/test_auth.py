"""medialog.api.auth: bearer parsing, roles, and TokenVerifier against real tokens.

Real crypto throughout (RSA-2048 keys, HMAC secrets) and a real local HTTP server for the remote
JWKS; time-based JWKS rules use an injected monotonic clock, token times use the real clock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from medialog.api.auth.bearer import bearer_token
from medialog.api.auth.jwks import parse_jwks
from medialog.api.auth.principal import ADMIN, CREATOR, VIEWER, Principal, require
from medialog.api.auth.verifier import TokenVerifier
from medialog.config import Settings
from medialog.domain.errors import Forbidden, Unauthenticated
from medialog.issuer import key_id, mint_token, public_jwks

ISS = "medialog"
AUD = "medialog-api"
SECRET = "hs256-test-secret-" + "x" * 30  # >= 32 bytes
OTHER_SECRET = "another-hs256-secret-" + "y" * 30

KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_EVIL = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID_A = key_id(KEY_A.public_key())
KID_B = key_id(KEY_B.public_key())


# -- helpers ----------------------------------------------------------------------------------


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "jwt_issuer": ISS,
        "jwt_audience": AUD,
        "jwt_algorithms": "RS256",
        "jwt_hs256_secret": "",
        "jwt_jwks_url": "",
        "jwt_jwks_cache_s": 300,
        "jwt_leeway_s": 30,
    }
    base.update(overrides)
    return Settings.from_env(**base)


def local_verifier(**overrides: object) -> TokenVerifier:
    """RS256 against KEY_A's local JWKS (medialog as its own issuer), plus overrides."""
    return TokenVerifier.from_settings(settings(**overrides), None, public_jwks(KEY_A))


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims; an override of ``None`` removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "roles": [VIEWER],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey = KEY_A, **headers: Any) -> str:
    headers.setdefault("kid", key_id(key.public_key()))
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(payload).encode()),
            b64url(signature),
        ]
    )


def hmac_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand (pyjwt itself refuses a PEM public key as an HMAC secret)."""
    signing_input = ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())]
    )
    sig = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def rs256_raw(header: dict[str, Any], payload: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """RS256 by hand, for payloads pyjwt refuses to encode."""
    signing_input = ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())]
    )
    sig = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(sig)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Edit the payload of a signed token, keeping its header and signature."""
    header, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return ".".join([header, b64url(json.dumps(body).encode()), sig])


async def refused(
    verifier: TokenVerifier, token: str, code: str, *, secrets_: Iterable[str] = ()
) -> Unauthenticated:
    """Assert ``verify`` refuses with ``code`` and leaks neither the token nor secrets."""
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token)
    err = info.value
    assert err.code == code, (err.code, err.message)
    text = f"{err} {err.message} {err.details!r} {err.args!r}"
    for needle in [token, *token.split("."), SECRET, OTHER_SECRET, *secrets_]:
        if len(needle) >= 8:
            assert needle not in text
    # pyjwt's exception (and its message) is not chained into what the middleware may log
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return err


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- Principal, require, bearer_token ---------------------------------------------------------


def test_principal_has_any_is_literal() -> None:
    p = Principal("alice", frozenset({VIEWER, CREATOR}))
    assert p.has_any(CREATOR)
    assert p.has_any(ADMIN, VIEWER)
    assert not p.has_any(ADMIN)
    assert not p.has_any()
    assert not Principal("root", frozenset({ADMIN})).has_any(CREATOR)  # admin rule is require's


def test_require_roles_and_admin_implies_all() -> None:
    viewer = Principal("v", frozenset({VIEWER}))
    creator = Principal("c", frozenset({CREATOR}))
    admin = Principal("a", frozenset({ADMIN}))
    require(viewer, VIEWER)
    require(creator, VIEWER, CREATOR)
    for role in (VIEWER, CREATOR, ADMIN):
        require(admin, role)
    with pytest.raises(Forbidden) as info:
        require(viewer, CREATOR)
    assert info.value.code == "FORBIDDEN_ROLE"
    with pytest.raises(Forbidden):
        require(creator, ADMIN)
    with pytest.raises(ValueError, match="at least one role"):
        require(admin)  # no role named: programming error
    with pytest.raises(ValueError, match="unknown roles"):
        require(admin, "creater")  # typo: programming error


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer abc.def-_~+/ghi==") == "abc.def-_~+/ghi=="
    assert bearer_token("  BEARER abc.def.ghi  ") == "abc.def.ghi"
    for missing in (None, "", "   "):
        with pytest.raises(Unauthenticated) as info:
            bearer_token(missing)
        assert info.value.code == "TOKEN_MISSING"
    for bad in (
        "Bearer",
        "Bearer ",
        "abc.def.ghi",
        "Basic dXNlcjpwYXNz",
        "Bearer a b",
        "Bearer  abc",
        'Bearer abc"def',
        "Bearer =abc",
        "Token abc",
    ):
        with pytest.raises(Unauthenticated) as info:
            bearer_token(bad)
        assert info.value.code == "TOKEN_MALFORMED", bad
        assert "dXNlcjpwYXNz" not in str(info.value)


# -- configuration ----------------------------------------------------------------------------


def test_configurations_that_cannot_verify_safely_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="HS256"):  # HS256 without a secret
        TokenVerifier.from_settings(settings(jwt_algorithms="HS256"))
    with pytest.raises(ValueError, match="32 bytes"):  # short secret
        TokenVerifier.from_settings(settings(jwt_algorithms="HS256", jwt_hs256_secret="short"))
    pem = KEY_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="PEM"):  # a public key is never an HMAC secret
        TokenVerifier.from_settings(settings(jwt_algorithms="HS256", jwt_hs256_secret=pem.decode()))
    with pytest.raises(ValueError, match="JWKS"):  # RS256 with no key source
        TokenVerifier.from_settings(settings(jwt_algorithms="RS256"))
    with pytest.raises(ValueError, match="no usable"):
        TokenVerifier.from_settings(settings(), None, {"keys": [{"kty": "oct", "k": "abc"}]})
    # HS256-only needs no RSA key source; RS256 via a URL needs no local JWKS.
    TokenVerifier.from_settings(settings(jwt_algorithms="HS256", jwt_hs256_secret=SECRET))
    TokenVerifier.from_settings(settings(jwt_jwks_url="http://127.0.0.1:1/jwks.json"))


def test_parse_jwks_keeps_only_rs256_signing_keys() -> None:
    good = public_jwks(KEY_A)["keys"][0]
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    doc = {
        "keys": [
            "junk",
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "ps", "alg": "PS256"},
            {**good, "kid": ""},
            {**good, "kid": "bad-n", "n": "!!!"},
            {**public_jwks(small)["keys"][0], "kid": "small"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {**good, "kid": "no-alg-no-use", "alg": None, "use": None},
            good,
            {**public_jwks(KEY_B)["keys"][0], "kid": KID_A},  # duplicate kid: first wins
        ]
    }
    doc["keys"][7] = {k: v for k, v in doc["keys"][7].items() if v is not None}
    keys = parse_jwks(doc)
    assert set(keys) == {"no-alg-no-use", KID_A}
    assert keys[KID_A].public_numbers() == KEY_A.public_key().public_numbers()
    bad_docs: list[object] = [{}, {"keys": {}}, [], "x"]
    for bad_doc in bad_docs:
        with pytest.raises(ValueError, match="JWKS document"):
            parse_jwks(bad_doc)


# -- valid tokens -----------------------------------------------------------------------------


async def test_valid_rs256_token_from_medialog_issuer() -> None:
    token = mint_token(
        KEY_A, user="alice", roles=[CREATOR, VIEWER], issuer=ISS, audience=AUD, ttl_s=60
    )
    principal = await local_verifier().verify(token)
    assert principal == Principal("alice", frozenset({CREATOR, VIEWER}))


async def test_valid_hs256_token_when_allowed() -> None:
    hs_only = TokenVerifier.from_settings(settings(jwt_algorithms="HS256", jwt_hs256_secret=SECRET))
    assert await hs_only.verify(hs256(claims(roles=[ADMIN]))) == Principal(
        "alice", frozenset({ADMIN})
    )
    both = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    assert (await both.verify(hs256(claims()))).user_id == "alice"
    assert (await both.verify(rs256(claims()))).user_id == "alice"


async def test_leeway_applies_to_exp_and_nbf() -> None:
    verifier = local_verifier(jwt_leeway_s=30)
    now = int(time.time())
    await verifier.verify(rs256(claims(exp=now - 10)))
    await verifier.verify(rs256(claims(nbf=now + 10, iat=now + 10)))


async def test_audience_list_containing_ours_is_accepted() -> None:
    principal = await local_verifier().verify(rs256(claims(aud=["other", AUD])))
    assert principal.user_id == "alice"


# -- algorithm allow-list ---------------------------------------------------------------------


async def test_hs256_refused_when_not_allowed() -> None:
    await refused(local_verifier(), hs256(claims()), "TOKEN_ALGORITHM_NOT_ALLOWED")


async def test_rs256_refused_when_not_allowed() -> None:
    hs_only = TokenVerifier.from_settings(settings(jwt_algorithms="HS256", jwt_hs256_secret=SECRET))
    await refused(hs_only, rs256(claims()), "TOKEN_ALGORITHM_NOT_ALLOWED")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_alg_none_is_refused(alg: str) -> None:
    both = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    unsigned = compact({"alg": alg, "typ": "JWT"}, claims(roles=[ADMIN]))
    assert unsigned.endswith(".")
    await refused(both, unsigned, "TOKEN_ALGORITHM_NOT_ALLOWED")
    # …also with a (meaningless) signature segment, and with the kid of a trusted key
    await refused(both, unsigned + "c2ln", "TOKEN_ALGORITHM_NOT_ALLOWED")
    with_kid = compact({"alg": alg, "kid": KID_A}, claims(roles=[ADMIN]))
    await refused(both, with_kid, "TOKEN_ALGORITHM_NOT_ALLOWED")


async def test_header_without_alg_or_with_other_algorithms_is_refused() -> None:
    verifier = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    await refused(verifier, compact({"typ": "JWT"}, claims()), "TOKEN_ALGORITHM_NOT_ALLOWED")
    await refused(verifier, compact({"alg": 256}, claims()), "TOKEN_ALGORITHM_NOT_ALLOWED")
    for alg in ("HS512", "RS512", "PS256", "ES256", "EdDSA"):
        forged = compact({"alg": alg, "kid": KID_A}, claims(), b"sig")
        await refused(verifier, forged, "TOKEN_ALGORITHM_NOT_ALLOWED")


async def test_hs_rs_confusion_public_key_as_hmac_secret() -> None:
    """An HS256 token whose HMAC secret is the (public) RSA key PEM never verifies."""
    pem = KEY_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    evil_claims = claims(roles=[ADMIN], sub="mallory")
    variants = [
        hmac_signed({"alg": "HS256", "typ": "JWT", "kid": KID_A}, evil_claims, pem),
        hmac_signed({"alg": "HS256", "kid": KID_A}, evil_claims, pem.strip()),
        hmac_signed(
            {"alg": "HS256", "kid": KID_A}, evil_claims, json.dumps(public_jwks(KEY_A)).encode()
        ),
    ]
    # HS256 allowed, with a different configured secret: the signature simply does not verify.
    both = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=OTHER_SECRET)
    for token in variants:
        await refused(both, token, "TOKEN_BAD_SIGNATURE", secrets_=[pem.decode()])
    # HS256 not allowed: refused on the algorithm, before any key is considered.
    rs_only = local_verifier()
    for token in variants:
        await refused(rs_only, token, "TOKEN_ALGORITHM_NOT_ALLOWED")


async def test_rs256_token_signed_with_the_hs_secret_is_refused() -> None:
    """The reverse confusion: alg RS256 but an HMAC signature made with the configured secret."""
    both = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    token = hmac_signed({"alg": "RS256", "kid": KID_A}, claims(roles=[ADMIN]), SECRET.encode())
    await refused(both, token, "TOKEN_BAD_SIGNATURE")


# -- signatures and keys ----------------------------------------------------------------------


async def test_forged_payload_is_refused() -> None:
    verifier = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    for good in (rs256(claims()), hs256(claims())):
        await verifier.verify(good)
        await refused(verifier, tamper_payload(good, roles=[ADMIN]), "TOKEN_BAD_SIGNATURE")
        await refused(verifier, tamper_payload(good, sub="bob"), "TOKEN_BAD_SIGNATURE")
        head, body, sig = good.split(".")
        flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
        await refused(verifier, f"{head}.{body}.{flipped}", "TOKEN_BAD_SIGNATURE")
        await refused(verifier, f"{head}.{body}.", "TOKEN_BAD_SIGNATURE")


async def test_token_signed_by_another_key_with_a_trusted_kid() -> None:
    verifier = local_verifier()
    evil_jwk = public_jwks(KEY_EVIL)["keys"][0]
    # same kid as the trusted key; an embedded jwk header naming the attacker's key is ignored
    for token in (
        rs256(claims(roles=[ADMIN]), KEY_EVIL, kid=KID_A),
        rs256(claims(roles=[ADMIN]), KEY_EVIL, kid=KID_A, jwk=evil_jwk),
        rs256(claims(roles=[ADMIN]), KEY_EVIL, kid=KID_A, jku="http://127.0.0.1:1/evil.json"),
    ):
        await refused(verifier, token, "TOKEN_BAD_SIGNATURE")


async def test_unknown_or_missing_kid_with_local_keys_only() -> None:
    verifier = local_verifier()
    await refused(verifier, rs256(claims(), KEY_B), "TOKEN_UNKNOWN_KEY")
    no_kid = jwt.encode(claims(), KEY_A, algorithm="RS256")
    await refused(verifier, no_kid, "TOKEN_UNKNOWN_KEY")
    await refused(verifier, rs256(claims(), kid=""), "TOKEN_UNKNOWN_KEY")


# -- claims -----------------------------------------------------------------------------------


async def test_expired() -> None:
    now = int(time.time())
    await refused(
        local_verifier(), rs256(claims(iat=now - 600, nbf=now - 600, exp=now - 60)), "TOKEN_EXPIRED"
    )


async def test_not_yet_valid() -> None:
    now = int(time.time())
    verifier = local_verifier()
    await refused(verifier, rs256(claims(nbf=now + 300)), "TOKEN_NOT_YET_VALID")
    await refused(verifier, rs256(claims(iat=now + 300, nbf=None)), "TOKEN_NOT_YET_VALID")


async def test_wrong_audience() -> None:
    verifier = local_verifier()
    for aud in ("other-api", ["other-api", "more"], "medialog-api-x", "medialog"):
        await refused(verifier, rs256(claims(aud=aud)), "TOKEN_WRONG_AUDIENCE")
    await refused(verifier, rs256(claims(aud=None)), "TOKEN_WRONG_AUDIENCE")


async def test_wrong_issuer() -> None:
    verifier = local_verifier()
    for iss in ("someone-else", "medialog-evil", "medi", "MEDIALOG", ""):
        await refused(verifier, rs256(claims(iss=iss)), "TOKEN_WRONG_ISSUER")
    for odd in (["medialog"], {"medialog": 1}, 7):
        token = rs256_raw({"alg": "RS256", "kid": KID_A}, claims(iss=odd), KEY_A)
        await refused(verifier, token, "TOKEN_WRONG_ISSUER")
    await refused(verifier, rs256(claims(iss=None)), "TOKEN_WRONG_ISSUER")


@pytest.mark.parametrize("missing", ["sub", "exp", "iat"])
async def test_required_claims(missing: str) -> None:
    token = rs256(claims(**{missing: None}))
    await refused(local_verifier(), token, "TOKEN_INVALID_CLAIMS")


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": ""},
        {"sub": "   "},
        {"sub": 42},
        {"sub": ["alice"]},
        {"exp": "tomorrow"},
        {"nbf": "now"},
        {"iat": "today"},
        {"jti": 7},
    ],
)
async def test_badly_typed_claims(bad: dict[str, Any]) -> None:
    await refused(local_verifier(), rs256(claims(**bad)), "TOKEN_INVALID_CLAIMS")


async def test_roles_claim() -> None:
    verifier = local_verifier()
    mixed = await verifier.verify(rs256(claims(roles=[VIEWER, "superuser", CREATOR, VIEWER])))
    assert mixed.roles == frozenset({VIEWER, CREATOR})  # unknown ignored
    for roles in (["superuser"], [], None, "admin", [ADMIN, 1], {"admin": True}, ["Admin"]):
        await refused(verifier, rs256(claims(roles=roles)), "TOKEN_INVALID_CLAIMS")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "TOKEN_MISSING"),
        ("abc", "TOKEN_MALFORMED"),
        ("a.b", "TOKEN_MALFORMED"),
        ("a.b.c", "TOKEN_MALFORMED"),
        ("!!!.###.$$$", "TOKEN_MALFORMED"),
        (b64url(b"[1,2]") + "." + b64url(b"{}") + ".", "TOKEN_MALFORMED"),
        (b64url(b'{"alg":"RS256"}') + "." + b64url(b"not json") + ".", "TOKEN_MALFORMED"),
        (b64url(b'{"alg":"RS256"}') + "." + b64url(b"[1]") + ".", "TOKEN_MALFORMED"),
        (b64url(b'{"alg":"RS256","kid":5}') + "." + b64url(b"{}") + ".", "TOKEN_MALFORMED"),
        (b64url(b'{"alg":"RS256","crit":["exp"]}') + "." + b64url(b"{}") + ".", "TOKEN_MALFORMED"),
        ("a" * 9000 + ".b.c", "TOKEN_MALFORMED"),
    ],
)
async def test_malformed_tokens(token: str, code: str) -> None:
    await refused(local_verifier(), token, code)


async def test_refusals_never_log_the_token(caplog: pytest.LogCaptureFixture) -> None:
    verifier = local_verifier(jwt_algorithms="HS256,RS256", jwt_hs256_secret=SECRET)
    now = int(time.time())
    tokens = [
        rs256(claims(exp=now - 600)),
        tamper_payload(rs256(claims()), roles=[ADMIN]),
        rs256(claims(aud="x")),
        rs256(claims(), KEY_B),
        hs256(claims(), OTHER_SECRET),
        compact({"alg": "none"}, claims()),
    ]
    with caplog.at_level(logging.DEBUG, logger="medialog"):
        for token in tokens:
            with pytest.raises(Unauthenticated):
                await verifier.verify(token)
    assert caplog.records, "refusals are logged (at debug)"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token in tokens:
        for part in token.split("."):
            if len(part) >= 8:
                assert part not in logged
    assert SECRET not in logged
    assert OTHER_SECRET not in logged


# -- remote JWKS over HTTP --------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    jwks: Any = field(default_factory=lambda: public_jwks(KEY_A))
    status: int = 200
    raw: bytes | None = None
    delay_s: float = 0.0
    hits: int = 0
    served: int = 0  # answers sent (after the delay)


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer(url="")

    async def handler(request: web.Request) -> web.Response:
        state.hits += 1
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        state.served += 1
        if state.raw is not None:
            return web.Response(body=state.raw, status=state.status)
        return web.json_response(state.jwks, status=state.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("/.well-known/jwks.json"))
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def remote_verifier(
    url: str, http: aiohttp.ClientSession | None, clock: FakeClock | None = None, **over: object
) -> TokenVerifier:
    s = settings(jwt_jwks_url=url, **over)
    if clock is None:
        return TokenVerifier.from_settings(s, http)
    return TokenVerifier.from_settings(s, http, clock=clock)


async def test_remote_jwks_rotation_and_refetch_rate_limit(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    verifier = remote_verifier(jwks_server.url, http, clock)
    token_a = rs256(claims(sub="a"), KEY_A)
    token_b = rs256(claims(sub="b"), KEY_B)

    assert (await verifier.verify(token_a)).user_id == "a"
    assert jwks_server.hits == 1
    await verifier.verify(token_a)
    assert jwks_server.hits == 1  # cached

    # rotate at the issuer: B replaces A
    jwks_server.jwks = public_jwks(KEY_B)
    clock.advance(3)
    await refused(verifier, token_b, "TOKEN_UNKNOWN_KEY")  # < 10 s since the last fetch
    assert jwks_server.hits == 1
    clock.advance(7)  # 10 s since the last fetch
    assert (await verifier.verify(token_b)).user_id == "b"
    assert jwks_server.hits == 2
    await refused(verifier, token_a, "TOKEN_UNKNOWN_KEY")  # A is gone; no refetch within 10 s
    assert jwks_server.hits == 2

    # a burst of made-up kids: one refetch at most, shared by concurrent callers
    clock.advance(15)
    bogus = [rs256(claims(), KEY_EVIL, kid=secrets.token_urlsafe(8)) for _ in range(40)]
    results = await asyncio.gather(*(verifier.verify(t) for t in bogus), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) and r.code == "TOKEN_UNKNOWN_KEY" for r in results)
    assert jwks_server.hits == 3
    clock.advance(9.9)
    for token in bogus:
        await refused(verifier, token, "TOKEN_UNKNOWN_KEY")
    assert jwks_server.hits == 3
    assert (await verifier.verify(token_b)).user_id == "b"  # known keys unaffected
    assert jwks_server.hits == 3


async def test_remote_jwks_default_interval_is_real_ten_seconds(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    verifier = remote_verifier(jwks_server.url, http)  # real monotonic clock
    await verifier.verify(rs256(claims()))
    assert jwks_server.hits == 1
    for _ in range(25):
        await refused(
            verifier, rs256(claims(), KEY_EVIL, kid=secrets.token_urlsafe(8)), "TOKEN_UNKNOWN_KEY"
        )
    assert jwks_server.hits == 1


async def test_remote_jwks_cache_expiry_and_stale_keys_on_failure(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    verifier = remote_verifier(jwks_server.url, http, clock, jwt_jwks_cache_s=60)
    token = rs256(claims())
    await verifier.verify(token)
    clock.advance(30)
    await verifier.verify(token)
    assert jwks_server.hits == 1
    clock.advance(31)  # cache expired: refetch even for a known kid
    await verifier.verify(token)
    assert jwks_server.hits == 2

    jwks_server.status = 500
    clock.advance(61)
    assert (await verifier.verify(token)).user_id == "alice"  # refetch failed: known keys kept
    assert jwks_server.hits == 3
    clock.advance(5)
    await verifier.verify(token)
    assert jwks_server.hits == 3  # failed attempts are rate-limited too
    # a kid we never saw, while the issuer is failing: keys unavailable
    await refused(verifier, rs256(claims(), KEY_B), "TOKEN_KEYS_UNAVAILABLE")
    assert jwks_server.hits == 3


@pytest.mark.parametrize(
    ("status", "raw", "jwks"),
    [
        (500, None, None),
        (404, None, None),
        (200, b"<html>not json</html>", None),
        (200, b"\xff\xfe", None),
        (200, None, {"keys": "nope"}),
        (200, None, {"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0"}]}),  # no RSA key
        (200, b"[" * 100_000 + b"]" * 100_000, None),
        (200, b" " * (1024 * 1024 + 10), None),  # too large
    ],
)
async def test_remote_jwks_bad_answers_mean_keys_unavailable(
    jwks_server: JwksServer,
    http: aiohttp.ClientSession,
    status: int,
    raw: bytes | None,
    jwks: Any,
) -> None:
    jwks_server.status = status
    jwks_server.raw = raw
    jwks_server.jwks = jwks
    clock = FakeClock()
    verifier = remote_verifier(jwks_server.url, http, clock)
    token = rs256(claims())
    await refused(verifier, token, "TOKEN_KEYS_UNAVAILABLE")
    await refused(verifier, token, "TOKEN_KEYS_UNAVAILABLE")
    assert jwks_server.hits == 1  # no hammering of a failing issuer

    # the issuer recovers: after the interval, tokens verify again
    jwks_server.status, jwks_server.raw, jwks_server.jwks = 200, None, public_jwks(KEY_A)
    clock.advance(10)
    assert (await verifier.verify(token)).user_id == "alice"
    assert jwks_server.hits == 2


async def test_remote_jwks_server_down(http: aiohttp.ClientSession) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/.well-known/jwks.json"))
    await server.close()  # nothing listens there any more

    verifier = remote_verifier(url, http, FakeClock())
    err = await refused(verifier, rs256(claims()), "TOKEN_KEYS_UNAVAILABLE")
    assert url not in err.message


async def test_remote_jwks_timeout_means_keys_unavailable(
    jwks_server: JwksServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.delay_s = 1.0
    url = jwks_server.url.replace("http://", "http://user:hunter2hunter2@") + "?key=apikeyapikey"
    verifier = TokenVerifier(
        issuer=ISS,
        audience=AUD,
        allowed_algorithms=frozenset({"RS256"}),
        jwks_url=url,
        http=http,
        fetch_timeout_s=0.2,
        clock=FakeClock(),
    )
    with caplog.at_level(logging.DEBUG, logger="medialog"):
        await refused(verifier, rs256(claims()), "TOKEN_KEYS_UNAVAILABLE")
    assert jwks_server.hits == 1 and jwks_server.served == 0  # refused before the answer
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "jwks fetch" in logged
    assert "hunter2hunter2" not in logged  # URL credentials are redacted from logs
    assert "apikeyapikey" not in logged


async def test_local_and_remote_keys_together(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    jwks_server.jwks = public_jwks(KEY_B)
    verifier = TokenVerifier.from_settings(
        settings(jwt_jwks_url=jwks_server.url), http, public_jwks(KEY_A), clock=FakeClock()
    )
    assert (await verifier.verify(rs256(claims(sub="local"), KEY_A))).user_id == "local"
    assert jwks_server.hits == 0  # local kid: no fetch
    assert (await verifier.verify(rs256(claims(sub="remote"), KEY_B))).user_id == "remote"
    assert jwks_server.hits == 1


async def test_verifier_owns_a_session_when_none_is_given(jwks_server: JwksServer) -> None:
    verifier = remote_verifier(jwks_server.url, None, FakeClock())
    try:
        assert (await verifier.verify(rs256(claims()))).user_id == "alice"
    finally:
        await verifier.close()
    await verifier.close()  # idempotent


# -- verified-token cache ---------------------------------------------------------------------


def cached_verifier(
    *, clock: FakeClock | None = None, leeway_s: float = 30.0, **over: Any
) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISS,
        audience=AUD,
        allowed_algorithms=frozenset({"RS256", "HS256"}),
        hs256_secret=SECRET,
        local_jwks=public_jwks(KEY_A),
        leeway_s=leeway_s,
        clock=clock or FakeClock(),
        **over,
    )


def count_full_verifications(verifier: TokenVerifier) -> list[str]:
    """Record each full (uncached) verification; the verifier still runs it."""
    calls: list[str] = []
    full = verifier._verify

    async def counted(token: str) -> Any:
        calls.append(token)
        return await full(token)

    verifier._verify = counted  # type: ignore[method-assign]
    return calls


async def test_cache_serves_a_verified_token_until_its_deadline() -> None:
    clock = FakeClock()
    verifier = cached_verifier(clock=clock)
    full = count_full_verifications(verifier)
    for token in (rs256(claims(sub="rs")), hs256(claims(sub="hs"))):
        first = await verifier.verify(token)
        assert await verifier.verify(token) == first
    assert len(full) == 2
    clock.advance(59.9)
    await verifier.verify(full[0])
    assert len(full) == 2
    clock.advance(0.1)  # 60 s: verified in full again
    await verifier.verify(full[0])
    assert len(full) == 3


async def test_cached_token_is_refused_after_its_exp() -> None:
    verifier = cached_verifier(leeway_s=0)  # no leeway: refused as soon as exp is reached
    full = count_full_verifications(verifier)
    exp = int(time.time()) + 2
    token = rs256(claims(exp=exp, iat=exp - 60, nbf=exp - 60))
    await verifier.verify(token)
    await verifier.verify(token)
    assert len(full) == 1  # the second answer came from the cache
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    await refused(verifier, token, "TOKEN_EXPIRED")
    await refused(verifier, token, "TOKEN_EXPIRED")  # and the refusal is not remembered


async def test_cache_never_outlives_exp_even_within_the_leeway() -> None:
    wall = [time.time()]
    verifier = cached_verifier(wall_clock=lambda: wall[0])
    full = count_full_verifications(verifier)
    exp = int(wall[0]) + 5
    token = rs256(claims(exp=exp))
    await verifier.verify(token)
    wall[0] = exp - 0.001
    await verifier.verify(token)
    assert len(full) == 1
    wall[0] = exp  # the cache's view of time has reached exp: no cached answer any more
    await verifier.verify(token)  # (pyjwt, on the real clock, still accepts it)
    assert len(full) == 2


async def test_same_claims_with_another_signature_are_not_served_from_cache() -> None:
    verifier = cached_verifier()
    payload = claims(roles=[ADMIN])
    good = rs256(payload)
    assert (await verifier.verify(good)).roles == frozenset({ADMIN})
    head, body, _ = good.split(".")  # the very same header (kid A) and claims, signed by EVIL
    evil = KEY_EVIL.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    await refused(verifier, f"{head}.{body}.{b64url(evil)}", "TOKEN_BAD_SIGNATURE")
    await refused(verifier, f"{head}.{body}.", "TOKEN_BAD_SIGNATURE")
    hs = hs256(payload)
    await verifier.verify(hs)
    await refused(verifier, hs256(payload, OTHER_SECRET), "TOKEN_BAD_SIGNATURE")
    assert (await verifier.verify(good)).roles == frozenset({ADMIN})  # still cached, still fine


async def test_cache_is_bounded_and_can_be_disabled() -> None:
    verifier = cached_verifier(token_cache_size=3)
    full = count_full_verifications(verifier)
    tokens = [rs256(claims(sub=f"user{i}")) for i in range(5)]
    for token in tokens:
        await verifier.verify(token)
    await verifier.verify(tokens[4])  # among the 3 most recent
    assert len(full) == 5
    await verifier.verify(tokens[0])  # evicted
    assert len(full) == 6
    off = cached_verifier(token_cache_size=0)
    full_off = count_full_verifications(off)
    for _ in range(3):
        assert (await off.verify(tokens[1])).user_id == "user1"
    assert len(full_off) == 3


async def test_cached_remote_token_stops_when_its_key_leaves_the_jwks(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    verifier = remote_verifier(jwks_server.url, http, clock, jwt_jwks_cache_s=20)
    token = rs256(claims())
    await verifier.verify(token)
    jwks_server.jwks = public_jwks(KEY_B)
    clock.advance(21)  # JWKS expired: the next use of the kid refetches and A is gone
    await refused(verifier, token, "TOKEN_UNKNOWN_KEY")
    assert jwks_server.hits == 2


async def test_remembered_answers_without_io_only_what_verify_would_from_its_cache(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    verifier = cached_verifier(clock=clock)
    rs, hs = rs256(claims(sub="rs")), hs256(claims(sub="hs"))
    assert verifier.remembered(rs) is None and verifier.remembered(hs) is None  # never verified
    for token in (rs, hs):
        who = await verifier.verify(token)
        assert verifier.remembered(token) == who
    head, body, _ = rs.split(".")
    assert verifier.remembered(f"{head}.{body}.") is None  # another signature: another token
    clock.advance(60)
    assert verifier.remembered(rs) is None and verifier.remembered(hs) is None  # deadline
    remote = remote_verifier(jwks_server.url, http, FakeClock())
    token = rs256(claims())
    await remote.verify(token)
    assert remote.remembered(token) is None  # a remote key may have left the JWKS: verify asks
