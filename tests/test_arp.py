"""ARP frames: golden bytes written by hand from RFC 826 / RFC 5227, parsing, fuzzing."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from havip.backends.arp import (
    BROADCAST,
    JEQ,
    LD_H,
    LD_W,
    OP_REPLY,
    OP_REQUEST,
    RET,
    SKF_AD_PKTTYPE,
    ZERO_MAC,
    ArpPacket,
    arp_filter,
    bpf_bytes,
    build_arp,
    classify,
    gratuitous_frames,
    mac_bytes,
    mac_text,
    parse_arp,
    probe_frame,
)
from havip.backends.base import Heard, HeardKind

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


WITNESS = IPv4Address("198.18.0.254")
CLAIM = Heard(kind=HeardKind.CLAIM, ip=VIP, mac="02:00:00:00:00:02")


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (_packet(), CLAIM),  # the holder answers our probe
        (_packet(op=OP_REQUEST, target_ip=VIP, target_mac=ZERO_MAC), CLAIM),  # its own GARP
        (_packet(sender_mac=MAC), None),  # our own frame
        (_packet(sender_ip=PEER), None),  # someone else's address
        # Another host probing for the VIP: reported as a probe, not a claim.
        (parse_arp(probe_frame(OTHER_MAC, VIP)), replace(CLAIM, kind=HeardKind.PROBE)),
        (parse_arp(probe_frame(MAC, VIP)), None),  # our own probe
        (parse_arp(probe_frame(OTHER_MAC, PEER)), None),  # a probe for another address
        # A reply with sender 0.0.0.0 is no probe.
        (_packet(sender_ip=IPv4Address("0.0.0.0"), target_ip=VIP), None),
        # An ordinary request *for* the VIP says nothing about who holds it.
        (_packet(op=OP_REQUEST, sender_ip=PEER, target_mac=ZERO_MAC, target_ip=VIP), None),
        # The witness answering (or asking anything).
        (_packet(sender_ip=WITNESS), replace(CLAIM, kind=HeardKind.WITNESS, ip=WITNESS)),
        (_packet(sender_ip=WITNESS, sender_mac=MAC), None),
    ],
)
def test_classify(packet: ArpPacket | None, expected: Heard | None) -> None:
    assert packet is not None
    assert classify(packet, own_mac=MAC, vips={VIP}, witnesses={WITNESS}) == expected


def _run_bpf(program: list[tuple[int, int, int, int]], frame: bytes, pkttype: int) -> int:
    """A classic-BPF interpreter for the instructions `arp_filter` uses, as the kernel runs
    them: a load past the end of the frame drops it."""
    acc, pc = 0, 0
    for _ in range(len(program)):  # no backward jumps: each instruction runs at most once
        code, jt, jf, k = program[pc]
        if code == LD_W and k == SKF_AD_PKTTYPE:
            acc = pkttype
        elif code in (LD_W, LD_H):
            size = 4 if code == LD_W else 2
            if k + size > len(frame):
                return 0
            acc = int.from_bytes(frame[k : k + size], "big")
        elif code == JEQ:
            pc += jt if acc == k else jf
        elif code == RET:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1
    raise AssertionError("program ran off its end")


def test_filter_golden() -> None:
    # Written out by hand from linux/filter.h; jumps count from the next instruction.
    assert arp_filter(own_mac=MAC, vips=[VIP], witnesses=[WITNESS]) == [
        (0x20, 0, 0, 0xFFFFF004),  # 0: ld packet type
        (0x15, 18, 0, 4),  # 1: outgoing -> drop (20)
        (0x28, 0, 0, 12),  # 2: ldh ethertype
        (0x15, 0, 16, 0x0806),  # 3: ARP, else drop
        (0x20, 0, 0, 14),  # 4: ld htype, ptype
        (0x15, 0, 14, 0x00010800),  # 5: Ethernet/IPv4, else drop
        (0x28, 0, 0, 18),  # 6: ldh hlen, plen
        (0x15, 0, 12, 0x0604),  # 7: 6/4, else drop
        (0x20, 0, 0, 22),  # 8: ld sender MAC, first 4 bytes
        (0x15, 0, 2, 0x02000000),  # 9: ours? else on to the sender IP (12)
        (0x28, 0, 0, 26),  # 10: ldh sender MAC, last 2 bytes
        (0x15, 8, 0, 0x0001),  # 11: ours -> drop
        (0x20, 0, 0, 28),  # 12: ld sender IP
        (0x15, 7, 0, 0xC6120064),  # 13: the VIP -> accept (21)
        (0x15, 6, 0, 0xC61200FE),  # 14: the witness -> accept
        (0x15, 0, 4, 0),  # 15: 0.0.0.0, else drop
        (0x28, 0, 0, 20),  # 16: ldh op
        (0x15, 0, 2, 1),  # 17: request, else drop
        (0x20, 0, 0, 38),  # 18: ld target IP
        (0x15, 1, 0, 0xC6120064),  # 19: the VIP -> accept
        (0x06, 0, 0, 0),  # 20: drop
        (0x06, 0, 0, 0xFFFF),  # 21: accept
    ]


@pytest.mark.parametrize(
    ("frame", "pkttype", "accepted"),
    [
        (GOLDEN_GARP_REQUEST.replace(MAC, OTHER_MAC), 1, True),  # someone else's GARP for the VIP
        (GOLDEN_GARP_REPLY.replace(MAC, OTHER_MAC), 1, True),
        (GOLDEN_GARP_REQUEST, 1, False),  # ours, looped back
        (GOLDEN_GARP_REQUEST.replace(MAC, OTHER_MAC), 4, False),  # outgoing
        (probe_frame(OTHER_MAC, VIP), 1, True),  # a rival probe
        (probe_frame(OTHER_MAC, PEER), 1, False),  # a probe for another address
        (GOLDEN_REQUEST, 1, False),  # .1 asks for .2: not ours
        (GOLDEN_UNICAST_REPLY, 0, False),
        (GOLDEN_PROBE[:41], 1, False),  # truncated
        (b"\x00" * 12 + b"\x08\x00" + GOLDEN_PROBE[14:], 1, False),  # IPv4, not ARP
    ],
)
def test_filter_cases(frame: bytes, pkttype: int, accepted: bool) -> None:
    program = arp_filter(own_mac=MAC, vips=[VIP], witnesses=[WITNESS])
    assert (_run_bpf(program, frame, pkttype) > 0) is accepted


def test_filter_limits() -> None:
    with pytest.raises(ValueError, match="at least one VIP"):
        arp_filter(own_mac=MAC, vips=[])
    many = [IPv4Address(int(VIP) + i) for i in range(101)]
    with pytest.raises(ValueError, match="at most 100"):
        arp_filter(own_mac=MAC, vips=many)
    # The biggest allowed program still assembles (every jump fits in 8 bits).
    program = arp_filter(own_mac=MAC, vips=many[:50], witnesses=many[50:100])
    assert len(bpf_bytes(program)) == 8 * len(program)


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


ip_pool = st.sampled_from([VIP, PEER, HOST, WITNESS, IPv4Address("0.0.0.0")])
mac_pool = st.sampled_from([MAC, OTHER_MAC, BROADCAST, ZERO_MAC])


@given(
    op=st.sampled_from([OP_REQUEST, OP_REPLY, 3]),
    sender_mac=mac_pool,
    sender_ip=ip_pool,
    target_ip=ip_pool,
    pkttype=st.sampled_from([0, 1, 3, 4]),
    vips=st.lists(ip_pool, min_size=1, max_size=3),
    witnesses=st.lists(ip_pool, max_size=3),
    tail=st.binary(max_size=18),
)
def test_filter_accepts_exactly_what_classify_reports(
    op: int,
    sender_mac: bytes,
    sender_ip: IPv4Address,
    target_ip: IPv4Address,
    pkttype: int,
    vips: list[IPv4Address],
    witnesses: list[IPv4Address],
    tail: bytes,
) -> None:
    # The kernel filter and the Python classifier must agree, or the daemon either wakes for
    # nothing or never sees a claim the filter dropped.
    frame = build_arp(
        op=op, sender_mac=sender_mac, sender_ip=sender_ip, target_mac=ZERO_MAC, target_ip=target_ip
    )
    program = arp_filter(own_mac=MAC, vips=vips, witnesses=witnesses)
    packet = parse_arp(frame + tail)
    assert packet is not None
    wanted = pkttype != 4 and classify(packet, own_mac=MAC, vips=vips, witnesses=witnesses)
    assert (_run_bpf(program, frame + tail, pkttype) > 0) == bool(wanted)


_ARP_HEADER = bytes.fromhex("0806000108000604")  # ethertype, htype, ptype, lens


@given(
    st.one_of(
        st.binary(max_size=128),
        st.binary(min_size=30, max_size=80).map(lambda b: b[:12] + _ARP_HEADER + b[12:]),
    )
)
def test_parse_reads_exactly_ethernet_ipv4_arp(data: bytes) -> None:
    """Never raises; accepts exactly a long-enough frame with the Ethernet/IPv4 ARP header,
    and what it reads rebuilds the same ARP payload."""
    packet = parse_arp(data)
    is_arp = len(data) >= 42 and data[12:20] == _ARP_HEADER
    assert (packet is not None) == is_arp
    if packet is not None:
        rebuilt = build_arp(
            op=packet.op,
            sender_mac=packet.sender_mac,
            sender_ip=packet.sender_ip,
            target_mac=packet.target_mac,
            target_ip=packet.target_ip,
        )
        assert rebuilt[12:42] == data[12:42]


@given(st.integers(min_value=0, max_value=41), st.binary(min_size=1, max_size=60))
def test_parse_never_raises_on_mangled_frames(cut: int, tail: bytes) -> None:
    # A valid prefix followed by junk reaches deeper into the parser than random bytes do.
    result = parse_arp(GOLDEN_PROBE[:cut] + tail)
    assert result is None or isinstance(result, ArpPacket)
