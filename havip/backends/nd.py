"""IPv6 Neighbour Discovery over Ethernet (RFC 4861, RFC 4862): the IPv6 twin of `arp`.

Build, parse and classify the ND frames havip sends and hears, and the kernel filter for a
LAN socket that hears both ARP and ND; no sockets, no clock.

- announce: an unsolicited Neighbour Advertisement (NA) to all-nodes, Override set, target the
  VIP, with our MAC in the Target Link-Layer Address option (RFC 4861 7.2.6);
- probe: a Neighbour Solicitation (NS) in the DAD style of RFC 4862 5.4: source `::`, to the
  VIP's solicited-node multicast address, no source link-layer option. Whoever holds the VIP
  answers with an NA to all-nodes whose target is the VIP;
- witness request: an ordinary NS from one of our own addresses, with our MAC in the Source
  Link-Layer Address option, answered by a solicited NA.

Every frame is hop limit 255 and receivers drop anything else (RFC 4861 7.1.1: a router would
have decremented it, so such a frame was forged off-link). ICMPv6 must come straight after the
fixed IPv6 header: ND never uses extension headers, so a frame with any is not ND to us.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from havip.backends.arp import (
    ACCEPT_BYTES,
    ETH_P_ARP,
    JEQ,
    LD_H,
    LD_W,
    MAX_FILTER_ADDRESSES,
    PACKET_OUTGOING,
    RET,
    SKF_AD_PKTTYPE,
    arp_branch,
    arp_filter,
    classify,
    mac_text,
    parse_arp,
)
from havip.backends.base import Heard, HeardKind, IPAddress

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
HOP_LIMIT = 255
ND_NS = 135  # Neighbour Solicitation
ND_NA = 136  # Neighbour Advertisement
OPT_SLLA = 1  # Source Link-Layer Address
OPT_TLLA = 2  # Target Link-Layer Address
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20

UNSPECIFIED6 = IPv6Address("::")
ALL_NODES = IPv6Address("ff02::1")
_SOLICITED_NODE = int(IPv6Address("ff02::1:ff00:0"))

ETH_LEN, IP6_LEN = 14, 40
SRC_AT = ETH_LEN + 8  # 22: the IPv6 source address
ICMP_AT = ETH_LEN + IP6_LEN  # 54: where the ICMPv6 message starts in the frame
ND_LEN = 24  # type, code, checksum, flags/reserved (4), target (16)
TARGET_AT = ICMP_AT + 8  # 62
OPTIONS_AT = ICMP_AT + ND_LEN  # 78

_ETH = struct.Struct("!6s6sH")
_IP6 = struct.Struct("!IHBB16s16s")  # version/class/flow, payload length, next header, hops
_ND = struct.Struct("!BBHI16s")  # type, code, checksum, flags << 24 (NA) or reserved (NS)


@dataclass(frozen=True, kw_only=True)
class NdPacket:
    """One NS or NA that passed every RFC 4861 validity check we make (see `parse_nd`)."""

    type: int  # ND_NS or ND_NA
    eth_src: bytes
    src: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    flags: int  # NA_ROUTER | NA_SOLICITED | NA_OVERRIDE bits (0 for an NS)
    lladdr: bytes | None  # the SLLA option of an NS, the TLLA option of an NA

    @property
    def is_dad(self) -> bool:
        """RFC 4862 DAD probe: an NS from `::`, by a host that has no address yet."""
        return self.type == ND_NS and self.src == UNSPECIFIED6


def solicited_node(ip: IPv6Address) -> IPv6Address:
    """The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX, RFC 4291 2.7.1)."""
    return IPv6Address(_SOLICITED_NODE | (int(ip) & 0xFFFFFF))


def multicast_mac(group: IPv6Address) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 and its last 32 bits (RFC 2464)."""
    if not group.is_multicast:
        raise ValueError(f"{group} is not a multicast address")
    return b"\x33\x33" + group.packed[12:]


def checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum of `message` (its checksum field zero) with the IPv6 pseudo-header
    of RFC 8200 8.1: source, destination, upper-layer length, next header."""
    data = src.packed + dst.packed + struct.pack("!IxxxB", len(message), IPPROTO_ICMPV6)
    data += message
    if len(data) % 2:
        data += b"\0"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(
    *,
    eth_src: bytes,
    eth_dst: bytes,
    src: IPv6Address,
    dst: IPv6Address,
    type_: int,
    word: int,
    target: IPv6Address,
    option: tuple[int, bytes] | None,
) -> bytes:
    for what, mac in (("eth_src", eth_src), ("eth_dst", eth_dst)):
        if len(mac) != 6:
            raise ValueError(f"{what} must be 6 bytes, got {len(mac)}")
    body = _ND.pack(type_, 0, 0, word, target.packed)
    if option is not None:
        kind, mac = option
        if len(mac) != 6:
            raise ValueError(f"link-layer option must be 6 bytes, got {len(mac)}")
        body += struct.pack("!BB6s", kind, 1, mac)  # length 1 = 8 octets
    body = body[:2] + struct.pack("!H", checksum(src, dst, body)) + body[4:]
    ip6 = _IP6.pack(6 << 28, len(body), IPPROTO_ICMPV6, HOP_LIMIT, src.packed, dst.packed)
    return _ETH.pack(eth_dst, eth_src, ETH_P_IPV6) + ip6 + body


def build_na(
    *,
    mac: bytes,
    src: IPv6Address,
    target: IPv6Address,
    flags: int = NA_OVERRIDE,
    dst: IPv6Address = ALL_NODES,
    dst_mac: bytes | None = None,
    tlla: bytes | None = None,
) -> bytes:
    """A Neighbour Advertisement from `mac`/`src` for `target`; `tlla` defaults to `mac`.
    To a multicast `dst` the Ethernet destination is derived; to a unicast one give it."""
    if dst_mac is None:
        dst_mac = multicast_mac(dst)
    if flags & ~(NA_ROUTER | NA_SOLICITED | NA_OVERRIDE):
        raise ValueError(f"NA flags {flags:#x}: only R, S and O exist")
    option = (OPT_TLLA, mac if tlla is None else tlla)
    return _frame(
        eth_src=mac,
        eth_dst=dst_mac,
        src=src,
        dst=dst,
        type_=ND_NA,
        word=flags << 24,
        target=target,
        option=option,
    )


def build_ns(
    *,
    mac: bytes,
    src: IPv6Address,
    target: IPv6Address,
    dst: IPv6Address | None = None,
    dst_mac: bytes | None = None,
    slla: bool = True,
) -> bytes:
    """A Neighbour Solicitation from `mac`/`src` for `target`, by default to its
    solicited-node address. `slla`: carry our MAC (never with source `::`, RFC 4861 7.1.1)."""
    if dst is None:
        dst = solicited_node(target)
    if dst_mac is None:
        dst_mac = multicast_mac(dst)
    if slla and src == UNSPECIFIED6:
        raise ValueError("an NS from :: must not carry a source link-layer address option")
    return _frame(
        eth_src=mac,
        eth_dst=dst_mac,
        src=src,
        dst=dst,
        type_=ND_NS,
        word=0,
        target=target,
        option=(OPT_SLLA, mac) if slla else None,
    )


def announce_frame(mac: bytes, vip: IPv6Address, source: IPv6Address | None) -> bytes:
    """Unsolicited NA for `vip` at `mac` to all-nodes, Override set, Solicited and Router
    clear. `source` is our link-local address on the interface (RFC 4861 wants an address of
    the interface); None falls back to the VIP itself."""
    return build_na(mac=mac, src=vip if source is None else source, target=vip)


def probe_frame6(mac: bytes, vip: IPv6Address) -> bytes:
    """The DAD-style probe for `vip`: an NS from `::` to its solicited-node group, no option."""
    return build_ns(mac=mac, src=UNSPECIFIED6, target=vip, slla=False)


def request_frame6(mac: bytes, witness: IPv6Address, source: IPv6Address | None) -> bytes:
    """An NS asking `witness` for its MAC from our own `source` address (never a VIP), with
    our MAC as the source link-layer option; without a source, DAD style from `::` (the
    witness then answers to all-nodes, which we hear as well)."""
    if source is None:
        return probe_frame6(mac, witness)
    return build_ns(mac=mac, src=source, target=witness)


def parse_nd(frame: bytes) -> NdPacket | None:
    """The NS or NA in an Ethernet frame, or None for anything else or anything invalid.

    Never raises. RFC 4861 7.1 checks made here: hop limit 255, ICMPv6 directly after the
    IPv6 header (no extension headers), code 0, the ICMPv6 length at least 24 and within the
    frame, a correct checksum, no option of length zero, a multicast target never. Trailing
    bytes past the IPv6 payload (Ethernet padding) are ignored."""
    if len(frame) < OPTIONS_AT:
        return None
    _dst, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        return None
    head, length, next_header, hops, src_b, dst_b = _IP6.unpack_from(frame, ETH_LEN)
    if head >> 28 != 6 or next_header != IPPROTO_ICMPV6 or hops != HOP_LIMIT:
        return None
    if length < ND_LEN or ICMP_AT + length > len(frame):
        return None
    message = frame[ICMP_AT : ICMP_AT + length]
    type_, code, check, word, target_b = _ND.unpack_from(message)
    if type_ not in (ND_NS, ND_NA) or code != 0:
        return None
    src, dst, target = IPv6Address(src_b), IPv6Address(dst_b), IPv6Address(target_b)
    if checksum(src, dst, message[:2] + b"\0\0" + message[4:]) != check or target.is_multicast:
        return None
    want = OPT_SLLA if type_ == ND_NS else OPT_TLLA
    lladdr: bytes | None = None
    offset = ND_LEN
    while offset + 2 <= length:  # bounded: each option is at least 8 bytes long
        kind, units = message[offset], message[offset + 1]
        if units == 0 or offset + units * 8 > length:
            return None
        if kind == want and units == 1 and lladdr is None:
            lladdr = bytes(message[offset + 2 : offset + 8])
        offset += units * 8
    if type_ == ND_NS and src == UNSPECIFIED6 and (lladdr is not None or not dst.is_multicast):
        return None  # RFC 4861 7.1.1: a DAD NS has no SLLA and goes to a multicast group
    return NdPacket(
        type=type_,
        eth_src=bytes(eth_src),
        src=src,
        dst=dst,
        target=target,
        flags=(word >> 24) & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE) if type_ == ND_NA else 0,
        lladdr=lladdr,
    )


def classify_nd(
    packet: NdPacket,
    *,
    own_mac: bytes,
    vips: Collection[IPAddress],
    witnesses: Collection[IPAddress] = (),
) -> Heard | None:
    """What `packet` tells a node that holds or wants `vips` and hears `witnesses`; the twin of
    `arp.classify`.

    CLAIM: an NA whose target is a VIP (MAC: its TLLA option, else the Ethernet source), or an
    NS whose source is a VIP (that host uses it). PROBE: a DAD NS (source `::`) for a VIP,
    another host's probe. WITNESS: an NA whose target is a witness. Anything whose Ethernet
    source is `own_mac` is our own and None. `lan_filter` lets through at least these."""
    if packet.eth_src == own_mac:
        return None
    if packet.type == ND_NA:
        mac = mac_text(packet.lladdr or packet.eth_src)
        if packet.target in vips:
            return Heard(kind=HeardKind.CLAIM, ip=packet.target, mac=mac)
        if packet.target in witnesses:
            return Heard(kind=HeardKind.WITNESS, ip=packet.target, mac=mac)
        return None
    mac = mac_text(packet.lladdr or packet.eth_src)
    if packet.src in vips:
        return Heard(kind=HeardKind.CLAIM, ip=packet.src, mac=mac)
    if packet.is_dad and packet.target in vips:
        return Heard(kind=HeardKind.PROBE, ip=packet.target, mac=mac)
    return None


def classify_frame(
    frame: bytes,
    *,
    own_mac: bytes,
    vips: Collection[IPAddress],
    witnesses: Collection[IPAddress] = (),
) -> Heard | None:
    """ARP or ND, whichever `frame` carries, parsed and classified; None for anything else."""
    if frame[12:14] == ETH_P_ARP.to_bytes(2, "big"):
        packet = parse_arp(frame)
        if packet is None:
            return None
        v4_vips = {ip for ip in vips if isinstance(ip, IPv4Address)}
        v4_witnesses = {ip for ip in witnesses if isinstance(ip, IPv4Address)}
        return classify(packet, own_mac=own_mac, vips=v4_vips, witnesses=v4_witnesses)
    nd = parse_nd(frame)
    if nd is None:
        return None
    return classify_nd(nd, own_mac=own_mac, vips=vips, witnesses=witnesses)


# --- the kernel filter: ARP as `arp.arp_filter`, plus an ND branch ------------------------

LD_B = 0x30  # BPF_LD | BPF_B | BPF_ABS: A = the byte at offset k
JA = 0x05  # BPF_JMP | BPF_JA: jump k instructions (32 bits, so no 8-bit range limit)
_DROP = (RET, 0, 0, 0)
_ACCEPT = (RET, 0, 0, ACCEPT_BYTES)

Insn = tuple[int, int, int, int]


def _must(code: int, offset: int, value: int) -> list[Insn]:
    """Load, then drop the frame unless it equals `value`."""
    return [(code, 0, 0, offset), (JEQ, 1, 0, value), _DROP]


def _accept_if(offset: int, ip: IPv6Address) -> list[Insn]:
    """Accept if the 16 bytes at `offset` are `ip`, else fall through. Each address carries
    its own accept, so every jump stays short whatever the number of addresses."""
    words = struct.unpack("!4I", ip.packed)
    insns: list[Insn] = []
    for i, word in enumerate(words):
        skip = 2 * (3 - i) + 1  # to just past the accept below
        insns += [(LD_W, 0, 0, offset + 4 * i), (JEQ, 0, skip, word)]
    return [*insns, _ACCEPT]


def nd_branch(
    *, own_mac: bytes, vips: Sequence[IPv6Address], witnesses: Sequence[IPv6Address] = ()
) -> list[Insn]:
    """The ND half of the filter: what `classify_nd` can report, from the frame's fixed
    offsets (an NS or NA with hop limit 255, ICMPv6 right after the IPv6 header, code 0,
    not from `own_mac`, not outgoing). The checksum and options are left to `parse_nd`."""
    mac_head, mac_tail = struct.unpack("!IH", own_mac)
    vip_list = list(dict.fromkeys(vips))
    targets = vip_list + [w for w in dict.fromkeys(witnesses) if w not in vip_list]
    prog: list[Insn] = [
        (LD_W, 0, 0, SKF_AD_PKTTYPE),
        (JEQ, 0, 1, PACKET_OUTGOING),
        _DROP,  # our own frames on their way out
        *_must(LD_H, 12, ETH_P_IPV6),
        *_must(LD_B, 20, IPPROTO_ICMPV6),  # next header: no extension headers
        *_must(LD_B, 21, HOP_LIMIT),
        (LD_W, 0, 0, 6),  # Ethernet source, first 4 bytes
        (JEQ, 0, 3, mac_head),
        (LD_H, 0, 0, 10),
        (JEQ, 0, 1, mac_tail),
        _DROP,  # our own MAC (a looped-back frame)
        *_must(LD_B, ICMP_AT + 1, 0),  # ICMPv6 code
        (LD_B, 0, 0, ICMP_AT),  # ICMPv6 type
        (JEQ, 0, 1, ND_NA),
    ]
    ns: list[Insn] = [(JEQ, 1, 0, ND_NS), _DROP]  # A still holds the type
    for vip in vip_list:
        ns += _accept_if(SRC_AT, vip)  # the IPv6 source is a VIP: a claim
    for i in range(4):
        ns += _must(LD_W, SRC_AT + 4 * i, 0)  # else only a DAD probe (source ::) is ours
    for vip in vip_list:
        ns += _accept_if(TARGET_AT, vip)
    ns.append(_DROP)
    na: list[Insn] = []
    for ip in targets:
        na += _accept_if(TARGET_AT, ip)
    na.append(_DROP)
    return [*prog, (JA, 0, 0, len(ns)), *ns, *na]


def lan_filter(
    *, own_mac: bytes, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress] = ()
) -> list[Insn]:
    """The classic BPF program for one interface's LAN socket. Without IPv6 addresses it is
    exactly `arp.arp_filter`; with them an ARP branch (the same, its VIP list perhaps empty)
    and an ND branch (`nd_branch`), chosen by the Ethernet type."""
    if len(own_mac) != 6:
        raise ValueError(f"own_mac must be 6 bytes, got {len(own_mac)}")
    if not vips:
        raise ValueError("LAN filter: at least one VIP is needed")
    v4 = [ip for ip in vips if isinstance(ip, IPv4Address)]
    v4w = [ip for ip in witnesses if isinstance(ip, IPv4Address)]
    v6 = [ip for ip in vips if isinstance(ip, IPv6Address)]
    v6w = [ip for ip in witnesses if isinstance(ip, IPv6Address)]
    if not v6 and not v6w:
        return arp_filter(own_mac=own_mac, vips=v4, witnesses=v4w)
    if len(v6) + len(v6w) > MAX_FILTER_ADDRESSES:
        raise ValueError(
            f"ND filter: {len(v6)} VIPs and {len(v6w)} witnesses on one interface;"
            f" at most {MAX_FILTER_ADDRESSES} in all"
        )
    arp = arp_branch(own_mac=own_mac, vips=v4, witnesses=v4w) if v4 or v4w else [_DROP]
    nd = nd_branch(own_mac=own_mac, vips=v6, witnesses=v6w)
    return [(LD_H, 0, 0, 12), (JEQ, 0, 1, ETH_P_IPV6), (JA, 0, 0, len(arp)), *arp, *nd]
