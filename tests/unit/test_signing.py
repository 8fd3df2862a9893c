"""Pure tests of medialog.signing: tokens, key rotation, IP binding, object paths, Range."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from medialog.domain.errors import Forbidden, MedialogError, ValidationError
from medialog.signing import (
    SigningKeys,
    parse_range,
    safe_object_path,
    sign_stream,
    stream_url,
    verify_stream,
)

SECRET_1 = "s1-" + "A" * 40
SECRET_2 = "s2-" + "B" * 40
SECRET_3 = "s3-" + "C" * 40
KEYS = SigningKeys.parse(f"k1:{SECRET_1}")
ASSET = "0b6f7c1e-1a2b-4c3d-8e9f-0123456789ab"
OTHER_ASSET = "1b6f7c1e-1a2b-4c3d-8e9f-0123456789ab"
EXP = 1_700_000_000
NOW = EXP - 60.0


def _verify(
    token: str,
    *,
    keys: SigningKeys = KEYS,
    asset: str = ASSET,
    expires: str = str(EXP),
    now: float = NOW,
    ip: str | None = None,
) -> None:
    verify_stream(keys, asset, expires, token, now=now, client_ip=ip)


def _invalid(token: str, **kw: object) -> None:
    with pytest.raises(Forbidden) as exc:
        _verify(token, **kw)  # type: ignore[arg-type]
    assert exc.value.code == "SIGNATURE_INVALID"


# -- SigningKeys ---------------------------------------------------------------------------------


def test_parse_single_and_multiple_keys() -> None:
    keys = SigningKeys.parse(f"new:{SECRET_2}, old : {SECRET_1} ")
    assert keys.active_kid == "new"
    assert keys.kids == ("new", "old")
    assert keys.keys == (("new", SECRET_2.encode()), ("old", SECRET_1.encode()))


def test_secret_may_contain_colon() -> None:
    keys = SigningKeys.parse("k:" + "x:" * 20)
    assert keys.keys[0][1] == ("x:" * 20).encode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        f"k1:{SECRET_1},",  # empty entry
        f"k1:{SECRET_1},,k2:{SECRET_2}",
        SECRET_1,  # no kid
        f":{SECRET_1}",  # empty kid
        f"bad kid:{SECRET_1}",
        f"k.1:{SECRET_1}",  # '.' would break the token format
        f"{'k' * 33}:{SECRET_1}",
        "k1:tinyQz7",
        "k1:" + "x" * 31,
        "k1:",
        f"k1:{SECRET_1},k1:{SECRET_2}",  # duplicate kid
    ],
)
def test_parse_rejects(value: str) -> None:
    with pytest.raises(ValueError) as exc:
        SigningKeys.parse(value)
    message = str(exc.value)
    for secret in (SECRET_1, SECRET_2, "tinyQz7", "x" * 31):
        assert secret not in message


def test_secret_exactly_32_bytes_is_accepted() -> None:
    assert SigningKeys.parse("k:" + "x" * 32).active_kid == "k"


def test_secret_length_counts_utf8_bytes() -> None:
    SigningKeys.parse("k:" + "é" * 16)  # 32 bytes, 16 characters
    with pytest.raises(ValueError):
        SigningKeys.parse("k:" + "é" * 15 + "x")  # 31 bytes


def test_short_secret_message_names_kid_not_secret() -> None:
    with pytest.raises(ValueError, match="'k2'") as exc:
        SigningKeys.parse(f"k1:{SECRET_1},k2:tooshortsecret")
    assert "tooshortsecret" not in str(exc.value)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        SigningKeys(())
    with pytest.raises(ValueError):
        SigningKeys((("k", b"short"),))


def test_repr_and_str_hide_secrets() -> None:
    keys = SigningKeys.parse(f"k1:{SECRET_1},k2:{SECRET_2}")
    for text in (repr(keys), str(keys)):
        assert SECRET_1 not in text and SECRET_2 not in text
        assert "k1" in text and "k2" in text


def test_keys_are_frozen_and_comparable() -> None:
    a = SigningKeys.parse(f"k1:{SECRET_1}")
    b = SigningKeys.parse(f"k1:{SECRET_1}")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.keys = ()  # type: ignore[misc]


# -- token format and round trip -----------------------------------------------------------------


def test_token_format() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    kid, flag, mac = token.split(".")
    assert (kid, flag) == ("k1", "a")
    assert len(mac) == 43 and "=" not in mac
    assert base64.urlsafe_b64decode(mac + "=") and len(base64.urlsafe_b64decode(mac + "=")) == 32
    assert sign_stream(KEYS, ASSET, EXP, client_ip="10.0.0.1").split(".")[1] == "i"


def test_token_matches_documented_mac_input() -> None:
    token = sign_stream(KEYS, ASSET, EXP, client_ip="10.0.0.1")
    message = f"medialog-stream-v1\nk1\ni\n{ASSET}\n{EXP}\n10.0.0.1".encode()
    digest = hmac.new(SECRET_1.encode(), message, hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert token == f"k1.i.{expected}"


def test_signing_is_deterministic() -> None:
    assert sign_stream(KEYS, ASSET, EXP) == sign_stream(KEYS, ASSET, EXP)


def test_round_trip() -> None:
    _verify(sign_stream(KEYS, ASSET, EXP))


def test_round_trip_unbound_ignores_client_ip() -> None:
    _verify(sign_stream(KEYS, ASSET, EXP), ip="203.0.113.9")


def test_stream_url_shape_and_round_trip() -> None:
    url = stream_url("https://media.example/", KEYS, ASSET, EXP)
    prefix = f"https://media.example/v1/stream/{ASSET}/{EXP}/"
    assert url.startswith(prefix) and url.endswith("/hls/master.m3u8")
    token = url[len(prefix) :].split("/", 1)[0]
    _verify(token)
    seg = stream_url("https://media.example", KEYS, ASSET, EXP, path="hls/720p/seg_00001.ts")
    assert seg == f"{prefix}{token}/hls/720p/seg_00001.ts"  # same signature for every path


def test_stream_url_rejects_bad_path() -> None:
    with pytest.raises(ValueError):
        stream_url("https://m", KEYS, ASSET, EXP, path="../x")


@pytest.mark.parametrize("asset", ["", "a/b", "..", ".", "a.b", "a\nb", "x" * 129, "é"])
def test_sign_rejects_bad_asset_id(asset: str) -> None:
    with pytest.raises(ValueError):
        sign_stream(KEYS, asset, EXP)


@pytest.mark.parametrize("expires", [-1, 10**12, True, 1.5])
def test_sign_rejects_bad_expires(expires: object) -> None:
    with pytest.raises(ValueError):
        sign_stream(KEYS, ASSET, expires)  # type: ignore[arg-type]


def test_sign_rejects_bad_ip() -> None:
    with pytest.raises(ValueError):
        sign_stream(KEYS, ASSET, EXP, client_ip="not-an-ip")


# -- tampering and expiry ------------------------------------------------------------------------


def _flip_char(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("B" if ch != "B" else "C") + text[index + 1 :]


def test_tampered_signature() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    for index in (5, len(token) // 2, len(token) - 2):
        _invalid(_flip_char(token, index))


def test_non_canonical_base64_is_rejected() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    # The 43rd character carries 2 padding bits; flipping one keeps the decoded bytes equal.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin.split(".")[2] + "=") == base64.urlsafe_b64decode(
        token.split(".")[2] + "="
    )
    _invalid(twin)


def test_tampered_asset() -> None:
    _invalid(sign_stream(KEYS, ASSET, EXP), asset=OTHER_ASSET)


def test_tampered_expiry() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    _invalid(token, expires=str(EXP + 3600))
    _invalid(token, expires=str(EXP - 1))


@pytest.mark.parametrize(
    "expires",
    [
        "",
        "+1700000000",
        "01700000000",
        " 1700000000",
        "1_700_000_000",
        "1700000000.0",
        "-1",
        "１７",
        "9" * 13,
    ],
)
def test_malformed_expiry(expires: str) -> None:
    _invalid(sign_stream(KEYS, ASSET, EXP), expires=expires)


def test_tampered_flag_is_invalid() -> None:
    token = sign_stream(KEYS, ASSET, EXP, client_ip="10.0.0.1")
    _invalid(token.replace(".i.", ".a.", 1), ip="10.0.0.1")
    unbound = sign_stream(KEYS, ASSET, EXP)
    _invalid(unbound.replace(".a.", ".i.", 1), ip="10.0.0.1")


def test_expired() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    _verify(token, now=EXP - 0.001)
    for now in (float(EXP), EXP + 0.5, EXP + 10**6):
        with pytest.raises(Forbidden) as exc:
            _verify(token, now=now)
        assert exc.value.code == "SIGNATURE_EXPIRED"


def test_expired_but_forged_reports_invalid() -> None:
    token = _flip_char(sign_stream(KEYS, ASSET, EXP), 10)
    _invalid(token, now=EXP + 100.0)


# -- rotation ------------------------------------------------------------------------------------


def test_rotation() -> None:
    old = SigningKeys.parse(f"k1:{SECRET_1}")
    rotated = SigningKeys.parse(f"k2:{SECRET_2},k1:{SECRET_1}")
    retired = SigningKeys.parse(f"k2:{SECRET_2}")

    old_token = sign_stream(old, ASSET, EXP)
    new_token = sign_stream(rotated, ASSET, EXP)
    assert new_token.startswith("k2.")

    _verify(old_token, keys=rotated)  # still listed: verifies
    _verify(new_token, keys=rotated)
    _verify(new_token, keys=retired)
    _invalid(old_token, keys=retired)  # removed: unknown kid
    _invalid(new_token, keys=old)


def test_kid_is_bound_to_its_secret() -> None:
    keys = SigningKeys.parse(f"k1:{SECRET_1},k2:{SECRET_2}")
    token = sign_stream(keys, ASSET, EXP)
    _invalid("k2" + token[2:], keys=keys)  # relabelled to another listed kid
    # Same kid, different secret (a key replaced without changing its id).
    _invalid(token, keys=SigningKeys.parse(f"k1:{SECRET_3}"))


# -- IP binding ----------------------------------------------------------------------------------


def test_ip_binding() -> None:
    token = sign_stream(KEYS, ASSET, EXP, client_ip="203.0.113.7")
    _verify(token, ip="203.0.113.7")
    _invalid(token, ip="203.0.113.8")
    _invalid(token, ip=None)
    _invalid(token, ip="garbage")
    _invalid(token, ip="")


def test_ip_binding_expired_still_reports_expired() -> None:
    token = sign_stream(KEYS, ASSET, EXP, client_ip="203.0.113.7")
    with pytest.raises(Forbidden) as exc:
        _verify(token, ip="203.0.113.7", now=EXP + 1.0)
    assert exc.value.code == "SIGNATURE_EXPIRED"


def test_ip_binding_canonicalises_addresses() -> None:
    v6 = sign_stream(KEYS, ASSET, EXP, client_ip="2001:DB8:0:0::1")
    _verify(v6, ip="2001:db8::1")
    _invalid(v6, ip="2001:db8::2")
    mapped = sign_stream(KEYS, ASSET, EXP, client_ip="::ffff:198.51.100.4")
    _verify(mapped, ip="198.51.100.4")
    _verify(sign_stream(KEYS, ASSET, EXP, client_ip="198.51.100.4"), ip="::ffff:198.51.100.4")


def test_ip_binding_rejects_zone_index() -> None:
    with pytest.raises(ValueError):
        sign_stream(KEYS, ASSET, EXP, client_ip="fe80::1%eth0")


# -- malformed tokens ----------------------------------------------------------------------------

GOOD_MAC = sign_stream(KEYS, ASSET, EXP).split(".")[2]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "k1",
        "k1.a",
        f"k1.{GOOD_MAC}",
        f"k1.a.{GOOD_MAC}.x",
        f"k1..{GOOD_MAC}",
        f".a.{GOOD_MAC}",
        f"k1.x.{GOOD_MAC}",
        f"k1.A.{GOOD_MAC}",
        f"k1.a.{GOOD_MAC}=",  # padding
        f"k1.a.{GOOD_MAC[:-1]}",  # too short
        f"k1.a.{GOOD_MAC}A",  # too long
        f"k1.a.{GOOD_MAC[:-1]}+",  # standard, not url-safe, alphabet
        f"k1.a.{GOOD_MAC[:-1]}/",
        f"k1.a.{GOOD_MAC[:-1]}é",
        f"k1.a.{GOOD_MAC}\n",
        f" k1.a.{GOOD_MAC}",
        f"k1.a.{'!' * 43}",
        f"{'k' * 33}.a.{GOOD_MAC}",
        f"k1.a.{GOOD_MAC}" + "A" * 10_000,
    ],
)
def test_malformed_tokens(token: str) -> None:
    _invalid(token)


def test_unknown_kid() -> None:
    token = sign_stream(KEYS, ASSET, EXP)
    _invalid("k9" + token[2:])


@pytest.mark.parametrize("asset", ["", "../x", "a/b", ".", "..", "x" * 129, f"{ASSET}\n"])
def test_malformed_asset_on_verify(asset: str) -> None:
    _invalid(sign_stream(KEYS, ASSET, EXP), asset=asset)


def test_errors_are_medialog_forbidden() -> None:
    with pytest.raises(MedialogError):
        _verify("nope")


# -- safe_object_path ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hls/master.m3u8", "hls/master.m3u8"),
        ("hls/720p/index.m3u8", "hls/720p/index.m3u8"),
        ("hls/720p/seg_00001.ts", "hls/720p/seg_00001.ts"),
        ("thumb.jpg", "thumb.jpg"),
        ("hls/720p/seg%5F00001.ts", "hls/720p/seg_00001.ts"),  # decoded once
        ("a/b/c/d/e/f/g/h", "a/b/c/d/e/f/g/h"),  # 8 segments
        ("...", "..."),  # a literal file name, not traversal
        ("x" * 512, "x" * 512),
    ],
)
def test_safe_object_path_accepts(path: str, expected: str) -> None:
    assert safe_object_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "../x",
        "..",
        ".",
        "hls/../../x",
        "hls/..",
        "hls/./x",
        "./x",
        "%2e%2e/x",
        "%2E%2E/x",
        "hls/%2e%2e/%2e%2e/x",
        "%2e%2e%2fx",
        "..%2fx",
        "hls%2f..%2f..%2fx",
        "%252e%252e/x",  # double encoded: decoded once leaves '%'
        "hls//x",
        "hls/",
        "/etc/passwd",
        "%2fetc/passwd",
        "a\\b",
        "a%5cb",
        "..\\x",
        "a\x00b",
        "a%00b",
        "%",
        "%zz",
        "%ff",  # not UTF-8
        "a/b/c/d/e/f/g/h/i",  # 9 segments
        "x" * 513,
        "x" * 2000,
        "hls/master.m3u8?x=1",
        "hls/mäster.m3u8",
        "hls/a b.ts",
        "hls/a:b.ts",
        "~/x",
    ],
)
def test_safe_object_path_rejects(path: str) -> None:
    with pytest.raises(Forbidden) as exc:
        safe_object_path(path)
    assert exc.value.code == "PATH_INVALID"


# -- parse_range ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=10-19", 100, (10, 19)),
        ("bytes=10-1000", 100, (10, 99)),  # end clamped
        ("bytes=99-99", 100, (99, 99)),
        ("bytes=50-", 100, (50, 99)),
        ("bytes=0-", 100, (0, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-100", 100, (0, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=-1", 1, (0, 0)),
        ("Bytes=0-1", 100, (0, 1)),
        (" bytes=0-1 ", 100, (0, 1)),
        ("bytes= 0-1", 100, (0, 1)),
        ("bytes=0-1,", 100, (0, 1)),  # empty list elements are allowed
        ("bytes=007-008", 100, (7, 8)),
        ("bytes=0-" + "9" * 40, 100, (0, 99)),  # huge end clamped, no int() blow-up
        ("bytes=0-1,5-6", 100, None),  # multi-range: serve whole
        ("bytes=0-1, -5", 100, None),
        ("items=0-1", 100, None),  # unknown unit: ignore
        ("bytes", 100, None),
        ("bytes=", 100, None),
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=1-0", 100, None),  # last < first: invalid, ignored
        ("bytes=+1-2", 100, None),
        ("bytes=1 - 2", 100, None),
        ("bytes=１-２", 100, None),  # non-ASCII digits
        ("bytes=0-1-2", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=1000-", 100),
        ("bytes=" + "9" * 40 + "-", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-5", 0),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_range(header, size)
    assert exc.value.code == "RANGE_NOT_SATISFIABLE"
    assert exc.value.details == [{"size": size}]


def test_parse_range_rejects_negative_size() -> None:
    with pytest.raises(ValueError):
        parse_range("bytes=0-1", -1)
