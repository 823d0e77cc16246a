"""ARP over Ethernet (RFC 826, RFC 5227): build and parse frames; no sockets, no clock.

Frames are the bare 42 bytes (14 Ethernet + 28 ARP), not padded to the 60-byte Ethernet
minimum: the sending NIC pads short frames, and keepalived and arping send the same 42 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

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


def claims(packet: ArpPacket, *, ip: IPv4Address, own_mac: bytes) -> bool:
    """Whether `packet`, seen while probing for `ip`, shows another host *using* it.

    RFC 5227 2.1.1: an ARP request or reply whose sender IP is `ip` (an answer to our probe, or
    the holder's own announcement) means the address is in use. Unlike the RFC's SHOULD, another
    host's mere probe for `ip` does not count: with two nodes that host is our peer, and if its
    probe vetoed ours (and ours its), a holder checking for conflicts would drop a VIP nobody
    else has. Anything from `own_mac` is our own traffic and never counts.
    """
    if packet.sender_mac == own_mac:
        return False
    return packet.sender_ip == ip


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
