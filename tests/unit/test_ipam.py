"""IPAM's pure address arithmetic: host bounds, subnet plans and their refusals, the next free
address walked with integers (an IPv6 /64 never enumerated), counts."""

from __future__ import annotations

import ipaddress
import random

import pytest

from corral.api.errors import InvalidInput
from corral.server.services.ipam import Space, _spread, host_bounds, plan


def _ip(n: int) -> str:
    return str(ipaddress.ip_address(n))


def _n(text: str) -> int:
    return int(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    ("cidr", "low", "high"),
    [
        ("10.0.0.0/24", "10.0.0.1", "10.0.0.254"),
        ("10.0.0.0/30", "10.0.0.1", "10.0.0.2"),
        ("10.0.0.0/31", "10.0.0.0", "10.0.0.1"),
        ("10.0.0.7/32", "10.0.0.7", "10.0.0.7"),
        ("fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff"),
        ("fd00::/127", "fd00::", "fd00::1"),
        ("fd00::5/128", "fd00::5", "fd00::5"),
    ],
)
def test_host_bounds_follow_the_stdlib(cidr: str, low: str, high: str) -> None:
    net = ipaddress.ip_network(cidr)
    assert host_bounds(net) == (_n(low), _n(high))
    if net.num_addresses <= 256:
        hosts = [int(h) for h in net.hosts()]
        assert (hosts[0], hosts[-1]) == host_bounds(net)


def test_defaults_gateway_first_host_and_ranges_around_it() -> None:
    sp = plan("10.0.0.0/24", None, False, [], [])
    assert sp.gateway == _n("10.0.0.1")
    assert sp.texts(sp.ranges) == [["10.0.0.2", "10.0.0.254"]]
    assert sp.size == 253
    # a gateway in the middle splits the default range; no gateway: every host address
    sp = plan("10.0.0.0/24", "10.0.0.100", False, [], [])
    assert sp.texts(sp.ranges) == [["10.0.0.1", "10.0.0.99"], ["10.0.0.101", "10.0.0.254"]]
    sp = plan("10.0.0.0/24", None, True, [], [])
    assert sp.gateway is None and sp.texts(sp.ranges) == [["10.0.0.1", "10.0.0.254"]]
    sp = plan("fd00::/64", None, False, [], [])
    assert sp.text(sp.gateway or 0) == "fd00::1" and sp.size == 2**64 - 2


def _refused(*args: object) -> dict[str, object]:
    with pytest.raises(InvalidInput) as caught:
        plan(*args)  # type: ignore[arg-type]
    return caught.value.context


def test_refusals_name_the_offending_items() -> None:
    ctx = _refused("10.0.0.0/24", "10.0.0.0", False, [], [])
    assert ctx == {"field": "gateway", "gateway": "10.0.0.0"}
    assert _refused("10.0.0.0/24", "10.0.0.255", False, [], [])["field"] == "gateway"
    assert _refused("10.0.0.0/24", "10.0.1.1", False, [], [])["field"] == "gateway"
    assert _refused("10.0.0.0/24", "fd00::1", False, [], [])["field"] == "gateway"
    assert _refused("10.0.0.0/24", "10.0.0.1", True, [], [])["field"] == "gateway"
    ctx = _refused(
        "10.0.0.0/24",
        None,
        False,
        [("10.0.0.10", "10.0.0.20"), ("10.0.0.50", "10.0.0.40"), ("10.0.0.200", "10.0.1.5"),
         ("fd00::1", "fd00::2"), ("10.0.0.0", "10.0.0.3")],
        [],
    )  # fmt: skip
    assert ctx["ranges"] == [
        {"start": "10.0.0.50", "end": "10.0.0.40", "problem": "start after end"},
        {"start": "10.0.0.200", "end": "10.0.1.5", "problem": "outside the CIDR"},
        {"start": "fd00::1", "end": "fd00::2", "problem": "not an IPv4 address"},
        {"start": "10.0.0.0", "end": "10.0.0.3", "problem": "the network address"},
    ]
    ctx = _refused(
        "10.0.0.0/24",
        None,
        False,
        [("10.0.0.10", "10.0.0.20"), ("10.0.0.30", "10.0.0.40"), ("10.0.0.20", "10.0.0.25"),
         ("10.0.0.35", "10.0.0.35")],
        [],
    )  # fmt: skip
    assert ctx["overlaps"] == [
        [{"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.20", "end": "10.0.0.25"}],
        [{"start": "10.0.0.30", "end": "10.0.0.40"}, {"start": "10.0.0.35", "end": "10.0.0.35"}],
    ]
    wide = [("10.0.0.10", "10.0.0.100"), ("10.0.0.20", "10.0.0.30"), ("10.0.0.40", "10.0.0.50")]
    assert len(_refused("10.0.0.0/24", None, False, wide, [])["overlaps"]) == 2  # both inside
    ctx = _refused("10.0.0.0/24", None, False, [], ["10.0.0.9", "10.0.2.1", "fd00::1"])
    assert ctx == {"field": "reserved", "reserved": ["10.0.2.1", "fd00::1"]}


def test_next_free_walks_ranges_in_order_skipping_blocked() -> None:
    sp = plan(
        "10.0.0.0/24",
        "10.0.0.1",
        False,
        [("10.0.0.50", "10.0.0.52"), ("10.0.0.10", "10.0.0.11")],
        ["10.0.0.51", "10.0.0.10"],
    )
    order = []
    used: list[int] = []
    while (n := sp.nth_free(sp.blocked(used))) is not None:
        order.append(_ip(n))
        used.append(n)
    assert order == ["10.0.0.50", "10.0.0.52", "10.0.0.11"]  # the first range first
    assert sp.available(used) == 0 and sp.available([]) == 3
    blocked = sp.blocked([])
    assert [_ip(sp.nth_free(blocked, k) or 0) for k in range(3)] == order
    assert sp.nth_free(blocked, 3) is None


def test_refusal_of_static_addresses() -> None:
    sp = plan("10.0.0.0/24", None, False, [("10.0.0.10", "10.0.0.20")], ["10.0.0.5"])
    assert sp.refusal(_n("10.0.0.0")) == "network"
    assert sp.refusal(_n("10.0.0.255")) == "broadcast"
    assert sp.refusal(_n("10.0.0.1")) == "gateway"
    assert sp.refusal(_n("10.0.0.5")) == "reserved"
    assert sp.refusal(_n("10.0.1.0")) == "outside"
    assert sp.refusal(_n("10.0.0.200")) is None  # outside the ranges is fine for a static one
    v6 = plan("fd00::/64", None, False, [], [])
    assert v6.refusal(_n("fd00::")) == "network"
    assert v6.refusal(_n("fd00::ffff:ffff:ffff:ffff")) is None  # no broadcast in IPv6


def test_ipv6_slash64_is_never_enumerated() -> None:
    """Listing 2^64 addresses would never end: integer walks answer at once."""
    sp = plan("fd00::/64", None, False, [], ["fd00::2", "fd00::4"])
    used = [_n("fd00::3")] + [_n("fd00::1:0") + i for i in range(1000)]
    for _ in range(100):
        blocked = sp.blocked(used)
        assert _ip(sp.nth_free(blocked) or 0) == "fd00::5"
        assert sp.available(used) == 2**64 - 2 - 2 - len(used)
    far = sp.nth_free(sp.blocked([]), 2**63)
    assert far is not None and _ip(far) == "fd00::8000:0:0:4"


def test_covers_tells_when_ranges_hold_every_allocatable_address() -> None:
    assert plan("10.0.0.0/24", None, False, [], []).covers()
    assert plan("10.0.0.0/24", "10.0.0.1", False, [("10.0.0.2", "10.0.0.254")], []).covers()
    assert (
        plan("10.0.0.0/24", None, False, [("10.0.0.2", "10.0.0.200")], ["10.0.0.201"]).covers()
        is False
    )
    reserved = [_ip(_n("10.0.0.201") + i) for i in range(54)]
    assert plan("10.0.0.0/24", None, False, [("10.0.0.2", "10.0.0.200")], reserved).covers()
    assert plan("fd00::/64", None, False, [], []).covers()


def test_spread_starts_at_the_lowest_and_stays_among_free_addresses() -> None:
    sp = plan("10.0.0.0/29", None, False, [], [])  # 10.0.0.2-6: 5 free
    blocked = sp.blocked([])
    assert _spread(sp, blocked, 0) == 0
    random.seed(7)
    for attempt in range(1, 40):
        k = _spread(sp, blocked, attempt)
        assert 0 <= k < 5 and sp.nth_free(blocked, k) is not None


def test_space_of_stored_values_round_trips() -> None:
    sp = plan("192.168.8.0/22", "192.168.8.1", False, [("192.168.9.0", "192.168.10.255")],
              ["192.168.9.9"])  # fmt: skip
    again = Space.of("192.168.8.0/22", "192.168.8.1", sp.texts(sp.ranges), ["192.168.9.9"])
    assert again == sp


def test_stored_addresses_parse_fast_and_alike() -> None:
    v4 = plan("10.0.0.0/8", None, False, [], [])
    v6 = plan("fd00::/64", None, False, [], [])
    for sp, text in ((v4, "10.200.3.4"), (v6, "fd00::abcd:1"), (v6, "fd00::ffff:ffff:ffff:ffff")):
        assert sp.parse_stored(text) == sp.parse(text) == _n(text)
    with pytest.raises(ValueError):
        v4.parse("fd00::1")
