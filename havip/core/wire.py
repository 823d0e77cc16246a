"""The wire protocol, sans I/O: length-prefixed binary frames carried inside TLS.

Frame: u32 big-endian payload length, then the payload: u8 message type and the message body.
Integers are big-endian; a string is a u8 length then that many UTF-8 bytes. Every frame is
bounded by MAX_FRAME; anything malformed, unknown or oversized raises ProtocolError, which the
transport turns into "close this connection and count it" — never a crash.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from havip.core.states import Cause, State

PROTOCOL_VERSION = 3
MAX_FRAME = 512  # bytes of payload: HELLO is 37 plus its two names; the rest are smaller
#: The one bound on ownership epochs, on the wire and in the state machine. Far beyond any real
#: count of takeovers, and far enough below 2**64 that adding to it can never overflow a u64.
MAX_EPOCH = 2**62
MAX_DETAIL = 200  # bytes of UTF-8 in a CLOSE message's detail
_LEN = struct.Struct("!I")

STATE_CODES: dict[State, int] = {
    State.INIT: 0,
    State.STANDBY: 1,
    State.PROBING: 2,
    State.ACTIVE: 3,
    State.FAULT: 4,
    State.STOPPED: 5,
}
_CODE_STATES = {code: state for state, code in STATE_CODES.items()}

#: Why a node is not eligible, in the byte that says whether it is (0: eligible). Stable wire
#: codes: a compatibility promise, never renumber. UNSPECIFIED_CAUSE: ineligible, reason unsaid.
CAUSE_CODES: dict[Cause, int] = {
    Cause.NO_INTERFACE: 1,
    Cause.LINK_DOWN: 2,
    Cause.NO_CARRIER: 3,
    Cause.NO_WITNESS: 4,
    Cause.CHECK_FAILED: 5,
    Cause.MAINTENANCE: 6,
}
UNSPECIFIED_CAUSE = 255
_CODE_CAUSES = {code: cause for cause, code in CAUSE_CODES.items()}


class MessageType(IntEnum):
    HELLO = 1
    KEEPALIVE = 2
    RESIGN = 3
    CLOSE = 4


class ErrorKind(StrEnum):
    """Kinds of protocol error; each is a metric label (and has a wire code, ERROR_CODES)."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    UNKNOWN_TYPE = "unknown_type"
    OUT_OF_ORDER = "out_of_order"
    VERSION = "version"
    CONFIG_MISMATCH = "config_mismatch"


#: Stable wire codes of ErrorKind (in CLOSE): a compatibility promise, never renumber.
ERROR_CODES: dict[ErrorKind, int] = {
    ErrorKind.MALFORMED: 1,
    ErrorKind.OVERSIZED: 2,
    ErrorKind.UNKNOWN_TYPE: 3,
    ErrorKind.OUT_OF_ORDER: 4,
    ErrorKind.VERSION: 5,
    ErrorKind.CONFIG_MISMATCH: 6,
}
_CODE_ERRORS = {code: kind for kind, code in ERROR_CODES.items()}


class ProtocolError(Exception):
    """The peer sent something we cannot accept. The peer's fault: close, count, carry on."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class Hello:
    """First message on a connection, from each side."""

    version: int
    node: str
    primary: str
    preempt: bool
    boot_id: bytes  # 16 random bytes per daemon start: tells a restart from a reconnect
    state: State
    owns: bool
    epoch: int
    eligible: bool
    mac: bytes  # 6 bytes: the MAC of the sender's VIP interface, all zero when unknown
    cause: Cause | None = None  # why not eligible (None: eligible, or not said)


@dataclass(frozen=True, kw_only=True)
class Keepalive:
    """Sent every keepalive interval by both sides.

    `sent_us` is the sender's monotonic clock; the receiver echoes it back with how long it held
    it, so the sender measures the RTT on its own clock (the two clocks never need to agree).
    """

    seq: int
    state: State
    owns: bool
    eligible: bool
    epoch: int
    sent_us: int
    echo_us: int = 0
    held_us: int = 0
    cause: Cause | None = None  # why not eligible (None: eligible, or not said)


@dataclass(frozen=True, kw_only=True)
class Resign:
    """Planned handover: the sender has removed the VIP and asks the receiver to take it."""

    seq: int
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Close:
    """ "I am closing this connection because ...": sent by a side that refuses the other (e.g.
    a config mismatch), so the other side can count and log the real reason. Valid at any time,
    also before HELLO. The encoder truncates `detail` to MAX_DETAIL bytes."""

    kind: ErrorKind
    detail: str


Message = Hello | Keepalive | Resign | Close

# version, preempt, state, owns, eligibility, epoch, boot_id, mac (+ node and primary as strings)
# eligibility: 0 when eligible, else the CAUSE_CODES code (UNSPECIFIED_CAUSE when unknown)
_HELLO = struct.Struct("!HBBBBQ16s6s")
# seq, state, owns, eligibility, epoch, sent_us, echo_us, held_us
_KEEPALIVE = struct.Struct("!QBBBQQQI")
_RESIGN = struct.Struct("!QQ")  # seq, epoch
_CLOSE = struct.Struct("!B")  # kind code (+ detail as a string)
_U64 = 2**64


def _pack_str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"string too long for the wire: {text[:20]!r}...")
    return bytes([len(raw)]) + raw


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    # Cutting bytes can split the last character; "ignore" drops just that partial tail.
    return raw[:limit].decode(errors="ignore")


def _eligibility(eligible: bool, cause: Cause | None) -> int:
    if eligible:
        return 0
    return CAUSE_CODES.get(cause, UNSPECIFIED_CAUSE) if cause is not None else UNSPECIFIED_CAUSE


def _check_epoch(epoch: int) -> int:
    # Our own bug if it fails (the machine saturates at MAX_EPOCH), never the peer's.
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} is outside 0..MAX_EPOCH")
    return epoch


def encode(msg: Message) -> bytes:
    """One complete frame for `msg`; ValueError when `msg` cannot be sent as it is (our bug)."""
    if isinstance(msg, Hello):
        if len(msg.boot_id) != 16:
            raise ValueError(f"boot_id must be 16 bytes, got {len(msg.boot_id)}")
        if len(msg.mac) != 6:
            raise ValueError(f"mac must be 6 bytes, got {len(msg.mac)}")
        body = (
            _HELLO.pack(
                msg.version,
                msg.preempt,
                STATE_CODES[msg.state],
                msg.owns,
                _eligibility(msg.eligible, msg.cause),
                _check_epoch(msg.epoch),
                msg.boot_id,
                msg.mac,
            )
            + _pack_str(msg.node)
            + _pack_str(msg.primary)
        )
        mtype = MessageType.HELLO
    elif isinstance(msg, Keepalive):
        body = _KEEPALIVE.pack(
            msg.seq,
            STATE_CODES[msg.state],
            msg.owns,
            _eligibility(msg.eligible, msg.cause),
            _check_epoch(msg.epoch),
            msg.sent_us % _U64,
            msg.echo_us % _U64,
            min(msg.held_us, 2**32 - 1),
        )
        mtype = MessageType.KEEPALIVE
    elif isinstance(msg, Resign):
        body = _RESIGN.pack(msg.seq, _check_epoch(msg.epoch))
        mtype = MessageType.RESIGN
    else:
        body = _CLOSE.pack(ERROR_CODES[msg.kind]) + _pack_str(truncate_utf8(msg.detail, MAX_DETAIL))
        mtype = MessageType.CLOSE
    payload = bytes([mtype]) + body
    return _LEN.pack(len(payload)) + payload


def _state(code: int) -> State:
    try:
        return _CODE_STATES[code]
    except KeyError:
        raise ProtocolError(ErrorKind.MALFORMED, f"unknown state code {code}") from None


def _flag(value: int) -> bool:
    if value not in (0, 1):
        raise ProtocolError(ErrorKind.MALFORMED, f"flag byte must be 0 or 1, got {value}")
    return value == 1


def _cause(code: int) -> tuple[bool, Cause | None]:
    """(eligible, cause) from the eligibility byte."""
    if code == 0:
        return True, None
    if code == UNSPECIFIED_CAUSE:
        return False, None
    try:
        return False, _CODE_CAUSES[code]
    except KeyError:
        raise ProtocolError(ErrorKind.MALFORMED, f"unknown eligibility code {code}") from None


def _unpack_str(body: bytes, offset: int) -> tuple[str, int]:
    if offset >= len(body):
        raise ProtocolError(ErrorKind.MALFORMED, "string length missing")
    size = body[offset]
    end = offset + 1 + size
    if end > len(body):
        raise ProtocolError(ErrorKind.MALFORMED, "string runs past the frame")
    try:
        return body[offset + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise ProtocolError(ErrorKind.MALFORMED, "string is not UTF-8") from None


def _epoch(value: int) -> int:
    if value > MAX_EPOCH:
        # Refuse what our own next takeover (epoch + 1) could not send back.
        raise ProtocolError(ErrorKind.MALFORMED, f"epoch {value} is out of range (> 2**62)")
    return value


def _exact(body: bytes, st: struct.Struct, name: str) -> tuple[int, ...]:
    if len(body) != st.size:
        raise ProtocolError(ErrorKind.MALFORMED, f"{name} body is {len(body)} bytes, not {st.size}")
    return st.unpack(body)


def decode_payload(payload: bytes) -> Message:
    """Decode one frame's payload (without its length prefix)."""
    if not payload:
        raise ProtocolError(ErrorKind.MALFORMED, "empty frame")
    mtype, body = payload[0], payload[1:]
    if mtype == MessageType.HELLO:
        if len(body) < _HELLO.size:
            raise ProtocolError(ErrorKind.MALFORMED, "HELLO too short")
        version, preempt, state, owns, eligible, epoch, boot_id, mac = _HELLO.unpack_from(body)
        node, offset = _unpack_str(body, _HELLO.size)
        primary, offset = _unpack_str(body, offset)
        if offset != len(body):
            raise ProtocolError(ErrorKind.MALFORMED, "trailing bytes after HELLO")
        ok, cause = _cause(eligible)
        return Hello(
            version=version,
            node=node,
            primary=primary,
            preempt=_flag(preempt),
            boot_id=boot_id,
            state=_state(state),
            owns=_flag(owns),
            epoch=_epoch(epoch),
            eligible=ok,
            mac=mac,
            cause=cause,
        )
    if mtype == MessageType.KEEPALIVE:
        seq, state, owns, eligible, epoch, sent, echo, held = _exact(body, _KEEPALIVE, "KEEPALIVE")
        ok, cause = _cause(eligible)
        return Keepalive(
            seq=seq,
            state=_state(state),
            owns=_flag(owns),
            eligible=ok,
            cause=cause,
            epoch=_epoch(epoch),
            sent_us=sent,
            echo_us=echo,
            held_us=held,
        )
    if mtype == MessageType.RESIGN:
        seq, epoch = _exact(body, _RESIGN, "RESIGN")
        return Resign(seq=seq, epoch=_epoch(epoch))
    if mtype == MessageType.CLOSE:
        if not body:
            raise ProtocolError(ErrorKind.MALFORMED, "CLOSE without a kind")
        kind = _CODE_ERRORS.get(body[0])
        if kind is None:
            raise ProtocolError(ErrorKind.MALFORMED, f"CLOSE with unknown kind code {body[0]}")
        detail, offset = _unpack_str(body, 1)
        if offset != len(body):
            raise ProtocolError(ErrorKind.MALFORMED, "trailing bytes after CLOSE")
        if offset - 2 > MAX_DETAIL:
            raise ProtocolError(ErrorKind.MALFORMED, f"CLOSE detail longer than {MAX_DETAIL} bytes")
        return Close(kind=kind, detail=detail)
    raise ProtocolError(ErrorKind.UNKNOWN_TYPE, f"unknown message type {mtype}")


class FrameDecoder:
    """Turns a byte stream into messages. Feed it whatever the socket gave."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by `data`; raises ProtocolError on the first bad frame."""
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(self._buf)
            if size > self._max:
                # Refuse before buffering: an attacker must not make us hold a huge frame.
                raise ProtocolError(ErrorKind.OVERSIZED, f"frame of {size} bytes > {self._max}")
            if len(self._buf) < _LEN.size + size:
                break
            payload = bytes(self._buf[_LEN.size : _LEN.size + size])
            del self._buf[: _LEN.size + size]
            out.append(decode_payload(payload))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buf)
