"""What a user sees: the lab's client probe, its echo responder, and analysis of the results.

Run inside the lab's namespaces (see `havip.lab.netns`):

    python -m havip.lab.client echo --name n1 --port 9000          # in n1 and in n2
    python -m havip.lab.client client --vip 198.18.0.100 --out F   # in the client

The client sends one round every `--interval`: a UDP datagram with a sequence number to
VIP:PORT and an ARP request for the VIP. Each round becomes one JSON line:

    {"seq": 7, "t_send": 1764088801.12, "answer": "n1", "t_answer": 1764088801.1203,
     "arp_macs": ["02:aa:..."]}

`answer` names the node whose echo replied within `--timeout`, else null. `arp_macs` lists the
distinct MACs that answered an ARP request for the VIP during the round's window (from its
send until the next round's send); two of them means two hosts claimed the VIP at once.

ARP modes: `self` asks with the client's own MAC and IP, so every answer also refreshes the
client kernel's neighbour entry for the VIP, which heals the client within about a hundred
milliseconds even if no gratuitous ARP is ever sent. `passive` asks from a made-up locally
administered MAC and an unused address (`--passive-ip`, 198.18.0.250 by default) and listens
promiscuously; the client's kernel never learns from the probe, so the measured outage is what
a plain client would see. (Not an RFC 5227 probe with sender 0.0.0.0, which a strict daemon
could take for a competing claim on the VIP.) `off` sends no ARP.

IPv6 VIPs are probed the same way with Neighbour Discovery in place of ARP: each round sends a
neighbour solicitation for the VIP (to its solicited-node group, with our MAC as the source
link-layer option) and `arp_macs` lists the MACs whose solicited advertisements answered it
(unsolicited announcements to all-nodes are not answers). `passive` asks from a made-up MAC and
`--passive-ip6` (2001:2:0:1::fa by default). The echo responder serves IPv4 and IPv6.

The analysis helpers at the bottom are pure and need no root.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import math
import os
import secrets
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from itertools import pairwise
from pathlib import Path
from types import FrameType
from typing import IO

from havip.backends.arp import (
    ETH_P_ARP,
    OP_REPLY,
    OP_REQUEST,
    UNSPECIFIED,
    ZERO_MAC,
    build_arp,
    gratuitous_frames,
    mac_bytes,
    mac_text,
    parse_arp,
)
from havip.backends.nd import (
    ETH_P_IPV6,
    NA_SOLICITED,
    ND_NA,
    UNSPECIFIED6,
    announce_frame,
    build_ns,
    parse_nd,
)

ECHO_PORT = 9000
DEFAULT_IFACE = "eth0"
MAX_DATAGRAM = 2048
MAX_ECHO_PAYLOAD = 1024
MAX_DURATION_S = 3600.0
FLUSH_EVERY_S = 0.1
# Rounds still awaiting an answer when SIGTERM arrives get at most this long to complete.
STOP_GRACE_S = 0.3
MAX_READS_PER_WAKEUP = 1000
PASSIVE_IP = "198.18.0.250"  # unused in the lab; passive ARP requests come from it
PASSIVE_IP6 = "2001:2:0:1::fa"  # the same for IPv6 neighbour solicitations

# Linux constants the socket module does not export.
SIOCGIFHWADDR = 0x8927
SIOCGIFADDR = 0x8915
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1


class ArpMode(StrEnum):
    """How the client asks who owns the VIP (see the module docstring)."""

    SELF = "self"
    PASSIVE = "passive"
    OFF = "off"


# --------------------------------------------------------------------------- frames (pure)


def parse_arp_answer(
    frame: bytes, *, vip: IPv4Address, asker_ip: IPv4Address, asker_mac: bytes
) -> str | None:
    """The sender MAC if frame is an ARP reply for vip addressed to the asker, else None.

    Gratuitous ARPs are not answers (their target is the VIP itself), so a new owner's
    announcement never counts as a second answer to the old owner's reply.
    """
    packet = parse_arp(frame)
    if packet is None or packet.op != OP_REPLY or packet.sender_ip != vip:
        return None
    if packet.target_ip != asker_ip or packet.target_mac != asker_mac:
        return None
    return mac_text(packet.sender_mac)


def parse_nd_answer(
    frame: bytes, *, vip: IPv6Address, asker_ip: IPv6Address, asker_mac: bytes
) -> str | None:
    """The answering MAC if frame is a solicited neighbour advertisement for vip addressed to
    the asker, else None (the twin of `parse_arp_answer`).

    Unsolicited advertisements (announcements to all-nodes, Solicited clear) are not answers,
    so a new owner's announcement never counts as a second answer to the old owner's reply."""
    packet = parse_nd(frame)
    if packet is None or packet.type != ND_NA or packet.target != vip:
        return None
    if not packet.flags & NA_SOLICITED or packet.dst != asker_ip or frame[:6] != asker_mac:
        return None
    return mac_text(packet.lladdr or packet.eth_src)


# --------------------------------------------------------------------------- interface facts


def _ifreq(iface: str, request: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return fcntl.ioctl(s.fileno(), request, struct.pack("256s", iface.encode()[:15]))
        except OSError as exc:
            raise OSError(f"interface {iface}: {exc.strerror}") from exc


def iface_mac(iface: str) -> bytes:
    """The interface's hardware address."""
    return _ifreq(iface, SIOCGIFHWADDR)[18:24]


def iface_ipv4(iface: str) -> IPv4Address:
    """The interface's primary IPv4 address."""
    return IPv4Address(_ifreq(iface, SIOCGIFADDR)[20:24])


def iface_ipv6(iface: str, path: Path = Path("/proc/net/if_inet6")) -> IPv6Address:
    """The interface's first global IPv6 address (from /proc/net/if_inet6, no ioctl exists)."""
    for line in path.read_text().splitlines():
        fields = line.split()
        # address, ifindex, prefix length, scope (0: global), flags, name
        if len(fields) == 6 and fields[5] == iface and fields[3] == "00":
            return IPv6Address(int(fields[0], 16))
    raise OSError(f"interface {iface}: no global IPv6 address")


def _packet_socket(iface: str, protocol: int = ETH_P_ARP) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
    sock.bind((iface, protocol))
    return sock


# --------------------------------------------------------------------------- echo, send, garp


def run_echo(*, name: str, port: int, bind: str = "0.0.0.0") -> int:
    """Reply to each datagram with b'<name> ' + payload, until killed. Prints 'ready'.

    The default bind serves both IPv4 (0.0.0.0) and IPv6 (::); an explicit address one."""
    prefix = name.encode() + b" "
    binds = ["0.0.0.0", "::"] if bind == "0.0.0.0" else [bind]
    socks = []
    for address in binds:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        socks.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ, sock)
    print("ready", flush=True)
    while True:  # a server: runs until the lab kills it
        for key, _ in sel.select():
            sock = key.data
            try:
                data, peer = sock.recvfrom(MAX_DATAGRAM)
                sock.sendto(prefix + data[:MAX_ECHO_PAYLOAD], peer)
            except OSError:
                continue  # the client may be unreachable mid-fault; keep serving


def run_send(*, to: str, port: int, timeout: float, payload: bytes = b"ping") -> int:
    """Send one datagram, print the reply; 0 if answered within timeout, else 1."""
    family = socket.AF_INET6 if ":" in to else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(payload, (to, port))
            data, _ = sock.recvfrom(MAX_DATAGRAM)
        except OSError as exc:
            print(f"no answer from {to}:{port}: {exc}", file=sys.stderr)
            return 1
    print(data.decode(errors="replace"))
    return 0


def run_garp(*, ip: str, iface: str, count: int, gap: float, mac: str | None = None) -> int:
    """Announce ip at iface's MAC (or a forged `mac`): `count` rounds of request + reply
    gratuitous ARP, or for IPv6 of one unsolicited neighbour advertisement (from the address
    itself). The forged MAC is the Ethernet source and the announced one alike."""
    raw = mac_bytes(mac) if mac else iface_mac(iface)
    address = ip_address(ip)
    if isinstance(address, IPv6Address):
        frames, protocol = [announce_frame(raw, address, None)], ETH_P_IPV6
    else:
        frames, protocol = gratuitous_frames(raw, address), ETH_P_ARP
    with _packet_socket(iface, protocol) as sock:
        for i in range(count):
            for frame in frames:
                sock.send(frame)
            if i + 1 < count:
                time.sleep(gap)
    return 0


# --------------------------------------------------------------------------- handshake flood

MAX_FLOOD_CONNS = 1024


@dataclass(kw_only=True)
class FloodStats:
    """What a flood did: connection attempts, how many got through, how many the server shut."""

    attempts: int = 0
    established: int = 0
    closed_by_server: int = 0
    failed: int = 0


def run_flood(*, to: str, port: int, conns: int, duration: float, gap: float = 0.05) -> FloodStats:
    """Keep `conns` silent TCP connections to to:port for `duration` seconds.

    Each connection sends nothing (a client that never starts its TLS handshake); whenever the
    server closes one, or a connect fails, it is opened again after `gap`, so the server's
    handshake slots stay full. Bounded: at most MAX_FLOOD_CONNS connections, and the loop ends
    at `duration` whatever happens. Prints 'ready' once every connection was attempted.
    """
    if not 1 <= conns <= MAX_FLOOD_CONNS:
        raise ValueError(f"flood: --conns {conns} is outside 1..{MAX_FLOOD_CONNS}")
    stats = FloodStats()
    sel = selectors.DefaultSelector()
    due: dict[int, float] = dict.fromkeys(range(conns), 0.0)  # slot -> when to (re)connect
    live: dict[int, socket.socket] = {}
    connecting: set[int] = set()
    start = time.monotonic()
    end = start + duration
    announced = False

    def drop(slot: int, now: float) -> None:
        sock = live.pop(slot)
        sel.unregister(sock)
        sock.close()
        connecting.discard(slot)
        due[slot] = now + gap

    try:
        while (now := time.monotonic()) < end:
            for slot in [s for s, when in due.items() if when <= now]:
                del due[slot]
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                stats.attempts += 1
                code = sock.connect_ex((to, port))
                if code not in (0, errno.EINPROGRESS):
                    stats.failed += 1
                    sock.close()
                    due[slot] = now + gap
                    continue
                live[slot] = sock
                connecting.add(slot)
                sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, slot)
            if not announced:
                print("ready", flush=True)
                announced = True
            wake = min([end, *due.values()])
            for key, _ in sel.select(max(0.0, min(wake - time.monotonic(), 0.1))):
                slot, sock = key.data, live[key.data]
                if slot in connecting:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        stats.failed += 1
                        drop(slot, time.monotonic())
                        continue
                    connecting.discard(slot)
                    stats.established += 1
                    sel.modify(sock, selectors.EVENT_READ, slot)
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the server gave up on us: come straight back
                    stats.closed_by_server += 1
                    drop(slot, time.monotonic())
    finally:
        for sock in live.values():
            sock.close()
        sel.close()
    return stats


# --------------------------------------------------------------------------- client probe


@dataclass(slots=True)
class _Round:
    seq: int
    mono_send: float
    t_send: float
    answer: str | None = None
    t_answer: float | None = None
    arp_macs: list[str] = field(default_factory=list)

    def line(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "t_send": self.t_send,
                "answer": self.answer,
                "t_answer": self.t_answer,
                "arp_macs": self.arp_macs,
            }
        )


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Settings of one probe run."""

    vip: str
    port: int = ECHO_PORT
    iface: str = DEFAULT_IFACE
    interval: float = 0.01
    duration: float = 10.0
    timeout: float = 0.5
    arp_mode: ArpMode = ArpMode.SELF
    passive_ip: str = PASSIVE_IP
    passive_ip6: str = PASSIVE_IP6


@dataclass(kw_only=True)
class ClientStats:
    """Counters printed to stderr when the probe ends."""

    rounds: int = 0
    answered: int = 0
    late: int = 0
    duplicate: int = 0
    send_errors: int = 0
    skipped_slots: int = 0


class _Prober:
    def __init__(self, opts: ClientOptions, out: IO[str]) -> None:
        self.opts = opts
        self.out = out
        self.stats = ClientStats()
        self.stopping = False
        self.token = secrets.token_hex(4).encode()
        self.vip = ip_address(opts.vip)
        self.pending: dict[int, _Round] = {}
        self.next_write = 0
        self.current: _Round | None = None
        self.sending = True
        v6 = self.vip.version == 6
        self.udp = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setblocking(False)
        self.udp.bind(("::" if v6 else "0.0.0.0", 0))
        self.arp: socket.socket | None = None
        self.arp_frame = b""
        self.asker_ip: IPv4Address | IPv6Address = UNSPECIFIED6 if v6 else UNSPECIFIED
        self.asker_mac = ZERO_MAC
        if opts.arp_mode is not ArpMode.OFF:
            self._open_arp()

    def _open_arp(self) -> None:
        iface = self.opts.iface
        v6 = isinstance(self.vip, IPv6Address)
        if self.opts.arp_mode is ArpMode.SELF:
            self.asker_mac = iface_mac(iface)
            self.asker_ip = iface_ipv6(iface) if v6 else iface_ipv4(iface)
        else:
            # Locally administered unicast MAC nobody owns: answers reach only this socket.
            raw = bytearray(os.urandom(6))
            raw[0] = (raw[0] & 0xFC) | 0x02
            self.asker_mac = bytes(raw)
            self.asker_ip = ip_address(self.opts.passive_ip6 if v6 else self.opts.passive_ip)
        self.arp = _packet_socket(iface, ETH_P_IPV6 if v6 else ETH_P_ARP)
        self.arp.setblocking(False)
        if self.opts.arp_mode is ArpMode.PASSIVE:
            mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
            self.arp.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if isinstance(self.vip, IPv6Address):
            assert isinstance(self.asker_ip, IPv6Address)
            # A plain solicitation with our MAC: the holder answers it with a solicited NA.
            self.arp_frame = build_ns(mac=self.asker_mac, src=self.asker_ip, target=self.vip)
            return
        assert isinstance(self.asker_ip, IPv4Address)
        self.arp_frame = build_arp(
            op=OP_REQUEST,
            sender_mac=self.asker_mac,
            sender_ip=self.asker_ip,
            target_mac=ZERO_MAC,
            target_ip=self.vip,
        )

    def close(self) -> None:
        self.udp.close()
        if self.arp is not None:
            self.arp.close()

    def _send_round(self, seq: int) -> None:
        payload = self.token + b" " + str(seq).encode()
        try:
            self.udp.sendto(payload, (self.opts.vip, self.opts.port))
        except OSError:
            self.stats.send_errors += 1
        rnd = _Round(seq=seq, mono_send=time.monotonic(), t_send=time.time())
        if self.arp is not None:
            try:
                self.arp.send(self.arp_frame)
            except OSError:
                self.stats.send_errors += 1
        self.pending[seq] = rnd
        self.current = rnd
        self.stats.rounds += 1

    def _read_udp(self) -> None:
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data = self.udp.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. a queued ICMP error; the datagram is simply lost
            now, wall = time.monotonic(), time.time()
            parts = data.split(b" ")
            if len(parts) != 3 or parts[1] != self.token or not parts[2].isdigit():
                continue
            rnd = self.pending.get(int(parts[2]))
            if rnd is None or now - rnd.mono_send > self.opts.timeout:
                self.stats.late += 1
            elif rnd.answer is not None:
                self.stats.duplicate += 1
            else:
                rnd.answer = parts[0].decode(errors="replace")
                rnd.t_answer = wall
                self.stats.answered += 1

    def _read_arp(self) -> None:
        assert self.arp is not None
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                frame, addr = self.arp.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. ENETDOWN, reported once after a link change
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            mac = self._answer(frame)
            if mac is not None and self.current is not None and mac not in self.current.arp_macs:
                self.current.arp_macs.append(mac)

    def _answer(self, frame: bytes) -> str | None:
        vip, asker = self.vip, self.asker_ip
        if isinstance(vip, IPv6Address) and isinstance(asker, IPv6Address):
            return parse_nd_answer(frame, vip=vip, asker_ip=asker, asker_mac=self.asker_mac)
        if isinstance(vip, IPv4Address) and isinstance(asker, IPv4Address):
            return parse_arp_answer(frame, vip=vip, asker_ip=asker, asker_mac=self.asker_mac)
        return None

    def _finished(self, rnd: _Round, now: float, *, force: bool) -> bool:
        if force:
            return True
        window_closed = rnd is not self.current or not self.sending
        return window_closed and (rnd.answer is not None or now - rnd.mono_send > self.opts.timeout)

    def _emit(self, now: float, *, force: bool = False) -> None:
        # In sequence order, so a live reader sees a prefix of the final file.
        while (rnd := self.pending.get(self.next_write)) is not None:
            if not self._finished(rnd, now, force=force):
                return
            self.out.write(rnd.line() + "\n")
            del self.pending[self.next_write]
            self.next_write += 1

    def run(self) -> ClientStats:
        opts = self.opts
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, self._read_udp)
        if self.arp is not None:
            sel.register(self.arp, selectors.EVENT_READ, self._read_arp)
        start = time.monotonic()
        stop_at = start + opts.duration
        hard_stop = stop_at + opts.timeout + 1.0  # bounds the loop whatever the clock does
        drain_until = math.inf
        slot = 0
        seq = 0
        next_flush = start + FLUSH_EVERY_S
        try:
            while True:
                now = time.monotonic()
                if self.sending and (self.stopping or now >= stop_at):
                    self.sending = False
                    grace = min(opts.timeout, STOP_GRACE_S) if self.stopping else opts.timeout
                    drain_until = now + grace
                next_send = start + slot * opts.interval
                if self.sending and now >= next_send:
                    self._send_round(seq)
                    seq += 1
                    # Fixed grid from start (no drift); slots missed while stalled are skipped.
                    due = int((now - start) / opts.interval) + 1
                    self.stats.skipped_slots += max(0, due - slot - 1)
                    slot = max(slot + 1, due)
                    next_send = start + slot * opts.interval
                self._emit(now)
                if now >= next_flush:
                    self.out.flush()
                    next_flush = now + FLUSH_EVERY_S
                if not self.sending and (not self.pending or now >= drain_until):
                    break
                if now >= hard_stop:
                    break
                wake = min(next_flush, drain_until, hard_stop)
                if self.sending:
                    wake = min(wake, next_send)
                for key, _ in sel.select(max(0.0, wake - time.monotonic())):
                    key.data()
        finally:
            self._emit(time.monotonic(), force=True)
            self.out.flush()
            sel.close()
        return self.stats


def run_client(opts: ClientOptions, out: IO[str]) -> ClientStats:
    """Probe until opts.duration passes or SIGTERM/SIGINT arrives; write JSON lines to out."""
    prober = _Prober(opts, out)

    def _stop(signum: int, frame: FrameType | None) -> None:
        prober.stopping = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return prober.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        prober.close()


# --------------------------------------------------------------------------- analysis (pure)


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One client round as written by the probe."""

    seq: int
    t_send: float
    answer: str | None
    t_answer: float | None
    arp_macs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Outage:
    """A run of consecutive unanswered rounds.

    start is the send time of the first lost round, end the send time of the first answered
    round after it (so duration has the probe interval as resolution). An outage still going
    on when the samples end has ended=False, end = the last lost round's send time, and its
    duration is a lower bound.
    """

    start: float
    end: float
    duration_ms: float
    lost: int
    node_before: str | None
    node_after: str | None
    ended: bool


def parse_sample(line: str) -> Sample:
    """One JSON line -> Sample; ValueError says what is wrong."""
    try:
        raw = json.loads(line)
        answer = raw["answer"]
        t_answer = raw["t_answer"]
        sample = Sample(
            seq=int(raw["seq"]),
            t_send=float(raw["t_send"]),
            answer=None if answer is None else str(answer),
            t_answer=None if t_answer is None else float(t_answer),
            arp_macs=tuple(str(m) for m in raw["arp_macs"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"bad sample line {line.strip()[:80]!r}: {exc}") from exc
    return sample


def load_samples(path: Path | str) -> list[Sample]:
    """Samples from a probe output file, sorted by seq.

    A last line without its newline is still being written and is ignored, so a file can be
    read while the probe runs.
    """
    text = Path(path).read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the piece after the final newline is empty or unfinished
    samples = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            samples.append(parse_sample(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    samples.sort(key=lambda s: s.seq)
    return samples


def outages(samples: Sequence[Sample]) -> list[Outage]:
    """Runs of consecutive unanswered rounds, in order."""
    ordered = sorted(samples, key=lambda s: s.seq)
    found: list[Outage] = []
    before: str | None = None
    run: list[Sample] = []
    for sample in ordered:
        if sample.answer is None:
            run.append(sample)
            continue
        if run:
            found.append(_outage(run, end=sample.t_send, before=before, after=sample.answer))
            run = []
        before = sample.answer
    if run:
        found.append(_outage(run, end=run[-1].t_send, before=before, after=None))
    return found


def _outage(run: list[Sample], *, end: float, before: str | None, after: str | None) -> Outage:
    start = run[0].t_send
    return Outage(
        start=start,
        end=end,
        duration_ms=(end - start) * 1000.0,
        lost=len(run),
        node_before=before,
        node_after=after,
        ended=after is not None,
    )


def max_outage_ms(
    samples: Sequence[Sample], start: float | None = None, end: float | None = None
) -> float:
    """Longest outage (ms) among rounds sent within [start, end], bounds optional; 0 if none."""
    chosen = [
        s
        for s in samples
        if (start is None or s.t_send >= start) and (end is None or s.t_send <= end)
    ]
    return max((o.duration_ms for o in outages(chosen)), default=0.0)


def double_answers(samples: Iterable[Sample]) -> int:
    """Rounds in which two or more distinct MACs answered ARP for the VIP."""
    return sum(1 for s in samples if len(set(s.arp_macs)) >= 2)


def double_answer_ms(samples: Sequence[Sample]) -> float:
    """Time (ms) covered by rounds in which two or more MACs answered ARP for the VIP.

    Each such round counts from its send to the next round's send (the last one counts the
    median spacing), so the number is comparable to a duration target."""
    ordered = sorted(samples, key=lambda s: s.seq)
    if len(ordered) < 2:
        return 0.0
    gaps = [b.t_send - a.t_send for a, b in pairwise(ordered)]
    spacing = sorted(gaps)[len(gaps) // 2]
    total = 0.0
    for i, sample in enumerate(ordered):
        if len(set(sample.arp_macs)) >= 2:
            total += gaps[i] if i < len(gaps) else spacing
    return total * 1000.0


def owner_moves(samples: Iterable[Sample]) -> list[tuple[float, str | None, str]]:
    """Each change of the node answering the client: (time, from, to), in order.

    Unanswered rounds are skipped, so an outage that ends at the same node is no move."""
    moves: list[tuple[float, str | None, str]] = []
    last: str | None = None
    for sample in sorted(samples, key=lambda s: s.seq):
        if sample.answer is None:
            continue
        if last is not None and sample.answer != last:
            moves.append((sample.t_answer or sample.t_send, last, sample.answer))
        last = sample.answer
    return moves


def first_answer_from(samples: Iterable[Sample], node: str, after: float) -> float | None:
    """The earliest time >= after at which node's answer reached the client, or None."""
    times = [
        s.t_answer
        for s in samples
        if s.answer == node and s.t_answer is not None and s.t_answer >= after
    ]
    return min(times, default=None)


# --------------------------------------------------------------------------- command line


def _bounded_float(name: str, low: float, high: float, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: not a number: {value!r}") from None
    if not low <= number <= high:
        raise argparse.ArgumentTypeError(f"{name}: {number} is outside [{low}, {high}]")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m havip.lab.client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    echo = sub.add_parser("echo", help="UDP echo responder that names this node")
    echo.add_argument("--name", required=True)
    echo.add_argument("--port", type=int, default=ECHO_PORT)
    echo.add_argument("--bind", default="0.0.0.0")

    client = sub.add_parser("client", help="probe the VIP every interval, write JSON lines")
    client.add_argument("--vip", required=True)
    client.add_argument("--port", type=int, default=ECHO_PORT)
    client.add_argument("--iface", default=DEFAULT_IFACE)
    client.add_argument(
        "--interval", type=lambda v: _bounded_float("--interval", 0.001, 10.0, v), default=0.01
    )
    client.add_argument(
        "--duration",
        type=lambda v: _bounded_float("--duration", 0.0, MAX_DURATION_S, v),
        default=10.0,
    )
    client.add_argument(
        "--timeout", type=lambda v: _bounded_float("--timeout", 0.001, 10.0, v), default=0.5
    )
    client.add_argument(
        "--arp-mode", choices=[m.value for m in ArpMode], default=ArpMode.SELF.value
    )
    client.add_argument("--passive-ip", default=PASSIVE_IP, help="sender IP in passive mode")
    client.add_argument(
        "--passive-ip6", default=PASSIVE_IP6, help="source IPv6 address in passive mode"
    )
    client.add_argument("--out", type=Path, help="JSON lines file (default: stdout)")

    send = sub.add_parser("send", help="send one datagram and print the answer")
    send.add_argument("--to", required=True)
    send.add_argument("--port", type=int, default=ECHO_PORT)
    send.add_argument(
        "--timeout", type=lambda v: _bounded_float("--timeout", 0.001, 60.0, v), default=1.0
    )

    garp = sub.add_parser("garp", help="announce an address with gratuitous ARP")
    garp.add_argument("--ip", required=True)
    garp.add_argument("--iface", default=DEFAULT_IFACE)
    garp.add_argument("--count", type=int, choices=range(1, 101), default=3, metavar="1..100")
    garp.add_argument("--gap", type=lambda v: _bounded_float("--gap", 0.0, 10.0, v), default=0.05)
    garp.add_argument("--mac", help="forged source MAC (default: the interface's own)")

    flood = sub.add_parser("flood", help="hold silent TCP connections open, reconnecting")
    flood.add_argument("--to", required=True)
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument(
        "--conns", type=int, choices=range(1, MAX_FLOOD_CONNS + 1), default=64, metavar="1..1024"
    )
    flood.add_argument(
        "--duration",
        type=lambda v: _bounded_float("--duration", 0.0, MAX_DURATION_S, v),
        default=10.0,
    )
    flood.add_argument("--gap", type=lambda v: _bounded_float("--gap", 0.0, 10.0, v), default=0.05)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m havip.lab.client`."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "echo":
            return run_echo(name=args.name, port=args.port, bind=args.bind)
        if args.command == "send":
            return run_send(to=args.to, port=args.port, timeout=args.timeout)
        if args.command == "garp":
            return run_garp(
                ip=args.ip, iface=args.iface, count=args.count, gap=args.gap, mac=args.mac
            )
        if args.command == "flood":
            fs = run_flood(
                to=args.to, port=args.port, conns=args.conns, duration=args.duration, gap=args.gap
            )
            print(
                f"labclient flood: attempts={fs.attempts} established={fs.established}"
                f" closed_by_server={fs.closed_by_server} failed={fs.failed}",
                file=sys.stderr,
            )
            return 0
        opts = ClientOptions(
            vip=args.vip,
            port=args.port,
            iface=args.iface,
            interval=args.interval,
            duration=args.duration,
            timeout=args.timeout,
            arp_mode=ArpMode(args.arp_mode),
            passive_ip=args.passive_ip,
            passive_ip6=args.passive_ip6,
        )
        if args.out is None:
            stats = run_client(opts, sys.stdout)
        else:
            with args.out.open("w") as out:
                stats = run_client(opts, out)
    except (OSError, ValueError) as exc:
        print(f"labclient {args.command}: {exc}", file=sys.stderr)
        return 1
    print(
        f"labclient client: rounds={stats.rounds} answered={stats.answered} late={stats.late}"
        f" duplicate={stats.duplicate} send_errors={stats.send_errors}"
        f" skipped_slots={stats.skipped_slots}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
