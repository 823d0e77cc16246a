"""The libdlpi binding end to end without illumos: a stand-in libdlpi built here with gcc
(tests/fakes/illumos/fakedlpi.c, the libdlpi.h API over Linux AF_PACKET) loaded by the real
ctypes binding, driving the illumos backend's ARP between two network namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from conftest import in_ci
from vethpair import VethPair, ip, veth_pair

from havip.backends.arp import gratuitous_frames, mac_bytes
from havip.backends.dlpi import DLPI_ENOLINK, DlpiError, Libdlpi
from havip.config import Vip

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
ROOT = Path(__file__).resolve().parents[1]
FAKES = ROOT / "tests" / "fakes" / "illumos"
VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="v0")
WITNESS = IPv4Address("198.18.0.2")


@pytest.fixture(scope="module")
def libdlpi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in libdlpi, compiled for this run."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if in_ci():
            pytest.fail("gcc is needed to build the stand-in libdlpi, and CI must run this")
        pytest.skip("gcc is not installed: cannot build the stand-in libdlpi")
    out = tmp_path_factory.mktemp("dlpi") / "libfakedlpi.so"
    proc = subprocess.run(
        [gcc, "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(out), str(FAKES / "fakedlpi.c")],
        capture_output=True,
        text=True,
        timeout=120 * SCALE,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_binding_loads_and_reports_errors(libdlpi: Path) -> None:
    lib = Libdlpi(str(libdlpi))
    with pytest.raises(DlpiError) as caught:
        lib.open("nosuchlink0")
    assert caught.value.code == DLPI_ENOLINK
    assert str(caught.value) == "dlpi_open: DLPI link does not exist"
    with pytest.raises(OSError):
        Libdlpi(str(libdlpi.parent / "missing.so"))


@pytest.fixture
def lab() -> Iterator[VethPair]:
    with veth_pair("hvdl") as pair:
        yield pair


_PRELUDE = """
import ipaddress, json, select, sys, time
from havip.backends.base import BackendError
from havip.backends.illumos import IllumosBackend
from havip.config import Vip
vip = Vip(address=ipaddress.ip_interface("198.18.0.100/24"), interface="v0")
tools = {t: f"{sys.argv[2]}/{t}" for t in ("ipadm", "ifconfig", "dladm")}
backend = IllumosBackend(vips=[vip], tools=tools, libdlpi=sys.argv[1])
out = {}
def heard_until(sock, want, wait):
    found = []
    deadline = time.monotonic() + wait
    while len(found) < want and (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            found += [[h.kind, str(h.ip), h.mac] for h in sock.read()]
    return found
"""


def _child(ns: str, body: str, libdlpi: Path, fake_dir: Path) -> subprocess.Popen[str]:
    code = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out), flush=True)\n"
    env = os.environ | {"HAVIP_FAKE_ILLUMOS": str(fake_dir), "HAVIP_TEST_TIME_SCALE": str(SCALE)}
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code, str(libdlpi), str(FAKES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=60 * SCALE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    """Fake ipadm state: namespace a's own address, for the witness request's source."""
    state = {
        "links": {"v0": "up"},
        "addrs": [{"obj": "v0/v4", "lif": "v0", "addr": "198.18.0.1/24", "state": "ok"}],
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    return tmp_path


_CAPTURE = """
import json, select, socket, sys, time
dev, want, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((dev, 0x0806))
print("ready", flush=True)
frames = []
deadline = time.monotonic() + wait
while len(frames) < want and (left := deadline - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        frame, addr = s.recvfrom(2048)
        if addr[2] != socket.PACKET_OUTGOING and frame[28:32] == bytes([198, 18, 0, 100]):
            frames.append(frame.hex())
print(json.dumps(frames), flush=True)
"""


@pytest.mark.netns
def test_announce_is_seen(lab: VethPair, libdlpi: Path, fake_dir: Path) -> None:
    capture = subprocess.Popen(
        ["ip", "netns", "exec", lab.b, sys.executable, "-c", _CAPTURE, "v1", "6", str(10 * SCALE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stdout is not None
        assert capture.stdout.readline().strip() == "ready"
        out = _finish(_child(lab.a, 'out["sent"] = backend.announce(vip)', libdlpi, fake_dir))
        frames, _ = capture.communicate(timeout=30 * SCALE)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    assert out == {"sent": 6}
    assert isinstance(VIP.ip, IPv4Address)
    expected = gratuitous_frames(mac_bytes(lab.a_mac), VIP.ip) * 3
    # The NIC pads short frames to 60 bytes; compare the ARP part.
    assert [bytes.fromhex(f)[:42] for f in json.loads(frames)] == expected


@pytest.mark.netns
def test_probe_answered_by_holder(lab: VethPair, libdlpi: Path, fake_dir: Path) -> None:
    body = f"""
    sock = backend.open_lan("v0", [vip.ip], [])
    out["mac"] = sock.mac.hex(":")
    sock.send_probe(vip.ip)
    out["heard"] = heard_until(sock, 1, {2 * SCALE})
    sock.close()
    """
    out = _finish(_child(lab.a, body, libdlpi, fake_dir))
    assert out == {"mac": lab.a_mac, "heard": []}  # nobody holds it yet
    ip("-n", lab.b, "addr", "add", "198.18.0.100/24", "dev", "v1")
    body = body.replace(f"{2 * SCALE}", f"{10 * SCALE}")
    out = _finish(_child(lab.a, body, libdlpi, fake_dir))
    assert out["heard"] == [["claim", "198.18.0.100", lab.b_mac]]


@pytest.mark.netns
def test_witness_request_answered(lab: VethPair, libdlpi: Path, fake_dir: Path) -> None:
    body = f"""
    sock = backend.open_lan("v0", [vip.ip], [ipaddress.ip_address("198.18.0.2")])
    out["sources"] = {{str(k): str(v) for k, v in sock._sources.items()}}
    sock.send_request(ipaddress.ip_address("198.18.0.2"))
    out["heard"] = heard_until(sock, 1, {10 * SCALE})
    sock.close()
    """
    out = _finish(_child(lab.a, body, libdlpi, fake_dir))
    assert out == {
        "sources": {"198.18.0.2": "198.18.0.1"},  # our address there, from (fake) ipadm
        "heard": [["witness", "198.18.0.2", lab.b_mac]],
    }
    neigh = json.loads(ip("-n", lab.b, "-j", "neigh", "show", "198.18.0.1", "dev", "v1"))
    assert [entry["lladdr"] for entry in neigh] == [lab.a_mac]  # asked from 198.18.0.1


_SEND = """
import socket, sys
from havip.backends.arp import OP_REQUEST, ZERO_MAC, build_arp, gratuitous_frames, mac_bytes
from ipaddress import IPv4Address
mac = mac_bytes(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind(("v1", 0x0806))
# Unrelated ARP first (who has 198.18.0.77?), then a claim on the VIP.
s.send(build_arp(op=OP_REQUEST, sender_mac=mac, sender_ip=IPv4Address("198.18.0.2"),
                 target_mac=ZERO_MAC, target_ip=IPv4Address("198.18.0.77")))
s.send(gratuitous_frames(mac, IPv4Address("198.18.0.100"))[0])
"""


@pytest.mark.netns
def test_claim_heard_and_other_arp_ignored(lab: VethPair, libdlpi: Path, fake_dir: Path) -> None:
    body = f"""
    sock = backend.open_lan("v0", [vip.ip], [])
    print("ready", flush=True)
    out["heard"] = heard_until(sock, 1, {10 * SCALE})
    time.sleep(0.2)  # let a frame that should have been dropped arrive anyway
    out["heard"] += [[h.kind, str(h.ip), h.mac] for h in sock.read()]
    out["frames"] = sock.frames
    sock.close()
    """
    child = _child(lab.a, body, libdlpi, fake_dir)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        subprocess.run(
            ["ip", "netns", "exec", lab.b, sys.executable, "-c", _SEND, lab.b_mac],
            check=True,
            cwd=ROOT,
            timeout=30 * SCALE,
        )
    finally:
        out = _finish(child)
    assert out["heard"] == [["claim", "198.18.0.100", lab.b_mac]]
    assert out["frames"] >= 2  # both frames woke the reader: no kernel filter on illumos


@pytest.mark.netns
def test_missing_interface(lab: VethPair, libdlpi: Path, fake_dir: Path) -> None:
    body = """
    for name, call in (
        ("announce", lambda: backend.announce(Vip(address=vip.address, interface="eth9"))),
        ("listen", lambda: backend.open_lan("eth9", [vip.ip], [])),
    ):
        try:
            call()
        except BackendError as exc:
            out[name] = str(exc)
    """
    out = _finish(_child(lab.a, body, libdlpi, fake_dir))
    assert out == {
        "announce": "announce 198.18.0.100/24 on eth9: interface eth9 does not exist",
        "listen": "listen on eth9: interface eth9 does not exist",
    }
