"""ARP frames: golden bytes written by hand from RFC 826 / RFC 5227, parsing, fuzzing."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from havip.backends.arp import (
    BROADCAST,
    OP_REPLY,
    OP_REQUEST,
    ZERO_MAC,
    ArpPacket,
    build_arp,
    claims,
    gratuitous_frames,
    mac_bytes,
    mac_text,
    parse_arp,
    probe_frame,
)

MAC = bytes.fromhex("020000000001")
OTHER_MAC = bytes.fromhex("020000000002")
HOST = IPv4Address("198.18.0.1")
PEER = IPv4Address("198.18.0.2")
VIP = IPv4Address("198.18.0.100")

# Ethernet: dst(6) src(6) type 0806 | ARP: htype 0001, ptype 0800, hlen 06, plen 04, op,
# sender MAC, sender IP, target MAC, target IP. 198.18.0.1 = c6 12 00 01; .100 = c6 12 00 64.
GOLDEN_REQUEST = bytes.fromhex(
    "ffffffffffff 020000000001 0806"
    " 0001 0800 06 04 0001"
    " 020000000001 c6120001"
    " 000000000000 c6120002"
)
GOLDEN_UNICAST_REPLY = bytes.fromhex(
    "020000000001 020000000002 0806"
    " 0001 0800 06 04 0002"
    " 020000000002 c6120002"
    " 020000000001 c6120001"
)
GOLDEN_GARP_REQUEST = bytes.fromhex(
    "ffffffffffff 020000000001 0806"
    " 0001 0800 06 04 0001"
    " 020000000001 c6120064"
    " 000000000000 c6120064"
)
GOLDEN_GARP_REPLY = bytes.fromhex(
    "ffffffffffff 020000000001 0806"
    " 0001 0800 06 04 0002"
    " 020000000001 c6120064"
    " ffffffffffff c6120064"
)
GOLDEN_PROBE = bytes.fromhex(
    "ffffffffffff 020000000001 0806"
    " 0001 0800 06 04 0001"
    " 020000000001 00000000"
    " 000000000000 c6120064"
)


def test_request_golden() -> None:
    frame = build_arp(
        op=OP_REQUEST, sender_mac=MAC, sender_ip=HOST, target_mac=ZERO_MAC, target_ip=PEER
    )
    assert frame == GOLDEN_REQUEST
    assert len(frame) == 42


def test_unicast_reply_golden() -> None:
    frame = build_arp(
        op=OP_REPLY,
        sender_mac=OTHER_MAC,
        sender_ip=PEER,
        target_mac=MAC,
        target_ip=HOST,
        dst_mac=MAC,
    )
    assert frame == GOLDEN_UNICAST_REPLY


def test_gratuitous_golden() -> None:
    assert gratuitous_frames(MAC, VIP) == [GOLDEN_GARP_REQUEST, GOLDEN_GARP_REPLY]


def test_probe_golden() -> None:
    assert probe_frame(MAC, VIP) == GOLDEN_PROBE


def test_parse_golden() -> None:
    assert parse_arp(GOLDEN_PROBE) == ArpPacket(
        op=OP_REQUEST,
        sender_mac=MAC,
        sender_ip=IPv4Address("0.0.0.0"),
        target_mac=ZERO_MAC,
        target_ip=VIP,
    )
    reply = parse_arp(GOLDEN_GARP_REPLY)
    assert reply is not None
    assert (reply.op, reply.sender_ip, reply.target_mac) == (OP_REPLY, VIP, BROADCAST)


def test_parse_ignores_ethernet_padding() -> None:
    assert parse_arp(GOLDEN_REQUEST + bytes(18)) == parse_arp(GOLDEN_REQUEST)


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (12, b"\x08\x00"),  # IPv4 ethertype, not ARP
        (14, b"\x00\x06"),  # IEEE 802 hardware type
        (16, b"\x86\xdd"),  # IPv6 protocol type
        (18, b"\x08"),  # hardware length
        (19, b"\x10"),  # protocol length
    ],
)
def test_parse_rejects_other_kinds(offset: int, value: bytes) -> None:
    frame = GOLDEN_REQUEST[:offset] + value + GOLDEN_REQUEST[offset + len(value) :]
    assert parse_arp(frame) is None


def test_parse_rejects_short() -> None:
    assert parse_arp(GOLDEN_REQUEST[:41]) is None
    assert parse_arp(b"") is None


def test_build_rejects_bad_mac() -> None:
    with pytest.raises(ValueError, match="sender_mac must be 6 bytes"):
        build_arp(op=1, sender_mac=b"\x00", sender_ip=HOST, target_mac=ZERO_MAC, target_ip=PEER)


def test_mac_text_round_trip() -> None:
    assert mac_text(MAC) == "02:00:00:00:00:01"
    assert mac_bytes("02:00:00:00:00:01") == MAC
    assert mac_bytes("AA:bb:CC:dd:EE:ff") == bytes.fromhex("aabbccddeeff")


@pytest.mark.parametrize("text", ["", "02:00:00:00:00", "02-00-00-00-00-01", "0g:00:00:00:00:01"])
def test_mac_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        mac_bytes(text)


def _packet(**changes: object) -> ArpPacket:
    fields: dict[str, object] = {
        "op": OP_REPLY,
        "sender_mac": OTHER_MAC,
        "sender_ip": VIP,
        "target_mac": MAC,
        "target_ip": IPv4Address("0.0.0.0"),
    }
    fields.update(changes)
    return ArpPacket(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (_packet(), True),  # the holder answers our probe
        (_packet(op=OP_REQUEST, target_ip=VIP, target_mac=ZERO_MAC), True),  # its own GARP
        (_packet(sender_mac=MAC), False),  # our own frame
        (_packet(sender_ip=PEER), False),  # someone else's address
        # Another host merely probing for the VIP does not hold it (see `claims`).
        (parse_arp(probe_frame(OTHER_MAC, VIP)), False),
        (parse_arp(probe_frame(MAC, VIP)), False),  # our own probe
        (parse_arp(probe_frame(OTHER_MAC, PEER)), False),  # a probe for another address
        # An ordinary request *for* the VIP says nothing about who holds it.
        (_packet(op=OP_REQUEST, sender_ip=PEER, target_mac=ZERO_MAC, target_ip=VIP), False),
    ],
)
def test_claims(packet: ArpPacket | None, expected: bool) -> None:
    assert packet is not None
    assert claims(packet, ip=VIP, own_mac=MAC) is expected


macs = st.binary(min_size=6, max_size=6)
ips = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)


@given(
    op=st.integers(min_value=0, max_value=0xFFFF),
    sender_mac=macs,
    sender_ip=ips,
    target_mac=macs,
    target_ip=ips,
    dst_mac=macs,
)
def test_build_parse_round_trip(
    op: int,
    sender_mac: bytes,
    sender_ip: IPv4Address,
    target_mac: bytes,
    target_ip: IPv4Address,
    dst_mac: bytes,
) -> None:
    frame = build_arp(
        op=op,
        sender_mac=sender_mac,
        sender_ip=sender_ip,
        target_mac=target_mac,
        target_ip=target_ip,
        dst_mac=dst_mac,
    )
    assert frame[:6] == dst_mac
    assert frame[6:12] == sender_mac
    assert parse_arp(frame) == ArpPacket(
        op=op,
        sender_mac=sender_mac,
        sender_ip=sender_ip,
        target_mac=target_mac,
        target_ip=target_ip,
    )


@given(st.binary(max_size=128))
def test_parse_never_raises_on_garbage(data: bytes) -> None:
    parse_arp(data)


@given(st.integers(min_value=0, max_value=41), st.binary(min_size=1, max_size=60))
def test_parse_never_raises_on_mangled_frames(cut: int, tail: bytes) -> None:
    # A valid prefix followed by junk reaches deeper into the parser than random bytes do.
    result = parse_arp(GOLDEN_PROBE[:cut] + tail)
    assert result is None or isinstance(result, ArpPacket)
