"""The frame codec: golden bytes written by hand, round trips, the stream decoder, bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havip.core.states import Cause, State
from havip.core.wire import (
    CAUSE_CODES,
    ERROR_CODES,
    MAX_DETAIL,
    MAX_EPOCH,
    MAX_FRAME,
    PROTOCOL_VERSION,
    STATE_CODES,
    UNSPECIFIED_CAUSE,
    Close,
    ErrorKind,
    FrameDecoder,
    Hello,
    Keepalive,
    Message,
    MessageType,
    ProtocolError,
    Resign,
    decode_payload,
    encode,
    truncate_utf8,
)

BOOT_ID = bytes(range(16))
MAC = bytes.fromhex("020000aabbcc")

# ---- golden frames, written out by hand from the layout -------------------------------------
# Frame: u32 payload length | u8 type | body. HELLO body: u16 version, u8 preempt, u8 state,
# u8 owns, u8 eligibility (0: eligible, else the cause's code), u64 epoch, 16 bytes boot id,
# 6 bytes MAC, then node and primary as u8 length + UTF-8.

GOLDEN_HELLO_MSG = Hello(
    version=3,
    node="n2",
    primary="n1",
    preempt=True,
    boot_id=BOOT_ID,
    state=State.STANDBY,
    owns=False,
    epoch=7,
    eligible=True,
    mac=MAC,
)
GOLDEN_HELLO = bytes.fromhex(
    "0000002b"  # 43 = 1 type + 36 fixed + 3 + 3
    " 01"  # HELLO
    " 0003"  # version 3
    " 01"  # preempt
    " 01"  # state STANDBY
    " 00"  # owns: no
    " 00"  # eligible
    " 0000000000000007"  # epoch 7
    " 000102030405060708090a0b0c0d0e0f"  # boot id
    " 020000aabbcc"  # MAC
    " 02 6e32"  # "n2"
    " 02 6e31"  # "n1"
)

# KEEPALIVE body: u64 seq, u8 state, u8 owns, u8 eligibility, u64 epoch, u64 sent_us, u64 echo_us,
# u32 held_us.
GOLDEN_KEEPALIVE_MSG = Keepalive(
    seq=0x0102,
    state=State.ACTIVE,
    owns=True,
    eligible=False,
    epoch=3,
    sent_us=1_000_000,
    echo_us=0xDEADBEEF,
    held_us=250,
    cause=Cause.CHECK_FAILED,
)
GOLDEN_KEEPALIVE = bytes.fromhex(
    "00000028"  # 40 = 1 + 39
    " 02"  # KEEPALIVE
    " 0000000000000102"  # seq
    " 03"  # state ACTIVE
    " 01"  # owns
    " 05"  # not eligible: a check failed
    " 0000000000000003"  # epoch
    " 00000000000f4240"  # sent_us 1_000_000
    " 00000000deadbeef"  # echo_us
    " 000000fa"  # held_us 250
)

# RESIGN body: u64 seq, u64 epoch.
GOLDEN_RESIGN_MSG = Resign(seq=9, epoch=0x1_0000_0000)
GOLDEN_RESIGN = bytes.fromhex(
    "00000011"  # 17 = 1 + 16
    " 03"  # RESIGN
    " 0000000000000009"
    " 0000000100000000"
)

# CLOSE body: u8 error kind code, then the detail as u8 length + UTF-8.
GOLDEN_CLOSE_MSG = Close(kind=ErrorKind.CONFIG_MISMATCH, detail="preempt")
GOLDEN_CLOSE = bytes.fromhex(
    "0000000a"  # 10 = 1 + 1 + 8
    " 04"  # CLOSE
    " 06"  # CONFIG_MISMATCH
    " 07 70726565 6d7074"  # "preempt"
)

GOLDEN = [
    pytest.param(GOLDEN_HELLO_MSG, GOLDEN_HELLO, id="hello"),
    pytest.param(GOLDEN_KEEPALIVE_MSG, GOLDEN_KEEPALIVE, id="keepalive"),
    pytest.param(GOLDEN_RESIGN_MSG, GOLDEN_RESIGN, id="resign"),
    pytest.param(GOLDEN_CLOSE_MSG, GOLDEN_CLOSE, id="close"),
]


@pytest.mark.parametrize(("msg", "frame"), GOLDEN)
def test_encode_matches_golden_bytes(msg: Message, frame: bytes) -> None:
    assert encode(msg) == frame


@pytest.mark.parametrize(("msg", "frame"), GOLDEN)
def test_decode_golden_bytes(msg: Message, frame: bytes) -> None:
    assert decode_payload(frame[4:]) == msg
    assert FrameDecoder().feed(frame) == [msg]


def test_state_codes_are_the_documented_ones() -> None:
    # The wire codes are a compatibility promise: pin them.
    assert {s.value: c for s, c in STATE_CODES.items()} == {
        "init": 0,
        "standby": 1,
        "probing": 2,
        "active": 3,
        "fault": 4,
        "stopped": 5,
    }
    assert [int(t) for t in MessageType] == [1, 2, 3, 4]
    assert PROTOCOL_VERSION == 3
    # The eligibility byte's cause codes are a compatibility promise too.
    assert {cause.value: code for cause, code in CAUSE_CODES.items()} == {
        "no_interface": 1,
        "link_down": 2,
        "no_carrier": 3,
        "no_witness": 4,
        "check_failed": 5,
        "maintenance": 6,
    }
    assert UNSPECIFIED_CAUSE == 255


def test_error_codes_are_the_documented_ones() -> None:
    assert {k.value: c for k, c in ERROR_CODES.items()} == {
        "malformed": 1,
        "oversized": 2,
        "unknown_type": 3,
        "out_of_order": 4,
        "version": 5,
        "config_mismatch": 6,
    }
    assert set(ERROR_CODES) == set(ErrorKind)  # every kind can be sent


def _hello(**changes: object) -> Hello:
    return replace(GOLDEN_HELLO_MSG, **changes)  # type: ignore[arg-type]


def test_hello_with_utf8_names() -> None:
    msg = _hello(node="nœud", primary="")
    frame = encode(msg)
    # "nœud" is 5 UTF-8 bytes (œ = c5 93); the empty string is just its length byte.
    assert frame[-7:] == bytes.fromhex("05 6e c5 93 75 64 00")
    assert decode_payload(frame[4:]) == msg


def test_keepalive_held_us_saturates_at_u32() -> None:
    msg = Keepalive(
        seq=1, state=State.STANDBY, owns=False, eligible=True, epoch=0, sent_us=1, held_us=2**40
    )
    decoded = decode_payload(encode(msg)[4:])
    assert isinstance(decoded, Keepalive)
    assert decoded.held_us == 2**32 - 1


def test_string_longer_than_255_bytes_is_refused_on_encode() -> None:
    with pytest.raises(ValueError, match="string too long"):
        encode(_hello(node="x" * 256))


@pytest.mark.parametrize("size", [0, 5, 7, 16])
def test_hello_mac_must_be_six_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=f"mac must be 6 bytes, got {size}"):
        encode(_hello(mac=bytes(size)))


def test_max_epoch_is_the_documented_bound() -> None:
    assert MAX_EPOCH == 2**62
    # The bound itself is sendable in every message that carries an epoch.
    for msg in (
        _hello(epoch=MAX_EPOCH),
        replace(GOLDEN_KEEPALIVE_MSG, epoch=MAX_EPOCH),
        Resign(seq=1, epoch=MAX_EPOCH),
    ):
        assert decode_payload(encode(msg)[4:]) == msg


@pytest.mark.parametrize("epoch", [MAX_EPOCH + 1, 2**64 - 1, 2**64, -1])
@pytest.mark.parametrize("kind", ["hello", "keepalive", "resign"])
def test_epoch_outside_the_bound_is_our_bug_on_encode(kind: str, epoch: int) -> None:
    msg: Message
    if kind == "hello":
        msg = _hello(epoch=epoch)
    elif kind == "keepalive":
        msg = replace(GOLDEN_KEEPALIVE_MSG, epoch=epoch)
    else:
        msg = Resign(seq=1, epoch=epoch)
    with pytest.raises(ValueError, match=f"epoch {epoch} is outside 0..MAX_EPOCH"):
        encode(msg)


# ---- CLOSE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_close_round_trips_every_kind(kind: ErrorKind) -> None:
    msg = Close(kind=kind, detail=f"because {kind}")
    frame = encode(msg)
    assert frame[5] == ERROR_CODES[kind]
    assert decode_payload(frame[4:]) == msg


def test_close_detail_is_truncated_to_200_bytes() -> None:
    msg = Close(kind=ErrorKind.VERSION, detail="v" * 300)
    decoded = decode_payload(encode(msg)[4:])
    assert decoded == Close(kind=ErrorKind.VERSION, detail="v" * MAX_DETAIL)
    assert MAX_DETAIL == 200


def test_close_detail_is_truncated_on_a_character_boundary() -> None:
    # 199 ASCII bytes then a 2-byte character would end at byte 201: the whole character goes.
    detail = "a" * 199 + "é" + "tail"
    decoded = decode_payload(encode(Close(kind=ErrorKind.MALFORMED, detail=detail))[4:])
    assert decoded == Close(kind=ErrorKind.MALFORMED, detail="a" * 199)
    # A 3-byte character that ends exactly at the limit is kept.
    assert truncate_utf8("a" * 197 + "€" + "b", 200) == "a" * 197 + "€"
    assert truncate_utf8("€€", 5) == "€"
    assert truncate_utf8("short", 200) == "short"


# ---- round trips ----------------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=2**64 - 1)
epochs = st.integers(min_value=0, max_value=MAX_EPOCH)
states = st.sampled_from(list(State))
# What an ineligible node says: a cause with a wire code, or none (sent as UNSPECIFIED_CAUSE).
causes = st.sampled_from([None, *CAUSE_CODES])


def with_cause(msg: Message) -> st.SearchStrategy[Message]:
    """An eligible sender says no cause; an ineligible one says any."""
    if isinstance(msg, Hello | Keepalive) and not msg.eligible:
        return causes.map(lambda c: replace(msg, cause=c))
    return st.just(msg)


names = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)

hellos = st.builds(
    Hello,
    version=st.integers(min_value=0, max_value=2**16 - 1),
    node=names,
    primary=names,
    preempt=st.booleans(),
    boot_id=st.binary(min_size=16, max_size=16),
    state=states,
    owns=st.booleans(),
    epoch=epochs,
    eligible=st.booleans(),
    mac=st.binary(min_size=6, max_size=6),
).flatmap(with_cause)
keepalives = st.builds(
    Keepalive,
    seq=u64,
    state=states,
    owns=st.booleans(),
    eligible=st.booleans(),
    epoch=epochs,
    sent_us=u64,
    echo_us=u64,
    held_us=st.integers(min_value=0, max_value=2**32 - 1),
).flatmap(lambda k: st.just(k) if k.eligible else causes.map(lambda c: replace(k, cause=c)))
resigns = st.builds(Resign, seq=u64, epoch=epochs)
closes = st.builds(
    Close,
    kind=st.sampled_from(list(ErrorKind)),
    detail=st.text(max_size=60).filter(lambda s: len(s.encode()) <= MAX_DETAIL),
)
messages: st.SearchStrategy[Message] = st.one_of(hellos, keepalives, resigns, closes)


@given(msg=messages)
def test_round_trip(msg: Message) -> None:
    frame = encode(msg)
    assert len(frame) - 4 <= MAX_FRAME
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode_payload(frame[4:]) == msg


@given(msgs=st.lists(messages, max_size=8), data=st.data())
def test_decoder_random_chunks(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12)))
    decoder = FrameDecoder()
    got: list[Message] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    assert got == msgs
    assert decoder.pending == 0


def test_decoder_byte_by_byte() -> None:
    stream = GOLDEN_HELLO + GOLDEN_KEEPALIVE + GOLDEN_RESIGN + GOLDEN_CLOSE
    ends = {
        len(GOLDEN_HELLO),
        len(GOLDEN_HELLO) + len(GOLDEN_KEEPALIVE),
        len(stream) - len(GOLDEN_CLOSE),
        len(stream),
    }
    decoder = FrameDecoder()
    got: list[Message] = []
    for i in range(len(stream)):
        out = decoder.feed(stream[i : i + 1])
        # A message pops out exactly when its last byte arrives, never earlier.
        assert bool(out) == (i + 1 in ends)
        got += out
    assert got == [GOLDEN_HELLO_MSG, GOLDEN_KEEPALIVE_MSG, GOLDEN_RESIGN_MSG, GOLDEN_CLOSE_MSG]
    assert decoder.pending == 0


def test_decoder_keeps_an_incomplete_frame_pending() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(GOLDEN_RESIGN + GOLDEN_KEEPALIVE[:10]) == [GOLDEN_RESIGN_MSG]
    assert decoder.pending == 10
    assert decoder.feed(GOLDEN_KEEPALIVE[10:]) == [GOLDEN_KEEPALIVE_MSG]
    assert decoder.pending == 0


def test_decoder_empty_feed() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == 0


# ---- refusing bad input -----------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def test_oversized_length_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00") == []  # half a header: nothing to judge yet
    with pytest.raises(ProtocolError) as err:
        decoder.feed((MAX_FRAME + 1).to_bytes(4, "big")[2:])
    assert err.value.kind is ErrorKind.OVERSIZED


def test_huge_length_refused_from_the_header_alone() -> None:
    with pytest.raises(ProtocolError) as err:
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    assert err.value.kind is ErrorKind.OVERSIZED


def test_frame_of_exactly_max_size_is_waited_for() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(MAX_FRAME.to_bytes(4, "big") + b"\x03") == []
    assert decoder.pending == 5


def test_custom_max_frame() -> None:
    decoder = FrameDecoder(max_frame=16)
    with pytest.raises(ProtocolError) as err:
        decoder.feed(GOLDEN_RESIGN[:4])  # RESIGN is 17 bytes of payload
    assert err.value.kind is ErrorKind.OVERSIZED


def _keepalive_payload(
    *, state: int = 1, owns: int = 0, eligible: int = 0, epoch: int = 0
) -> bytes:
    return (
        bytes([MessageType.KEEPALIVE])
        + (1).to_bytes(8, "big")
        + bytes([state, owns, eligible])
        + epoch.to_bytes(8, "big")
        + bytes(8 * 2 + 4)  # sent_us, echo_us, held_us
    )


def _hello_payload(
    *,
    preempt: int = 0,
    state: int = 1,
    owns: int = 0,
    eligible: int = 0,
    epoch: int = 0,
    tail: bytes = b"\x02n2\x02n1",
) -> bytes:
    fixed = (
        (PROTOCOL_VERSION).to_bytes(2, "big")
        + bytes([preempt, state, owns, eligible])
        + epoch.to_bytes(8, "big")
        + BOOT_ID
        + MAC
    )
    return bytes([MessageType.HELLO]) + fixed + tail


def _resign_payload(epoch: int) -> bytes:
    return bytes([MessageType.RESIGN]) + (1).to_bytes(8, "big") + epoch.to_bytes(8, "big")


def _close_payload(code: int = 1, detail: bytes = b"\x02ok") -> bytes:
    return bytes([MessageType.CLOSE, code]) + detail


def test_hand_built_payloads_are_valid() -> None:
    # Guards the helpers below: unmodified (and at the epoch bound), they decode.
    assert isinstance(decode_payload(_keepalive_payload(epoch=MAX_EPOCH)), Keepalive)
    assert isinstance(decode_payload(_hello_payload(epoch=MAX_EPOCH)), Hello)
    assert decode_payload(_resign_payload(MAX_EPOCH)) == Resign(seq=1, epoch=MAX_EPOCH)
    assert decode_payload(_close_payload()) == Close(kind=ErrorKind.MALFORMED, detail="ok")
    full = _close_payload(6, bytes([MAX_DETAIL]) + b"d" * MAX_DETAIL)
    assert decode_payload(full) == Close(kind=ErrorKind.CONFIG_MISMATCH, detail="d" * MAX_DETAIL)


BAD_PAYLOADS = [
    pytest.param(b"", ErrorKind.MALFORMED, id="empty-frame"),
    pytest.param(b"\x00", ErrorKind.UNKNOWN_TYPE, id="type-0"),
    pytest.param(b"\x05" + bytes(16), ErrorKind.UNKNOWN_TYPE, id="type-5"),
    pytest.param(b"\xff", ErrorKind.UNKNOWN_TYPE, id="type-255"),
    pytest.param(GOLDEN_KEEPALIVE[4:-1], ErrorKind.MALFORMED, id="keepalive-truncated"),
    pytest.param(GOLDEN_KEEPALIVE[4:] + b"\x00", ErrorKind.MALFORMED, id="keepalive-trailing"),
    pytest.param(b"\x02", ErrorKind.MALFORMED, id="keepalive-no-body"),
    pytest.param(GOLDEN_RESIGN[4:-1], ErrorKind.MALFORMED, id="resign-truncated"),
    pytest.param(GOLDEN_RESIGN[4:] + b"\x00", ErrorKind.MALFORMED, id="resign-trailing"),
    pytest.param(GOLDEN_HELLO[4:-1], ErrorKind.MALFORMED, id="hello-string-runs-past"),
    pytest.param(GOLDEN_HELLO[4:-3], ErrorKind.MALFORMED, id="hello-second-string-missing"),
    pytest.param(GOLDEN_HELLO[4:] + b"\x00", ErrorKind.MALFORMED, id="hello-trailing"),
    pytest.param(GOLDEN_HELLO[4:20], ErrorKind.MALFORMED, id="hello-fixed-part-short"),
    pytest.param(b"\x01", ErrorKind.MALFORMED, id="hello-no-body"),
    pytest.param(_keepalive_payload(owns=2), ErrorKind.MALFORMED, id="keepalive-owns-2"),
    pytest.param(_keepalive_payload(owns=0xFF), ErrorKind.MALFORMED, id="keepalive-owns-255"),
    pytest.param(_keepalive_payload(state=6), ErrorKind.MALFORMED, id="keepalive-state-6"),
    pytest.param(_keepalive_payload(state=0xFF), ErrorKind.MALFORMED, id="keepalive-state-255"),
    pytest.param(
        _keepalive_payload(eligible=7), ErrorKind.MALFORMED, id="keepalive-unknown-cause-7"
    ),
    pytest.param(
        _keepalive_payload(epoch=MAX_EPOCH + 1), ErrorKind.MALFORMED, id="keepalive-epoch-over"
    ),
    pytest.param(
        _keepalive_payload(epoch=2**64 - 1), ErrorKind.MALFORMED, id="keepalive-epoch-u64-max"
    ),
    pytest.param(_resign_payload(MAX_EPOCH + 1), ErrorKind.MALFORMED, id="resign-epoch-over"),
    pytest.param(_hello_payload(epoch=MAX_EPOCH + 1), ErrorKind.MALFORMED, id="hello-epoch-over"),
    pytest.param(_hello_payload(eligible=200), ErrorKind.MALFORMED, id="hello-unknown-cause-200"),
    pytest.param(_hello_payload(preempt=2), ErrorKind.MALFORMED, id="hello-preempt-2"),
    pytest.param(_hello_payload(owns=7), ErrorKind.MALFORMED, id="hello-owns-7"),
    pytest.param(_hello_payload(state=9), ErrorKind.MALFORMED, id="hello-state-9"),
    pytest.param(
        _hello_payload(tail=b"\x02\xff\xfe\x02n1"), ErrorKind.MALFORMED, id="hello-node-not-utf8"
    ),
    pytest.param(
        _hello_payload(tail=b"\x02n2\x01\x80"), ErrorKind.MALFORMED, id="hello-primary-not-utf8"
    ),
    pytest.param(b"\x04", ErrorKind.MALFORMED, id="close-no-body"),
    pytest.param(_close_payload(code=0), ErrorKind.MALFORMED, id="close-kind-0"),
    pytest.param(_close_payload(code=7), ErrorKind.MALFORMED, id="close-kind-7"),
    pytest.param(_close_payload(detail=b""), ErrorKind.MALFORMED, id="close-no-detail"),
    pytest.param(_close_payload(detail=b"\x03ok"), ErrorKind.MALFORMED, id="close-detail-short"),
    pytest.param(_close_payload(detail=b"\x02ok!"), ErrorKind.MALFORMED, id="close-trailing"),
    pytest.param(_close_payload(detail=b"\x01\xff"), ErrorKind.MALFORMED, id="close-not-utf8"),
    pytest.param(
        _close_payload(detail=bytes([MAX_DETAIL + 1]) + b"d" * (MAX_DETAIL + 1)),
        ErrorKind.MALFORMED,
        id="close-detail-too-long",
    ),
]


@pytest.mark.parametrize(("payload", "kind"), BAD_PAYLOADS)
def test_bad_payload_is_a_protocol_error(payload: bytes, kind: ErrorKind) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_payload(payload)
    assert err.value.kind is kind
    assert str(err.value).startswith(f"{kind}: ")


@pytest.mark.parametrize(("payload", "kind"), BAD_PAYLOADS)
def test_bad_frame_through_the_decoder(payload: bytes, kind: ErrorKind) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(GOLDEN_RESIGN[:5]) == []  # a partial good frame is fine...
    with pytest.raises(ProtocolError) as err:
        decoder.feed(GOLDEN_RESIGN[5:] + _frame(payload))  # ...the bad one after it is not
    assert err.value.kind is kind


# ---- fuzz: a typed ProtocolError, or a message that is exactly what was sent ------------------


def _accepted_is_canonical(payload: bytes) -> Message | None:
    """Decode `payload`: either a ProtocolError with a known kind (None), or a message that
    encodes back to exactly `payload` (so nothing the peer sends is silently reinterpreted)."""
    try:
        msg = decode_payload(payload)
    except ProtocolError as err:
        assert err.kind in set(ErrorKind)
        assert str(err) == f"{err.kind}: {err.detail}"
        return None
    assert encode(msg)[4:] == payload
    return msg


# Mostly payloads with a known type byte, so the fuzz reaches the body parsers.
payloads = st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from(list(MessageType)), st.binary(max_size=80)).map(
        lambda tb: bytes([tb[0]]) + tb[1]
    ),
)


@settings(max_examples=500)
@given(payload=payloads)
def test_decode_random_payload_is_canonical_or_a_protocol_error(payload: bytes) -> None:
    _accepted_is_canonical(payload)


@settings(max_examples=300)
@given(stream=st.binary(max_size=200), chunk=st.integers(min_value=1, max_value=64))
def test_decoder_random_stream_decodes_a_prefix_or_raises(stream: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    got: list[Message] = []
    try:
        for i in range(0, len(stream), chunk):
            got += decoder.feed(stream[i : i + chunk])
    except ProtocolError as err:
        assert err.kind in set(ErrorKind)
        return
    # Whatever came out is exactly the start of the stream, and the rest is still pending.
    consumed = b"".join(encode(m) for m in got)
    assert stream.startswith(consumed)
    assert decoder.pending == len(stream) - len(consumed)
    assert decoder.pending <= 4 + MAX_FRAME


@settings(max_examples=300)
@given(msg=messages, data=st.data())
def test_mutated_valid_payload_is_canonical_or_a_protocol_error(
    msg: Message, data: st.DataObject
) -> None:
    payload = bytearray(encode(msg)[4:])
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    _accepted_is_canonical(bytes(payload[:cut]))


def test_fuzz_property_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: a lenient decoder that ignored trailing bytes would be caught."""
    assert _accepted_is_canonical(GOLDEN_RESIGN[4:]) == GOLDEN_RESIGN_MSG
    assert _accepted_is_canonical(GOLDEN_RESIGN[4:] + b"\x00") is None

    strict = decode_payload

    def lenient(payload: bytes) -> Message:
        return strict(payload[: len(GOLDEN_RESIGN) - 4])

    monkeypatch.setitem(globals(), "decode_payload", lenient)
    with pytest.raises(AssertionError):
        _accepted_is_canonical(GOLDEN_RESIGN[4:] + b"\x00")


@pytest.mark.parametrize("cause", [None, *CAUSE_CODES, Cause.OK])
def test_an_ineligible_keepalive_carries_its_cause(cause: Cause | None) -> None:
    msg = replace(GOLDEN_KEEPALIVE_MSG, cause=cause)
    back = decode_payload(encode(msg)[4:])
    assert isinstance(back, Keepalive)
    assert back.eligible is False
    # OK is not a reason for being ineligible: it goes out as "unspecified", like None.
    assert back.cause == (cause if cause in CAUSE_CODES else None)


def test_an_eligible_node_sends_no_cause_whatever_the_field_says() -> None:
    msg = replace(GOLDEN_KEEPALIVE_MSG, eligible=True, cause=Cause.MAINTENANCE)
    assert encode(msg)[4 + 1 + 8 + 2] == 0
    back = decode_payload(encode(msg)[4:])
    assert isinstance(back, Keepalive)
    assert (back.eligible, back.cause) == (True, None)
