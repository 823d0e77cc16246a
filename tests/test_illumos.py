"""The illumos backend without illumos: fake ipadm, ifconfig and dladm (tests/fakes/illumos,
whose docstring cites the illumos-gate source of every text they print), the parsers of
those tools' output, the PF_ROUTE link messages, and choosing the backend in the config."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from havip import config
from havip.backends import BackendError, make_backend
from havip.backends.base import BackendOp, LinkState
from havip.backends.illumos import (
    IF_MSGHDR,
    IFF_RUNNING,
    IFF_UP,
    RTM_IFINFO,
    RTM_VERSION,
    AddrRow,
    IllumosBackend,
    IllumosLinkMonitor,
    parse_ifconfig,
    parse_ifinfo,
    parse_show_addr,
    parse_show_link,
    split_parsable,
)
from havip.config import ConfigError, Vip, load_config

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
FAKES = Path(__file__).resolve().parent / "fakes" / "illumos"
TOOLS = {tool: str(FAKES / tool) for tool in ("ipadm", "ifconfig", "dladm", "route")}
IF = "e1000g0"
VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface=IF)
VIP2 = Vip(address=ipaddress.IPv4Interface("198.18.0.101/24"), interface=IF)
HOST = {"obj": f"{IF}/v4", "lif": IF, "addr": "198.18.0.1/24", "state": "ok"}


class Fake:
    """The fake tools' state folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **state: Any) -> None:
        base: dict[str, Any] = {"links": {IF: "up"}, "addrs": [dict(HOST)]}
        (self.path / "state.json").write_text(json.dumps(base | state))

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "state.json").read_text())
        return data

    def update(self, **changes: Any) -> None:
        (self.path / "state.json").write_text(json.dumps(self.state() | changes))

    def objects(self) -> dict[str, str]:
        """{address object: address} now."""
        return {a["obj"]: a["addr"] for a in self.state()["addrs"]}

    def calls(self) -> list[list[str]]:
        log = self.path / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def forget_calls(self) -> None:
        (self.path / "calls.log").unlink(missing_ok=True)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    monkeypatch.setenv("HAVIP_FAKE_ILLUMOS", str(tmp_path))
    built = Fake(tmp_path)
    built.write()
    return built


def backend(address_tool: str = "ipadm", **kwargs: Any) -> IllumosBackend:
    options: dict[str, Any] = {"timeout": 10 * SCALE, "dad_timeout": 2 * SCALE, "dad_poll": 0.02}
    return IllumosBackend(
        vips=[VIP, VIP2], address_tool=address_tool, tools=TOOLS, **(options | kwargs)
    )


# --- parsers -----------------------------------------------------------------------------


def test_split_parsable_unescapes_colons_and_backslashes() -> None:
    # libofmt's parsable form (usr/src/lib/libofmt/common/ofmt.c): ':' separates fields,
    # '\:' and '\\' are a colon and a backslash inside one.
    assert split_parsable(r"e1000g0/v6:addrconf:ok:fe80\:\:8\:20ff\:fe0e\:1/10") == [
        "e1000g0/v6",
        "addrconf",
        "ok",
        "fe80::8:20ff:fe0e:1/10",
    ]
    assert split_parsable(r"a\\b:c") == ["a\\b", "c"]
    assert split_parsable("lo0/v4:static:ok:127.0.0.1/8") == [
        "lo0/v4",
        "static",
        "ok",
        "127.0.0.1/8",
    ]
    assert split_parsable("") == [""]
    assert split_parsable("x\\") == ["x\\"]  # a dangling backslash stays itself


def test_parse_show_addr() -> None:
    text = (
        "lo0/v4:static:ok:127.0.0.1/8\n"
        "e1000g0/havip0:static:duplicate:198.18.0.100/24\n"
        r"e1000g0/v6:addrconf:ok:fe80\:\:8\:20ff\:fe0e\:1/10"
        "\n"
        "e1000g0/?:static:ok:198.18.0.7/24\n"
        "ip.tun0/v4:static:ok:198.18.9.1->198.18.9.2\n"
        "net0/dhcp:dhcp:tentative:?\n"
        "garbage line\n"
    )
    rows = parse_show_addr(text)
    assert rows[1] == AddrRow(
        addrobj="e1000g0/havip0",
        type="static",
        state="duplicate",
        address=ipaddress.IPv4Interface("198.18.0.100/24"),
    )
    assert rows[1].interface == "e1000g0"
    assert rows[2].address == ipaddress.IPv6Interface("fe80::8:20ff:fe0e:1/10")
    assert rows[3].interface == "e1000g0" and rows[3].addrobj.endswith("/?")
    assert [r.address for r in rows[4:]] == [None, None]
    assert len(rows) == 6


def test_parse_ifconfig() -> None:
    # The shape of illumos ifconfig.c's status(): header with flags, then "inet ... netmask".
    text = (
        "lo0: flags=2001000849<UP,LOOPBACK,RUNNING,MULTICAST,IPv4,VIRTUAL> mtu 8232 index 1\n"
        "\tinet 127.0.0.1 netmask ff000000 \n"
        "e1000g0: flags=1004843<UP,BROADCAST,RUNNING,MULTICAST,DHCP,IPv4> mtu 1500 index 2\n"
        "\tinet 198.18.0.1 netmask ffffff00 broadcast 198.18.0.255\n"
        "\tether 8:0:27:ab:cd:ef \n"
        "e1000g0:1: flags=4001000842<BROADCAST,RUNNING,MULTICAST,IPv4,DUPLICATE> mtu 1500 index 2\n"
        "\tinet 198.18.0.100 netmask ffffff00 broadcast 198.18.0.255\n"
        "e1000g0:2: flags=1000842<BROADCAST,RUNNING,MULTICAST,IPv4> mtu 1500 index 2\n"
        "\tinet 198.18.0.101 netmask ffffff80 broadcast 198.18.0.127\n"
    )
    lifs = parse_ifconfig(text)
    assert [(lif.name, lif.interface, lif.state) for lif in lifs] == [
        ("lo0", "lo0", "ok"),
        ("e1000g0", "e1000g0", "ok"),
        ("e1000g0:1", "e1000g0", "duplicate"),
        ("e1000g0:2", "e1000g0", "tentative"),
    ]
    assert lifs[2].address == ipaddress.IPv4Interface("198.18.0.100/24")
    assert lifs[3].address == ipaddress.IPv4Interface("198.18.0.101/25")
    assert "DHCP" in lifs[1].flags


def test_parse_show_link() -> None:
    assert parse_show_link("e1000g0:up\nnet1:down\nvnic0:unknown\n") == {
        "e1000g0": "up",
        "net1": "down",
        "vnic0": "unknown",
    }


def _ifinfo(index: int, flags: int, *, kind: int = RTM_IFINFO, version: int = RTM_VERSION) -> bytes:
    """An if_msghdr as illumos net/if.h lays it out (native order): the 14-byte header, 2
    bytes of padding, and a zeroed if_data (3 uchar_t and padding, 14 uint_t, a timeval32:
    68 bytes)."""
    body = IF_MSGHDR.pack(0, version, kind, 0, flags, index) + b"\0\0" + bytes(68)
    return struct.pack("=H", len(body)) + body[2:]


def test_parse_ifinfo() -> None:
    up = _ifinfo(2, IFF_UP | IFF_RUNNING | 0x1000800)
    down = _ifinfo(3, IFF_UP | 0x1000800)
    other = _ifinfo(4, IFF_UP, kind=0xC)  # RTM_NEWADDR: not a link message
    old = _ifinfo(5, IFF_UP, version=2)
    assert parse_ifinfo(up) == [(2, IFF_UP | IFF_RUNNING | 0x1000800)]
    assert parse_ifinfo(up + other + down + old) == [
        (2, IFF_UP | IFF_RUNNING | 0x1000800),
        (3, IFF_UP | 0x1000800),
    ]
    assert parse_ifinfo(up[:10]) == []  # truncated header
    assert parse_ifinfo(struct.pack("=H", 4000) + up[2:]) == []  # length past the data
    assert parse_ifinfo(struct.pack("=H", 2) + up[2:]) == []  # length too short to be one


def test_link_monitor_reads_ifinfo() -> None:
    index = socket.if_nametoindex("lo")
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    monitor = IllumosLinkMonitor(reader)
    try:
        assert monitor.read() == []
        writer.send(_ifinfo(index, IFF_UP | IFF_RUNNING))
        writer.send(_ifinfo(index, IFF_UP))
        writer.send(_ifinfo(index, 0))
        assert monitor.read() == [
            ("lo", LinkState(exists=True, up=True, carrier=True)),
            ("lo", LinkState(exists=True, up=True, carrier=False)),
            ("lo", LinkState(exists=True, up=False, carrier=False)),
        ]
        # An index that no longer exists: reported absent under the name seen before.
        monitor._names[65000] = "gone0"
        writer.send(_ifinfo(65000, IFF_UP))
        writer.send(_ifinfo(64999, IFF_UP))  # never seen: nothing to report
        assert monitor.read() == [("gone0", LinkState(exists=False, up=False, carrier=False))]
    finally:
        monitor.close()
        writer.close()


@pytest.mark.skipif(sys.platform.startswith("sunos"), reason="PF_ROUTE exists on illumos")
def test_link_monitor_needs_pf_route() -> None:
    with pytest.raises(BackendError, match=r"^link: no PF_ROUTE routing socket on this platform"):
        backend().open_link_monitor()


# --- ipadm -------------------------------------------------------------------------------


def test_add_remove(fake: Fake) -> None:
    b = backend()
    assert not b.present(VIP)
    b.add(VIP)
    assert b.present(VIP)
    assert fake.objects() == {f"{IF}/v4": "198.18.0.1/24", f"{IF}/havip0": "198.18.0.100/24"}
    created = [c for c in fake.calls() if c[:2] == ["ipadm", "create-addr"]]
    # Temporary (-t): a VIP must never come back by itself at boot.
    assert created == [
        ["ipadm", "create-addr", "-T", "static", "-t", "-a", "198.18.0.100/24", f"{IF}/havip0"]
    ]
    assert fake.state()["addrs"][1]["temporary"] is True
    b.add(VIP2)
    assert f"{IF}/havip1" in fake.objects()
    b.remove(VIP)
    assert not b.present(VIP)
    assert b.present(VIP2)
    assert ["ipadm", "delete-addr", f"{IF}/havip0"] in fake.calls()
    assert fake.objects() == {f"{IF}/v4": "198.18.0.1/24", f"{IF}/havip1": "198.18.0.101/24"}


def test_add_twice_and_remove_absent_are_fine(fake: Fake) -> None:
    b = backend()
    b.add(VIP)
    fake.forget_calls()
    b.add(VIP)  # "Address object already exists" for our own object, same address
    assert b.present(VIP)
    assert fake.calls()[0][:2] == ["ipadm", "create-addr"]
    assert list(fake.objects()) == [f"{IF}/v4", f"{IF}/havip0"]
    b.remove(VIP)
    b.remove(VIP)  # "could not delete address: Object not found"
    assert not b.present(VIP)
    assert list(fake.objects()) == [f"{IF}/v4"]


def test_our_object_holding_another_address(fake: Fake) -> None:
    other = {"obj": f"{IF}/havip0", "lif": f"{IF}:1", "addr": "198.18.0.50/24", "state": "ok"}
    fake.write(addrs=[HOST, other])
    with pytest.raises(BackendError) as caught:
        backend().add(VIP)
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: {IF}/havip0 already exists and holds 198.18.0.50/24, "
        f"not this VIP; delete it with `ipadm delete-addr {IF}/havip0`"
    )
    assert fake.objects()[f"{IF}/havip0"] == "198.18.0.50/24"  # left alone


def test_vip_already_there_under_another_object(fake: Fake) -> None:
    operators = {"obj": f"{IF}/vip", "lif": f"{IF}:1", "addr": "198.18.0.100/24", "state": "ok"}
    fake.write(addrs=[HOST, operators])
    b = backend()
    b.add(VIP)  # "Address already in use", but it is there and usable: present
    assert b.present(VIP)
    assert f"{IF}/havip0" not in fake.objects()
    with pytest.raises(BackendError) as caught:
        b.remove(VIP)
    assert str(caught.value) == (
        f"remove 198.18.0.100/24 on {IF}: 198.18.0.100 is still on {IF} as {IF}/vip, which "
        "havip did not create; havip leaves an operator's configuration alone: remove it by "
        f"hand (ipadm delete-addr {IF}/vip)"
    )
    assert f"{IF}/vip" in fake.objects()


def test_present_needs_same_prefix_and_interface(fake: Fake) -> None:
    fake.write(
        links={IF: "up", "net1": "up"},
        addrs=[
            HOST,
            {"obj": f"{IF}/a", "lif": f"{IF}:1", "addr": "198.18.0.100/32", "state": "ok"},
            {"obj": "net1/b", "lif": "net1", "addr": "198.18.0.100/24", "state": "ok"},
        ],
    )
    assert not backend().present(VIP)


def test_duplicate_is_a_failure_and_cleaned_up(fake: Fake) -> None:
    fake.update(dad={"198.18.0.100": "duplicate"})
    b = backend()
    with pytest.raises(BackendError) as caught:
        b.add(VIP)
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: duplicate address: another host on the LAN already "
        f"uses 198.18.0.100 (duplicate address detection failed); removed {IF}/havip0 again"
    )
    assert caught.value.op is BackendOp.ADD
    assert ["ipadm", "delete-addr", f"{IF}/havip0"] in fake.calls()
    assert list(fake.objects()) == [f"{IF}/v4"]
    assert not b.present(VIP)


def test_tentative_then_ok_waits(fake: Fake) -> None:
    fake.update(dad={"198.18.0.100": "tentative:2"})
    b = backend()
    b.add(VIP)
    assert b.present(VIP)
    shows = [c for c in fake.calls() if c[:2] == ["ipadm", "show-addr"]]
    assert len(shows) >= 3  # tentative, tentative, ok


def test_tentative_forever_gives_up(fake: Fake) -> None:
    fake.update(dad={"198.18.0.100": "tentative"})
    b = backend(dad_timeout=0.3 * SCALE)
    with pytest.raises(BackendError) as caught:
        b.add(VIP)
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: {IF}/havip0 still tentative after {0.3 * SCALE:g}s "
        "(duplicate address detection did not finish); removed it again"
    )
    assert list(fake.objects()) == [f"{IF}/v4"]


def test_missing_interface(fake: Fake) -> None:
    vip = Vip(address=VIP.address, interface="e1000g9")
    b = IllumosBackend(vips=[vip], tools=TOOLS, timeout=10 * SCALE)
    with pytest.raises(BackendError) as caught:
        b.add(vip)
    assert str(caught.value) == "add 198.18.0.100/24 on e1000g9: interface e1000g9 does not exist"
    assert not b.present(vip)
    b.remove(vip)  # nothing there: fine
    assert b.link_state("e1000g9") == LinkState(exists=False, up=False, carrier=False)


def test_permission_denied_is_one_line(fake: Fake) -> None:
    fake.update(fail={"ipadm create-addr": "Permission denied"})
    with pytest.raises(BackendError) as caught:
        backend().add(VIP)
    # ipadm.c die(): stderr "ipadm: Could not create address: <status>", no newline there.
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: ipadm: Could not create address: Permission denied"
    )
    fake.update(fail={"ipadm delete-addr": "Insufficient user authorizations"})
    fake.update(
        addrs=[HOST, {"obj": f"{IF}/havip0", "lif": f"{IF}:1", "addr": str(VIP), "state": "ok"}]
    )
    with pytest.raises(BackendError) as caught:
        backend().remove(VIP)
    assert str(caught.value) == (
        f"remove 198.18.0.100/24 on {IF}: ipadm: could not delete address: "
        "Insufficient user authorizations"
    )


def test_hung_tool_times_out(fake: Fake) -> None:
    fake.update(sleep={"ipadm": 60})
    b = backend(timeout=0.5 * SCALE)
    start = time.monotonic()
    with pytest.raises(BackendError) as caught:
        b.add(VIP)
    took = time.monotonic() - start
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: ipadm create-addr did not finish within "
        f"{0.5 * SCALE:g}s; killed it"
    )
    assert took < 30 * SCALE  # gave up long before the fake would have answered (60 s)


def test_missing_tool(fake: Fake) -> None:
    b = IllumosBackend(vips=[VIP], tools={"ipadm": str(FAKES / "no-such-ipadm")})
    with pytest.raises(BackendError, match=r"^present 198\.18\.0\.100/24 on e1000g0: ipadm not "):
        b.present(VIP)


def test_tools_found_on_path(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    b = IllumosBackend(vips=[VIP], dad_timeout=2 * SCALE)
    assert b.tool_path("ipadm") == str(FAKES / "ipadm")
    b.add(VIP)
    assert b.present(VIP)


def test_unconfigured_and_ipv6_vips(fake: Fake) -> None:
    stranger = Vip(address=ipaddress.IPv4Interface("198.18.0.200/24"), interface=IF)
    with pytest.raises(BackendError, match="not one of the configured VIPs"):
        backend().add(stranger)
    v6 = Vip(address=ipaddress.IPv6Interface("2001:2::100/64"), interface=IF)
    with pytest.raises(BackendError, match="IPv6 VIPs need the Linux backend for now"):
        IllumosBackend(vips=[v6], tools=TOOLS).add(v6)
    assert not IllumosBackend(vips=[v6], tools=TOOLS).present(v6)


# --- legacy ifconfig ---------------------------------------------------------------------


def test_ifconfig_add_remove(fake: Fake) -> None:
    b = backend("ifconfig")
    assert not b.present(VIP)
    b.add(VIP)
    assert b.present(VIP)
    assert ["ifconfig", IF, "addif", "198.18.0.100/24", "up"] in fake.calls()
    assert fake.state()["addrs"][1]["lif"] == f"{IF}:1"
    fake.forget_calls()
    b.add(VIP)  # already there and up: no second logical interface
    assert not [c for c in fake.calls() if "addif" in c]
    assert len(fake.objects()) == 2
    b.remove(VIP)
    assert ["ifconfig", IF, "removeif", "198.18.0.100"] in fake.calls()
    fake.forget_calls()
    b.remove(VIP)  # absent: nothing to run
    assert not [c for c in fake.calls() if "removeif" in c]
    assert not b.present(VIP)


def test_ifconfig_duplicate(fake: Fake) -> None:
    fake.update(dad={"198.18.0.100": "duplicate"})
    b = backend("ifconfig")
    with pytest.raises(BackendError, match=r"duplicate address: another host on the LAN"):
        b.add(VIP)
    assert ["ifconfig", IF, "removeif", "198.18.0.100"] in fake.calls()
    assert list(fake.objects()) == [f"{IF}/v4"]


def test_ifconfig_errors(fake: Fake) -> None:
    vip = Vip(address=VIP.address, interface="e1000g9")
    b = IllumosBackend(vips=[vip], address_tool="ifconfig", tools=TOOLS, timeout=10 * SCALE)
    with pytest.raises(BackendError) as caught:
        b.add(vip)
    assert str(caught.value) == "add 198.18.0.100/24 on e1000g9: interface e1000g9 does not exist"
    fake.update(fail={"ifconfig addif": f"ifconfig: addif: SIOCLIFADDIF: {IF}: permission denied"})
    with pytest.raises(BackendError) as caught:
        backend("ifconfig").add(VIP)
    assert str(caught.value) == (
        f"add 198.18.0.100/24 on {IF}: ifconfig: addif: SIOCLIFADDIF: {IF}: permission denied"
    )


# --- links -------------------------------------------------------------------------------


def test_link_state(fake: Fake) -> None:
    fake.update(links={IF: "up", "net1": "down", "vnic0": "unknown"})
    b = backend()
    assert b.link_state(IF) == LinkState(exists=True, up=True, carrier=True)
    assert b.link_state("net1") == LinkState(exists=True, up=True, carrier=False)
    assert b.link_state("vnic0") == LinkState(exists=True, up=True, carrier=True)
    assert b.link_state("net9") == LinkState(exists=False, up=False, carrier=False)
    assert ["dladm", "show-link", "-p", "-o", "link,state", "net9"] in fake.calls()


def test_link_state_error(fake: Fake) -> None:
    b = IllumosBackend(tools={"dladm": "/nonexistent/dladm"})
    with pytest.raises(BackendError, match=r"^link on e1000g0: dladm not found at /nonexistent/"):
        b.link_state(IF)


# --- the config ---------------------------------------------------------------------------

_CONFIG = """
node = "n1"
primary = "n1"
listen = "198.18.0.1:7411"
[peer]
name = "n2"
address = "198.18.0.2:7411"
[tls]
ca = "ca.pem"
cert = "n1.pem"
key = "n1.key"
[[vip]]
address = "{vip}"
interface = "e1000g0"
[backend]
{backend}
"""


def _load(tmp_path: Path, backend: str, vip: str = "198.18.0.100/24") -> config.Config:
    path = tmp_path / "havip.toml"
    path.write_text(_CONFIG.format(backend=backend, vip=vip))
    return load_config(path)


def test_auto_picks_illumos_on_sunos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: "sunos5")
    cfg = _load(tmp_path, 'type = "auto"')
    assert (cfg.backend, cfg.address_tool) == ("illumos", "ipadm")
    made = make_backend(cfg)
    assert isinstance(made, IllumosBackend)
    assert made.address_object(cfg.vips[0]) == "e1000g0/havip0"
    cfg = _load(tmp_path, 'address_tool = "ifconfig"')
    assert (cfg.backend, cfg.address_tool) == ("illumos", "ifconfig")
    made = make_backend(cfg)
    assert isinstance(made, IllumosBackend) and made.address_tool == "ifconfig"


@pytest.mark.parametrize(
    ("platform", "backend", "vip", "error"),
    [
        ("sunos5", 'address_tool = "route"', "198.18.0.100/24",
         'backend.address_tool: must be "ipadm" or "ifconfig", got "route"'),
        ("linux", 'address_tool = "ipadm"', "198.18.0.100/24",
         'backend.address_tool: only meaningful with type = "illumos"; remove it'),
        ("sunos5", 'type = "illumos"', "2001:2::100/64",
         "vip[0].address: IPv6 VIPs need the Linux backend for now"),
        ("linux", 'type = "illumos"', "198.18.0.100/24",
         'backend.type: "illumos" needs illumos (this is linux); try "dry-run"'),
        ("sunos5", 'type = "linux"', "198.18.0.100/24",
         'backend.type: "linux" needs Linux (this is sunos5); try "dry-run"'),
        ("sunos5", 'lan_dir = "/tmp/lan"', "198.18.0.100/24",
         'backend.lan_dir: only meaningful with type = "dry-run"; remove it'),
    ],
)  # fmt: skip
def test_config_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    platform: str,
    backend: str,
    vip: str,
    error: str,
) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: platform)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, backend, vip)
    assert caught.value.errors == [f"{tmp_path / 'havip.toml'}: {error}"]


def test_check_environment(fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from havip.backends.illumos import environment_problems

    monkeypatch.setattr(config, "_current_platform", lambda: "sunos5")
    cfg = _load(tmp_path, 'type = "illumos"')
    b = IllumosBackend(vips=cfg.vips, tools=TOOLS, libdlpi=str(tmp_path / "no-libdlpi.so"))
    problems = environment_problems(cfg, b)
    assert [key for key, _ in problems] == ["backend.type"]
    assert problems[0][1].startswith(f"cannot load libdlpi ({tmp_path / 'no-libdlpi.so'}): ")
    fake.update(addrs=[{"obj": f"{IF}/v4", "lif": IF, "addr": "198.18.5.1/24", "state": "ok"}])
    problems = environment_problems(cfg, b)
    assert problems[1] == (
        "vip[0].address",
        "198.18.0.100 lies in no subnet configured on e1000g0 (it has 198.18.5.1/24), so "
        "clients there could not reach it; fix the VIP or the interface, or set "
        "allow_offlink = true in this [[vip]] if it is routed",
    )
    fake.update(links={})
    problems = environment_problems(cfg, b)
    assert problems[1] == ("vip[0].interface", 'no interface "e1000g0" on this host')
    gone = IllumosBackend(vips=cfg.vips, tools={"ipadm": "/nonexistent", "dladm": TOOLS["dladm"]})
    assert environment_problems(cfg, gone) == [
        ("backend.address_tool", "ipadm at /nonexistent is missing or not executable")
    ]
    nowhere = IllumosBackend(vips=cfg.vips)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("havip.backends.illumos.TOOL_DIRS", ())
    assert environment_problems(cfg, nowhere) == [
        ("backend.address_tool", "ipadm not found (looked in PATH)"),
        ("backend.type", "dladm not found (looked in PATH)"),
    ]


# --- the default witness: the default route's gateway -------------------------------------------

ROUTE_GET = """   route to: default
destination: default
       mask: default
    gateway: 198.18.0.254
  interface: e1000g0
      flags: <UP,GATEWAY,DONE,STATIC>
"""


@pytest.mark.parametrize(
    ("text", "interface", "expected"),
    [
        (ROUTE_GET, IF, "198.18.0.254"),
        (ROUTE_GET, "e1000g1", None),  # the default route leaves through another link
        (ROUTE_GET.replace("  interface: e1000g0\n", ""), IF, "198.18.0.254"),
        ("route: writing to routing socket: not in table\n", IF, None),
        (ROUTE_GET.replace("198.18.0.254", "gw.example"), IF, None),
        ("", IF, None),
    ],
)
def test_parse_route_get(text: str, interface: str, expected: str | None) -> None:
    from havip.backends.illumos import parse_route_get

    got = parse_route_get(text, interface)
    assert got == (None if expected is None else ipaddress.IPv4Address(expected))


def test_default_gateway_asks_route(fake: Fake) -> None:
    fake.update(default={"gateway": "198.18.0.254", "interface": IF})
    assert backend().default_gateway(IF) == ipaddress.IPv4Address("198.18.0.254")
    assert fake.calls()[-1] == ["route", "-n", "get", "default"]
    fake.update(default=None)
    assert backend().default_gateway(IF) is None


def test_the_default_witness_on_illumos_is_the_default_gateway(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `witnesses`, an illumos node asks its default gateway (issue 5's rule), like a
    Linux one; with no default route through the VIP's link it warns, never silently."""
    from havip.config import witness_plan

    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(config, "_current_platform", lambda: "sunos5")
    cfg = _load(tmp_path, 'type = "illumos"')
    fake.update(default={"gateway": "198.18.0.254", "interface": IF})
    assert witness_plan(cfg) == ({IF: (ipaddress.IPv4Address("198.18.0.254"),)}, [])
    fake.update(default=None)
    plan, warnings = witness_plan(cfg)
    assert plan == {IF: ()} and len(warnings) == 1
    assert "no default gateway through it" in warnings[0]
