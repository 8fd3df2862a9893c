"""The address of the client a request comes from, behind trusted reverse proxies.

``client_address(request)`` is the direct peer (``request.remote``) unless that peer is one of
``Settings.trusted_proxies`` (IPs or CIDRs): then the chain its ``Forwarded`` (RFC 7239, the
``for=`` of each element) or, without one, ``X-Forwarded-For`` header names is walked from the
right, past every trusted hop, and the first untrusted address is the client (the leftmost
when every hop is trusted). A chain that cannot be read (a malformed header, an element without
``for``, ``unknown`` or an obfuscated node on the walk) leaves the peer: a header is only as
good as the proxy that wrote it, and a client controls whatever lies left of the first
untrusted hop. The answer is cached on the request. Why: bound stream URLs, anonymous viewer
keys and rate limits must name the client, not the load balancer.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Final

from aiohttp import web

from medialog.api import keys

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CACHED: Final = web.RequestKey("client_address", str)
# One ``name=value`` pair of a Forwarded element, then its separator (or the end): a value is
# a token or a quoted string (RFC 7230's), which ``"[2001:db8::1]:80"`` needs.
_PAIR: Final = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=(?:([^;,"\s]+)|"((?:[^"\\]|\\.)*)")[ \t]*([;,]|$)')
_PORT: Final = re.compile(r"[0-9]{1,5}")


@lru_cache(maxsize=8)
def trusted_networks(spec: str) -> tuple[IPNetwork, ...]:
    """``Settings.trusted_proxies`` (comma-separated IPs/CIDRs, validated at start) parsed."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",")
                 if p.strip())


def parse_node(node: str) -> IPAddress | None:
    """The address of one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``
    or ``[2001:db8::1]:80``; IPv4-mapped IPv6 folded to IPv4. None for anything else
    (``unknown``, an obfuscated ``_name``, a zone index, garbage)."""
    node = node.strip()
    if node.startswith("["):
        host, sep, rest = node[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
        if not _PORT.fullmatch(port):
            return None
    else:
        host = node
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def forwarded_for(header: str) -> list[str] | None:
    """The ``for=`` value of each element of a ``Forwarded`` header, left to right; None when the
    header does not parse or an element has no (or two) ``for``."""
    nodes: list[str] = []
    found: str | None = None
    position, end = 0, len(header)
    while position < end:
        match = _PAIR.match(header, position)
        if match is None:
            return None
        name, token, quoted, separator = match.groups()
        if name.lower() == "for":
            if found is not None:
                return None
            found = token if token is not None else re.sub(r"\\(.)", r"\1", quoted)
        if separator != ";":  # "," or the end: the element is complete
            if found is None:
                return None
            nodes.append(found)
            found = None
            if separator == "," and match.end() == end:
                return None  # a trailing comma: an empty element
        position = match.end()
    return nodes or None


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


def resolve(peer: str, networks: tuple[IPNetwork, ...], forwarded: str | None,
            x_forwarded_for: str | None) -> str:
    """The client's address given the peer, the trusted networks and the two headers (each
    repeated header already joined with ``,``). Pure: the module docstring is its contract."""
    peer_address = parse_node(peer) if networks else None
    if peer_address is None or not _trusted(peer_address, networks):
        return peer
    if forwarded is not None:
        chain = forwarded_for(forwarded)
    elif x_forwarded_for is not None:
        chain = x_forwarded_for.split(",")
    else:
        return str(peer_address)
    if not chain:
        return str(peer_address)
    address = peer_address
    for node in reversed(chain):
        parsed = parse_node(node)
        if parsed is None:
            return str(peer_address)
        address = parsed
        if not _trusted(address, networks):
            break
    return str(address)


def _joined(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, None)
    if values is None:
        return None
    return values[0] if len(values) == 1 else ",".join(values)


def client_address(request: web.Request) -> str:
    """The client's address (see the module docstring); ``""`` when the peer is unknown (a unix
    socket). Computed once per request."""
    cached: str | None = request.get(_CACHED)
    if cached is not None:
        return cached
    peer = request.remote or ""
    networks = trusted_networks(request.app[keys.SETTINGS].trusted_proxies)
    if networks:
        address = resolve(peer, networks, _joined(request, "Forwarded"),
                          _joined(request, "X-Forwarded-For"))
    else:
        address = peer
    request[_CACHED] = address
    return address
