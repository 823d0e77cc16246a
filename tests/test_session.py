"""PeerSession: HELLO checks, message order, keepalive schedule, deadline and RTT, on fake time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from havip.core.session import (
    MAX_EPOCH,
    LocalStatus,
    PeerClosing,
    PeerHello,
    PeerResign,
    PeerSession,
    PeerStatus,
    PeerUpdate,
    format_mac,
)
from havip.core.states import State
from havip.core.wire import (
    PROTOCOL_VERSION,
    Close,
    ErrorKind,
    FrameDecoder,
    Hello,
    Keepalive,
    Message,
    ProtocolError,
    Resign,
    encode,
)

INTERVAL = 0.2
DEAD = 1.0
T0 = 100.0
PEER_BOOT = b"\xaa" * 16
PEER_MAC = bytes.fromhex("0200c0ffee01")
OUR_MAC = bytes.fromhex("0200c0ffee02")
STANDBY = LocalStatus(state=State.STANDBY, owns=False, epoch=4, eligible=True)


def session(*, now: float = T0, preempt: bool = True) -> PeerSession:
    """Our side is n1 (the primary); the peer is n2."""
    return PeerSession(
        me="n1",
        peer="n2",
        primary="n1",
        preempt=preempt,
        boot_id=b"\x01" * 16,
        interval=INTERVAL,
        dead_time=DEAD,
        now=now,
    )


def peer_hello(**changes: object) -> Hello:
    hello = Hello(
        version=PROTOCOL_VERSION,
        node="n2",
        primary="n1",
        preempt=True,
        boot_id=PEER_BOOT,
        state=State.ACTIVE,
        owns=True,
        epoch=9,
        eligible=True,
        mac=PEER_MAC,
    )
    return replace(hello, **changes)  # type: ignore[arg-type]


def ka(seq: int, **changes: object) -> Keepalive:
    msg = Keepalive(
        seq=seq, state=State.ACTIVE, owns=True, eligible=True, epoch=9, sent_us=5_000_000
    )
    return replace(msg, **changes)  # type: ignore[arg-type]


def established(now: float = T0) -> PeerSession:
    s = session(now=now)
    s.receive(peer_hello(), now)
    return s


# ---- HELLO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("eligible", [True, False])
def test_our_hello(eligible: bool) -> None:
    status = LocalStatus(state=State.INIT, owns=False, epoch=3, eligible=eligible)
    hello = session().hello(status, OUR_MAC)
    assert hello == Hello(
        version=PROTOCOL_VERSION,
        node="n1",
        primary="n1",
        preempt=True,
        boot_id=b"\x01" * 16,
        state=State.INIT,
        owns=False,
        epoch=3,
        eligible=eligible,
        mac=OUR_MAC,
    )


@pytest.mark.parametrize("size", [0, 5, 7])
def test_our_hello_needs_a_six_byte_mac(size: int) -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        session().hello(STANDBY, bytes(size))


def test_valid_hello_is_accepted() -> None:
    s = session()
    assert not s.established
    assert s.peer_boot_id is None
    ev = s.receive(peer_hello(), T0 + 0.3)
    assert ev == PeerHello(
        status=PeerStatus(state=State.ACTIVE, owns=True, epoch=9, eligible=True),
        boot_id=PEER_BOOT,
        mac="02:00:c0:ff:ee:01",
    )
    assert s.established
    assert s.peer_boot_id == PEER_BOOT
    assert s.deadline == pytest.approx(T0 + 0.3 + DEAD)


def test_hello_carries_eligibility_and_an_unknown_mac() -> None:
    ev = session().receive(peer_hello(eligible=False, mac=bytes(6), owns=False), T0)
    assert isinstance(ev, PeerHello)
    assert ev.status == PeerStatus(state=State.ACTIVE, owns=False, epoch=9, eligible=False)
    assert ev.mac is None  # all zeros: the peer did not know its MAC


def test_format_mac() -> None:
    assert format_mac(bytes.fromhex("AABBCCDDEEFF")) == "aa:bb:cc:dd:ee:ff"
    assert format_mac(bytes.fromhex("000000000001")) == "00:00:00:00:00:01"
    assert format_mac(bytes(6)) is None
    with pytest.raises(ValueError, match="6 bytes"):
        format_mac(bytes(5))


@pytest.mark.parametrize(
    ("changes", "kind", "words"),
    [
        pytest.param({"version": 4}, ErrorKind.VERSION, "version 4", id="newer-version"),
        pytest.param({"version": 2}, ErrorKind.VERSION, "version 2", id="older-version"),
        pytest.param({"mac": bytes(5)}, ErrorKind.MALFORMED, "mac", id="short-mac"),
        pytest.param({"node": "n3"}, ErrorKind.CONFIG_MISMATCH, "'n3'", id="wrong-node"),
        pytest.param({"node": "n1"}, ErrorKind.CONFIG_MISMATCH, "'n1'", id="node-is-us"),
        pytest.param({"primary": "n2"}, ErrorKind.CONFIG_MISMATCH, "primary", id="primary"),
        pytest.param({"preempt": False}, ErrorKind.CONFIG_MISMATCH, "preempt", id="preempt"),
    ],
)
def test_bad_hello_is_refused(changes: dict[str, object], kind: ErrorKind, words: str) -> None:
    s = session()
    with pytest.raises(ProtocolError) as err:
        s.receive(peer_hello(**changes), T0)
    assert err.value.kind is kind
    assert words in err.value.detail
    assert not s.established
    assert s.peer_boot_id is None


def test_preempt_mismatch_the_other_way() -> None:
    s = session(preempt=False)
    with pytest.raises(ProtocolError) as err:
        s.receive(peer_hello(preempt=True), T0)
    assert err.value.kind is ErrorKind.CONFIG_MISMATCH


@pytest.mark.parametrize("msg", [ka(1), Resign(seq=1, epoch=3)], ids=["keepalive", "resign"])
def test_messages_before_hello_are_out_of_order(msg: Message) -> None:
    s = session()
    with pytest.raises(ProtocolError) as err:
        s.receive(msg, T0)
    assert err.value.kind is ErrorKind.OUT_OF_ORDER
    assert "before HELLO" in err.value.detail


def test_second_hello_is_out_of_order() -> None:
    s = established()
    with pytest.raises(ProtocolError) as err:
        s.receive(peer_hello(), T0 + 0.1)
    assert err.value.kind is ErrorKind.OUT_OF_ORDER


def test_rejected_hello_then_valid_hello_is_not_a_second_hello() -> None:
    s = session()
    with pytest.raises(ProtocolError):
        s.receive(peer_hello(version=7), T0)
    assert isinstance(s.receive(peer_hello(), T0), PeerHello)


# ---- sequence numbers -------------------------------------------------------------------------


def test_sequence_must_strictly_increase() -> None:
    s = established()
    assert isinstance(s.receive(ka(1), T0 + 0.1), PeerUpdate)
    assert isinstance(s.receive(ka(5), T0 + 0.2), PeerUpdate)  # gaps are fine
    for seq in (5, 4, 1, 0):
        with pytest.raises(ProtocolError) as err:
            s.receive(ka(seq), T0 + 0.3)
        assert err.value.kind is ErrorKind.OUT_OF_ORDER
    assert isinstance(s.receive(ka(6), T0 + 0.4), PeerUpdate)


def test_sequence_zero_is_never_valid() -> None:
    s = established()
    with pytest.raises(ProtocolError):
        s.receive(ka(0), T0)


def test_resign_shares_the_incoming_sequence() -> None:
    s = established()
    s.receive(ka(3), T0 + 0.1)
    with pytest.raises(ProtocolError):
        s.receive(Resign(seq=3, epoch=9), T0 + 0.2)
    assert s.receive(Resign(seq=4, epoch=9), T0 + 0.2) == PeerResign(epoch=9)
    with pytest.raises(ProtocolError):
        s.receive(ka(4), T0 + 0.3)
    assert isinstance(s.receive(ka(5), T0 + 0.3), PeerUpdate)


@pytest.mark.parametrize("eligible", [True, False])
def test_update_carries_peer_status(eligible: bool) -> None:
    s = established()
    ev = s.receive(ka(1, state=State.FAULT, owns=False, epoch=11, eligible=eligible), T0 + 0.1)
    assert isinstance(ev, PeerUpdate)
    assert ev.status == PeerStatus(state=State.FAULT, owns=False, epoch=11, eligible=eligible)


# ---- CLOSE ------------------------------------------------------------------------------------


def test_close_is_accepted_before_hello() -> None:
    s = session()
    ev = s.receive(Close(kind=ErrorKind.CONFIG_MISMATCH, detail="preempt differs"), T0)
    assert ev == PeerClosing(kind=ErrorKind.CONFIG_MISMATCH, detail="preempt differs")
    assert not s.established


def test_close_after_hello_takes_no_sequence_number() -> None:
    s = established()
    s.receive(ka(3), T0 + 0.1)
    ev = s.receive(Close(kind=ErrorKind.OUT_OF_ORDER, detail="x"), T0 + 0.2)
    assert ev == PeerClosing(kind=ErrorKind.OUT_OF_ORDER, detail="x")
    # The incoming sequence is unchanged: seq 4 is still the next valid one.
    assert isinstance(s.receive(ka(4), T0 + 0.3), PeerUpdate)


def test_our_close_travels_the_wire() -> None:
    msg = session().close(ErrorKind.VERSION, "we speak 2")
    assert msg == Close(kind=ErrorKind.VERSION, detail="we speak 2")
    (got,) = FrameDecoder().feed(encode(msg))
    assert session().receive(got, T0) == PeerClosing(kind=ErrorKind.VERSION, detail="we speak 2")


# ---- deadline and schedule --------------------------------------------------------------------


def test_deadline_moves_on_receipt() -> None:
    s = session()
    assert s.deadline == pytest.approx(T0 + DEAD)
    s.receive(peer_hello(), T0 + 0.5)
    assert s.deadline == pytest.approx(T0 + 0.5 + DEAD)
    s.receive(ka(1), T0 + 1.2)
    assert s.deadline == pytest.approx(T0 + 1.2 + DEAD)
    s.receive(Resign(seq=2, epoch=1), T0 + 1.9)
    assert s.deadline == pytest.approx(T0 + 1.9 + DEAD)


def test_rejected_message_does_not_move_the_deadline() -> None:
    s = established()
    s.receive(ka(2), T0 + 0.1)
    with pytest.raises(ProtocolError):
        s.receive(ka(2), T0 + 0.5)
    assert s.deadline == pytest.approx(T0 + 0.1 + DEAD)


def test_expired_at_the_deadline_not_before() -> None:
    s = established()
    assert not s.expired(T0 + DEAD - 0.001)
    assert s.expired(T0 + DEAD)
    assert s.expired(T0 + DEAD + 5)
    s.receive(ka(1), T0 + DEAD + 5)  # the shell has dropped it by then; the session just counts
    assert not s.expired(T0 + DEAD + 5)


def test_next_send_schedule() -> None:
    s = established()
    assert s.next_send == pytest.approx(T0 + INTERVAL)
    assert s.next_wakeup() == pytest.approx(T0 + INTERVAL)
    t = T0 + INTERVAL + 0.03  # the shell woke a little late
    s.keepalive(STANDBY, t)
    assert s.next_send == pytest.approx(t + INTERVAL)
    # Receiving does not move the send schedule.
    s.receive(ka(1), t + 0.01)
    assert s.next_send == pytest.approx(t + INTERVAL)


def test_next_wakeup_is_the_deadline_when_it_comes_first() -> None:
    s = PeerSession(
        me="n1",
        peer="n2",
        primary="n1",
        preempt=True,
        boot_id=bytes(16),
        interval=5.0,
        dead_time=1.0,
        now=0.0,
    )
    assert s.next_wakeup() == pytest.approx(1.0)


# ---- keepalive content, echo and RTT ------------------------------------------------------------


def test_keepalive_content_and_sequence() -> None:
    s = established()
    first = s.keepalive(STANDBY, 200.0)
    assert first == Keepalive(
        seq=1, state=State.STANDBY, owns=False, eligible=True, epoch=4, sent_us=200_000_000
    )
    ineligible = LocalStatus(state=State.ACTIVE, owns=True, epoch=4, eligible=False)
    assert s.keepalive(ineligible, 200.5).eligible is False
    seqs = [s.keepalive(STANDBY, 200.0 + i).seq for i in range(1, 4)]
    assert seqs == [3, 4, 5]


def test_resign_shares_the_outgoing_sequence() -> None:
    s = established()
    assert s.keepalive(STANDBY, T0).seq == 1
    assert s.resign(7) == Resign(seq=2, epoch=7)
    assert s.keepalive(STANDBY, T0 + 0.2).seq == 3
    assert s.resign(8).seq == 4


def test_nothing_to_echo_before_the_first_keepalive() -> None:
    s = established()
    msg = s.keepalive(STANDBY, T0 + 0.2)
    assert (msg.echo_us, msg.held_us) == (0, 0)


def test_echo_and_held_time() -> None:
    s = established()
    s.receive(ka(1, sent_us=777_000_000), 300.0)
    msg = s.keepalive(STANDBY, 300.05)
    assert msg.echo_us == 777_000_000
    assert msg.held_us == pytest.approx(50_000, abs=1)
    # The echo is always of the latest keepalive received.
    s.receive(ka(2, sent_us=777_200_000), 300.2)
    assert s.keepalive(STANDBY, 300.2).echo_us == 777_200_000


def test_rtt_from_echo() -> None:
    s = established()
    sent = s.keepalive(STANDBY, 100.0)  # sent_us = 100_000_000 on our clock
    # The peer held it for 30 ms before echoing; it arrives back 100 ms after we sent it.
    echo = ka(1, sent_us=42, echo_us=sent.sent_us, held_us=30_000)
    ev = s.receive(echo, 100.1)
    assert isinstance(ev, PeerUpdate)
    assert ev.rtt == pytest.approx(0.07, abs=2e-6)


def test_no_rtt_without_echo() -> None:
    s = established()
    ev = s.receive(ka(1, echo_us=0), T0 + 1)
    assert isinstance(ev, PeerUpdate)
    assert ev.rtt is None


def test_rtt_never_negative() -> None:
    s = established()
    # A held time longer than the round trip (clock granularity): clamp, do not go negative.
    ev = s.receive(ka(1, echo_us=100_000_000, held_us=500_000), 100.1)
    assert isinstance(ev, PeerUpdate)
    assert ev.rtt == 0.0


def test_two_sessions_over_the_wire_with_unrelated_clocks() -> None:
    """n1 and n2 talk through encode/FrameDecoder; their clocks differ by hours."""
    offset = 7_200.0  # n2's monotonic clock reads this much more than n1's
    one_way = 0.004
    n1 = session(now=10.0)
    n2 = PeerSession(
        me="n2",
        peer="n1",
        primary="n1",
        preempt=True,
        boot_id=PEER_BOOT,
        interval=INTERVAL,
        dead_time=DEAD,
        now=10.0 + offset,
    )
    to_n1, to_n2 = FrameDecoder(), FrameDecoder()

    def send_to_n2(msg: Message, n1_now: float) -> object:
        (got,) = to_n2.feed(encode(msg))
        return n2.receive(got, n1_now + one_way + offset)

    def send_to_n1(msg: Message, n2_now: float) -> object:
        (got,) = to_n1.feed(encode(msg))
        return n1.receive(got, n2_now + one_way - offset)

    t = 10.0
    hello1 = send_to_n2(n1.hello(STANDBY, OUR_MAC), t)
    assert isinstance(hello1, PeerHello)
    assert hello1.mac == "02:00:c0:ff:ee:02"
    active = LocalStatus(state=State.ACTIVE, owns=True, epoch=4, eligible=True)
    assert isinstance(send_to_n1(n2.hello(active, PEER_MAC), t + offset), PeerHello)
    rtts: list[float] = []
    for _ in range(5):
        t += INTERVAL
        ev1 = send_to_n2(n1.keepalive(STANDBY, t), t)
        # n2 answers 10 ms after receiving.
        n2_now = t + one_way + offset + 0.01
        ev2 = send_to_n1(n2.keepalive(active, n2_now), n2_now)
        assert isinstance(ev1, PeerUpdate)
        assert isinstance(ev2, PeerUpdate)
        assert ev2.status == PeerStatus(state=State.ACTIVE, owns=True, epoch=4, eligible=True)
        if ev2.rtt is not None:
            rtts.append(ev2.rtt)
    assert len(rtts) == 5
    assert rtts == pytest.approx([2 * one_way] * 5, abs=5e-6)
    final = n1.resign(5)
    assert send_to_n2(final, t + 0.1) == PeerResign(epoch=5)


def test_hello_timeout_applies_until_the_hello() -> None:
    s = PeerSession(
        me="n1",
        peer="n2",
        primary="n1",
        preempt=True,
        boot_id=bytes(16),
        interval=INTERVAL,
        dead_time=DEAD,
        now=T0,
        hello_timeout=5.0,
    )
    assert s.deadline == pytest.approx(T0 + 5.0)
    assert not s.expired(T0 + DEAD + 0.5)
    s.receive(peer_hello(), T0 + 2.0)
    assert s.deadline == pytest.approx(T0 + 2.0 + DEAD)


@pytest.mark.parametrize("kind", ["hello", "keepalive", "resign"])
def test_absurd_epoch_is_a_protocol_error(kind: str) -> None:
    """A peer claiming epoch near 2**64 must not make our next takeover overflow the wire."""
    session = PeerSession(
        me="n2",
        peer="n1",
        primary="n1",
        preempt=True,
        boot_id=b"b" * 16,
        interval=0.05,
        dead_time=0.2,
        now=0.0,
    )
    big = MAX_EPOCH + 1
    hello = Hello(
        version=PROTOCOL_VERSION,
        node="n1",
        primary="n1",
        preempt=True,
        boot_id=b"a" * 16,
        state=State.ACTIVE,
        owns=True,
        epoch=1 if kind != "hello" else big,
        eligible=True,
        mac=PEER_MAC,
    )
    if kind == "hello":
        with pytest.raises(ProtocolError, match="out of range"):
            session.receive(hello, 0.0)
        return
    session.receive(hello, 0.0)
    msg: Keepalive | Resign = (
        Keepalive(seq=1, state=State.ACTIVE, owns=True, eligible=True, epoch=big, sent_us=1)
        if kind == "keepalive"
        else Resign(seq=1, epoch=big)
    )
    with pytest.raises(ProtocolError, match="out of range") as exc:
        session.receive(msg, 0.1)
    assert exc.value.kind is ErrorKind.MALFORMED
