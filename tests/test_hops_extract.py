"""Which hops are sent, and in which form: table cases and a property against
Python's own `ipaddress` classification."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from output_service.hops.extract import batch_hops, hop_address, sendable_hops
from output_service.models import Batch, Hop, Result, Traceroute, decode_batch
from tests.conftest import make_result

PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
PRIVATE += [ipaddress.ip_network("fc00::/7")]


@pytest.mark.parametrize(
    ("text", "kept", "kept_without_private"),
    [
        ("198.51.100.7", "198.51.100.7", "198.51.100.7"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "10.1.2.3", None),
        ("172.16.0.1", "172.16.0.1", None),
        ("172.31.255.255", "172.31.255.255", None),
        ("172.32.0.1", "172.32.0.1", "172.32.0.1"),
        ("192.168.1.1", "192.168.1.1", None),
        ("fd12::1", "fd12::1", None),
        ("::ffff:10.0.0.1", "10.0.0.1", None),
        ("", None, None),
        (None, None, None),
        ("not-an-ip", None, None),
        ("1.2.3", None, None),
        ("1.2.3.04", None, None),
        ("1.2.3.4 ", None, None),
        ("256.1.1.1", None, None),
        ("0.0.0.0", None, None),
        ("::", None, None),
        ("127.0.0.1", None, None),
        ("127.255.0.9", None, None),
        ("::1", None, None),
        ("::ffff:127.0.0.1", None, None),
        ("169.254.10.1", None, None),
        ("fe80::1", None, None),
        ("224.0.0.5", None, None),
        ("239.255.255.250", None, None),
        ("ff02::1", None, None),
    ],
)
def test_hop_address(text: str | None, kept: str | None, kept_without_private: str | None) -> None:
    assert hop_address(text) == kept
    assert hop_address(text, exclude_private=True) == kept_without_private


def _expected(address: ipaddress.IPv4Address | ipaddress.IPv6Address, no_private: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    excluded = (
        address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or (no_private and any(address in net for net in PRIVATE if net.version == address.version))
    )
    return not excluded


@given(
    st.one_of(
        st.ip_addresses(v=4), st.ip_addresses(v=6), st.ip_addresses(v=4, network="10.0.0.0/8")
    ),
    st.booleans(),
)
def test_hop_address_agrees_with_ipaddress(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, no_private: bool
) -> None:
    got = hop_address(address.exploded, exclude_private=no_private)
    if not _expected(address, no_private):
        assert got is None
    else:
        mapped = getattr(address, "ipv4_mapped", None)
        assert got == str(mapped if mapped is not None else address)


@given(st.text(max_size=64))
def test_any_text_is_skipped_or_normalised(text: str) -> None:
    got = hop_address(text)
    assert got is None or got == str(ipaddress.ip_address(got)) == hop_address(got)


def test_batch_hops_skips_timeouts_and_keeps_first_appearance_order() -> None:
    first = make_result("192.0.2.1", hops=3)  # 10.0.0.1, 10.1.0.1, 10.2.0.1
    second = make_result("192.0.2.2")
    second["traceroute"] = {
        "hops": [
            {"ttl": 1, "ip": "10.2.0.1", "rtt": 1},
            {"ttl": 2, "ip": "198.51.100.9", "rtt": 0, "timeout": True},
            {"ttl": 3, "ip": "", "rtt": 0, "timeout": True},
            {"ttl": 4},
            {"ttl": 5, "ip": "203.0.113.1", "rtt": 1},
        ]
    }
    no_trace = make_result("192.0.2.3")
    batch = decode_batch(msgspec.json.encode([first, second, no_trace]), 100)
    assert batch_hops([batch]) == ["10.0.0.1", "10.1.0.1", "10.2.0.1", "203.0.113.1"]
    assert batch_hops([batch], exclude_private=True) == ["203.0.113.1"]


def test_sendable_hops_skips_what_is_fresh_and_counts_each_address_once() -> None:
    # built directly: decode_batch would already have written the mapped hop as IPv4
    hops = ["198.51.100.1", "198.51.100.2", "::ffff:198.51.100.1", "2001:db8::7", "198.51.100.2"]
    trace = Traceroute(hops=[Hop(ttl=i + 1, ip=ip, rtt=1) for i, ip in enumerate(hops)])
    batch = Batch([Result("192.0.2.1", 1, 1, 0.0, 1, "2026-01-02T03:04:05Z", "", trace)])
    asked: list[str] = []

    def fresh(text: str) -> bool:
        asked.append(text)
        return text == "198.51.100.1"

    # the mapped form names the fresh address: not sent, not counted twice
    assert sendable_hops([batch], fresh=fresh) == (["198.51.100.2", "2001:db8::7"], 1)
    assert asked == ["198.51.100.1", "198.51.100.2", "::ffff:198.51.100.1", "2001:db8::7"]
    assert sendable_hops([batch]) == (batch_hops([batch]), 0)
