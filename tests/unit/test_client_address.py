"""Which address is the client's: ``Forwarded`` / ``X-Forwarded-For`` believed only from trusted
hops, read from the right, and the peer whenever the chain cannot be read."""

from __future__ import annotations

import ipaddress

import pytest

from medialog.api.client_address import forwarded_for, parse_node, resolve, trusted_networks

PROXIES = trusted_networks("10.0.0.0/8,2001:db8:ffff::/48,127.0.0.1")
PEER = "10.0.0.5"  # a trusted load balancer


def test_settings_parse_to_networks() -> None:
    assert PROXIES == (ipaddress.ip_network("10.0.0.0/8"),
                       ipaddress.ip_network("2001:db8:ffff::/48"),
                       ipaddress.ip_network("127.0.0.1/32"))
    assert trusted_networks("") == ()


@pytest.mark.parametrize(("node", "address"), [
    ("192.0.2.60", "192.0.2.60"),
    (" 192.0.2.60 ", "192.0.2.60"),
    ("192.0.2.60:4711", "192.0.2.60"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:4711", "2001:db8::1"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("unknown", None),
    ("_hidden", None),
    ("192.0.2.60:", None),
    ("192.0.2.60:http", None),
    ("[2001:db8::1", None),
    ("[2001:db8::1]x", None),
    ("fe80::1%eth0", None),
    ("", None),
    ("999.1.1.1", None),
])
def test_one_hop(node: str, address: str | None) -> None:
    parsed = parse_node(node)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(("header", "nodes"), [
    ("for=192.0.2.60", ["192.0.2.60"]),
    ("for=192.0.2.60;proto=https;by=203.0.113.43", ["192.0.2.60"]),
    ('For="[2001:db8:cafe::17]:4711"', ["[2001:db8:cafe::17]:4711"]),
    ("for=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]),
    ('for=192.0.2.43,for="10.0.0.1"', ["192.0.2.43", "10.0.0.1"]),
    ("proto=https;for=unknown", ["unknown"]),
    ('for="\\"quoted\\""', ['"quoted"']),
    ("proto=https", None),  # an element without for
    ("for=1.2.3.4;for=5.6.7.8", None),  # two for in one element
    ("for=1.2.3.4,", None),  # an empty element
    ("for=1.2.3.4,,for=5.6.7.8", None),
    ("for", None),
    ('for="1.2.3.4', None),  # an open quote
    ("", None),
])
def test_forwarded(header: str, nodes: list[str] | None) -> None:
    assert forwarded_for(header) == nodes


def test_untrusted_peer_is_the_client_whatever_it_says() -> None:
    assert resolve("198.51.100.9", PROXIES, "for=192.0.2.1", "192.0.2.2") == "198.51.100.9"


def test_no_trusted_proxies_is_the_peer() -> None:
    assert resolve(PEER, (), None, "192.0.2.2") == PEER


def test_trusted_peer_without_headers_is_the_peer() -> None:
    assert resolve(PEER, PROXIES, None, None) == PEER


def test_x_forwarded_for_from_the_right_past_trusted_hops() -> None:
    # the client wrote "1.1.1.1" itself; 192.0.2.2 is what the first trusted proxy saw
    assert resolve(PEER, PROXIES, None, "1.1.1.1, 192.0.2.2, 10.1.2.3") == "192.0.2.2"
    assert resolve(PEER, PROXIES, None, "192.0.2.2") == "192.0.2.2"


def test_the_client_cannot_spoof_past_the_first_untrusted_hop() -> None:
    assert resolve(PEER, PROXIES, None, "10.9.9.9, 192.0.2.2") == "192.0.2.2"
    assert resolve(PEER, PROXIES, None, "garbage, 192.0.2.2") == "192.0.2.2"


def test_every_hop_trusted_gives_the_leftmost() -> None:
    assert resolve(PEER, PROXIES, None, "10.0.0.7, 10.0.0.8") == "10.0.0.7"


def test_forwarded_is_preferred_to_x_forwarded_for() -> None:
    got = resolve(PEER, PROXIES, 'for=192.0.2.43, for="[2001:db8:ffff::2]"', "203.0.113.1")
    assert got == "192.0.2.43"


def test_ipv6_peer_and_mapped_addresses() -> None:
    assert resolve("2001:db8:ffff::1", PROXIES, None, "[2001:db8::7]:443") == "2001:db8::7"
    assert resolve("::ffff:10.0.0.5", PROXIES, None, "::ffff:192.0.2.9") == "192.0.2.9"


@pytest.mark.parametrize(("forwarded", "xff"), [
    ("proto=https", None),
    ("for=unknown", None),
    ("for=_hidden, for=10.0.0.9", None),
    ("for=1.2.3.4,", None),
    (None, "192.0.2.2, not-an-ip"),
    (None, "192.0.2.2,"),
    (None, ""),
])
def test_malformed_chain_is_the_peer(forwarded: str | None, xff: str | None) -> None:
    assert resolve(PEER, PROXIES, forwarded, xff) == PEER


def test_unknown_peer_stays_unknown() -> None:
    assert resolve("", PROXIES, None, "192.0.2.2") == ""
