"""The NIC firewall compiler: port ranges as masks, the admission (anti-spoofing) flows, rule
order across groups (first match wins), remote groups, defaults, determinism."""

from __future__ import annotations

import random

import pytest

from corral.netflows.firewall import (
    RULE_TOP,
    FwGroup,
    FwPort,
    FwRule,
    compile_port,
    port_masks,
)


def covered(masks: list[tuple[int, int]]) -> set[int]:
    return {p for p in range(65536) for v, m in masks if p & m == v}


@pytest.mark.parametrize(
    ("low", "high"), [(1, 65535), (80, 80), (1000, 1999), (1024, 65535), (3306, 3307), (0, 0)]
)
def test_port_masks_cover_exactly_the_range(low: int, high: int) -> None:
    masks = port_masks(low, high)
    assert covered(masks) == set(range(low, high + 1))
    assert len(masks) <= 32


def test_random_ranges() -> None:
    rng = random.Random(7)
    for _ in range(20):
        low = rng.randrange(1, 65535)
        high = rng.randrange(low, 65536)
        assert covered(port_masks(low, high)) == set(range(low, high + 1))


def port(*groups: FwGroup, **kw: object) -> FwPort:
    args: dict[str, object] = {"ofport": 7, "mac": "02:00:00:00:00:07", "ips": ("10.0.0.7",),
                               "zone": 7, "cookie": 0x7, "groups": groups}  # fmt: skip
    args.update(kw)
    return FwPort(**args)  # type: ignore[arg-type]


def test_admission_lets_only_the_ports_own_addresses_out() -> None:
    flows = compile_port(port())
    admit = [f for f in flows if "table=0," in f]
    assert any("dl_src=02:00:00:00:00:07,ip,nw_src=10.0.0.7" in f and "ct(table=1" in f
               for f in admit)  # fmt: skip
    assert any("arp,arp_spa=10.0.0.7,arp_sha=02:00:00:00:00:07" in f for f in admit)
    assert any("in_port=7,udp,tp_src=67" in f and f.endswith("actions=drop") for f in admit)
    assert any("priority=10,in_port=7" in f and f.endswith("actions=drop") for f in admit)
    relaxed = compile_port(port(spoof_check=False))
    assert any("in_port=7,ip" in f and "ct(table=1" in f for f in relaxed)


def test_rules_keep_group_then_rule_order_and_defaults() -> None:
    web = FwGroup(
        rules=(
            FwRule("ingress", protocol="tcp", port_min=80),
            FwRule("ingress", protocol="tcp", port_min=443, action="deny"),
        ),
        intra_group=False,
    )
    ops = FwGroup(
        rules=(FwRule("ingress", protocol="tcp", port_min=22, remotes=("192.0.2.0/24",)),),
        intra_group=True,
        members=("10.0.0.7", "10.0.0.8"),
    )
    flows = compile_port(port(web, ops))
    ingress = [f for f in flows if "table=2," in f and "ct_state=+trk+new" in f]
    prio = {f.split("priority=")[1].split(",")[0]: f for f in ingress}
    assert "tp_dst=80" in prio[str(RULE_TOP)]
    assert "tp_dst=443" in prio[str(RULE_TOP - 1)] and prio[str(RULE_TOP - 1)].endswith("drop")
    # the ops group's intra-group rule (its members) comes before its own rules
    assert "nw_src=10.0.0.8" in prio[str(RULE_TOP - 2)]
    assert (
        "tp_dst=22" in prio[str(RULE_TOP - 3)] and "nw_src=192.0.2.0/24" in prio[str(RULE_TOP - 3)]
    )
    defaults = [f for f in flows if "priority=10," in f and "table=2" in f]
    assert defaults == [f for f in defaults if f.endswith("actions=drop")]  # ingress default
    egress_default = next(f for f in flows if "table=1,priority=10," in f)
    assert "ct(commit,zone=7)" in egress_default


def test_compile_is_deterministic_and_checks_addresses() -> None:
    g = FwGroup(rules=(FwRule("egress", protocol="udp", port_min=1000, port_max=1999),))
    assert compile_port(port(g)) == compile_port(port(g))
    with pytest.raises(ValueError):
        compile_port(port(ips=("10.0.0.300",)))


def test_meters_apply_to_what_the_port_sends_and_what_its_policy_lets_in() -> None:
    from corral.api.agent import meter_for

    port = FwPort(ofport="p1", mac="02:00:00:00:00:01", ips=("10.0.0.5",), zone=7, cookie=7,
                  outbound_meter=14, inbound_meter=15)  # fmt: skip
    flows = compile_port(port)
    sent = [f for f in flows if "table=0," in f and "in_port=p1" in f]
    assert sent and all(f.endswith("actions=drop") or "actions=meter:14," in f for f in sent)
    assert any("actions=meter:14," in f for f in sent)
    ingress = [f for f in flows if "table=2," in f and "output:p1" in f]
    assert ingress and all("actions=meter:15," in f for f in ingress)
    # DHCP answers and neighbour discovery are delivered unmetered
    assert all("meter:" not in f for f in flows if "table=3," in f)
    unlimited = compile_port(FwPort(ofport="p1", mac="02:00:00:00:00:01", ips=("10.0.0.5",),
                                    zone=7, cookie=7))  # fmt: skip
    assert all("meter:" not in f for f in unlimited)
    m = meter_for(14, 1000)
    assert (m.id, m.kbps, m.burst_kbits) == (14, 1000, 500)
    assert meter_for(1, 8).burst_kbits == 64
