"""Two network namespaces joined by a veth pair: the smallest LAN a backend test needs.

Namespace `a` (interface v0 = 198.18.0.1/24) is where the code under test runs; namespace `b`
(v1 = 198.18.0.2/24) is the rest of the LAN: the witness, and a host that may hold the VIP.
Both are removed on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))


def ip(*args: str) -> str:
    """Run `ip ARGS`; the test fails with ip's own message if it does."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30 * SCALE)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


@dataclass(frozen=True, kw_only=True)
class VethPair:
    a: str
    b: str
    a_mac: str
    b_mac: str


@contextlib.contextmanager
def veth_pair(tag: str) -> Iterator[VethPair]:
    """Build the pair (names `<tag><pid>a`/`b`), yield it, remove both namespaces."""
    a, b = f"{tag}{os.getpid()}a", f"{tag}{os.getpid()}b"
    created: list[str] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            created.append(ns)
        ip("-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b)
        ip("-n", a, "addr", "add", "198.18.0.1/24", "dev", "v0")
        ip("-n", b, "addr", "add", "198.18.0.2/24", "dev", "v1")
        for ns, dev in ((a, "lo"), (a, "v0"), (b, "lo"), (b, "v1")):
            ip("-n", ns, "link", "set", dev, "up")
        # b answers probes for addresses it holds, whatever the host's defaults are.
        for key in ("all", "v1"):
            ip("netns", "exec", b, "sysctl", "-qw", f"net.ipv4.conf.{key}.arp_ignore=0")
        macs = [
            json.loads(ip("-n", ns, "-j", "link", "show", dev))[0]["address"]
            for ns, dev in ((a, "v0"), (b, "v1"))
        ]
        yield VethPair(a=a, b=b, a_mac=macs[0], b_mac=macs[1])
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30 * SCALE)
