"""Network lab for monlat tests: namespaces as nodes, user-space link emulation.

    from tests.support.lab import Lab, Link

    with Lab.create(["n1", "n2"], links={("n1", "n2"): Link(delay_ms=2.0)},
                    default=Link(delay_ms=1.0)) as lab:
        lab.ping("n1", "n2").median_ms   # ~= lab.expected_rtt_ms("n1", "n2") == 3.0

See lab.py (API), switch.py (the emulator process), fixtures.py (pytest).
"""

from .lab import IFNAME, Lab, Link, close_all, ipv6_supported
from .netns import LabError, cleanup_stale
from .ping import PingResult

__all__ = [
    "IFNAME",
    "Lab",
    "LabError",
    "Link",
    "PingResult",
    "cleanup_stale",
    "close_all",
    "ipv6_supported",
]
