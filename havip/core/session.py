"""One peer connection's protocol state, sans I/O: handshake, order, keepalives, deadline.

Time is always passed in (seconds on the local monotonic clock). The session never touches a
socket: the shell feeds it received messages and asks it what to send and when it next needs
waking.
"""

from __future__ import annotations

from dataclasses import dataclass

from havip.core.states import Cause, State
from havip.core.wire import (
    MAX_EPOCH,
    PROTOCOL_VERSION,
    Close,
    ErrorKind,
    Hello,
    Keepalive,
    Message,
    ProtocolError,
    Resign,
)

__all__ = [
    "MAX_EPOCH",
    "LocalStatus",
    "PeerClosing",
    "PeerHello",
    "PeerResign",
    "PeerSession",
    "PeerStatus",
    "PeerUpdate",
    "SessionEvent",
    "format_mac",
]


@dataclass(frozen=True, kw_only=True)
class PeerStatus:
    """What the peer last told us about itself."""

    state: State
    owns: bool
    epoch: int
    eligible: bool
    cause: Cause | None = None  # why it is not eligible, when it said


@dataclass(frozen=True, kw_only=True)
class LocalStatus:
    """What we tell the peer about ourselves."""

    state: State
    owns: bool
    epoch: int
    eligible: bool
    cause: Cause | None = None  # why we are not eligible


@dataclass(frozen=True, kw_only=True)
class PeerHello:
    """The peer authenticated and said hello."""

    status: PeerStatus
    boot_id: bytes
    mac: str | None  # its VIP interface's MAC, "aa:bb:cc:dd:ee:ff"; None when it sent zeros


@dataclass(frozen=True, kw_only=True)
class PeerUpdate:
    """A keepalive from the peer, and the RTT it let us measure (None when it echoed nothing)."""

    status: PeerStatus
    rtt: float | None


@dataclass(frozen=True, kw_only=True)
class PeerResign:
    """The peer removed the VIP and hands it to us."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class PeerClosing:
    """The peer is closing the connection and says why (e.g. it refused our HELLO)."""

    kind: ErrorKind
    detail: str


SessionEvent = PeerHello | PeerUpdate | PeerResign | PeerClosing


def format_mac(raw: bytes) -> str | None:
    """Six bytes as aa:bb:cc:dd:ee:ff, or None for all zeros (the sender did not know it)."""
    if len(raw) != 6:
        raise ValueError(f"a MAC is 6 bytes, got {len(raw)}")
    if not any(raw):
        return None
    return ":".join(f"{b:02x}" for b in raw)


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class PeerSession:
    """Protocol state of one authenticated connection to the configured peer."""

    def __init__(
        self,
        *,
        me: str,
        peer: str,
        primary: str,
        preempt: bool,
        boot_id: bytes,
        interval: float,
        dead_time: float,
        now: float,
        hello_timeout: float | None = None,
    ) -> None:
        self._me = me
        self._peer = peer
        self._primary = primary
        self._preempt = preempt
        self._boot_id = boot_id
        self._interval = interval
        self._dead_time = dead_time
        self._seq_out = 0
        self._seq_in = 0
        self._hello_seen = False
        self._echo_us = 0  # the peer's last timestamp, to echo back
        self._echo_at = now
        self.next_send = now + interval
        # Until the peer's HELLO arrives the (usually longer) hello timeout applies.
        self.deadline = now + (dead_time if hello_timeout is None else hello_timeout)
        self.peer_boot_id: bytes | None = None

    @property
    def established(self) -> bool:
        """True once the peer's HELLO was accepted."""
        return self._hello_seen

    def hello(self, status: LocalStatus, mac: bytes) -> Hello:
        """Our HELLO, the first message on every connection; `mac` is our VIP interface's MAC
        (6 bytes, all zero when unknown)."""
        if len(mac) != 6:
            raise ValueError(f"mac must be 6 bytes, got {len(mac)}")
        return Hello(
            version=PROTOCOL_VERSION,
            node=self._me,
            primary=self._primary,
            preempt=self._preempt,
            boot_id=self._boot_id,
            state=status.state,
            owns=status.owns,
            epoch=status.epoch,
            eligible=status.eligible,
            mac=mac,
            cause=None if status.eligible else status.cause,
        )

    def keepalive(self, status: LocalStatus, now: float) -> Keepalive:
        """The keepalive to send now; schedules the next one."""
        self._seq_out += 1
        self.next_send = now + self._interval
        echo, held = self._echo_us, 0
        if echo:
            held = _us(now - self._echo_at)
        return Keepalive(
            seq=self._seq_out,
            state=status.state,
            owns=status.owns,
            eligible=status.eligible,
            cause=None if status.eligible else status.cause,
            epoch=status.epoch,
            sent_us=_us(now),
            echo_us=echo,
            held_us=held,
        )

    def resign(self, epoch: int) -> Resign:
        """A RESIGN message (it shares the keepalive sequence, which only goes up)."""
        self._seq_out += 1
        return Resign(seq=self._seq_out, epoch=epoch)

    def close(self, kind: ErrorKind, detail: str) -> Close:
        """A CLOSE message: we refuse the peer, and tell it why before we hang up."""
        return Close(kind=kind, detail=detail)

    def expired(self, now: float) -> bool:
        """True when the peer has been silent past the dead time."""
        return now >= self.deadline

    def next_wakeup(self) -> float:
        return min(self.next_send, self.deadline)

    def reply_due(self, now: float) -> bool:
        """Whether to send our keepalive now, right after receiving the peer's.

        When our own is due within half an interval anyway, sending it now puts the two sides
        in lockstep: one side's timer drives both, and the other wakes once per interval
        instead of twice. Keepalives still go out at least every interval, and the echoed
        timestamp is fresh, which makes the RTT exact.
        """
        return now >= self.next_send - self._interval / 2

    def receive(self, msg: Message, now: float) -> SessionEvent:
        """Validate one message from the peer; raises ProtocolError when it breaks the rules."""
        if isinstance(msg, Close):
            # Valid before and after HELLO: a peer that refuses our HELLO says so with it.
            return PeerClosing(kind=msg.kind, detail=msg.detail)
        if msg.epoch > MAX_EPOCH:
            # Our next takeover must fit the wire: refuse rather than overflow later.
            raise ProtocolError(ErrorKind.MALFORMED, f"epoch {msg.epoch} is out of range")
        if isinstance(msg, Hello):
            return self._receive_hello(msg, now)
        if not self._hello_seen:
            raise ProtocolError(ErrorKind.OUT_OF_ORDER, f"{type(msg).__name__} before HELLO")
        if msg.seq <= self._seq_in:
            raise ProtocolError(
                ErrorKind.OUT_OF_ORDER, f"sequence went from {self._seq_in} to {msg.seq}"
            )
        self._seq_in = msg.seq
        self.deadline = now + self._dead_time
        if isinstance(msg, Resign):
            return PeerResign(epoch=msg.epoch)
        self._echo_us, self._echo_at = msg.sent_us, now
        rtt = None
        if msg.echo_us:
            rtt = max(0.0, (_us(now) - msg.echo_us - msg.held_us) / 1_000_000)
        status = PeerStatus(
            state=msg.state, owns=msg.owns, epoch=msg.epoch, eligible=msg.eligible, cause=msg.cause
        )
        return PeerUpdate(status=status, rtt=rtt)

    def _receive_hello(self, msg: Hello, now: float) -> PeerHello:
        if self._hello_seen:
            raise ProtocolError(ErrorKind.OUT_OF_ORDER, "second HELLO on one connection")
        if msg.version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorKind.VERSION, f"peer speaks version {msg.version}, we speak {PROTOCOL_VERSION}"
            )
        if msg.node != self._peer:
            # TLS already proved the name; a mismatch here means a misbuilt peer, not an attacker.
            raise ProtocolError(
                ErrorKind.CONFIG_MISMATCH, f"HELLO names {msg.node!r}, expected {self._peer!r}"
            )
        if msg.primary != self._primary:
            raise ProtocolError(
                ErrorKind.CONFIG_MISMATCH,
                f"peer says primary is {msg.primary!r}, our config says {self._primary!r}",
            )
        if msg.preempt != self._preempt:
            raise ProtocolError(
                ErrorKind.CONFIG_MISMATCH,
                f"peer has preempt={str(msg.preempt).lower()}, "
                f"ours is {str(self._preempt).lower()}",
            )
        if len(msg.mac) != 6:
            raise ProtocolError(ErrorKind.MALFORMED, f"HELLO mac is {len(msg.mac)} bytes, not 6")
        self._hello_seen = True
        self.peer_boot_id = msg.boot_id
        self.deadline = now + self._dead_time
        return PeerHello(
            status=PeerStatus(
                state=msg.state,
                owns=msg.owns,
                epoch=msg.epoch,
                eligible=msg.eligible,
                cause=msg.cause,
            ),
            boot_id=msg.boot_id,
            mac=format_mac(msg.mac),
        )
