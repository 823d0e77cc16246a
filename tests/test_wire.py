"""The frame codec: golden bytes written by hand, round trips, the stream decoder, bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havip.core.states import State
from havip.core.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    STATE_CODES,
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
)

BOOT_ID = bytes(range(16))

# ---- golden frames, written out by hand from the layout -------------------------------------
# Frame: u32 payload length | u8 type | body. HELLO body: u16 version, u8 preempt, u8 state,
# u8 owns, u64 epoch, 16 bytes boot id, then node and primary as u8 length + UTF-8.

GOLDEN_HELLO_MSG = Hello(
    version=1,
    node="n2",
    primary="n1",
    preempt=True,
    boot_id=BOOT_ID,
    state=State.STANDBY,
    owns=False,
    epoch=7,
)
GOLDEN_HELLO = bytes.fromhex(
    "00000024"  # 36 = 1 type + 29 fixed + 3 + 3
    " 01"  # HELLO
    " 0001"  # version 1
    " 01"  # preempt
    " 01"  # state STANDBY
    " 00"  # owns: no
    " 0000000000000007"  # epoch 7
    " 000102030405060708090a0b0c0d0e0f"  # boot id
    " 02 6e32"  # "n2"
    " 02 6e31"  # "n1"
)

# KEEPALIVE body: u64 seq, u8 state, u8 owns, u64 epoch, u64 sent_us, u64 echo_us, u32 held_us.
GOLDEN_KEEPALIVE_MSG = Keepalive(
    seq=0x0102,
    state=State.ACTIVE,
    owns=True,
    epoch=3,
    sent_us=1_000_000,
    echo_us=0xDEADBEEF,
    held_us=250,
)
GOLDEN_KEEPALIVE = bytes.fromhex(
    "00000027"  # 39 = 1 + 38
    " 02"  # KEEPALIVE
    " 0000000000000102"  # seq
    " 03"  # state ACTIVE
    " 01"  # owns
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

GOLDEN = [
    pytest.param(GOLDEN_HELLO_MSG, GOLDEN_HELLO, id="hello"),
    pytest.param(GOLDEN_KEEPALIVE_MSG, GOLDEN_KEEPALIVE, id="keepalive"),
    pytest.param(GOLDEN_RESIGN_MSG, GOLDEN_RESIGN, id="resign"),
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
    assert [int(t) for t in MessageType] == [1, 2, 3]
    assert PROTOCOL_VERSION == 1


def test_hello_with_utf8_names() -> None:
    msg = Hello(
        version=1,
        node="nœud",
        primary="",
        preempt=False,
        boot_id=bytes(16),
        state=State.INIT,
        owns=False,
        epoch=0,
    )
    frame = encode(msg)
    # "nœud" is 5 UTF-8 bytes (œ = c5 93); the empty string is just its length byte.
    assert frame[-7:] == bytes.fromhex("05 6e c5 93 75 64 00")
    assert decode_payload(frame[4:]) == msg


def test_keepalive_held_us_saturates_at_u32() -> None:
    msg = Keepalive(seq=1, state=State.STANDBY, owns=False, epoch=0, sent_us=1, held_us=2**40)
    decoded = decode_payload(encode(msg)[4:])
    assert isinstance(decoded, Keepalive)
    assert decoded.held_us == 2**32 - 1


def test_string_longer_than_255_bytes_is_refused_on_encode() -> None:
    msg = Hello(
        version=1,
        node="x" * 256,
        primary="n1",
        preempt=False,
        boot_id=bytes(16),
        state=State.INIT,
        owns=False,
        epoch=0,
    )
    with pytest.raises(ValueError, match="string too long"):
        encode(msg)


# ---- round trips ----------------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=2**64 - 1)
states = st.sampled_from(list(State))
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
    epoch=u64,
)
keepalives = st.builds(
    Keepalive,
    seq=u64,
    state=states,
    owns=st.booleans(),
    epoch=u64,
    sent_us=u64,
    echo_us=u64,
    held_us=st.integers(min_value=0, max_value=2**32 - 1),
)
resigns = st.builds(Resign, seq=u64, epoch=u64)
messages: st.SearchStrategy[Message] = st.one_of(hellos, keepalives, resigns)


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
    stream = GOLDEN_HELLO + GOLDEN_KEEPALIVE + GOLDEN_RESIGN
    ends = {len(GOLDEN_HELLO), len(GOLDEN_HELLO) + len(GOLDEN_KEEPALIVE), len(stream)}
    decoder = FrameDecoder()
    got: list[Message] = []
    for i in range(len(stream)):
        out = decoder.feed(stream[i : i + 1])
        # A message pops out exactly when its last byte arrives, never earlier.
        assert bool(out) == (i + 1 in ends)
        got += out
    assert got == [GOLDEN_HELLO_MSG, GOLDEN_KEEPALIVE_MSG, GOLDEN_RESIGN_MSG]
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


def _keepalive_payload(*, state: int = 1, owns: int = 0) -> bytes:
    return (
        bytes([MessageType.KEEPALIVE])
        + (1).to_bytes(8, "big")
        + bytes([state, owns])
        + bytes(8 * 3 + 4)  # epoch, sent_us, echo_us, held_us
    )


def _hello_payload(
    *, preempt: int = 0, state: int = 1, owns: int = 0, tail: bytes = b"\x02n2\x02n1"
) -> bytes:
    fixed = (1).to_bytes(2, "big") + bytes([preempt, state, owns]) + bytes(8) + BOOT_ID
    return bytes([MessageType.HELLO]) + fixed + tail


def test_hand_built_payloads_are_valid() -> None:
    # Guards the helpers below: unmodified, they decode.
    assert isinstance(decode_payload(_keepalive_payload()), Keepalive)
    assert isinstance(decode_payload(_hello_payload()), Hello)


BAD_PAYLOADS = [
    pytest.param(b"", ErrorKind.MALFORMED, id="empty-frame"),
    pytest.param(b"\x00", ErrorKind.UNKNOWN_TYPE, id="type-0"),
    pytest.param(b"\x04" + bytes(16), ErrorKind.UNKNOWN_TYPE, id="type-4"),
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
    pytest.param(_hello_payload(preempt=2), ErrorKind.MALFORMED, id="hello-preempt-2"),
    pytest.param(_hello_payload(owns=7), ErrorKind.MALFORMED, id="hello-owns-7"),
    pytest.param(_hello_payload(state=9), ErrorKind.MALFORMED, id="hello-state-9"),
    pytest.param(
        _hello_payload(tail=b"\x02\xff\xfe\x02n1"), ErrorKind.MALFORMED, id="hello-node-not-utf8"
    ),
    pytest.param(
        _hello_payload(tail=b"\x02n2\x01\x80"), ErrorKind.MALFORMED, id="hello-primary-not-utf8"
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


# ---- fuzz: nothing but ProtocolError ----------------------------------------------------------


# Mostly payloads with a known type byte, so the fuzz reaches the body parsers.
payloads = st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from(list(MessageType)), st.binary(max_size=80)).map(
        lambda tb: bytes([tb[0]]) + tb[1]
    ),
)


@settings(max_examples=500)
@given(payload=payloads)
def test_decode_random_payload_raises_only_protocol_error(payload: bytes) -> None:
    try:
        msg = decode_payload(payload)
    except ProtocolError:
        return
    assert encode(msg)[4:] == payload  # anything accepted is canonical


@settings(max_examples=300)
@given(stream=st.binary(max_size=200), chunk=st.integers(min_value=1, max_value=64))
def test_decoder_random_stream_raises_only_protocol_error(stream: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    try:
        for i in range(0, len(stream), chunk):
            decoder.feed(stream[i : i + chunk])
    except ProtocolError:
        return
    assert decoder.pending <= 4 + MAX_FRAME


@settings(max_examples=300)
@given(msg=messages, data=st.data())
def test_mutated_valid_payload_raises_only_protocol_error(
    msg: Message, data: st.DataObject
) -> None:
    payload = bytearray(encode(msg)[4:])
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    with contextlib.suppress(ProtocolError):
        decode_payload(bytes(payload[:cut]))
