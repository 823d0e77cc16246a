"""Backends: dry-run semantics, and the Linux backend on a real veth pair between two
network namespaces this test creates (and always removes)."""

from __future__ import annotations

import ipaddress
import json
import os
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from vethpair import VethPair, ip, veth_pair

from havip.backends import BackendError, BackendOp, make_backend
from havip.backends.arp import gratuitous_frames, mac_bytes, mac_text
from havip.backends.base import Heard, HeardKind, IPAddress, LinkState
from havip.backends.dryrun import DryRunBackend, dry_run_mac
from havip.config import Config, Timing, TlsFiles, Vip

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
ROOT = Path(__file__).resolve().parents[1]
VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="v0")
OTHER_VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.101/24"), interface="v0")


# --- dry-run ------------------------------------------------------------------------------


def _heard_by(backend: DryRunBackend, ip: IPAddress) -> list[Heard]:
    """What a dry-run probe for `ip` from `backend` hears."""
    sock = backend.open_lan("v0", [ip], [])
    try:
        sock.send_probe(ip)
        return sock.read()
    finally:
        sock.close()


def _claim(node: str, ip: IPAddress = VIP.ip) -> Heard:
    return Heard(kind=HeardKind.CLAIM, ip=ip, mac=mac_text(dry_run_mac(node)))


def test_dry_run_in_memory() -> None:
    backend = DryRunBackend("n1", None)
    assert backend.name == "dry-run"
    assert not backend.present(VIP)
    backend.add(VIP)
    backend.add(VIP)
    assert backend.present(VIP)
    assert not backend.present(OTHER_VIP)
    assert _heard_by(backend, VIP.ip) == []
    assert backend.announce(VIP) == 0
    backend.remove(VIP)
    backend.remove(VIP)
    assert not backend.present(VIP)
    assert backend.link_state("v0") == LinkState(exists=True, up=True, carrier=True)
    backend.close()


def test_dry_run_shared_lan(tmp_path: Path) -> None:
    lan = tmp_path / "lan"
    n1, n2 = DryRunBackend("n1", lan), DryRunBackend("n2", lan)
    assert _heard_by(n2, VIP.ip) == []  # nothing there yet, not even the folder

    n1.add(VIP)
    n1.add(VIP)
    assert (lan / "198.18.0.100" / "n1").is_file()
    assert n1.present(VIP)
    assert not n2.present(VIP)
    assert _heard_by(n2, VIP.ip) == [_claim("n1")]
    assert _heard_by(n1, VIP.ip) == []  # our own claim is not an answer
    assert _heard_by(n2, OTHER_VIP.ip) == []

    n1.remove(VIP)
    n1.remove(VIP)
    assert not n1.present(VIP)
    assert _heard_by(n2, VIP.ip) == []
    assert n1.announce(VIP) == 0


def test_dry_run_both_claim(tmp_path: Path) -> None:
    n1, n2 = DryRunBackend("n1", tmp_path), DryRunBackend("n2", tmp_path)
    n1.add(VIP)
    n2.add(VIP)
    assert _heard_by(n1, VIP.ip) == [_claim("n2")]
    assert _heard_by(n2, VIP.ip) == [_claim("n1")]


def test_dry_run_lan_socket_wakes_and_drains(tmp_path: Path) -> None:
    n1, n2 = DryRunBackend("n1", tmp_path), DryRunBackend("n2", tmp_path)
    n2.add(VIP)
    sock = n1.open_lan("v0", [VIP.ip], [IPv4Address("198.18.0.254")])
    try:
        assert sock.mac == dry_run_mac("n1") != dry_run_mac("n2")
        assert sock.mac[0] == 0x02  # locally administered, unicast
        assert not select.select([sock], [], [], 0)[0]
        sock.send_request(IPv4Address("198.18.0.254"))  # no .witnesses file: nobody answers
        assert not select.select([sock], [], [], 0)[0]
        for _ in range(300):
            sock.send_probe(VIP.ip)
        assert select.select([sock], [], [], 0)[0]
        first = sock.read()
        assert first == [_claim("n2")] * 256  # bounded per read, like the packet socket
        assert select.select([sock], [], [], 0)[0]  # the rest still wakes the reader
        assert sock.read() == [_claim("n2")] * 44
        assert not select.select([sock], [], [], 0)[0]
        (tmp_path / ".witnesses").touch()
        sock.send_request(IPv4Address("198.18.0.254"))
        heard = sock.read()
        assert [(h.kind, h.ip) for h in heard] == [(HeardKind.WITNESS, IPv4Address("198.18.0.254"))]
    finally:
        sock.close()
    monitor = n1.open_link_monitor()
    try:
        assert not select.select([monitor], [], [], 0)[0]
        assert monitor.read() == []
    finally:
        monitor.close()


def test_dry_run_probe_error_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "198.18.0.100").write_text("a file where a folder should be\n")
    sock = DryRunBackend("n1", tmp_path).open_lan("v0", [VIP.ip], [])
    try:
        with pytest.raises(BackendError, match=r"^probe on v0: cannot list .*198\.18\.0\.100"):
            sock.send_probe(VIP.ip)
    finally:
        sock.close()


def test_dry_run_write_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "198.18.0.100").write_text("a file where a folder should be\n")
    with pytest.raises(BackendError) as caught:
        DryRunBackend("n1", tmp_path).add(VIP)
    message = str(caught.value)
    assert message.startswith("add 198.18.0.100/24 on v0: cannot write ")
    assert str(tmp_path / "198.18.0.100" / "n1") in message
    assert caught.value.op is BackendOp.ADD


@pytest.mark.parametrize("node", ["", ".", "..", "a/b", ".hidden"])
def test_dry_run_rejects_unsafe_node(node: str) -> None:
    with pytest.raises(ValueError, match="cannot be a file name"):
        DryRunBackend(node, None)


def _config(backend: str, lan_dir: Path | None) -> Config:
    return Config(
        path=Path("havip.toml"),
        node="n1",
        primary="n1",
        preempt=False,
        listen=("127.0.0.1", 7411),
        peer_name="n2",
        peer_address=("127.0.0.1", 7412),
        tls=TlsFiles(ca=Path("ca.pem"), cert=Path("n1.pem"), key=Path("n1.key")),
        timing=Timing(),
        vips=(VIP,),
        backend=backend,
        lan_dir=lan_dir,
        metrics_listen=None,
        state_dir=Path("state"),
    )


def test_make_backend(tmp_path: Path) -> None:
    dry = make_backend(_config("dry-run", tmp_path))
    assert isinstance(dry, DryRunBackend)
    assert (dry.node, dry.lan_dir) == ("n1", tmp_path)
    if sys.platform == "linux":
        linux = make_backend(_config("linux", None))
        assert linux.name == "linux"
        linux.close()
    with pytest.raises(ValueError, match=r"havip\.toml: backend: unknown backend 'bsd'"):
        make_backend(_config("bsd", None))


def test_label_fits_the_kernel_limit() -> None:
    from havip.backends.linux import address_label

    assert address_label("eth0") == "eth0:havip"
    assert address_label("enp0s31f6") == "enp0s31f6:havip"  # 15 bytes exactly
    assert address_label("enp0s31f6x") == "enp0s31f6x:hv"
    assert address_label("abcdefghijkl") == "abcdefghijkl:hv"
    assert address_label("abcdefghijklm") == "abcdefghijklm"


# --- Linux, in network namespaces ----------------------------------------------------------


@pytest.fixture
def lab() -> Iterator[VethPair]:
    # Only @pytest.mark.netns tests use this: conftest's autouse gate (which pytest runs first)
    # has already skipped them, or failed them under CI, where namespaces do not work.
    with veth_pair("hvtb") as pair:
        yield pair


def _exec_in(ns: str, code: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code]


_PRELUDE = """
import asyncio, ipaddress, json, sys
from havip.backends.base import BackendError
from havip.backends.linux import LinuxBackend
from havip.config import Vip
vip = Vip(address=ipaddress.ip_interface(sys.argv[1]), interface=sys.argv[2])
backend = LinuxBackend()
out = {}
"""


def _in_ns(ns: str, body: str, vip: Vip = VIP) -> dict[str, Any]:
    """Run `body` (after a prelude defining vip, backend, out) in namespace `ns`: pyroute2 and
    packet sockets work in the namespace of the thread that opens them, so a child process
    is the clean way in. Returns the `out` dict."""
    code = _PRELUDE + textwrap.dedent(body) + "\nbackend.close()\nprint(json.dumps(out))\n"
    proc = subprocess.run(
        [*_exec_in(ns, code), str(vip), vip.interface],
        capture_output=True,
        text=True,
        timeout=60 * SCALE,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"in {ns}:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def _addresses(ns: str, dev: str) -> dict[str, str]:
    """IPv4 addresses on `dev` in `ns`, as {"198.18.0.1/24": label}."""
    links = json.loads(ip("-n", ns, "-j", "-4", "addr", "show", "dev", dev))
    return {f"{a['local']}/{a['prefixlen']}": a.get("label", "") for a in links[0]["addr_info"]}


@pytest.mark.netns
def test_linux_add_remove(lab: VethPair) -> None:
    out = _in_ns(
        lab.a,
        """
        out["before"] = backend.present(vip)
        backend.add(vip)
        backend.add(vip)
        out["after_add"] = backend.present(vip)
        """,
    )
    assert out == {"before": False, "after_add": True}
    # Added once, labelled so operators see it is havip's; the host's own address untouched.
    assert _addresses(lab.a, "v0") == {"198.18.0.1/24": "v0", "198.18.0.100/24": "v0:havip"}

    out = _in_ns(
        lab.a,
        """
        backend.remove(vip)
        backend.remove(vip)
        out["after_remove"] = backend.present(vip)
        """,
    )
    assert out == {"after_remove": False}
    assert _addresses(lab.a, "v0") == {"198.18.0.1/24": "v0"}


@pytest.mark.netns
def test_linux_present_wants_same_prefix(lab: VethPair) -> None:
    ip("-n", lab.a, "addr", "add", "198.18.0.100/32", "dev", "v0")
    out = _in_ns(lab.a, 'out["present"] = backend.present(vip)')
    assert out == {"present": False}


@pytest.mark.netns
def test_linux_short_label_for_long_interface(lab: VethPair) -> None:
    ip("-n", lab.a, "link", "add", "hvlongname01", "type", "veth", "peer", "name", "hvlongname02")
    vip = Vip(address=ipaddress.IPv4Interface("198.18.5.1/24"), interface="hvlongname01")
    out = _in_ns(lab.a, 'backend.add(vip); out["present"] = backend.present(vip)', vip)
    assert out == {"present": True}
    assert _addresses(lab.a, "hvlongname01") == {"198.18.5.1/24": "hvlongname01:hv"}


@pytest.mark.netns
def test_linux_missing_interface(lab: VethPair) -> None:
    vip = Vip(address=VIP.address, interface="eth9")
    out = _in_ns(
        lab.a,
        """
        out["present"] = backend.present(vip)
        out["link"] = backend.link_state(vip.interface)
        out["gateway"] = backend.default_gateway(vip.interface)
        backend.remove(vip)
        for name, call in (
            ("add", lambda: backend.add(vip)),
            ("announce", lambda: backend.announce(vip)),
            ("listen", lambda: backend.open_lan(vip.interface, [vip.ip], [])),
        ):
            try:
                call()
            except BackendError as exc:
                out[name] = str(exc)
        """,
        vip,
    )
    assert out == {
        "present": False,
        "link": [False, False, False],
        "gateway": None,
        "add": "add 198.18.0.100/24 on eth9: interface eth9 does not exist",
        "announce": "announce 198.18.0.100/24 on eth9: interface eth9 does not exist",
        "listen": "listen on eth9: interface eth9 does not exist",
    }


@pytest.mark.netns
def test_linux_threads_and_event_loop(lab: VethPair) -> None:
    out = _in_ns(
        lab.a,
        """
        from concurrent.futures import ThreadPoolExecutor
        def churn(i):
            for _ in range(20):
                backend.add(vip)
                assert backend.present(vip)
            return True
        with ThreadPoolExecutor(8) as pool:
            out["threads"] = all(pool.map(churn, range(8)))
        async def main():
            out["to_thread"] = await asyncio.to_thread(backend.present, vip)
            try:
                backend.present(vip)
            except RuntimeError as exc:
                out["on_loop"] = str(exc)
            backend.close()  # allowed on the loop, as shutdown code does
            await asyncio.to_thread(backend.remove, vip)
            out["reopened"] = await asyncio.to_thread(backend.present, vip)
        asyncio.run(main())
        """,
    )
    assert out == {
        "threads": True,
        "to_thread": True,
        "on_loop": "LinuxBackend blocks: call it through asyncio.to_thread, not on the loop",
        "reopened": False,
    }


_CAPTURE = """
import json, select, socket, sys, time
dev, vip, want, wait = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((dev, 0x0806))
print("ready", flush=True)
frames = []
deadline = time.monotonic() + wait
while len(frames) < want and (left := deadline - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        frame = s.recv(2048)
        if frame[28:32] == vip:  # ARP sender IP
            frames.append(frame.hex())
print(json.dumps(frames), flush=True)
"""


@pytest.mark.netns
def test_linux_announce(lab: VethPair) -> None:
    # A neighbour that still has the VIP at some old MAC: gratuitous ARP must move it to ours
    # (Linux heeds unsolicited ARP only for entries it already has, unless arp_accept is set).
    ip("-n", lab.b, "neigh", "replace", "198.18.0.100", "lladdr", "02:00:00:00:00:99", "dev", "v1")
    ip("-n", lab.b, "neigh", "change", "198.18.0.100", "dev", "v1", "nud", "stale")
    capture = subprocess.Popen(
        [*_exec_in(lab.b, _CAPTURE), "v1", VIP.ip.packed.hex(), "6", str(10 * SCALE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stdout is not None
        assert capture.stdout.readline().strip() == "ready"
        out = _in_ns(lab.a, 'backend.add(vip); out["sent"] = backend.announce(vip)')
        frames, _ = capture.communicate(timeout=30 * SCALE)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    assert out == {"sent": 6}
    assert isinstance(VIP.ip, IPv4Address)
    expected = gratuitous_frames(mac_bytes(lab.a_mac), VIP.ip) * 3
    assert [bytes.fromhex(f) for f in json.loads(frames)] == expected
    neigh = json.loads(ip("-n", lab.b, "-j", "neigh", "show", "198.18.0.100", "dev", "v1"))
    assert [entry["lladdr"] for entry in neigh] == [lab.a_mac]


def test_garp_rounds_value_error() -> None:
    if sys.platform != "linux":
        pytest.skip("Linux backend")
    from havip.backends.linux import LinuxBackend

    with pytest.raises(ValueError, match="garp_rounds"):
        LinuxBackend(garp_rounds=0)


def test_backend_error_is_one_line() -> None:
    err = BackendError(BackendOp.REMOVE, VIP, "netlink: Operation not permitted (errno 1)")
    assert str(err) == "remove 198.18.0.100/24 on v0: netlink: Operation not permitted (errno 1)"
    assert (err.op, err.vip, err.cause) == (
        BackendOp.REMOVE,
        VIP,
        "netlink: Operation not permitted (errno 1)",
    )
    assert err.vip is not None
    assert IPv4Address("198.18.0.100") == err.vip.ip
    whole = BackendError(BackendOp.LISTEN, None, "cannot open packet socket", interface="v0")
    assert str(whole) == "listen on v0: cannot open packet socket"
    assert (whole.vip, whole.interface) == (None, "v0")
    assert str(BackendError(BackendOp.LINK, None, "no netlink")) == "link: no netlink"


# --- IPv6 on the veth pair --------------------------------------------------------------------

VIP6 = Vip(address=ipaddress.IPv6Interface("2001:2:0:1::100/64"), interface="v0")
A6, B6, WITNESS6 = "2001:2:0:1::1", "2001:2:0:1::2", "2001:2:0:1::fe"
A_LL, B_LL = "fe80::a", "fe80::b"


def _ipv6(pair: VethPair) -> None:
    """Give both ends IPv6: a global address each and a fixed link-local one, all nodad, so
    nothing waits for the kernel's DAD (the kernel's own link-local addresses are dropped)."""
    for ns, dev, address, link_local in ((pair.a, "v0", A6, A_LL), (pair.b, "v1", B6, B_LL)):
        ip("-n", ns, "-6", "addr", "flush", "dev", dev, "scope", "link")
        ip("-n", ns, "addr", "add", f"{link_local}/64", "dev", dev, "nodad")
        ip("-n", ns, "addr", "add", f"{address}/64", "dev", dev, "nodad")


def _addresses6(ns: str, dev: str) -> dict[str, list[str]]:
    """IPv6 addresses on `dev` in `ns`, as {"2001:2:0:1::1/64": [flags]}."""
    links = json.loads(ip("-n", ns, "-j", "-6", "addr", "show", "dev", dev))
    return {
        f"{a['local']}/{a['prefixlen']}": sorted(
            k for k in ("nodad", "tentative", "dadfailed") if a.get(k)
        )
        for a in links[0]["addr_info"]
    }


@pytest.mark.netns
def test_linux_ipv6_add_is_usable_at_once_and_removes(lab: VethPair) -> None:
    _ipv6(lab)
    out = _in_ns(
        lab.a,
        """
        import socket
        out["before"] = backend.present(vip)
        backend.add(vip)
        backend.add(vip)
        out["after_add"] = backend.present(vip)
        # Binding to a tentative address fails (EADDRNOTAVAIL): nodad makes it usable at once.
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((str(vip.ip), 0))
            out["bound"] = True
        """,
        VIP6,
    )
    assert out == {"before": False, "after_add": True, "bound": True}
    assert _addresses6(lab.a, "v0")["2001:2:0:1::100/64"] == ["nodad"]  # not tentative
    out = _in_ns(
        lab.a, 'backend.remove(vip); backend.remove(vip); out["after"] = backend.present(vip)', VIP6
    )
    assert out == {"after": False}
    assert "2001:2:0:1::100/64" not in _addresses6(lab.a, "v0")
    assert f"{A6}/64" in _addresses6(lab.a, "v0")  # the host's own address untouched


@pytest.mark.netns
def test_linux_ipv6_present_wants_same_prefix(lab: VethPair) -> None:
    _ipv6(lab)
    ip("-n", lab.a, "addr", "add", "2001:2:0:1::100/128", "dev", "v0", "nodad")
    out = _in_ns(lab.a, 'out["present"] = backend.present(vip)', VIP6)
    assert out == {"present": False}
    ip("-n", lab.a, "addr", "del", "2001:2:0:1::100/128", "dev", "v0")
    ip("-n", lab.a, "addr", "add", "2001:2:0:1:0:0:0:100/64", "dev", "v0", "nodad")
    out = _in_ns(lab.a, 'out["present"] = backend.present(vip)', VIP6)
    assert out == {"present": True}


_CAPTURE6 = """
import json, select, socket, sys, time
dev, target = sys.argv[1], bytes.fromhex(sys.argv[2])
want, wait = int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((dev, 0x86DD))
print("ready", flush=True)
frames = []
deadline = time.monotonic() + wait
while len(frames) < want and (left := deadline - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        frame = s.recv(2048)
        if frame[20] == 58 and frame[54] == 136 and frame[62:78] == target:  # an NA for it
            frames.append(frame.hex())
print(json.dumps(frames), flush=True)
"""


@pytest.mark.netns
def test_linux_ipv6_announce(lab: VethPair) -> None:
    from havip.backends.nd import announce_frame

    _ipv6(lab)
    # A neighbour that still has the VIP at some old MAC: the unsolicited NA with the Override
    # flag must move it to ours (RFC 4861 7.2.5).
    ip("-n", lab.b, "neigh", "replace", "2001:2:0:1::100", "lladdr", "02:00:00:00:00:99", "dev",
       "v1", "nud", "stale")  # fmt: skip
    capture = subprocess.Popen(
        [*_exec_in(lab.b, _CAPTURE6), "v1", VIP6.ip.packed.hex(), "3", str(10 * SCALE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stdout is not None
        assert capture.stdout.readline().strip() == "ready"
        out = _in_ns(lab.a, 'backend.add(vip); out["sent"] = backend.announce(vip)', VIP6)
        frames, _ = capture.communicate(timeout=30 * SCALE)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    assert out == {"sent": 3}  # garp_rounds rounds of one NA each
    mac = mac_bytes(lab.a_mac)
    assert isinstance(VIP6.ip, ipaddress.IPv6Address)
    expected = announce_frame(mac, VIP6.ip, ipaddress.IPv6Address(A_LL))  # from our link-local
    assert [bytes.fromhex(f) for f in json.loads(frames)] == [expected] * 3
    neigh = json.loads(ip("-n", lab.b, "-j", "neigh", "show", "2001:2:0:1::100", "dev", "v1"))
    assert [entry["lladdr"] for entry in neigh] == [lab.a_mac]


_LISTEN = """
import select, time
from ipaddress import ip_address
vips = [ip_address(a) for a in {vips!r}]
witnesses = [ip_address(a) for a in {witnesses!r}]
sock = backend.open_lan(vip.interface, vips, witnesses)
heard = []
try:
    for ask in {asks!r}:
        kind, address = ask.split(" ")
        (sock.send_probe if kind == "probe" else sock.send_request)(ip_address(address))
    deadline = time.monotonic() + {wait!r}
    while len(heard) < {want!r} and (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            heard += [[h.kind, str(h.ip), h.mac] for h in sock.read()]
finally:
    sock.close()
out["heard"] = heard
"""


def _listen(
    pair: VethPair,
    *,
    vips: list[str],
    witnesses: list[str] = [],  # noqa: B006 (never mutated)
    asks: list[str],
    want: int,
) -> list[list[str]]:
    body = _LISTEN.format(vips=vips, witnesses=witnesses, asks=asks, want=want, wait=5 * SCALE)
    heard: list[list[str]] = _in_ns(pair.a, body, VIP6)["heard"]
    return heard


@pytest.mark.netns
def test_linux_ipv6_probe_answered_by_the_holder(lab: VethPair) -> None:
    _ipv6(lab)
    vips = [str(VIP6.ip)]
    # Nobody holds it: silence (the filter lets nothing else through, our own frames included).
    assert _listen(lab, vips=vips, asks=[f"probe {VIP6.ip}"], want=1) == []
    ip("-n", lab.b, "addr", "add", str(VIP6.address), "dev", "v1", "nodad")
    heard = _listen(lab, vips=vips, asks=[f"probe {VIP6.ip}"], want=1)
    # b's kernel answers our DAD-style probe (so its checksum is right) with an NA to all-nodes.
    assert heard == [["claim", str(VIP6.ip), lab.b_mac]]


@pytest.mark.netns
def test_linux_ipv6_witness_requests_answered(lab: VethPair) -> None:
    _ipv6(lab)
    ip("-n", lab.b, "addr", "add", f"{WITNESS6}/64", "dev", "v1", "nodad")
    witnesses = [WITNESS6, B_LL, "198.18.0.2"]  # global, link-local and IPv4, on one socket
    heard = _listen(
        lab,
        vips=[str(VIP6.ip)],
        witnesses=witnesses,
        asks=[f"request {w}" for w in witnesses],
        want=3,
    )
    assert sorted(map(tuple, heard)) == sorted(("witness", w, lab.b_mac) for w in witnesses)


@pytest.mark.netns
def test_linux_ipv6_default_gateway_and_addresses(lab: VethPair) -> None:
    _ipv6(lab)
    ip("-n", lab.a, "-6", "route", "add", "default", "via", B_LL, "dev", "v0")
    out = _in_ns(
        lab.a,
        """
        out["gateway6"] = str(backend.default_gateway6("v0"))
        out["gateway4"] = backend.default_gateway("v0")
        out["addresses6"] = sorted(str(a) for a in backend.addresses6("v0"))
        out["none"] = [backend.default_gateway6("eth9"), backend.addresses6("eth9")]
        """,
        VIP6,
    )
    assert out == {
        "gateway6": B_LL,
        "gateway4": None,
        "addresses6": sorted([f"{A6}/64", f"{A_LL}/64"]),
        "none": [None, []],
    }


def test_dry_run_ipv6(tmp_path: Path) -> None:
    n1, n2 = DryRunBackend("n1", tmp_path), DryRunBackend("n2", tmp_path)
    n1.add(VIP6)
    assert (tmp_path / "v6-2001-2-0-1--100" / "n1").is_file()  # no ':' in the file name
    assert n1.present(VIP6) and not n2.present(VIP6)
    assert not n1.present(VIP) and not (tmp_path / "198.18.0.100").exists()
    assert _heard_by(n2, VIP6.ip) == [_claim("n1", VIP6.ip)]
    sock = n2.open_lan("v0", [VIP6.ip], [ipaddress.IPv6Address("fe80::fe")])
    try:
        (tmp_path / ".witnesses").touch()
        sock.send_request(ipaddress.IPv6Address("fe80::fe"))
        heard = sock.read()
        assert [(h.kind, str(h.ip)) for h in heard] == [(HeardKind.WITNESS, "fe80::fe")]
    finally:
        sock.close()
    n1.remove(VIP6)
    assert not n1.present(VIP6)
    assert _heard_by(n2, VIP6.ip) == []


_RIVAL = """
import socket, sys, time
from ipaddress import IPv6Address
from havip.backends.nd import probe_frame6
dev, vip, mac = sys.argv[1], IPv6Address(sys.argv[2]), bytes.fromhex(sys.argv[3])
count = int(sys.argv[4])
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
    s.bind((dev, 0x86DD))
    for _ in range(count):
        s.send(probe_frame6(mac, vip))
        time.sleep(0.05)
"""


@pytest.mark.netns
def test_linux_ipv6_rival_probe_is_heard_through_the_multicast_filter(lab: VethPair) -> None:
    _ipv6(lab)
    argv = [*_exec_in(lab.b, _RIVAL), "v1", str(VIP6.ip), lab.b_mac.replace(":", ""), "100"]
    rival = subprocess.Popen(argv, cwd=ROOT)
    try:
        out = _in_ns(
            lab.a,
            """
            import select, time
            sock = backend.open_lan(vip.interface, [vip.ip], [])
            try:
                with open("/proc/net/dev_mcast") as table:
                    # index, name, users, global use, address
                    out["joined"] = [l.split()[4] for l in table if l.split()[1] == "v0"]
                heard = []
                deadline = time.monotonic() + 5
                while not heard and (left := deadline - time.monotonic()) > 0:
                    if select.select([sock], [], [], left)[0]:
                        heard += [[h.kind, str(h.ip), h.mac] for h in sock.read()]
                out["heard"] = heard[:1]
            finally:
                sock.close()
            """,
            VIP6,
        )
    finally:
        rival.kill()
        rival.wait()
    # The VIP's solicited-node MAC is let through the NIC while the socket is open...
    assert "3333ff000100" in out["joined"]
    # ... so another host's DAD for the VIP (a rival wanting it) is heard.
    assert out["heard"] == [["probe", str(VIP6.ip), lab.b_mac]]
