"""The Linux backend: VIPs over netlink (pyroute2), ARP and ND from an AF_PACKET raw socket.

The backend's methods block (netlink round trips, a gratuitous-ARP burst), so the daemon calls
them through `asyncio.to_thread`; calling one on a running event loop is refused, also because
pyroute2's synchronous API runs its own event loop underneath. What it opens for the loop, the
LAN listener (`LinuxLanSocket`) and the link monitor (`LinuxLinkMonitor`), is non-blocking.

One netlink socket is opened on first use and shared, behind a lock, by the worker threads.
Packet sockets for announcements are opened per burst: they are cheap, and a fresh socket picks
up an interface that was re-created or renamed meanwhile. The LAN listener stays open, with a
kernel BPF filter (`nd.lan_filter`) so that only ARP or ND about our VIPs and witnesses wakes
it. With IPv4 only it is bound to ARP and its filter is exactly `arp.arp_filter`; with any
IPv6 VIP or witness it is bound to every protocol and the filter has an ND branch too.

The listener also joins each IPv6 VIP's solicited-node multicast MAC (a rival's DAD probe
goes there, not to broadcast).

IPv6 VIPs are added with IFA_F_NODAD: havip's own probe already found the LAN silent, and
kernel DAD would leave the address tentative, unusable, for about a second. IFA_LABEL exists
for IPv4 only, so an IPv6 VIP is known as havip's by its address and prefix alone.

Caveat an operator should know: when the VIP is the *primary* address of its subnet on the
interface (no host address in that subnet), removing it also removes the secondaries of that
subnet, such as another VIP, unless `net.ipv4.conf.<if>.promote_secondaries=1`. havip does
not change sysctls; the daemon's periodic reconcile puts a lost VIP back. Likewise Linux
drops every IPv6 address, an IPv6 VIP included, when its link goes down, unless
`net.ipv6.conf.<if>.keep_addr_on_down=1`; reconcile adds it back once the link returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from havip.backends.arp import (
    ARPHRD_ETHER,
    ETH_P_ARP,
    OP_REQUEST,
    UNSPECIFIED,
    ZERO_MAC,
    bpf_bytes,
    build_arp,
    gratuitous_frames,
    probe_frame,
)
from havip.backends.base import BackendError, BackendOp, Heard, IPAddress, LinkState
from havip.backends.nd import (
    ETH_P_IPV6,
    announce_frame,
    classify_frame,
    lan_filter,
    multicast_mac,
    probe_frame6,
    request_frame6,
    solicited_node,
)
from havip.config import Vip

T = TypeVar("T")

IFNAMSIZ = 16  # including the terminating NUL, so names and labels hold at most 15 bytes
SIOCGIFHWADDR = 0x8927
PACKET_OUTGOING = 4
LABEL_SUFFIX = ":havip"
SHORT_LABEL_SUFFIX = ":hv"
_MAX_DRAIN = 256  # frames read per wake-up, so a flood cannot pin the loop
SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h
ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_MULTICAST = 263, 1, 0
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_LINK_RCVBUF = 1 << 20  # link events come in bursts (a bridge of many ports going down)
ABSENT = LinkState(exists=False, up=False, carrier=False)


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

    def _netlink(
        self, op: BackendOp, vip: Vip | None, fn: Callable[[Any], T], interface: str = ""
    ) -> T:
        """Run `fn(ipr)` on the shared IPRoute under the lock. NetlinkError passes through for
        the caller to judge; any other failure drops the socket so the next call reopens."""
        _refuse_event_loop()
        with self._lock:
            if self._ipr is None:
                try:
                    self._ipr = IPRoute()
                except OSError as exc:
                    cause = f"cannot open netlink socket: {exc}"
                    raise BackendError(op, vip, cause, interface=interface) from exc
            try:
                return fn(self._ipr)
            except (NetlinkError, BackendError):
                raise
            except Exception as exc:
                self._close_locked()
                raise BackendError(op, vip, f"netlink: {exc!r}", interface=interface) from exc

    def _query(self, op: BackendOp, interface: str, fn: Callable[[Any], T]) -> T:
        """`_netlink` for a whole interface, NetlinkError turned into BackendError."""
        try:
            return self._netlink(op, None, fn, interface)
        except NetlinkError as exc:
            raise BackendError(op, None, _netlink_cause(exc), interface=interface) from exc

    @staticmethod
    def _index(ipr: Any, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    @staticmethod
    def _has(ipr: Any, index: int, vip: Vip) -> bool:
        want_ip, want_len = vip.ip, vip.address.network.prefixlen
        family = socket.AF_INET if vip.ip.version == 4 else socket.AF_INET6
        for msg in ipr.get_addr(index=index, family=family):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if msg["index"] != index or not local or msg["prefixlen"] != want_len:
                continue
            if ipaddress.ip_address(local) == want_ip:  # IPv6 text has many spellings
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
        """`ip addr add VIP/prefix dev IF label IF:havip` (IPv6: `... nodad`, no label), then
        check it is there."""

        def do(ipr: Any) -> None:
            index = self._index(ipr, vip.interface)
            if index is None:
                raise BackendError(BackendOp.ADD, vip, f"interface {vip.interface} does not exist")
            # IPv4: labelled as ours. IPv6 has no labels; no DAD (see the module docstring).
            extra: dict[str, Any] = (
                {"label": address_label(vip.interface)}
                if vip.ip.version == 4
                else {"flags": IFA_F_NODAD}
            )
            try:
                ipr.addr(
                    "add",
                    index=index,
                    address=str(vip.ip),
                    prefixlen=vip.address.network.prefixlen,
                    **extra,
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
    def _packet_socket(
        op: BackendOp,
        vip: Vip | None,
        ifname: str,
        program: Callable[[bytes], bytes] | None = None,
        protocol: int = ETH_P_ARP,
    ) -> tuple[socket.socket, bytes]:
        """An AF_PACKET socket bound to `ifname` for `protocol` (ARP, IPv6 or all), and that
        interface's MAC. With
        `program` (the interface MAC -> a classic BPF program), the filter is attached before
        the socket is bound, so no unfiltered frame is ever queued."""
        _refuse_event_loop()

        def fail(cause: str) -> BackendError:
            return BackendError(op, vip, cause, interface=ifname)

        if not ifname or len(ifname.encode()) >= IFNAMSIZ or "/" in ifname:
            raise fail(f"interface name {ifname!r} is not a valid Linux name")
        try:
            # Protocol 0 receives nothing until bind() names both interface and protocol, so
            # no frame from other interfaces can slip into the queue in between.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        except OSError as exc:
            raise fail(f"cannot open packet socket: {exc}") from exc
        try:
            try:
                ifreq = fcntl.ioctl(
                    sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode())
                )
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise fail(f"interface {ifname} does not exist") from exc
                raise fail(f"cannot read the interface MAC: {exc}") from exc
            (hwtype,) = struct.unpack_from("=H", ifreq, 16)
            if hwtype != ARPHRD_ETHER:
                raise fail(f"interface {ifname} is not Ethernet (ARPHRD {hwtype}), no ARP or ND")
            mac = bytes(ifreq[18:24])
            if program is not None:
                try:
                    _attach_filter(sock, program(mac))
                except OSError as exc:
                    raise fail(f"cannot attach the LAN filter: {exc}") from exc
            try:
                sock.bind((ifname, protocol))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise fail(f"interface {ifname} does not exist") from exc
                raise fail(f"cannot bind packet socket: {exc}") from exc
            return sock, mac
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _send(sock: socket.socket, frame: bytes, op: BackendOp, vip: Vip) -> None:
        what = "ARP" if vip.ip.version == 4 else "a neighbour advertisement"
        try:
            sent = sock.send(frame)
        except OSError as exc:
            raise BackendError(op, vip, f"cannot send {what}: {exc}") from exc
        if sent != len(frame):
            raise BackendError(op, vip, f"short send: {sent} of {len(frame)} bytes")

    def announce(self, vip: Vip) -> int:
        """Gratuitous ARP, request and reply forms, broadcast, `garp_rounds` times; for an
        IPv6 VIP one unsolicited NA (all-nodes, Override) per round, from our link-local
        address on the interface (the VIP itself if it has none)."""
        if isinstance(vip.ip, IPv6Address):
            source = self._link_local(BackendOp.ANNOUNCE, vip.interface)
            sock, mac = self._packet_socket(
                BackendOp.ANNOUNCE, vip, vip.interface, protocol=ETH_P_IPV6
            )
            frames = [announce_frame(mac, vip.ip, source)]
        else:
            sock, mac = self._packet_socket(BackendOp.ANNOUNCE, vip, vip.interface)
            frames = gratuitous_frames(mac, vip.ip)
        with sock:
            sent = 0
            for round_ in range(self.garp_rounds):
                if round_:
                    time.sleep(self.garp_interval)
                for frame in frames:
                    self._send(sock, frame, BackendOp.ANNOUNCE, vip)
                    sent += 1
            return sent

    def open_lan(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
    ) -> LinuxLanSocket:
        """An ARP (and, with IPv6 addresses, ND) listener on `interface` that hears only frames
        about `vips` or `witnesses` (kernel BPF filter), non-blocking. Also looks up, once,
        which of our addresses a witness request should come from (none: 0.0.0.0, or :: for
        IPv6). Blocks briefly (netlink)."""
        op = BackendOp.LISTEN
        if not vips:
            raise BackendError(op, None, "no VIPs to listen for", interface=interface)
        vip_list, witness_list = list(dict.fromkeys(vips)), list(dict.fromkeys(witnesses))
        try:
            lan_filter(own_mac=ZERO_MAC, vips=vip_list, witnesses=witness_list)
        except ValueError as exc:
            raise BackendError(op, None, str(exc), interface=interface) from exc
        # IPv4 alone: bound to ARP as ever. With IPv6 the socket must also see ND (ICMPv6 in
        # IPv6 frames), so it takes every protocol and the filter sorts ARP from ND.
        ipv6 = any(ip.version == 6 for ip in (*vip_list, *witness_list))
        sock, mac = self._packet_socket(
            op,
            None,
            interface,
            lambda mac: bpf_bytes(lan_filter(own_mac=mac, vips=vip_list, witnesses=witness_list)),
            protocol=ETH_P_ALL if ipv6 else ETH_P_ARP,
        )
        try:
            sock.setblocking(False)
            for vip in vip_list:
                if isinstance(vip, IPv6Address):
                    _join_solicited_node(sock, interface, vip)
            sources = self._witness_sources(interface, vip_list, witness_list) if witnesses else {}
        except BaseException:
            sock.close()
            raise
        return LinuxLanSocket(
            sock, interface=interface, mac=mac, vips=vip_list, witnesses=witness_list,
            sources=sources,
        )  # fmt: skip

    def _witness_sources(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
    ) -> dict[IPAddress, IPAddress]:
        """For each witness, our own (non-VIP) address on its subnet, where we have one; for
        an IPv6 witness with none, our link-local address (always on the witness's link)."""
        sources: dict[IPAddress, IPAddress] = {}
        v4 = [w for w in witnesses if isinstance(w, IPv4Address)]
        v6 = [w for w in witnesses if isinstance(w, IPv6Address)]
        ours: list[IPv4Interface | IPv6Interface] = []
        if v4:
            ours += self._addresses(BackendOp.LISTEN, interface)
        if v6:
            ours += self._addresses6(BackendOp.LISTEN, interface)
        ours = [a for a in ours if a.ip not in vips]
        link_local = next((a.ip for a in ours if a.ip.version == 6 and a.ip.is_link_local), None)
        for witness in witnesses:
            for address in ours:
                if witness in address.network and witness != address.ip:
                    sources[witness] = address.ip
                    break
            else:
                if witness.version == 6 and link_local is not None:
                    sources[witness] = link_local
        return sources

    def open_link_monitor(self) -> LinuxLinkMonitor:
        """Link events for every interface of this namespace (RTMGRP_LINK), non-blocking."""
        return LinuxLinkMonitor()

    def link_state(self, interface: str) -> LinkState:
        """The link now, from netlink; a missing interface is exists=False."""

        def do(ipr: Any) -> LinkState:
            index = self._index(ipr, interface)
            if index is None:
                return ABSENT
            links = ipr.get_links(index)
            if not links:
                return ABSENT
            return _link_state(int(links[0]["flags"]))

        try:
            return self._query(BackendOp.LINK, interface, do)
        except BackendError as exc:
            # The interface went away between lookup and query: that is an answer.
            if isinstance(exc.__cause__, NetlinkError) and exc.__cause__.code == errno.ENODEV:
                return ABSENT
            raise

    def addresses6(self, interface: str) -> list[IPv6Interface]:
        """The usable IPv6 addresses (with their prefix, link-local ones included) on
        `interface`; tentative and DAD-failed ones are left out."""
        return self._addresses6(BackendOp.LINK, interface)

    def _addresses6(self, op: BackendOp, interface: str) -> list[IPv6Interface]:
        def do(ipr: Any) -> list[IPv6Interface]:
            index = self._index(ipr, interface)
            if index is None:
                return []
            found = []
            for msg in ipr.get_addr(index=index, family=socket.AF_INET6):
                address = msg.get("IFA_ADDRESS")
                # IFA_FLAGS holds all 32 bits; the header's flags field only the low 8.
                flags = int(msg.get("IFA_FLAGS") or msg["flags"])
                if msg["index"] != index or not address:
                    continue
                if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                    continue
                found.append(IPv6Interface(f"{address}/{msg['prefixlen']}"))
            return found

        return self._query(op, interface, do)

    def _link_local(self, op: BackendOp, interface: str) -> IPv6Address | None:
        """Our link-local address on `interface`, if it has a usable one."""
        for address in self._addresses6(op, interface):
            if address.ip.is_link_local:
                return address.ip
        return None

    def addresses(self, interface: str) -> list[IPv4Interface]:
        """The IPv4 addresses (with their prefix) on `interface`; none when it does not exist."""
        return self._addresses(BackendOp.LINK, interface)

    def _addresses(self, op: BackendOp, interface: str) -> list[IPv4Interface]:
        def do(ipr: Any) -> list[IPv4Interface]:
            index = self._index(ipr, interface)
            if index is None:
                return []
            found = []
            for msg in ipr.get_addr(index=index, family=socket.AF_INET):
                # IFA_LOCAL is this host's end on point-to-point links, where IFA_ADDRESS is not.
                local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
                if msg["index"] == index and local:
                    found.append(IPv4Interface(f"{local}/{msg['prefixlen']}"))
            return found

        return self._query(op, interface, do)

    def default_gateway(self, interface: str) -> IPv4Address | None:
        """The gateway of the main table's IPv4 default route out of `interface` (the one
        with the lowest metric; a multipath route counts through its hops), else None."""
        gateway = self._default_gateway(interface, socket.AF_INET)
        return gateway if isinstance(gateway, IPv4Address) else None

    def default_gateway6(self, interface: str) -> IPv6Address | None:
        """The gateway of the main table's IPv6 default route out of `interface` (lowest
        metric; usually a router's link-local address), else None."""
        gateway = self._default_gateway(interface, socket.AF_INET6)
        return gateway if isinstance(gateway, IPv6Address) else None

    def _default_gateway(self, interface: str, family: int) -> IPv4Address | IPv6Address | None:
        default = "0.0.0.0" if family == socket.AF_INET else "::"

        def do(ipr: Any) -> IPv4Address | IPv6Address | None:
            index = self._index(ipr, interface)
            if index is None:
                return None
            best: tuple[int, IPv4Address | IPv6Address] | None = None
            for route in ipr.get_routes(family=family, table=254):
                if route["dst_len"] != 0 or route.get("RTA_DST") not in (None, default):
                    continue
                metric = int(route.get("RTA_PRIORITY") or 0)
                hops = [(route.get("RTA_OIF"), route.get("RTA_GATEWAY"))]
                for hop in route.get("RTA_MULTIPATH") or ():
                    hops.append((hop["oif"], hop.get("RTA_GATEWAY")))
                for oif, gateway in hops:
                    if oif == index and gateway and (best is None or metric < best[0]):
                        best = (metric, ipaddress.ip_address(gateway))
            return best[1] if best else None

        return self._query(BackendOp.ROUTE, interface, do)

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


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program from a struct sock_fprog, which holds a
    pointer, hence a ctypes buffer that lives until setsockopt returns."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _join_solicited_node(sock: socket.socket, interface: str, vip: IPv6Address) -> None:
    """Let the VIP's solicited-node multicast MAC through the NIC's filter. A rival's probe
    goes there (ARP is broadcast, DAD is not), and a node that does not hold the VIP has not
    joined that group, so without this a real NIC would drop the frame before we see it."""
    group = multicast_mac(solicited_node(vip))
    try:
        index = socket.if_nametoindex(interface)
        mreq = struct.pack("iHH8s", index, PACKET_MR_MULTICAST, len(group), group)
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    except OSError as exc:
        cause = f"cannot join {vip}'s solicited-node group: {exc}"
        raise BackendError(BackendOp.LISTEN, None, cause, interface=interface) from exc


def _link_state(flags: int) -> LinkState:
    return LinkState(exists=True, up=bool(flags & IFF_UP), carrier=bool(flags & IFF_LOWER_UP))


class LinuxLanSocket:
    """ARP and ND on one interface for the event loop: reads what the BPF filter lets through
    and sends probes and witness requests. Never blocks."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        interface: str,
        mac: bytes,
        vips: Sequence[IPAddress],
        witnesses: Sequence[IPAddress],
        sources: dict[IPAddress, IPAddress],
    ) -> None:
        self._sock = sock
        self.interface = interface
        self.mac = mac
        self.vips = frozenset(vips)
        self.witnesses = frozenset(witnesses)
        self._sources = sources
        self.frames = 0  # frames read (that passed the kernel filter)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _fail(self, op: BackendOp, cause: str) -> BackendError:
        return BackendError(op, None, cause, interface=self.interface)

    def read(self) -> list[Heard]:
        """What is queued, at most `_MAX_DRAIN` frames. An interface going down reports
        ENETDOWN once; the socket works again when it comes back, so that is no error."""
        heard = []
        for _ in range(_MAX_DRAIN):
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENETDOWN:
                    break
                raise self._fail(BackendOp.LISTEN, f"cannot receive ARP: {exc}") from exc
            self.frames += 1
            if addr[2] == PACKET_OUTGOING:  # the filter drops these too; belt and braces
                continue
            found = classify_frame(data, own_mac=self.mac, vips=self.vips, witnesses=self.witnesses)
            if found is not None:
                heard.append(found)
        return heard

    def _send(self, frame: bytes) -> None:
        try:
            sent = self._sock.send(frame)
        except OSError as exc:
            raise self._fail(BackendOp.PROBE, f"cannot send ARP: {exc}") from exc
        if sent != len(frame):
            raise self._fail(BackendOp.PROBE, f"short send: {sent} of {len(frame)} bytes")

    def send_probe(self, ip: IPAddress) -> None:
        if isinstance(ip, IPv6Address):
            self._send(probe_frame6(self.mac, ip))
        else:
            self._send(probe_frame(self.mac, ip))

    def send_request(self, ip: IPAddress) -> None:
        if isinstance(ip, IPv6Address):
            source6 = self._sources.get(ip)
            assert source6 is None or isinstance(source6, IPv6Address)
            self._send(request_frame6(self.mac, ip, source6))
            return
        source = self._sources.get(ip, UNSPECIFIED)
        assert isinstance(source, IPv4Address)  # _witness_sources keeps families apart
        self._send(
            build_arp(
                op=OP_REQUEST,
                sender_mac=self.mac,
                sender_ip=source,
                target_mac=ZERO_MAC,
                target_ip=ip,
            )
        )

    def close(self) -> None:
        self._sock.close()


class LinuxLinkMonitor:
    """RTM_NEWLINK / RTM_DELLINK events from a non-blocking rtnetlink socket (RTMGRP_LINK).

    The socket's queue can overflow in a burst of events (ENOBUFS): then the monitor asks the
    kernel for a full link dump on the same socket and, when it ends, reports every interface
    it knew that the dump no longer lists as gone. A renamed interface is reported gone under
    its old name."""

    def __init__(self) -> None:
        try:
            sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                socket.NETLINK_ROUTE,
            )
        except OSError as exc:
            raise BackendError(BackendOp.LINK, None, f"cannot open netlink socket: {exc}") from exc
        try:
            with contextlib.suppress(OSError):  # a smaller buffer still works
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _LINK_RCVBUF)
            sock.bind((0, RTMGRP_LINK))
        except OSError as exc:
            sock.close()
            raise BackendError(BackendOp.LINK, None, f"cannot listen to netlink: {exc}") from exc
        self._sock = sock
        self._names: dict[int, str] = {}  # ifindex -> name, as last reported
        self._dump_seq = 0
        self._dumped: set[int] | None = None  # indexes seen in the dump in progress

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[tuple[str, LinkState]]:
        changes: list[tuple[str, LinkState]] = []
        for _ in range(_MAX_DRAIN):
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise BackendError(BackendOp.LINK, None, f"cannot read netlink: {exc}") from exc
                self._resync()
                continue
            changes += self._parse(data)
        return changes

    def _resync(self) -> None:
        """Events were lost: dump every link; what the dump lacks is gone."""
        self._dump_seq += 1
        self._dumped = set()
        request = _NLMSGHDR.pack(
            _NLMSGHDR.size + _IFINFOMSG.size,
            RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP,
            self._dump_seq,
            0,
        ) + _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        try:
            self._sock.sendto(request, (0, 0))
        except OSError as exc:
            self._dumped = None
            raise BackendError(BackendOp.LINK, None, f"cannot ask for a link dump: {exc}") from exc

    def _parse(self, data: bytes) -> list[tuple[str, LinkState]]:
        changes: list[tuple[str, LinkState]] = []
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                break  # malformed: the rest of this datagram cannot be trusted
            message = data[offset : offset + length]
            offset += (length + 3) & ~3
            if kind in (NLMSG_DONE, NLMSG_ERROR) and seq == self._dump_seq:
                changes += self._dump_done()
            elif kind in (RTM_NEWLINK, RTM_DELLINK):
                changes += self._link(kind, message, dumped=seq == self._dump_seq != 0)
        return changes

    def _link(self, kind: int, message: bytes, *, dumped: bool) -> list[tuple[str, LinkState]]:
        msg = ifinfmsg(message)
        msg.decode()
        index, flags = int(msg["index"]), int(msg["flags"])
        name = msg.get_attr("IFLA_IFNAME")
        if not isinstance(name, str):
            return []
        changes = []
        old = self._names.get(index)
        if old is not None and old != name:
            changes.append((old, ABSENT))
        if kind == RTM_DELLINK:
            self._names.pop(index, None)
            changes.append((name, ABSENT))
        else:
            self._names[index] = name
            # Only the dump's own answers say what exists now: ENOBUFS is reported before the
            # events still queued, which may be older than the loss.
            if dumped and self._dumped is not None:
                self._dumped.add(index)
            changes.append((name, _link_state(flags)))
        return changes

    def _dump_done(self) -> list[tuple[str, LinkState]]:
        seen, self._dumped = self._dumped, None
        if seen is None:
            return []
        gone = [index for index in self._names if index not in seen]
        return [(self._names.pop(index), ABSENT) for index in gone]

    def close(self) -> None:
        self._sock.close()
