"""The Linux backend: VIPs over netlink (pyroute2), ARP from an AF_PACKET raw socket.

Every method blocks (netlink round trips, up to a probe window of listening), so the daemon
calls them through `asyncio.to_thread`; calling one on a running event loop is refused, also
because pyroute2's synchronous API runs its own event loop underneath.

One netlink socket is opened on first use and shared, behind a lock, by the worker threads.
Packet sockets are opened per announce/probe: they are cheap, and a fresh socket picks up an
interface that was re-created or renamed meanwhile.

Caveat an operator should know: when the VIP is the *primary* address of its subnet on the
interface (no host address in that subnet), removing it also removes the secondaries of that
subnet, such as another VIP, unless `net.ipv4.conf.<if>.promote_secondaries=1`. havip does
not change sysctls; the daemon's periodic reconcile puts a lost VIP back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import math
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError

from havip.backends.arp import (
    ARPHRD_ETHER,
    ETH_P_ARP,
    claims,
    gratuitous_frames,
    mac_text,
    parse_arp,
    probe_frame,
)
from havip.backends.base import BackendError, BackendOp
from havip.config import Vip

T = TypeVar("T")

IFNAMSIZ = 16  # including the terminating NUL, so names and labels hold at most 15 bytes
SIOCGIFHWADDR = 0x8927
PACKET_OUTGOING = 4
LABEL_SUFFIX = ":havip"
SHORT_LABEL_SUFFIX = ":hv"
_MAX_DRAIN = 256  # frames read per wake-up, so a flood cannot pin the loop
_MAX_STEPS = 100_000  # hard cap on probe loop iterations, far above what a window needs


def address_label(ifname: str) -> str:
    """The label havip puts on its addresses: "<if>:havip", or "<if>:hv" when the long form
    would pass the kernel's 15-byte limit. Interfaces too long even for that (13+ bytes) get
    the kernel's default label, the interface name itself: havip then cannot be told from an
    operator's address in `ip addr`, but the VIP still works."""
    for suffix in (LABEL_SUFFIX, SHORT_LABEL_SUFFIX):
        if len((ifname + suffix).encode()) < IFNAMSIZ:
            return ifname + suffix
    return ifname


def _refuse_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("LinuxBackend blocks: call it through asyncio.to_thread, not on the loop")


def _netlink_cause(exc: NetlinkError) -> str:
    code = int(exc.code)
    return f"netlink: {os.strerror(code)} (errno {code})"


class LinuxBackend:
    """VIPs on Linux interfaces. Gratuitous ARP is `garp_rounds` rounds of both forms,
    `garp_interval` seconds apart."""

    name = "linux"

    def __init__(self, *, garp_rounds: int = 3, garp_interval: float = 0.02) -> None:
        if garp_rounds < 1:
            raise ValueError(f"garp_rounds must be at least 1, got {garp_rounds}")
        self.garp_rounds = garp_rounds
        self.garp_interval = garp_interval
        self._lock = threading.Lock()
        self._ipr: Any = None

    # --- netlink ---------------------------------------------------------------------------

    def _netlink(self, op: BackendOp, vip: Vip, fn: Callable[[Any], T]) -> T:
        """Run `fn(ipr)` on the shared IPRoute under the lock. NetlinkError passes through for
        the caller to judge; any other failure drops the socket so the next call reopens."""
        _refuse_event_loop()
        with self._lock:
            if self._ipr is None:
                try:
                    self._ipr = IPRoute()
                except OSError as exc:
                    raise BackendError(op, vip, f"cannot open netlink socket: {exc}") from exc
            try:
                return fn(self._ipr)
            except (NetlinkError, BackendError):
                raise
            except Exception as exc:
                self._close_locked()
                raise BackendError(op, vip, f"netlink: {exc!r}") from exc

    @staticmethod
    def _index(ipr: Any, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    @staticmethod
    def _has(ipr: Any, index: int, vip: Vip) -> bool:
        want_ip, want_len = str(vip.ip), vip.address.network.prefixlen
        for msg in ipr.get_addr(index=index, family=socket.AF_INET):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if msg["index"] == index and local == want_ip and msg["prefixlen"] == want_len:
                return True
        return False

    def present(self, vip: Vip) -> bool:
        """The VIP (same address and prefix length) is on its interface; a missing interface
        holds nothing, so that is False rather than an error."""

        def do(ipr: Any) -> bool:
            index = self._index(ipr, vip.interface)
            return index is not None and self._has(ipr, index, vip)

        try:
            return self._netlink(BackendOp.PRESENT, vip, do)
        except NetlinkError as exc:
            raise BackendError(BackendOp.PRESENT, vip, _netlink_cause(exc)) from exc

    def add(self, vip: Vip) -> None:
        """`ip addr add VIP/prefix dev IF label IF:havip`, then check it is there."""

        def do(ipr: Any) -> None:
            index = self._index(ipr, vip.interface)
            if index is None:
                raise BackendError(BackendOp.ADD, vip, f"interface {vip.interface} does not exist")
            try:
                ipr.addr(
                    "add",
                    index=index,
                    address=str(vip.ip),
                    prefixlen=vip.address.network.prefixlen,
                    label=address_label(vip.interface),
                )
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise BackendError(BackendOp.ADD, vip, _netlink_cause(exc)) from exc
            if not self._has(ipr, index, vip):
                raise BackendError(BackendOp.ADD, vip, "added, but not on the interface after")

        try:
            self._netlink(BackendOp.ADD, vip, do)
        except NetlinkError as exc:
            raise BackendError(BackendOp.ADD, vip, _netlink_cause(exc)) from exc

    def remove(self, vip: Vip) -> None:
        """`ip addr del VIP/prefix dev IF`; absent address or interface is success."""

        def do(ipr: Any) -> None:
            index = self._index(ipr, vip.interface)
            if index is None:
                return
            try:
                ipr.addr(
                    "del",
                    index=index,
                    address=str(vip.ip),
                    prefixlen=vip.address.network.prefixlen,
                )
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                    raise BackendError(BackendOp.REMOVE, vip, _netlink_cause(exc)) from exc

        try:
            self._netlink(BackendOp.REMOVE, vip, do)
        except NetlinkError as exc:
            raise BackendError(BackendOp.REMOVE, vip, _netlink_cause(exc)) from exc

    # --- ARP -------------------------------------------------------------------------------

    @staticmethod
    def _packet_socket(op: BackendOp, vip: Vip) -> tuple[socket.socket, bytes]:
        """An AF_PACKET socket bound to the VIP's interface for ARP, and that interface's MAC."""
        _refuse_event_loop()
        ifname = vip.interface
        if not ifname or len(ifname.encode()) >= IFNAMSIZ:
            raise BackendError(op, vip, f"interface name {ifname!r} is not a valid Linux name")
        try:
            # Protocol 0 receives nothing until bind() names both interface and protocol, so
            # no ARP from other interfaces can slip into the queue in between.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise BackendError(op, vip, f"cannot open packet socket: {exc}") from exc
        try:
            try:
                sock.bind((ifname, ETH_P_ARP))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise BackendError(op, vip, f"interface {ifname} does not exist") from exc
                raise BackendError(op, vip, f"cannot bind packet socket: {exc}") from exc
            try:
                ifreq = fcntl.ioctl(
                    sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode())
                )
            except OSError as exc:
                raise BackendError(op, vip, f"cannot read the interface MAC: {exc}") from exc
            (hwtype,) = struct.unpack_from("=H", ifreq, 16)
            if hwtype != ARPHRD_ETHER:
                raise BackendError(
                    op, vip, f"interface {ifname} is not Ethernet (ARPHRD {hwtype}), no ARP"
                )
            return sock, bytes(ifreq[18:24])
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _send(sock: socket.socket, frame: bytes, op: BackendOp, vip: Vip) -> None:
        try:
            sent = sock.send(frame)
        except OSError as exc:
            raise BackendError(op, vip, f"cannot send ARP: {exc}") from exc
        if sent != len(frame):
            raise BackendError(op, vip, f"short send: {sent} of {len(frame)} bytes")

    def announce(self, vip: Vip) -> int:
        """Gratuitous ARP, request and reply forms, broadcast, `garp_rounds` times."""
        sock, mac = self._packet_socket(BackendOp.ANNOUNCE, vip)
        with sock:
            frames = gratuitous_frames(mac, vip.ip)
            sent = 0
            for round_ in range(self.garp_rounds):
                if round_:
                    time.sleep(self.garp_interval)
                for frame in frames:
                    self._send(sock, frame, BackendOp.ANNOUNCE, vip)
                    sent += 1
            return sent

    def probe(self, vip: Vip, count: int, window: float) -> str | None:
        """RFC 5227 probe. Answers are any ARP whose sender IP is the VIP, and another host's
        probe for the VIP (see `arp.claims`); never frames from our own MAC."""
        if count < 1:
            raise ValueError(f"probe count must be at least 1, got {count}")
        window = max(window, 0.0)
        sock, mac = self._packet_socket(BackendOp.PROBE, vip)
        with sock:
            sock.setblocking(False)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            frame = probe_frame(mac, vip.ip)
            spacing = window * 2 / 3 / (count - 1) if count > 1 else 0.0
            start = time.monotonic()
            deadline = start + window
            sent = 0
            for _ in range(_MAX_STEPS):
                now = time.monotonic()
                while sent < count and now >= start + sent * spacing:
                    self._send(sock, frame, BackendOp.PROBE, vip)
                    sent += 1
                answer = self._answer(sock, mac, vip)
                if answer is not None:
                    return answer
                if sent == count and now >= deadline:
                    return None
                wake = deadline if sent == count else min(deadline, start + sent * spacing)
                poller.poll(math.ceil(max(wake - now, 0.0) * 1000))
            raise BackendError(BackendOp.PROBE, vip, "probe loop did not finish (clock stuck?)")

    @staticmethod
    def _answer(sock: socket.socket, own_mac: bytes, vip: Vip) -> str | None:
        """Read what is queued (bounded); the MAC of the first frame that claims the VIP."""
        for _ in range(_MAX_DRAIN):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise BackendError(BackendOp.PROBE, vip, f"cannot receive ARP: {exc}") from exc
            if addr[0] != vip.interface or addr[2] == PACKET_OUTGOING:
                continue
            packet = parse_arp(data)
            if packet is not None and claims(packet, ip=vip.ip, own_mac=own_mac):
                return mac_text(packet.sender_mac)
        return None

    # --- lifecycle -------------------------------------------------------------------------

    def _close_locked(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            # Closing a socket that already broke: nothing is left to save.
            with contextlib.suppress(Exception):
                ipr.close()

    def close(self) -> None:
        """Close the netlink socket (a later call would open a new one). Safe to call from
        anywhere, also from the event loop, as shutdown code does."""

        def shut() -> None:
            with self._lock:
                self._close_locked()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            shut()
            return
        # pyroute2 cannot close on a thread that runs a loop; a short-lived thread can.
        closer = threading.Thread(target=shut, name="havip-netlink-close")
        closer.start()
        closer.join(timeout=5.0)
