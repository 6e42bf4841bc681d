"""Which traceroute hops are worth sending back, in which written form.

Pure functions, run on the hop recorder thread for every stored hop, so the common
case (a dotted IPv4 address) is classified from its four bytes without building
an `ipaddress` object. Excluded, as by Go's `net.IP` predicates: timed-out hops,
empty or unparsable text, unspecified, loopback, link-local and multicast
addresses; private ranges (RFC 1918 and `fc00::/7`, Go's `IsPrivate`) only when
asked. An IPv4-mapped IPv6 address is the IPv4 host and is written as such (Go
prints it that way too); other IPv6 addresses in compressed form.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from output_service.models import Batch

_PRIVATE_V6 = ipaddress.IPv6Network("fc00::/7")


def _ipv4(packed: bytes, exclude_private: bool, text: str | None = None) -> str | None:
    """`text`, when given, is already the dotted-quad form of `packed`."""
    first, second = packed[0], packed[1]
    if (
        packed == b"\0\0\0\0"  # unspecified
        or first == 127  # loopback
        or 224 <= first < 240  # multicast
        or (first == 169 and second == 254)  # link-local
    ):
        return None
    if exclude_private and (
        first == 10 or (first == 172 and 16 <= second < 32) or (first == 192 and second == 168)
    ):
        return None
    return text if text is not None else socket.inet_ntoa(packed)


def hop_address(text: str | None, exclude_private: bool = False) -> str | None:
    """The normal form of a hop address worth sending, or None to skip it."""
    if not text:
        return None
    try:
        # glibc's inet_pton takes exactly four decimal parts without leading zeros,
        # which is the normal form: no need to print the address again.
        return _ipv4(socket.inet_pton(socket.AF_INET, text), exclude_private, text)
    except (OSError, ValueError):  # ValueError: NUL or an unencodable character
        pass
    if "%" in text:  # a zone index (fe80::1%eth0): Go's net.ParseIP refuses it too
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4(address.packed, exclude_private)
    if address.ipv4_mapped is not None:
        return _ipv4(address.ipv4_mapped.packed, exclude_private)
    if (
        address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or (exclude_private and address in _PRIVATE_V6)
    ):
        return None
    return str(address)


def batch_hops(batches: Iterable[Batch], exclude_private: bool = False) -> list[str]:
    """Distinct sendable hop addresses of the batches, in order of first appearance."""
    return sendable_hops(batches, exclude_private)[0]


def sendable_hops(
    batches: Iterable[Batch],
    exclude_private: bool = False,
    fresh: Callable[[str], bool] | None = None,
) -> tuple[list[str], int]:
    """`batch_hops`, skipping the hops that `fresh` already knows: returns the
    other distinct sendable addresses and how many distinct ones were fresh.

    `fresh` is asked with the text as sent, before it is parsed: the recorder's
    cache holds addresses in normal form, so a text it knows is one (a dotted
    quad is its own normal form), and most hops of a busy node are known; this
    skips parsing them."""
    # Traceroutes of one node share most of their hops: parse each text once.
    done: set[str] = set()
    found: dict[str, None] = {}
    known: set[str] = set()
    for batch in batches:
        for result in batch.results:
            trace = result.traceroute
            if trace is None or not trace.hops:
                continue
            for hop in trace.hops:
                text = hop.ip
                if hop.timeout or not text or text in done:
                    continue
                done.add(text)
                if fresh is not None and fresh(text):
                    known.add(text)
                    continue
                address = hop_address(text, exclude_private)
                if address is not None:
                    found[address] = None
    # another text may have named a known address (`::ffff:192.0.2.1`): counted once
    return [a for a in found if a not in known], len(known)
