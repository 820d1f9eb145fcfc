from typing import Any

import pytest

from monlat.agent.config import IpFamily
from monlat.agent.discovery import Peer, diff_peers
from monlat.agent.discovery.nodes import AddressPolicy, Eligibility, NodeCache, choose_address


def node(name: str, *addresses: tuple[str, str], rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": rv},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
    }


DUAL = [
    {"type": "Hostname", "address": "node1"},
    {"type": "ExternalIP", "address": "203.0.113.5"},
    {"type": "InternalIP", "address": "fd00::5"},
    {"type": "InternalIP", "address": "10.0.0.5"},
]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (AddressPolicy(), "10.0.0.5"),
        (AddressPolicy(family=IpFamily.IPV6), "fd00::5"),
        (AddressPolicy(family=None), "fd00::5"),
        (AddressPolicy(types=("ExternalIP", "InternalIP")), "203.0.113.5"),
        (AddressPolicy(types=("Hostname",)), None),
    ],
)
def test_choose_address(policy: AddressPolicy, expected: str | None) -> None:
    assert choose_address(DUAL, policy) == expected


def test_other_family_is_used_when_the_preferred_is_missing() -> None:
    only_v6 = [{"type": "InternalIP", "address": "FD00:0::7"}]
    assert choose_address(only_v6, AddressPolicy(family=IpFamily.IPV4)) == "fd00::7"


def test_cache_never_lists_itself_and_follows_events() -> None:
    cache = NodeCache("self", AddressPolicy())
    cache.replace([node("self", ("InternalIP", "10.0.0.1")), node("a", ("InternalIP", "10.0.0.2"))])
    assert cache.peers() == {"a": Peer("a", "10.0.0.2")}
    assert cache.apply("ADDED", node("b", ("InternalIP", "10.0.0.3")))
    assert not cache.apply("MODIFIED", node("b", ("InternalIP", "10.0.0.3"), rv="2"))
    assert cache.apply("MODIFIED", node("b", ("InternalIP", "10.0.0.4")))
    assert not cache.apply("MODIFIED", node("self", ("InternalIP", "10.0.0.9")))
    assert cache.apply("DELETED", node("a"))
    assert not cache.apply("BOOKMARK", node(""))
    assert cache.peers() == {"b": Peer("b", "10.0.0.4")}


def test_node_without_usable_address_is_reported_not_probed() -> None:
    cache = NodeCache("self", AddressPolicy())
    cache.replace([node("x", ("Hostname", "x")), node("y")])
    assert cache.peers() == {}
    assert cache.unaddressable() == ["x", "y"]


def test_diff_peers() -> None:
    old = {"a": Peer("a", "1.1.1.1"), "b": Peer("b", "2.2.2.2"), "c": Peer("c", "3.3.3.3")}
    new = {"b": Peer("b", "2.2.2.2"), "c": Peer("c", "3.3.3.4"), "d": Peer("d", "4.4.4.4")}
    changes = diff_peers(old, new)
    assert changes.added == (Peer("d", "4.4.4.4"),)
    assert changes.removed == (Peer("a", "1.1.1.1"),)
    assert changes.changed == ((Peer("c", "3.3.3.3"), Peer("c", "3.3.3.4")),)
    assert not diff_peers(new, dict(new))


def test_not_ready_and_cordoned_nodes_are_left_out_unless_asked() -> None:
    ready = node("r", ("InternalIP", "10.0.0.2"))
    not_ready = node("n", ("InternalIP", "10.0.0.3"))
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    cordoned = node("c", ("InternalIP", "10.0.0.4"))
    cordoned["spec"] = {"unschedulable": True}
    default = NodeCache("self", AddressPolicy())
    default.replace([ready, not_ready, cordoned])
    assert set(default.peers()) == {"r"}
    assert default.excluded() == ["c", "n"]
    everyone = NodeCache("self", AddressPolicy(), Eligibility(False, False))
    everyone.replace([ready, not_ready, cordoned])
    assert set(everyone.peers()) == {"r", "n", "c"}


def test_own_cordon_and_zone_are_news_but_not_peers() -> None:
    cache = NodeCache("self", AddressPolicy())
    own = node("self", ("InternalIP", "10.0.0.1"))
    cache.replace([own])
    assert cache.self_state is not None and not cache.self_state.cordoned
    cordoned = node("self", ("InternalIP", "10.0.0.1"))
    cordoned["spec"] = {"unschedulable": True}
    assert cache.apply("MODIFIED", cordoned)
    assert cache.self_state is not None and cache.self_state.cordoned
    assert cache.peers() == {}
    zoned = node("self", ("InternalIP", "10.0.0.1"))
    zoned["metadata"]["labels"] = {"topology.kubernetes.io/zone": "eu-1a"}
    assert cache.apply("MODIFIED", zoned)
    assert cache.self_state is not None
    assert cache.self_state.zone == "eu-1a"


def test_dual_stack_takes_one_address_per_family_from_the_first_type_that_has_it() -> None:
    policy = AddressPolicy(types=("InternalIP", "ExternalIP"), family=None, dual_stack=True)
    both = node(
        "a",
        ("ExternalIP", "2001:db8::9"),
        ("InternalIP", "fd00::5"),
        ("InternalIP", "10.0.0.5"),
        ("ExternalIP", "203.0.113.5"),
    )
    v4_external_only = node("b", ("InternalIP", "fd00::6"), ("ExternalIP", "203.0.113.6"))
    only_v4 = node("c", ("InternalIP", "10.0.0.7"))
    cache = NodeCache("self", policy)
    cache.replace([both, v4_external_only, only_v4])
    assert cache.peers() == {
        "a/ipv4": Peer("a", "10.0.0.5", family="ipv4"),
        "a/ipv6": Peer("a", "fd00::5", family="ipv6"),
        "b/ipv4": Peer("b", "203.0.113.6", family="ipv4"),
        "b/ipv6": Peer("b", "fd00::6", family="ipv6"),
        "c/ipv4": Peer("c", "10.0.0.7", family="ipv4"),
    }
    assert cache.summary()["peers"] == 3  # nodes, not per-family peers
    # A node gaining its IPv6 address adds one peer; losing it removes only that one.
    assert cache.apply("MODIFIED", node("c", ("InternalIP", "10.0.0.7"), ("InternalIP", "fd00::7")))
    assert cache.peers()["c/ipv6"] == Peer("c", "fd00::7", family="ipv6")
    assert cache.apply("MODIFIED", only_v4)
    assert "c/ipv6" not in cache.peers() and "c/ipv4" in cache.peers()


def test_dual_stack_diff_sees_families_as_separate_peers() -> None:
    old = {"a/ipv4": Peer("a", "10.0.0.1", family="ipv4")}
    new = {
        "a/ipv4": Peer("a", "10.0.0.1", family="ipv4"),
        "a/ipv6": Peer("a", "fd00::1", family="ipv6"),
    }
    changes = diff_peers(old, new)
    assert changes.added == (Peer("a", "fd00::1", family="ipv6"),)
    assert not changes.removed and not changes.changed
