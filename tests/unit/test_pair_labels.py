"""The attributes of every per-pair series: from/to, then family, network and zones when on."""

from __future__ import annotations

from monlat.agent.discovery import Peer
from monlat.agent.telemetry import PairLabels


def test_original_labels_by_default() -> None:
    labels = PairLabels("a")
    labels.update({"b": Peer("b", "10.0.0.2", zone="z2")}, "z1")
    assert labels.names == ["from", "to"]
    assert labels.of("b") == {"from": "a", "to": "b"}
    assert labels.agent() == {"from": "a"}


def test_dual_stack_network_and_zones_in_a_fixed_order() -> None:
    labels = PairLabels("a", zones=True, families=True, network="pod")
    labels.update(
        {
            "b/ipv4": Peer("b", "10.0.0.2", zone="z2", family="ipv4"),
            "b/ipv6": Peer("b", "fd00::2", zone="z2", family="ipv6"),
        },
        "z1",
    )
    assert labels.names == ["from", "to", "family", "network", "from_zone", "to_zone"]
    six = labels.of("b/ipv6")
    assert list(six) == labels.names
    assert six == {
        "from": "a",
        "to": "b",
        "family": "ipv6",
        "network": "pod",
        "from_zone": "z1",
        "to_zone": "z2",
    }
    assert labels.agent() == {"from": "a", "network": "pod"}


def test_a_peer_gone_from_the_map_still_gets_its_name_and_family() -> None:
    """An export racing a peer's removal must not mislabel its last values."""
    labels = PairLabels("a", families=True)
    labels.update({}, None)
    assert labels.of("b/ipv6") == {"from": "a", "to": "b", "family": "ipv6"}
