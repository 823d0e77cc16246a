"""Neighbour Discovery frames: golden bytes written out by hand from RFC 4861 / RFC 4862,
checksums checked by an independent computation, parsing, classification, the kernel filter."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from havip.backends.arp import (
    JEQ,
    LD_H,
    LD_W,
    OP_REQUEST,
    RET,
    SKF_AD_PKTTYPE,
    ZERO_MAC,
    arp_filter,
    build_arp,
    classify,
    gratuitous_frames,
    parse_arp,
)
from havip.backends.arp import probe_frame as arp_probe
from havip.backends.base import Heard, HeardKind, IPAddress
from havip.backends.nd import (
    JA,
    LD_B,
    NA_OVERRIDE,
    NA_ROUTER,
    NA_SOLICITED,
    ND_NA,
    UNSPECIFIED6,
    NdPacket,
    announce_frame,
    build_na,
    build_ns,
    checksum,
    classify_frame,
    classify_nd,
    lan_filter,
    multicast_mac,
    parse_nd,
    probe_frame6,
    request_frame6,
    solicited_node,
)

MAC = bytes.fromhex("020000000001")
OTHER_MAC = bytes.fromhex("020000000002")
THIRD_MAC = bytes.fromhex("020000000003")
VIP = IPv6Address("2001:2:0:1::100")
LINK_LOCAL = IPv6Address("fe80::1")
HOST = IPv6Address("2001:2:0:1::1")
WITNESS = IPv6Address("2001:2:0:1::fe")
GATEWAY_LL = IPv6Address("fe80::fe")
VIP4 = IPv4Address("198.18.0.100")
WITNESS4 = IPv4Address("198.18.0.254")

# Ethernet dst, src, 86dd | IPv6: 6 / class 0 / flow 0, payload length, next header 3a (58),
# hop limit ff, source, destination | ICMPv6. 2001:2:0:1::100 = 2001 0002 0000 0001 0..0 0100.
GOLDEN_NA = bytes.fromhex(
    "333300000001 020000000001 86dd"
    " 60000000 0020 3a ff"
    " fe800000000000000000000000000001"  # source: our link-local address
    " ff020000000000000000000000000001"  # all-nodes
    " 88 00 3519 20000000"  # NA, code 0, checksum, flags: Override only
    " 20010002000000010000000000000100"  # target: the VIP
    " 02 01 020000000001"  # Target Link-Layer Address option: our MAC
)
GOLDEN_DAD_NS = bytes.fromhex(
    "3333ff000100 020000000001 86dd"
    " 60000000 0018 3a ff"
    " 00000000000000000000000000000000"  # source ::
    " ff0200000000000000000001ff000100"  # the VIP's solicited-node group
    " 87 00 58a4 00000000"  # NS, code 0, checksum, reserved
    " 20010002000000010000000000000100"  # target: the VIP; no option
)
GOLDEN_WITNESS_NS = bytes.fromhex(
    "3333ff0000fe 020000000001 86dd"
    " 60000000 0020 3a ff"
    " 20010002000000010000000000000001"  # source: our own address
    " ff0200000000000000000001ff0000fe"  # the witness's solicited-node group
    " 87 00 3599 00000000"
    " 200100020000000100000000000000fe"  # target: the witness
    " 01 01 020000000001"  # Source Link-Layer Address option: our MAC
)


def _independent_checksum(frame: bytes) -> int:
    """RFC 1071 over the RFC 8200 pseudo-header, byte by byte, with the checksum field zeroed:
    written apart from `nd.checksum` so that the two can catch each other out."""
    length = int.from_bytes(frame[18:20], "big")
    message = bytearray(frame[54 : 54 + length])
    message[2:4] = b"\0\0"
    data = frame[22:54] + length.to_bytes(4, "big") + b"\0\0\0\x3a" + bytes(message)
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize("frame", [GOLDEN_NA, GOLDEN_DAD_NS, GOLDEN_WITNESS_NS])
def test_golden_checksums_are_right(frame: bytes) -> None:
    assert int.from_bytes(frame[56:58], "big") == _independent_checksum(frame)


def test_announce_golden() -> None:
    assert announce_frame(MAC, VIP, LINK_LOCAL) == GOLDEN_NA


def test_announce_without_link_local_comes_from_the_vip() -> None:
    frame = announce_frame(MAC, VIP, None)
    assert frame[22:38] == VIP.packed
    assert int.from_bytes(frame[56:58], "big") == _independent_checksum(frame)
    assert frame[:22] == GOLDEN_NA[:22] and frame[38:56] == GOLDEN_NA[38:56]


def test_dad_probe_golden() -> None:
    assert probe_frame6(MAC, VIP) == GOLDEN_DAD_NS


def test_witness_request_golden() -> None:
    assert request_frame6(MAC, WITNESS, HOST) == GOLDEN_WITNESS_NS


def test_witness_request_without_a_source_is_dad_style() -> None:
    assert request_frame6(MAC, WITNESS, None) == probe_frame6(MAC, WITNESS)


@pytest.mark.parametrize(
    ("ip", "group", "mac"),
    [
        (VIP, "ff02::1:ff00:100", "3333ff000100"),
        (IPv6Address("2001:2::abcd:ef12:3456"), "ff02::1:ff12:3456", "3333ff123456"),
        (IPv6Address("fe80::ffff:ffff"), "ff02::1:ffff:ffff", "3333ffffffff"),
    ],
)
def test_solicited_node_and_its_mac(ip: IPv6Address, group: str, mac: str) -> None:
    assert solicited_node(ip) == IPv6Address(group)
    assert multicast_mac(solicited_node(ip)) == bytes.fromhex(mac)


def test_multicast_mac_refuses_unicast() -> None:
    with pytest.raises(ValueError, match="not a multicast address"):
        multicast_mac(VIP)


def test_builders_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="must not carry a source link-layer"):
        build_ns(mac=MAC, src=UNSPECIFIED6, target=VIP)
    with pytest.raises(ValueError, match="eth_src must be 6 bytes"):
        build_na(mac=MAC[:5], src=LINK_LOCAL, target=VIP)
    with pytest.raises(ValueError, match="only R, S and O"):
        build_na(mac=MAC, src=LINK_LOCAL, target=VIP, flags=0x10)


def test_parse_golden() -> None:
    assert parse_nd(GOLDEN_NA) == NdPacket(
        type=ND_NA,
        eth_src=MAC,
        src=LINK_LOCAL,
        dst=IPv6Address("ff02::1"),
        target=VIP,
        flags=NA_OVERRIDE,
        lladdr=MAC,
    )
    dad = parse_nd(GOLDEN_DAD_NS)
    assert dad is not None and dad.is_dad and dad.lladdr is None and dad.target == VIP
    ns = parse_nd(GOLDEN_WITNESS_NS)
    assert ns is not None and not ns.is_dad and ns.lladdr == MAC and ns.src == HOST
    assert parse_nd(GOLDEN_NA + b"\0" * 20) == parse_nd(GOLDEN_NA)  # Ethernet padding


def _mangle(frame: bytes, offset: int, value: bytes, *, fix_checksum: bool = True) -> bytes:
    out = bytearray(frame)
    out[offset : offset + len(value)] = value
    if fix_checksum:  # so that only the change under test can make it invalid
        out[56:58] = b"\0\0"
        out[56:58] = _independent_checksum(bytes(out)).to_bytes(2, "big")
    return bytes(out)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (_mangle(GOLDEN_NA, 21, b"\xfe"), "hop limit 254: forged off-link"),
        (_mangle(GOLDEN_NA, 21, b"\x01"), "hop limit 1"),
        (_mangle(GOLDEN_NA, 56, b"\x35\x18", fix_checksum=False), "bad checksum"),
        (_mangle(GOLDEN_NA, 20, b"\x00"), "an extension header (hop-by-hop) first"),
        (_mangle(GOLDEN_NA, 55, b"\x01"), "ICMPv6 code 1"),
        (_mangle(GOLDEN_NA, 54, b"\x80"), "an echo request, not ND"),
        (_mangle(GOLDEN_NA, 12, b"\x08\x00"), "ethertype IPv4"),
        (_mangle(GOLDEN_NA, 14, b"\x40"), "IP version 4 in an IPv6 frame"),
        (_mangle(GOLDEN_NA, 79, b"\x00"), "an option of length zero"),
        (_mangle(GOLDEN_NA, 79, b"\x02"), "an option running past the end"),
        (_mangle(GOLDEN_NA, 18, b"\x00\x28"), "payload length past the frame"),
        (_mangle(GOLDEN_NA, 18, b"\x00\x10"), "payload shorter than an NA"),
        (_mangle(GOLDEN_NA, 62, b"\xff\x02"), "a multicast target"),
        (GOLDEN_NA[:85], "truncated in the option"),
        (GOLDEN_NA[:70], "truncated in the target"),
        (b"", "empty"),
        (
            _mangle(GOLDEN_DAD_NS, 18, b"\x00\x20") + b"\x01\x01" + MAC,
            "a DAD NS with a source link-layer option (forbidden from ::)",
        ),
    ],
)
def test_parse_rejects(frame: bytes, why: str) -> None:
    assert parse_nd(frame) is None, why


def test_parse_with_checksum_fixed_stays_valid() -> None:
    # The mangling helper itself: a harmless change (the flow label) keeps the frame valid.
    assert parse_nd(_mangle(GOLDEN_NA, 15, b"\x01")) is not None


def _na(
    *,
    target: IPv6Address = VIP,
    mac: bytes = OTHER_MAC,
    tlla: bytes | None = None,
    flags: int = NA_OVERRIDE,
) -> NdPacket:
    packet = parse_nd(build_na(mac=mac, src=LINK_LOCAL, target=target, flags=flags, tlla=tlla))
    assert packet is not None
    return packet


def _ns(*, src: IPv6Address, target: IPv6Address = VIP, mac: bytes = OTHER_MAC) -> NdPacket:
    packet = parse_nd(build_ns(mac=mac, src=src, target=target, slla=src != UNSPECIFIED6))
    assert packet is not None
    return packet


def _no_tlla() -> NdPacket:
    frame = build_na(mac=OTHER_MAC, src=LINK_LOCAL, target=VIP)
    frame = _mangle(frame[:78], 18, b"\x00\x18")  # the option cut off, the length fixed
    packet = parse_nd(frame)
    assert packet is not None and packet.lladdr is None
    return packet


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (_na(), Heard(kind=HeardKind.CLAIM, ip=VIP, mac="02:00:00:00:00:02")),
        (  # the MAC comes from the TLLA option, not the Ethernet source
            _na(tlla=THIRD_MAC, flags=NA_SOLICITED | NA_OVERRIDE),
            Heard(kind=HeardKind.CLAIM, ip=VIP, mac="02:00:00:00:00:03"),
        ),
        (_no_tlla(), Heard(kind=HeardKind.CLAIM, ip=VIP, mac="02:00:00:00:00:02")),
        (_ns(src=VIP, target=HOST), Heard(kind=HeardKind.CLAIM, ip=VIP, mac="02:00:00:00:00:02")),
        (_ns(src=UNSPECIFIED6), Heard(kind=HeardKind.PROBE, ip=VIP, mac="02:00:00:00:00:02")),
        (
            _na(target=WITNESS, flags=NA_SOLICITED | NA_ROUTER),
            Heard(kind=HeardKind.WITNESS, ip=WITNESS, mac="02:00:00:00:00:02"),
        ),
        (_ns(src=HOST), None),  # someone asks for the VIP's MAC: no claim
        (_ns(src=UNSPECIFIED6, target=HOST), None),  # another address's DAD
        (_na(target=HOST), None),
        (_na(mac=MAC), None),  # our own, looped back
        (_ns(src=UNSPECIFIED6, mac=MAC), None),
        (_ns(src=WITNESS, target=HOST), None),  # a witness asking is no answer
    ],
)
def test_classify(packet: NdPacket, expected: Heard | None) -> None:
    assert classify_nd(packet, own_mac=MAC, vips={VIP}, witnesses={WITNESS}) == expected


def test_classify_frame_dispatches_by_ethertype() -> None:
    vips: set[IPAddress] = {VIP, VIP4}
    witnesses: set[IPAddress] = {WITNESS, WITNESS4}

    def heard(frame: bytes) -> Heard | None:
        return classify_frame(frame, own_mac=MAC, vips=vips, witnesses=witnesses)

    other = "02:00:00:00:00:02"
    assert heard(gratuitous_frames(OTHER_MAC, VIP4)[0]) == Heard(
        kind=HeardKind.CLAIM, ip=VIP4, mac=other
    )
    assert heard(announce_frame(OTHER_MAC, VIP, LINK_LOCAL)) == Heard(
        kind=HeardKind.CLAIM, ip=VIP, mac=other
    )
    assert heard(b"\x00" * 12 + b"\x08\x00" + b"\x00" * 60) is None
    assert heard(gratuitous_frames(MAC, VIP4)[0]) is None


# --- the kernel filter ---------------------------------------------------------------------


def _run_bpf(program: list[tuple[int, int, int, int]], frame: bytes, pkttype: int) -> int:
    """A classic-BPF interpreter for the instructions the LAN filter uses, as the kernel runs
    them: a load past the end of the frame drops it."""
    acc, pc = 0, 0
    for _ in range(len(program)):  # no backward jumps: each instruction runs at most once
        code, jt, jf, k = program[pc]
        if code == LD_W and k == SKF_AD_PKTTYPE:
            acc = pkttype
        elif code in (LD_W, LD_H, LD_B):
            size = {LD_W: 4, LD_H: 2, LD_B: 1}[code]
            if k + size > len(frame):
                return 0
            acc = int.from_bytes(frame[k : k + size], "big")
        elif code == JEQ:
            pc += jt if acc == k else jf
        elif code == JA:
            pc += k
        elif code == RET:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1
    raise AssertionError("program ran off its end")


def test_ipv4_only_filter_is_the_arp_filter() -> None:
    # IPv4 deployments keep exactly the filter they had.
    assert lan_filter(own_mac=MAC, vips=[VIP4], witnesses=[WITNESS4]) == arp_filter(
        own_mac=MAC, vips=[VIP4], witnesses=[WITNESS4]
    )


def test_filter_limits() -> None:
    with pytest.raises(ValueError, match="at least one VIP"):
        lan_filter(own_mac=MAC, vips=[], witnesses=[WITNESS])
    many = [IPv6Address(int(VIP) + i) for i in range(101)]
    with pytest.raises(ValueError, match="ND filter: 101 VIPs and 0 witnesses"):
        lan_filter(own_mac=MAC, vips=many)
    # The biggest allowed program: every jump is short or a 32-bit JA, within BPF_MAXINSNS.
    program = lan_filter(own_mac=MAC, vips=many[:50], witnesses=many[50:100])
    assert len(program) <= 4096
    assert all(0 <= jt <= 0xFF and 0 <= jf <= 0xFF for _code, jt, jf, _k in program)
    for target in (many[0], many[99]):
        na = build_na(mac=OTHER_MAC, src=LINK_LOCAL, target=target)
        assert _run_bpf(program, na, 0) > 0


def _both_families() -> list[tuple[int, int, int, int]]:
    return lan_filter(own_mac=MAC, vips=[VIP4, VIP], witnesses=[WITNESS4, WITNESS])


@pytest.mark.parametrize(
    ("frame", "pkttype", "accepted"),
    [
        (announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 2, True),  # another holder announces
        (announce_frame(MAC, VIP, LINK_LOCAL), 2, False),  # ours, looped back
        (announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 4, False),  # outgoing
        (probe_frame6(OTHER_MAC, VIP), 2, True),  # a rival's DAD
        (probe_frame6(OTHER_MAC, HOST), 2, False),  # DAD for another address
        (request_frame6(OTHER_MAC, HOST, VIP), 2, True),  # the VIP's holder asks: a claim
        (request_frame6(OTHER_MAC, VIP, HOST), 0, False),  # someone asks who has the VIP
        (build_na(mac=OTHER_MAC, src=WITNESS, target=WITNESS, flags=NA_SOLICITED), 0, True),
        (build_na(mac=OTHER_MAC, src=HOST, target=HOST), 2, False),
        (_mangle(announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 21, b"\x40"), 2, False),  # hops
        (_mangle(announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 20, b"\x00"), 2, False),  # ext hdr
        (_mangle(announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 55, b"\x01"), 2, False),  # code
        (announce_frame(OTHER_MAC, VIP, LINK_LOCAL)[:70], 2, False),  # truncated
        (gratuitous_frames(OTHER_MAC, VIP4)[0], 1, True),  # the ARP branch still works
        (arp_probe(OTHER_MAC, VIP4), 1, True),
        (gratuitous_frames(MAC, VIP4)[1], 1, False),
        (b"\x00" * 12 + b"\x08\x00" + b"\x00" * 60, 0, False),  # IPv4
    ],
)
def test_filter_cases(frame: bytes, pkttype: int, accepted: bool) -> None:
    assert (_run_bpf(_both_families(), frame, pkttype) > 0) is accepted


def test_filter_with_ipv6_only_drops_arp() -> None:
    program = lan_filter(own_mac=MAC, vips=[VIP])
    assert _run_bpf(program, gratuitous_frames(OTHER_MAC, VIP4)[0], 1) == 0
    assert _run_bpf(program, announce_frame(OTHER_MAC, VIP, LINK_LOCAL), 2) > 0


v6_pool = st.sampled_from([VIP, HOST, WITNESS, GATEWAY_LL, UNSPECIFIED6])
v4_pool = st.sampled_from([VIP4, WITNESS4, IPv4Address("198.18.0.1"), IPv4Address("0.0.0.0")])
mac_pool = st.sampled_from([MAC, OTHER_MAC])


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    mac = draw(mac_pool)
    kind = draw(st.sampled_from(["na", "ns", "arp"]))
    if kind == "arp":
        return build_arp(
            op=draw(st.sampled_from([OP_REQUEST, 2])),
            sender_mac=mac,
            sender_ip=draw(v4_pool),
            target_mac=ZERO_MAC,
            target_ip=draw(v4_pool),
        )
    src, target = draw(v6_pool), draw(v6_pool)
    if kind == "na":
        flags = draw(st.sampled_from([0, NA_OVERRIDE, NA_SOLICITED | NA_ROUTER]))
        return build_na(mac=mac, src=src, target=target, flags=flags)
    return build_ns(mac=mac, src=src, target=target, slla=src != UNSPECIFIED6)


@given(
    frame=_frames(),
    pkttype=st.sampled_from([0, 1, 2, 3, 4]),
    vips=st.lists(st.one_of(v6_pool, v4_pool), min_size=1, max_size=3),
    witnesses=st.lists(st.one_of(v6_pool, v4_pool), max_size=3),
    tail=st.binary(max_size=18),
)
def test_filter_accepts_exactly_what_classify_reports(
    frame: bytes, pkttype: int, vips: list[IPAddress], witnesses: list[IPAddress], tail: bytes
) -> None:
    # Kernel filter and Python classifier agree on every well-formed frame, ARP or ND, so the
    # daemon neither wakes for nothing nor misses a claim the filter dropped.
    program = lan_filter(own_mac=MAC, vips=vips, witnesses=witnesses)
    wanted = pkttype != 4 and classify_frame(
        frame + tail, own_mac=MAC, vips=set(vips), witnesses=set(witnesses)
    )
    assert (_run_bpf(program, frame + tail, pkttype) > 0) == bool(wanted)


@given(st.integers(min_value=0, max_value=85), st.binary(max_size=60))
def test_parse_never_raises_on_mangled_frames(cut: int, tail: bytes) -> None:
    for golden in (GOLDEN_NA, GOLDEN_DAD_NS, GOLDEN_WITNESS_NS):
        result = parse_nd(golden[:cut] + tail)
        assert result is None or isinstance(result, NdPacket)


@given(st.binary(min_size=4, max_size=120))
def test_checksum_matches_the_independent_one(message: bytes) -> None:
    frame = (
        b"\0" * 14
        + b"\x60\0\0\0"
        + len(message).to_bytes(2, "big")
        + b"\x3a\xff"
        + HOST.packed
        + VIP.packed
        + message
    )
    zeroed = message[:2] + b"\0\0" + message[4:]
    assert checksum(HOST, VIP, zeroed) == _independent_checksum(frame)


def test_arp_classify_is_untouched() -> None:
    # classify_frame hands ARP to arp.classify unchanged.
    frame = gratuitous_frames(OTHER_MAC, VIP4)[1]
    packet = parse_arp(frame)
    assert packet is not None
    assert classify_frame(frame, own_mac=MAC, vips={VIP4}) == classify(
        packet, own_mac=MAC, vips={VIP4}
    )
