"""medialog.issuer: key file handling, RFC 7638 kid, JWKS document, minted tokens (real crypto)."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from medialog.api.auth.principal import ADMIN, CREATOR, KNOWN_ROLES, VIEWER
from medialog.issuer import (
    ensure_private_key,
    key_id,
    load_private_key,
    mint_token,
    public_jwks,
)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


# -- key file ---------------------------------------------------------------------------------


def test_ensure_private_key_creates_0600_rsa2048_with_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "jwt.pem"
    ensure_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_private_key(path)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537
    assert sorted(p.name for p in path.parent.iterdir()) == ["jwt.pem"]  # no temp file left


def test_ensure_private_key_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt.pem"
    ensure_private_key(path)
    first = path.read_bytes()
    ensure_private_key(path)
    assert path.read_bytes() == first

    other = tmp_path / "other.pem"
    other.write_bytes(b"not a key")
    ensure_private_key(other)  # existing file: never touched nor validated
    assert other.read_bytes() == b"not a key"


def test_load_private_key_refuses_non_rsa_and_garbage(tmp_path: Path) -> None:
    ec_path = tmp_path / "ec.pem"
    ec_path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an RSA"):
        load_private_key(ec_path)

    small_path = tmp_path / "small.pem"
    small_path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="1024-bit"):
        load_private_key(small_path)

    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="PEM private key"):
        load_private_key(junk)


# -- kid and JWKS -----------------------------------------------------------------------------


def test_key_id_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    public_key = rsa.RSAPublicNumbers(_b64url_int("AQAB"), _b64url_int(n)).public_key()
    assert key_id(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_public_jwks_is_public_only_and_round_trips(private_key: rsa.RSAPrivateKey) -> None:
    doc = public_jwks(private_key)
    assert list(doc) == ["keys"]
    assert len(doc["keys"]) == 1
    jwk = doc["keys"][0]
    assert set(jwk) == {"kty", "n", "e", "kid", "use", "alg"}  # no d, p, q, dp, dq, qi
    assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert jwk["kid"] == key_id(private_key.public_key())
    numbers = private_key.public_key().public_numbers()
    assert _b64url_int(jwk["n"]) == numbers.n
    assert "=" not in jwk["n"]
    # pyjwt reads the same key back from it
    restored = jwt.PyJWK(jwk).key
    assert isinstance(restored, rsa.RSAPublicKey)
    assert restored.public_numbers() == numbers


def test_key_id_differs_between_keys(private_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert key_id(private_key.public_key()) != key_id(other.public_key())
    assert key_id(private_key.public_key()) == key_id(private_key.public_key())


# -- minting ----------------------------------------------------------------------------------


def test_mint_token_claims_and_header(private_key: rsa.RSAPrivateKey) -> None:
    before = int(time.time())
    token = mint_token(
        private_key,
        user="alice",
        roles=[CREATOR, VIEWER, CREATOR],
        issuer="medialog",
        audience="medialog-api",
        ttl_s=600,
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == key_id(private_key.public_key())
    claims = jwt.decode(
        token,
        private_key.public_key(),
        algorithms=["RS256"],
        audience="medialog-api",
        issuer="medialog",
    )
    assert claims["sub"] == "alice"
    assert claims["roles"] == [CREATOR, VIEWER]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 600
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16

    again = mint_token(
        private_key, user="alice", roles=[ADMIN], issuer="medialog", audience="a", ttl_s=60
    )
    assert jwt.decode(again, options={"verify_signature": False})["jti"] != claims["jti"]


@pytest.mark.parametrize(
    ("user", "roles", "ttl_s", "match"),
    [
        ("alice", ["root"], 60, "unknown roles"),
        ("alice", [VIEWER, "superuser"], 60, "unknown roles"),
        ("alice", [], 60, "at least one role"),
        ("alice", "admin", 60, "not a string"),
        ("", [VIEWER], 60, "user"),
        ("alice", [VIEWER], 0, "ttl_s"),
        ("alice", [VIEWER], -5, "ttl_s"),
    ],
)
def test_mint_token_rejects_bad_input(
    private_key: rsa.RSAPrivateKey, user: str, roles: list[str], ttl_s: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        mint_token(
            private_key, user=user, roles=roles, issuer="medialog", audience="a", ttl_s=ttl_s
        )


def test_known_roles() -> None:
    assert KNOWN_ROLES == {"viewer", "creator", "admin"}
