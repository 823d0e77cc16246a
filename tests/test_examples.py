"""deploy/examples/: the commented pairs the install guide copies. Loaded, never used on a LAN.

Each pair must load with `havip.config.load_config` (the OmniOS one as if on illumos) and the
two halves must fit together the way the guide says: same primary, preempt, timing and VIPs;
each names the other as its peer; the standby dials the primary's listen address.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import havip.config
from havip.config import Config, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "deploy" / "examples"
PAIRS = {"omnios": "sunos5", "linux": "linux"}


def _load(pair: str, node: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setattr(havip.config, "_current_platform", lambda: PAIRS[pair])
    return load_config(EXAMPLES / pair / f"{node}.toml")


def test_every_example_is_in_a_known_pair() -> None:
    found = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.toml")}
    assert found == {f"{pair}/{node}.toml" for pair in PAIRS for node in ("n1", "n2")}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_the_two_halves_of_a_pair_fit_together(pair: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n1, n2 = _load(pair, "n1", monkeypatch), _load(pair, "n2", monkeypatch)
    assert (n1.node, n1.peer_name, n2.node, n2.peer_name) == ("n1", "n2", "n2", "n1")
    assert n1.is_primary and not n2.is_primary
    assert n1.preempt == n2.preempt
    assert n1.timing == n2.timing
    assert n1.vips == n2.vips
    assert n1.backend == n2.backend
    # Only the standby dials: n2's [peer] address is where n1 listens.
    assert n2.peer_address == n1.listen
    # Each node's own certificate and key, the one shared CA.
    assert n1.tls.ca == n2.tls.ca
    assert n1.tls.cert.name == "n1.crt" and n1.tls.key.name == "n1.key"
    assert n2.tls.cert.name == "n2.crt" and n2.tls.key.name == "n2.key"


def test_the_omnios_pair_is_the_seeds_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    n1, n2 = _load("omnios", "n1", monkeypatch), _load("omnios", "n2", monkeypatch)
    assert n1.backend == "illumos"
    assert n1.address_tool == "ipadm"
    (vip,) = n1.vips
    assert (str(vip), vip.interface) == ("10.10.10.42/24", "e1000g0")
    assert n1.listen == ("10.10.10.1", 7411)
    assert n2.peer_address == ("10.10.10.1", 7411) and n1.peer_address[0] == "10.10.10.2"
    # illumos has no default-gateway witness: the examples name one, the same on both nodes.
    assert n1.witnesses == n2.witnesses == (ipaddress.ip_address("10.10.10.254"),)


def test_the_omnios_pair_is_refused_on_linux() -> None:
    """The illumos backend on Linux is a config error naming the key, not a late crash."""
    with pytest.raises(havip.config.ConfigError) as caught:
        load_config(EXAMPLES / "omnios" / "n1.toml")
    assert any("backend.type" in line for line in caught.value.errors), caught.value.errors


def test_the_linux_pair_uses_documentation_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    doc_net = ipaddress.ip_network("192.0.2.0/24")  # RFC 5737 TEST-NET-1
    for node in ("n1", "n2"):
        cfg = _load("linux", node, monkeypatch)
        assert cfg.backend == "linux"
        assert all(ipaddress.ip_interface(str(v)).ip in doc_net for v in cfg.vips)
        assert ipaddress.ip_address(cfg.listen[0]) in doc_net
        assert ipaddress.ip_address(cfg.peer_address[0]) in doc_net
