from typing import Any

import pytest

from monlat.config import IpFamily
from monlat.discovery import Peer, diff_peers
from monlat.discovery.nodes import AddressPolicy, NodeCache, choose_address


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
