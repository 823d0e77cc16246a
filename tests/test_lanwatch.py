"""LanWatch: probes, witnesses, claims and link state, on the dry-run backend (fast) and on a
real namespace LAN with the Linux backend (BPF filter, netlink link events)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from vethpair import VethPair, ip, veth_pair

from havip.backends.arp import mac_text
from havip.backends.base import BackendError, BackendOp, Heard, HeardKind, IPAddress, LinkState
from havip.backends.dryrun import DryRunBackend, DryRunLanSocket, dry_run_mac
from havip.config import Vip
from havip.shell.lanwatch import CLAIM_REPEAT, LanWatch, ProbeOutcome

ROOT = Path(__file__).resolve().parents[1]
VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="v0")
WITNESS = IPv4Address("198.18.0.2")
UP = LinkState(exists=True, up=True, carrier=True)
N2_MAC = mac_text(dry_run_mac("n2"))


@dataclass
class Seen:
    claims: list[tuple[Vip, str]]
    links: list[tuple[str, LinkState]]


def _watch(
    backend: Any, witnesses: Sequence[IPAddress] = (), vips: Sequence[Vip] = (VIP,)
) -> tuple[LanWatch, Seen]:
    seen = Seen(claims=[], links=[])
    watch = LanWatch(
        backend,
        vips,
        {"v0": list(witnesses)} if witnesses else {},
        on_claim=lambda vip, mac: seen.claims.append((vip, mac)),
        on_link=lambda name, state: seen.links.append((name, state)),
    )
    return watch, seen


async def _until(predicate: Any, timeout: float) -> None:
    """Wait (bounded) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# --- dry-run ------------------------------------------------------------------------------


def test_dry_run_probe_answered_and_silent(tmp_path: Path, time_scale: float) -> None:
    async def main() -> None:
        n1, n2 = DryRunBackend("n1", tmp_path), DryRunBackend("n2", tmp_path)
        watch, seen = _watch(n1)
        await watch.start()
        try:
            assert seen.links == [("v0", UP)]
            assert watch.link("v0") == UP
            assert watch.mac("v0") == dry_run_mac("n1")
            assert not watch.has_witnesses
            window = 0.05 * time_scale
            assert await watch.probe(3, window) == ProbeOutcome(answered_by=None, witness=None)
            n2.add(VIP)
            started = time.monotonic()
            outcome = await watch.probe(3, 10 * time_scale)
            assert outcome == ProbeOutcome(answered_by=N2_MAC, witness=None)
            assert time.monotonic() - started < 5 * time_scale  # returned at the answer
            assert seen.claims == [(VIP, N2_MAC)]  # a claim is a claim, in a probe too
            # Concurrent probes each get their own round and answer.
            both = await asyncio.gather(watch.probe(1, window), watch.probe(2, window))
            assert [o.answered_by for o in both] == [N2_MAC, N2_MAC]
        finally:
            watch.close()

    asyncio.run(main())


def test_dry_run_witness(tmp_path: Path, time_scale: float) -> None:
    async def main() -> None:
        watch, _ = _watch(DryRunBackend("n1", tmp_path), witnesses=[WITNESS])
        await watch.start()
        try:
            assert watch.has_witnesses
            window = 0.05 * time_scale
            silent = ProbeOutcome(answered_by=None, witness=False)
            assert await watch.probe(3, window) == silent
            assert await watch.check(probe_vips=False, window=window) is False
            (tmp_path / ".witnesses").touch()
            assert await watch.probe(3, window) == ProbeOutcome(answered_by=None, witness=True)
            started = time.monotonic()
            assert await watch.check(probe_vips=True, window=10 * time_scale) is True
            assert time.monotonic() - started < 5 * time_scale  # returned at the answer
        finally:
            watch.close()

    asyncio.run(main())


class _StallingBackend(DryRunBackend):
    """The dry-run LAN, but the first probe frame takes `stall` seconds to leave (the loop
    blocked, as by a slow send or a busy process), and the test can inject frames."""

    def __init__(self, lan_dir: Path, stall: float) -> None:
        super().__init__("n1", lan_dir)
        self.stall = stall
        self.socks: list[_StallingSocket] = []

    def open_lan(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
    ) -> _StallingSocket:
        sock = _StallingSocket(self, interface)
        self.socks.append(sock)
        return sock


class _StallingSocket(DryRunLanSocket):
    def __init__(self, backend: _StallingBackend, interface: str) -> None:
        super().__init__(backend, interface)
        self.stall = backend.stall

    def send_probe(self, ip: IPAddress) -> None:
        if self.stall:
            time.sleep(self.stall)
            self.stall = 0.0
        super().send_probe(ip)

    def inject(self, heard: Heard) -> None:
        self._hear(heard)


def test_window_is_timed_from_the_first_frame_sent(tmp_path: Path, time_scale: float) -> None:
    # Part 10: a 100 ms stall before the first frame leaves must not eat the listening time.
    # An answer arriving 0.25 s after the call is inside a 0.2 s window that starts after
    # the 0.1 s stall, and outside one timed from the call.
    stall, window = 0.1 * time_scale, 0.2 * time_scale

    async def main() -> None:
        backend = _StallingBackend(tmp_path, stall)
        watch, _ = _watch(backend)
        await watch.start()
        try:
            loop = asyncio.get_running_loop()
            (sock,) = backend.socks
            answer = Heard(kind=HeardKind.CLAIM, ip=VIP.ip, mac=N2_MAC)
            loop.call_later(stall + 0.75 * window, sock.inject, answer)
            outcome = await watch.probe(1, window)
            assert outcome == ProbeOutcome(answered_by=N2_MAC, witness=None)

            sock.stall = stall  # and a silent probe listens the whole window after the stall
            started = loop.time()
            assert (await watch.probe(1, window)).answered_by is None
            assert loop.time() - started >= stall + window * 0.99
        finally:
            watch.close()

    asyncio.run(main())


def test_claims_are_reported_at_most_every_repeat(tmp_path: Path) -> None:
    async def main() -> None:
        backend = _StallingBackend(tmp_path, 0.0)
        watch, seen = _watch(backend)
        await watch.start()
        try:
            (sock,) = backend.socks
            other = mac_text(dry_run_mac("n3"))
            for _ in range(500):  # a flood: the loop wakes, drains, reports once
                sock.inject(Heard(kind=HeardKind.CLAIM, ip=VIP.ip, mac=N2_MAC))
            sock.inject(Heard(kind=HeardKind.CLAIM, ip=VIP.ip, mac=other))
            # Other kinds and other addresses are no claims on our VIP.
            sock.inject(Heard(kind=HeardKind.PROBE, ip=VIP.ip, mac=other))
            sock.inject(Heard(kind=HeardKind.WITNESS, ip=WITNESS, mac=other))
            sock.inject(Heard(kind=HeardKind.CLAIM, ip=IPv4Address("198.18.0.9"), mac=other))
            await _until(lambda: len(seen.claims) == 2 and watch.wakeups >= 2, 5.0)
            await asyncio.sleep(0.05)  # nothing more is coming: 507 frames, 2 claims
            assert seen.claims == [(VIP, N2_MAC), (VIP, other)]
            await asyncio.sleep(CLAIM_REPEAT * 1.2)
            sock.inject(Heard(kind=HeardKind.CLAIM, ip=VIP.ip, mac=N2_MAC))
            await _until(lambda: len(seen.claims) == 3, 5.0)
            assert seen.claims[2] == (VIP, N2_MAC)
        finally:
            watch.close()

    asyncio.run(main())


VIP6 = Vip(address=ipaddress.IPv6Interface("2001:2:0:1::100/64"), interface="v0")
WITNESS6 = ipaddress.IPv6Address("fe80::fe")


def test_dry_run_ipv6_vip_with_an_ipv4_one(tmp_path: Path, time_scale: float) -> None:
    """An IPv6 VIP next to an IPv4 one: probed, claimed and witnessed the same way, and a
    claim on either is reported for that VIP."""

    async def main() -> None:
        n2 = DryRunBackend("n2", tmp_path)
        watch, seen = _watch(DryRunBackend("n1", tmp_path), witnesses=[WITNESS6], vips=(VIP, VIP6))
        await watch.start()
        try:
            window = 0.05 * time_scale
            silent = ProbeOutcome(answered_by=None, witness=False)
            assert await watch.probe(2, window) == silent
            (tmp_path / ".witnesses").touch()  # the IPv6 witness answers
            assert await watch.probe(2, window) == ProbeOutcome(answered_by=None, witness=True)
            n2.add(VIP6)  # only the IPv6 VIP is held elsewhere: that alone vetoes
            outcome = await watch.probe(2, 10 * time_scale)
            assert outcome == ProbeOutcome(answered_by=N2_MAC, witness=True)
            assert seen.claims == [(VIP6, N2_MAC)]
            n2.remove(VIP6)
            n2.add(VIP)
            assert await watch.check(probe_vips=True, window=window) is True
            await _until(lambda: len(seen.claims) == 2, 5.0)
            assert seen.claims[1] == (VIP, N2_MAC)
        finally:
            watch.close()

    asyncio.run(main())


def test_check_probes_vips_for_a_third_host(tmp_path: Path, time_scale: float) -> None:
    async def main() -> None:
        watch, seen = _watch(DryRunBackend("n1", tmp_path))
        await watch.start()
        try:
            assert await watch.check(probe_vips=True, window=0.05 * time_scale) is None
            await asyncio.sleep(0.02)
            assert seen.claims == []
            DryRunBackend("n2", tmp_path).add(VIP)
            assert await watch.check(probe_vips=False, window=0.05 * time_scale) is None
            await asyncio.sleep(0.02)
            assert seen.claims == []  # without probing, a silent holder stays unheard
            assert await watch.check(probe_vips=True, window=0.05 * time_scale) is None
            await _until(lambda: seen.claims != [], 5.0)
            assert seen.claims == [(VIP, N2_MAC)]
        finally:
            watch.close()

    asyncio.run(main())


def test_emfile_is_an_outcome_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, time_scale: float
) -> None:
    # Part 12: the descriptor table is full when the listener must be opened.
    real = socket.socketpair

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    async def main() -> None:
        watch, _ = _watch(DryRunBackend("n1", tmp_path), witnesses=[WITNESS])
        monkeypatch.setattr(socket, "socketpair", full)
        await watch.start()  # logs, does not raise
        try:
            assert watch.mac("v0") is None
            outcome = await watch.probe(3, 0.05 * time_scale)
            assert outcome == ProbeOutcome(
                answered_by=None,
                witness=False,
                error="listen on v0: cannot open a socket pair: [Errno 24] Too many open files",
            )
            assert await watch.check(probe_vips=True, window=0.05 * time_scale) is False
            monkeypatch.setattr(socket, "socketpair", real)
            (tmp_path / ".witnesses").touch()
            outcome = await watch.probe(3, 0.05 * time_scale)  # opened on this call
            assert outcome == ProbeOutcome(answered_by=None, witness=True)
            assert watch.mac("v0") == dry_run_mac("n1")
        finally:
            watch.close()

    asyncio.run(main())


class _BrokenSocket(DryRunLanSocket):
    def send_probe(self, ip: IPAddress) -> None:
        raise BackendError(BackendOp.PROBE, None, "cannot send ARP: boom", interface="v0")

    def read(self) -> list[Heard]:
        raise BackendError(BackendOp.LISTEN, None, "cannot receive ARP: boom", interface="v0")


def test_send_and_read_errors_never_raise(tmp_path: Path, time_scale: float) -> None:
    class Broken(DryRunBackend):
        opened = 0

        def open_lan(self, interface: str, vips: Any, witnesses: Any) -> DryRunLanSocket:
            Broken.opened += 1
            return _BrokenSocket(self, interface)

    async def main() -> None:
        watch, _ = _watch(Broken("n1", tmp_path))
        await watch.start()
        try:
            outcome = await watch.probe(2, 0.05 * time_scale)
            assert outcome.error == "probe on v0: cannot send ARP: boom"
            assert outcome.answered_by is None
            # The broken socket was dropped and is reopened by the next call.
            assert await watch.check(probe_vips=True, window=0.01) is None
            assert Broken.opened == 2
            with pytest.raises(ValueError, match="at least one VIP"):
                LanWatch(Broken("n1"), [], {}, on_claim=print, on_link=print)
            with pytest.raises(ValueError, match="witnesses on v9, which carries no VIP"):
                LanWatch(Broken("n1"), [VIP], {"v9": [WITNESS]}, on_claim=print, on_link=print)
            bad = await watch.probe(0, 0.01)
            assert bad.error == "probe failed: probe count must be at least 1, got 0"
        finally:
            watch.close()

    asyncio.run(main())


# --- Linux, in network namespaces ----------------------------------------------------------


@pytest.fixture
def lan() -> Iterator[VethPair]:
    # Only @pytest.mark.netns tests use this: conftest's autouse gate (which pytest runs first)
    # has already skipped them, or failed them under CI, where namespaces do not work.
    with veth_pair("hvlw") as pair:
        yield pair


# Runs in namespace a: a LanWatch on the Linux backend; `steps` (a JSON list) says what to do;
# each step's result is printed as a JSON line as soon as it is known.
_DRIVER = r"""
import asyncio, ipaddress, json, resource, sys, time
from havip.backends.linux import LinuxBackend
from havip.config import Vip
from havip.shell.lanwatch import LanWatch

vip = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="v0")
witnesses = [ipaddress.IPv4Address(w) for w in json.loads(sys.argv[1])]
steps = json.loads(sys.argv[2])
claims, links = [], []

def say(**fields):
    print(json.dumps(fields), flush=True)

def on_link(name, state):
    links.append([name, list(state)])
    say(link=[name, list(state)])

async def main():
    backend = LinuxBackend()
    watch = LanWatch(backend, [vip], {"v0": witnesses} if witnesses else {},
                     on_claim=lambda v, mac: claims.append([str(v), mac]), on_link=on_link)
    for step in steps:
        what = step[0]
        if what == "start":
            await watch.start()
        elif what == "probe":
            t0 = time.monotonic()
            out = await watch.probe(step[1], step[2])
            say(probe=[out.answered_by, out.witness, out.error], took=time.monotonic() - t0)
        elif what == "stall":  # the next first probe frame leaves `step[1]` s late
            sock = watch._socks["v0"]
            send, stall = sock.send_probe, [step[1]]
            def slow(ip):
                if stall:
                    time.sleep(stall.pop())
                send(ip)
            sock.send_probe = slow
        elif what == "check":
            say(check=await watch.check(probe_vips=step[1], window=step[2]))
        elif what == "wait_claims":  # until `step[1]` claims or `step[2]` seconds
            deadline = time.monotonic() + step[2]
            while len(claims) < step[1] and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            say(claims=claims, wakeups=watch.wakeups)
        elif what == "ready":
            say(ready=True, mac=watch.mac("v0").hex(":"))
            await asyncio.to_thread(sys.stdin.readline)
        elif what == "nofile":  # the descriptor table as good as full, or back to normal
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if step[1]:
                import os
                used = len(os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (used, hard))
            else:
                resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        elif what == "links":  # link events are reported as they come, until stdin says done
            await asyncio.to_thread(sys.stdin.readline)
            say(final=list(watch.link("v0")))
        elif what == "link":
            say(link_now=list(watch.link("v0")))
        elif what == "gateway":
            say(gateway=[str(await asyncio.to_thread(backend.default_gateway, n)) for n in step[1]])
    watch.close()
    backend.close()

asyncio.run(main())
"""


def _in(ns: str, code: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code]


def _drive(
    ns: str, steps: list[Any], witnesses: Sequence[str] = (), timeout: float = 60
) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [*_in(ns, _DRIVER), json.dumps(witnesses), json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"driver in {ns}:\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.netns
def test_linux_probe_outcomes(lan: VethPair, time_scale: float) -> None:
    window = 0.1 * time_scale
    probe = ["probe", 3, window]
    steps = [["start"], probe]
    # Nobody holds the VIP; the witness (b's own address) answers.
    (link, silent) = _drive(lan.a, steps, witnesses=[str(WITNESS)])
    assert link == {"link": ["v0", [True, True, True]]}
    assert silent["probe"] == [None, True, None]
    # A witness nobody holds: silence proves nothing.
    (_, deaf) = _drive(lan.a, steps, witnesses=["198.18.0.77"])
    assert deaf["probe"] == [None, False, None]
    # b holds the VIP: its kernel answers our probe.
    ip("-n", lan.b, "addr", "add", "198.18.0.100/24", "dev", "v1")
    (_, answered) = _drive(lan.a, steps, witnesses=[str(WITNESS)])
    assert answered["probe"][0] == lan.b_mac
    assert answered["probe"][2] is None
    assert answered["took"] < window  # returned at the answer, not at the window's end


@pytest.mark.netns
def test_linux_window_starts_after_a_stalled_send(lan: VethPair, time_scale: float) -> None:
    stall, window = 0.1 * time_scale, 0.1 * time_scale
    out = _drive(lan.a, [["start"], ["stall", stall], ["probe", 1, window]])
    assert out[-1]["probe"] == [None, None, None]
    assert out[-1]["took"] >= stall + window * 0.99  # listened a full window after the stall


_SENDER = r"""
import socket, sys
from ipaddress import IPv4Address as A
from havip.backends.arp import OP_REPLY, OP_REQUEST, ZERO_MAC, build_arp
from havip.backends.arp import gratuitous_frames, probe_frame
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 0x0806))
mac = bytes.fromhex(sys.argv[2].replace(":", ""))
me, vip = A("198.18.0.2"), A("198.18.0.100")
noise = [
    gratuitous_frames(mac, A("198.18.0.50"))[0],
    build_arp(op=OP_REQUEST, sender_mac=mac, sender_ip=me, target_mac=ZERO_MAC,
              target_ip=A("198.18.0.60")),
    build_arp(op=OP_REPLY, sender_mac=mac, sender_ip=A("198.18.0.61"), target_mac=ZERO_MAC,
              target_ip=vip),
    probe_frame(mac, A("198.18.0.62")),
]
for i in range(200):
    s.send(noise[i % len(noise)])
s.send(gratuitous_frames(mac, vip)[0])
"""

_COUNTER = r"""
import json, select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind(("v0", 0x0806))
print("ready", flush=True)
n, deadline = 0, time.monotonic() + float(sys.argv[1])
while n < 201 and (left := deadline - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        s.recv(2048)
        n += 1
print(n, flush=True)
"""


@pytest.mark.netns
def test_linux_filter_wakes_only_for_our_vip(lan: VethPair, time_scale: float) -> None:
    # An unfiltered socket in a counts what arrives: the positive control.
    counter = subprocess.Popen(
        [*_in(lan.a, _COUNTER), str(20 * time_scale)],
        stdout=subprocess.PIPE,
        text=True,
    )
    watcher = subprocess.Popen(
        [*_in(lan.a, _DRIVER), "[]", json.dumps([["start"], ["ready"], ["wait_claims", 1, 20]])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert counter.stdout is not None and watcher.stdout is not None
        assert watcher.stdin is not None
        assert counter.stdout.readline().strip() == "ready"
        assert json.loads(watcher.stdout.readline()) == {"link": ["v0", [True, True, True]]}
        assert json.loads(watcher.stdout.readline()) == {"ready": True, "mac": lan.a_mac}
        watcher.stdin.write("go\n")
        watcher.stdin.flush()
        sender = [*_in(lan.b, _SENDER), "v1", lan.b_mac]
        subprocess.run(sender, check=True, cwd=ROOT, timeout=30)
        result = json.loads(watcher.stdout.readline())
        assert int(counter.stdout.readline()) == 201  # all 200 + 1 reached namespace a
    finally:
        for proc in (counter, watcher):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    # The GARP for the VIP is the only frame that woke the daemon: the 200 others were
    # dropped in the kernel (the frames arrive in order, so they were all filtered first).
    assert result == {"claims": [["198.18.0.100/24", lan.b_mac]], "wakeups": 1}


@pytest.mark.netns
def test_linux_check_finds_a_third_host(lan: VethPair, time_scale: float) -> None:
    window = 0.2 * time_scale
    steps = [["start"], ["check", True, window], ["wait_claims", 1, window]]
    out = _drive(lan.a, steps, witnesses=[str(WITNESS)])
    assert out[1:] == [{"check": True}, {"claims": [], "wakeups": 1}]  # the witness' answer
    ip("-n", lan.b, "addr", "add", "198.18.0.100/24", "dev", "v1")  # silently: no GARP
    out = _drive(lan.a, [["start"], ["check", False, window], ["wait_claims", 1, window]])
    assert out[1:] == [{"check": None}, {"claims": [], "wakeups": 0}]  # not probed: unheard
    out = _drive(lan.a, [["start"], ["check", True, window], ["wait_claims", 1, 10 * time_scale]])
    assert out[1]["check"] is None
    assert out[2]["claims"] == [["198.18.0.100/24", lan.b_mac]]


@pytest.mark.netns
def test_linux_emfile_is_an_outcome(lan: VethPair, time_scale: float) -> None:
    window = 0.05 * time_scale
    steps = [["nofile", True], ["start"], ["probe", 3, window], ["check", True, window]]
    steps += [["link"], ["nofile", False], ["probe", 3, window], ["check", False, window]]
    steps += [["link"]]
    out = _drive(lan.a, steps, witnesses=[str(WITNESS)])
    # With no descriptor to spare nothing opens (not even for the link query): outcomes, no
    # exception; once descriptors are back, the next probe opens its socket and works, and
    # the next check learns the link state the first query could not get.
    assert out[0]["probe"][:2] == [None, False]
    assert "Too many open files" in out[0]["probe"][2]
    assert out[1:3] == [{"check": False}, {"link_now": [False, False, False]}]
    assert out[3]["probe"] == [None, True, None]
    assert out[4:] == [
        {"link": ["v0", [True, True, True]]},
        {"check": True},
        {"link_now": [True, True, True]},
    ]


@pytest.mark.netns
def test_linux_link_events(lan: VethPair, time_scale: float) -> None:
    watcher = subprocess.Popen(
        [*_in(lan.a, _DRIVER), "[]", json.dumps([["start"], ["links"]])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    selector = selectors.DefaultSelector()
    try:
        assert watcher.stdout is not None and watcher.stdin is not None
        os.set_blocking(watcher.stdout.fileno(), False)
        selector.register(watcher.stdout, selectors.EVENT_READ)
        buffered = ""

        def expect(state: list[bool]) -> list[list[bool]]:
            """Link reports up to and including `state` (intermediate ones are allowed)."""
            nonlocal buffered
            seen: list[list[bool]] = []
            deadline = time.monotonic() + 10 * time_scale
            while True:
                while "\n" in buffered:
                    line, buffered = buffered.split("\n", 1)
                    name, reported = json.loads(line)["link"]
                    assert name == "v0"
                    seen.append(reported)
                    if reported == state:
                        return seen
                left = deadline - time.monotonic()
                assert left > 0, f"no link report {state} (saw {seen})"
                if selector.select(left):
                    buffered += watcher.stdout.read() or ""  # type: ignore[union-attr]

        assert expect([True, True, True]) == [[True, True, True]]
        ip("-n", lan.a, "link", "set", "v0", "down")
        assert expect([True, False, False])[-1] == [True, False, False]  # admin down
        ip("-n", lan.a, "link", "set", "v0", "up")
        expect([True, True, True])
        ip("-n", lan.b, "link", "set", "v1", "down")
        assert expect([True, True, False]) == [[True, True, False]]  # carrier lost, still up
        ip("-n", lan.b, "link", "set", "v1", "up")
        assert expect([True, True, True]) == [[True, True, True]]
        ip("-n", lan.a, "link", "set", "v0", "name", "v7")  # renamed away: v0 is gone
        expect([False, False, False])
        ip("-n", lan.a, "link", "set", "v7", "name", "v0")
        expect([True, True, True])
        ip("-n", lan.a, "link", "del", "v0")
        expect([False, False, False])
        watcher.stdin.write("done\n")
        watcher.stdin.flush()
        os.set_blocking(watcher.stdout.fileno(), True)
        watcher.wait(timeout=10 * time_scale)
        assert json.loads(buffered + watcher.stdout.read()) == {"final": [False, False, False]}
    finally:
        selector.close()
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait()


@pytest.mark.netns
def test_linux_default_gateway(lan: VethPair) -> None:
    ip("-n", lan.a, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    ip("-n", lan.a, "addr", "add", "198.19.0.1/24", "dev", "d0")
    for dev in ("d0", "d1"):
        ip("-n", lan.a, "link", "set", dev, "up")
    steps = [["gateway", ["v0", "d0", "nope"]]]
    assert _drive(lan.a, steps) == [{"gateway": ["None", "None", "None"]}]
    ip("-n", lan.a, "route", "add", "default", "via", "198.18.0.254", "dev", "v0")
    # A worse default route through another interface does not count for v0.
    ip("-n", lan.a, "route", "add", "default", "via", "198.19.0.254", "metric", "50")
    assert _drive(lan.a, steps) == [{"gateway": ["198.18.0.254", "198.19.0.254", "None"]}]


_OVERFLOW = r"""
import json, socket, subprocess
from havip.backends.linux import LinuxLinkMonitor
monitor = LinuxLinkMonitor()
subprocess.run(["ip", "link", "add", "o0", "type", "veth", "peer", "name", "o1"], check=True)
known = monitor.read()  # o0 and o1 are known now
monitor._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
for _ in range(40):  # far more events than the tiny queue holds
    for state in ("up", "down"):
        subprocess.run(["ip", "link", "set", "o0", state], check=True)
subprocess.run(["ip", "link", "del", "o0"], check=True)  # its events are lost in the overflow
print(json.dumps({"known": known, "after": monitor.read() + monitor.read()}))
"""


@pytest.mark.netns
def test_linux_link_monitor_recovers_from_overflow(lan: VethPair) -> None:
    proc = subprocess.run(
        _in(lan.a, _OVERFLOW), capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {name for name, _ in out["known"]} == {"o0", "o1"}
    # The final word on every interface is right although events were lost on the way: the
    # deletion is reported (from the dump that no longer lists them), v0 is re-read.
    final = dict((name, state) for name, state in out["after"])
    assert final["o0"] == [False, False, False]
    assert final["o1"] == [False, False, False]
    assert final["v0"] == [True, True, True]  # only a dump reports v0: it did not change


class _NoMonitorBackend(DryRunBackend):
    """A platform whose link monitor cannot be opened (PF_ROUTE refused): links are asked."""

    def __init__(self, node: str, lan_dir: Path) -> None:
        super().__init__(node, lan_dir)
        self.state = UP
        self.asked = 0

    def open_link_monitor(self) -> Any:
        raise BackendError(BackendOp.LINK, None, "cannot open a routing socket")

    def link_state(self, interface: str) -> LinkState:
        self.asked += 1
        return self.state


def test_without_a_link_monitor_every_check_asks_for_the_links(tmp_path: Path) -> None:
    """Issue 7 (found by the illumos lab run): a monitor that cannot open must not freeze the
    link state at its start-up value; each periodic check (and poll_links) asks instead."""
    backend = _NoMonitorBackend("n1", tmp_path)
    watch, seen = _watch(backend)

    async def main() -> None:
        await watch.start()
        try:
            assert watch.link("v0") == UP
            backend.state = LinkState(exists=True, up=True, carrier=False)
            await watch.poll_links()
            assert watch.link("v0").carrier is False
            assert seen.links[-1] == ("v0", backend.state)
            backend.state = UP
            await watch.check(probe_vips=False, window=0.01)
            assert watch.link("v0") == UP and seen.links[-1] == ("v0", UP)
        finally:
            watch.close()

    asyncio.run(main())
    assert backend.asked >= 3
