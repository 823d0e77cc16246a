"""ARP over Ethernet (RFC 826, RFC 5227): build, parse and classify frames, and the kernel
filter that lets through only the ones we care about; no sockets, no clock.

Frames are the bare 42 bytes (14 Ethernet + 28 ARP), not padded to the 60-byte Ethernet
minimum: the sending NIC pads short frames, and keepalived and arping send the same 42 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from havip.backends.base import Heard, HeardKind

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
OP_REQUEST = 1
OP_REPLY = 2

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
UNSPECIFIED = IPv4Address("0.0.0.0")

FRAME_LEN = 42  # Ethernet header (14) + ARP for Ethernet/IPv4 (28)

# dst, src, ethertype | htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_FRAME = struct.Struct("!6s6sH HHBBH6s4s6s4s")
assert _FRAME.size == FRAME_LEN


@dataclass(frozen=True, kw_only=True)
class ArpPacket:
    """The ARP payload of one Ethernet/IPv4 ARP frame (the Ethernet header is not kept)."""

    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address

    @property
    def is_probe(self) -> bool:
        """RFC 5227 probe: a request from someone who has no address yet (sender IP 0.0.0.0)."""
        return self.op == OP_REQUEST and self.sender_ip == UNSPECIFIED


def build_arp(
    *,
    op: int,
    sender_mac: bytes,
    sender_ip: IPv4Address,
    target_mac: bytes,
    target_ip: IPv4Address,
    dst_mac: bytes = BROADCAST,
) -> bytes:
    """One Ethernet frame carrying an Ethernet/IPv4 ARP packet, from `sender_mac` to `dst_mac`."""
    for what, mac in (("sender_mac", sender_mac), ("target_mac", target_mac), ("dst_mac", dst_mac)):
        _check_mac(what, mac)
    if not 0 <= op <= 0xFFFF:
        raise ValueError(f"ARP op {op} does not fit in 16 bits")
    return _FRAME.pack(
        dst_mac,
        sender_mac,
        ETH_P_ARP,
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        op,
        sender_mac,
        sender_ip.packed,
        target_mac,
        target_ip.packed,
    )


def gratuitous_frames(mac: bytes, ip: IPv4Address) -> list[bytes]:
    """Gratuitous ARP in both forms, broadcast: a request (target MAC zero) and a reply
    (target MAC broadcast), each with sender IP = target IP = `ip`. Some hosts and switches
    only heed one of the two forms, so both are sent."""
    return [
        build_arp(op=OP_REQUEST, sender_mac=mac, sender_ip=ip, target_mac=ZERO_MAC, target_ip=ip),
        build_arp(op=OP_REPLY, sender_mac=mac, sender_ip=ip, target_mac=BROADCAST, target_ip=ip),
    ]


def probe_frame(mac: bytes, ip: IPv4Address) -> bytes:
    """RFC 5227 ARP probe for `ip`: a broadcast request with sender IP 0.0.0.0, so nobody's
    ARP cache learns anything from it, and whoever holds `ip` answers."""
    return build_arp(
        op=OP_REQUEST, sender_mac=mac, sender_ip=UNSPECIFIED, target_mac=ZERO_MAC, target_ip=ip
    )


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP packet in an Ethernet frame, or None if it is not an Ethernet/IPv4 ARP frame.

    Never raises: anything short, truncated or of another type is None. Trailing bytes
    (Ethernet padding) are ignored. 802.1Q tags are not unwrapped (Linux strips them before
    an AF_PACKET socket bound to the base interface sees the frame)."""
    if len(frame) < FRAME_LEN:
        return None
    (_dst, _src, ethertype, htype, ptype, hlen, plen, op, sha, spa, tha, tpa) = _FRAME.unpack_from(
        frame
    )
    if (ethertype, htype, ptype, hlen, plen) != (ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4):
        return None
    return ArpPacket(
        op=op,
        sender_mac=sha,
        sender_ip=IPv4Address(spa),
        target_mac=tha,
        target_ip=IPv4Address(tpa),
    )


def classify(
    packet: ArpPacket,
    *,
    own_mac: bytes,
    vips: Collection[IPv4Address],
    witnesses: Collection[IPv4Address] = (),
) -> Heard | None:
    """What `packet` tells a node that holds or wants `vips` and hears `witnesses`.

    CLAIM: the sender IP is a VIP (RFC 5227 2.1.1: an answer to our probe, or the holder's own
    announcement, means the address is in use). PROBE: sender IP 0.0.0.0 asking for a VIP
    (another host wants it; whether that vetoes is the caller's call: with two nodes that host
    is our peer, and if its probe vetoed ours and ours its, nobody would take the VIP).
    WITNESS: the sender IP is a witness. Anything from `own_mac` is our own and None.
    `arp_filter` lets through exactly the frames for which this is not None.
    """
    if packet.sender_mac == own_mac:
        return None
    mac = mac_text(packet.sender_mac)
    if packet.sender_ip in vips:
        return Heard(kind=HeardKind.CLAIM, ip=packet.sender_ip, mac=mac)
    if packet.is_probe and packet.target_ip in vips:
        return Heard(kind=HeardKind.PROBE, ip=packet.target_ip, mac=mac)
    if packet.sender_ip in witnesses and packet.sender_ip != UNSPECIFIED:
        return Heard(kind=HeardKind.WITNESS, ip=packet.sender_ip, mac=mac)
    return None


# --- the kernel filter (classic BPF, as SO_ATTACH_FILTER takes it) ------------------------

# Opcodes from linux/filter.h: class | size | mode, combined below.
_BPF_LD, _BPF_JMP, _BPF_RET = 0x00, 0x05, 0x06
_BPF_W, _BPF_H = 0x00, 0x08
_BPF_ABS, _BPF_JEQ, _BPF_K = 0x20, 0x10, 0x00
LD_W = _BPF_LD | _BPF_W | _BPF_ABS  # A = 32-bit word at offset k (network order)
LD_H = _BPF_LD | _BPF_H | _BPF_ABS  # A = 16-bit half-word at offset k
JEQ = _BPF_JMP | _BPF_JEQ | _BPF_K  # if A == k jump jt else jf (offsets after this one)
RET = _BPF_RET | _BPF_K  # accept k bytes of the packet; 0 drops it
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE: loads the packet type
PACKET_OUTGOING = 4
ACCEPT_BYTES = 0xFFFF
MAX_FILTER_ADDRESSES = 100  # keeps every jump within the 8-bit offset classic BPF allows

BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
# An instruction before assembly: a label name in place of the code marks a label, and a
# label name in jt/jf jumps there (0 is the next instruction).
_Insn = tuple[int | str, int | str, int | str, int]


def arp_filter(
    *, own_mac: bytes, vips: Sequence[IPv4Address], witnesses: Sequence[IPv4Address] = ()
) -> list[tuple[int, int, int, int]]:
    """A classic BPF program for a packet socket that accepts exactly the frames `classify`
    reports (and never our outgoing ones), so the daemon does not wake for other ARP.

    Returns the instructions as (code, jt, jf, k); `bpf_bytes` packs them for the kernel."""
    if not vips:
        raise ValueError("ARP filter: at least one VIP is needed")
    return arp_branch(own_mac=own_mac, vips=vips, witnesses=witnesses)


def arp_branch(
    *, own_mac: bytes, vips: Sequence[IPv4Address], witnesses: Sequence[IPv4Address] = ()
) -> list[tuple[int, int, int, int]]:
    """`arp_filter` without its at-least-one-VIP rule: the ARP half of a filter for an
    interface whose VIPs may all be IPv6 (see `havip.backends.nd.lan_filter`)."""
    _check_mac("own_mac", own_mac)
    if len(vips) + len(witnesses) > MAX_FILTER_ADDRESSES:
        raise ValueError(
            f"ARP filter: {len(vips)} VIPs and {len(witnesses)} witnesses on one interface;"
            f" at most {MAX_FILTER_ADDRESSES} in all"
        )
    mac_head, mac_tail = struct.unpack("!IH", own_mac)
    vip_keys = [int(ip) for ip in dict.fromkeys(vips)]
    witness_keys = [int(ip) for ip in dict.fromkeys(witnesses) if int(ip) and ip not in vips]
    # (code, jt, jf, k) with jt/jf as label names or 0 (the next instruction), resolved below.
    prog: list[_Insn] = [
        (LD_W, 0, 0, SKF_AD_PKTTYPE),  # A = packet type
        (JEQ, "drop", 0, PACKET_OUTGOING),  # our own frames on their way out
        (LD_H, 0, 0, 12),  # A = Ethernet type
        (JEQ, 0, "drop", ETH_P_ARP),  # ARP only
        (LD_W, 0, 0, 14),  # A = ARP hardware type << 16 | protocol type
        (JEQ, 0, "drop", ARPHRD_ETHER << 16 | ETH_P_IP),  # Ethernet / IPv4 only
        (LD_H, 0, 0, 18),  # A = hardware length << 8 | protocol length
        (JEQ, 0, "drop", 6 << 8 | 4),  # 6-byte MACs, 4-byte IPs
        (LD_W, 0, 0, 22),  # A = ARP sender MAC, first 4 bytes
        (JEQ, 0, "sender_ip", mac_head),  # not ours: go on to the sender IP
        (LD_H, 0, 0, 26),  # A = ARP sender MAC, last 2 bytes
        (JEQ, "drop", 0, mac_tail),  # our own MAC (a looped-back frame)
        ("sender_ip", 0, 0, 0),  # label
        (LD_W, 0, 0, 28),  # A = ARP sender IP
    ]
    prog += [(JEQ, "accept", 0, key) for key in vip_keys]  # a claim
    prog += [(JEQ, "accept", 0, key) for key in witness_keys]  # a witness
    prog += [
        (JEQ, 0, "drop", 0),  # sender IP 0.0.0.0 may be a probe, anything else is not ours
        (LD_H, 0, 0, 20),  # A = ARP operation
        (JEQ, 0, "drop", OP_REQUEST),  # a probe is a request
        (LD_W, 0, 0, 38),  # A = ARP target IP
    ]
    prog += [(JEQ, "accept", 0, key) for key in vip_keys]  # a probe for one of our VIPs
    prog += [
        ("drop", 0, 0, 0),  # label
        (RET, 0, 0, 0),  # drop
        ("accept", 0, 0, 0),  # label
        (RET, 0, 0, ACCEPT_BYTES),  # accept the whole frame
    ]
    return _assemble(prog)


def _assemble(prog: list[_Insn]) -> list[tuple[int, int, int, int]]:
    """Drop label pseudo-instructions and turn label jumps into relative offsets."""
    labels: dict[str, int] = {}
    body: list[tuple[int, int | str, int | str, int]] = []
    for code, jt, jf, k in prog:
        if isinstance(code, str):
            labels[code] = len(body)
        else:
            body.append((code, jt, jf, k))
    out = []
    for index, (code, jt, jf, k) in enumerate(body):
        assert isinstance(code, int)
        offsets = [labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= offset <= 0xFF for offset in offsets):
            raise ValueError(f"ARP filter: jump out of range at instruction {index}")
        out.append((code, offsets[0], offsets[1], k))
    return out


def bpf_bytes(program: Sequence[tuple[int, int, int, int]]) -> bytes:
    """The program as an array of struct sock_filter, native byte order."""
    return b"".join(BPF_INSN.pack(*insn) for insn in program)


def mac_text(mac: bytes) -> str:
    """b"\\x02\\x00..." -> "02:00:00:00:00:01"."""
    _check_mac("MAC", mac)
    return mac.hex(":")


def mac_bytes(text: str) -> bytes:
    """ "02:00:00:00:00:01" (either case) -> 6 bytes; ValueError naming the text otherwise."""
    parts = text.split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise ValueError(f"not a MAC address (want aa:bb:cc:dd:ee:ff): {text!r}")
    return bytes(int(p, 16) for p in parts)


def _check_mac(what: str, mac: bytes) -> None:
    if len(mac) != 6:
        raise ValueError(f"{what} must be 6 bytes, got {len(mac)}")
