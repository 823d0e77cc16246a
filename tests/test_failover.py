"""The failover state machine, scenario by scenario: one or more tests per rule of the design.

Time is fake: every step says when it happens, and the tests jump straight to `next_timer()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from havip.core import failover
from havip.core.events import (
    Acquire,
    Acquired,
    Action,
    Announce,
    BackendFailed,
    Claimed,
    Conflict,
    Event,
    FailoverTiming,
    Isolated,
    LocalHealth,
    PeerDown,
    PeerInfo,
    PeerResigned,
    PeerUp,
    Probe,
    ProbeDone,
    ProbePurpose,
    Release,
    Resumed,
    SendResign,
    Shutdown,
    Start,
    Stop,
    Tick,
    Transition,
    Verdict,
    Vetoed,
)
from havip.core.failover import (
    TRANSITIONS,
    Failover,
    TransitionError,
)
from havip.core.session import LocalStatus, PeerStatus
from havip.core.states import Cause, LinkDown, Reason, State
from havip.core.wire import MAX_EPOCH

S, R = State, Reason
TIMING = FailoverTiming(
    retry_interval=1.0,
    startup_wait=3.0,
    preempt_delay=10.0,
    fault_retry=5.0,
    fault_retry_max=60.0,
    probe_window=0.1,
    blip_guard=0.3,
    dead_time=0.32,
    announce_again=2.0,
    announce_interval=0.5,
    conflict_grace=0.15,
)
MAC = "02:00:00:00:00:01"  # the peer's VIP MAC (from its HELLO, see up())
OTHER = "02:00:00:00:00:99"  # a third host
DOWN = PeerDown(reason=LinkDown.DEADLINE_MISSED)
TAKEOVER, CONFLICT = ProbePurpose.TAKEOVER, ProbePurpose.CONFLICT
KEEP, YIELD = Verdict.KEEP, Verdict.YIELD
ANNOUNCE = ("announce",)
SICK = LocalHealth(eligible=False, cause=Cause.NO_CARRIER)
WELL = LocalHealth(eligible=True, cause=Cause.OK)


# ---- the tiny driver -----------------------------------------------------------------------------


def make(*, primary: bool = True, preempt: bool = True, epoch: int = 0) -> Failover:
    return Failover(is_primary=primary, preempt=preempt, timing=TIMING, epoch=epoch, now=0.0)


def drive(fo: Failover, steps: Sequence[tuple[float, Event]]) -> list[Action]:
    """Feed `steps` in order; every Transition must be listed in TRANSITIONS and chain up."""
    out: list[Action] = []
    for now, event in steps:
        state = fo.state
        actions = fo.handle(event, now)
        for action in actions:
            if isinstance(action, Transition):
                assert action.frm is state, f"{action} does not start from {state}"
                assert action.reason in TRANSITIONS[(action.frm, action.to)]
                state = action.to
        assert state is fo.state
        out += actions
    return out


Summary = tuple[object, ...]


def summary(actions: Sequence[Action]) -> list[Summary]:
    """Actions without their log sentences, for readable comparisons."""
    out: list[Summary] = []
    for a in actions:
        if isinstance(a, Acquire):
            out.append(("acquire", a.epoch))
        elif isinstance(a, Release):
            out.append(("release", a.reason))
        elif isinstance(a, Probe):
            out.append(("probe", a.purpose))
        elif isinstance(a, SendResign):
            out.append(("resign", a.epoch))
        elif isinstance(a, Transition):
            out.append(("to", a.to, a.reason))
        elif isinstance(a, Vetoed):
            out.append(("vetoed", a.answered_by))
        elif isinstance(a, Announce):
            out.append(ANNOUNCE)
        elif isinstance(a, Conflict):
            out.append(("conflict", a.mac, a.peer, a.verdict))
        elif isinstance(a, Isolated):
            out.append(("isolated",))
        else:
            out.append(("stop",))
    return out


def kinds(actions: Sequence[Action]) -> list[type]:
    return [type(a) for a in actions]


def probe_of(actions: Sequence[Action]) -> Probe:
    probes = [a for a in actions if isinstance(a, Probe)]
    assert probes, f"no Probe in {summary(actions)}"
    return probes[-1]


def status(
    state: State, epoch: int = 0, owns: bool | None = None, *, eligible: bool = True
) -> PeerStatus:
    """A consistent peer status: it owns exactly when it is ACTIVE, unless told otherwise."""
    owns = state is S.ACTIVE if owns is None else owns
    return PeerStatus(state=state, owns=owns, epoch=epoch, eligible=eligible)


def up(state: State, epoch: int = 0, *, eligible: bool = True, mac: str | None = MAC) -> PeerUp:
    return PeerUp(status=status(state, epoch, eligible=eligible), mac=mac)


def info(state: State, epoch: int = 0, *, eligible: bool = True) -> PeerInfo:
    return PeerInfo(status=status(state, epoch, eligible=eligible))


def silent(probe: Probe, witness: bool | None = True) -> ProbeDone:
    return ProbeDone(probe_id=probe.probe_id, answered_by=None, witness=witness)


def answered(probe: Probe, mac: str = MAC) -> ProbeDone:
    return ProbeDone(probe_id=probe.probe_id, answered_by=mac, witness=True)


def failed(probe: Probe) -> ProbeDone:
    return ProbeDone(probe_id=probe.probe_id, answered_by=None, witness=None, error="EMFILE")


def fire(fo: Failover) -> tuple[float, Tick]:
    """A Tick exactly at the time the machine asked for."""
    due = fo.next_timer()
    assert due is not None, "the machine asked for no timer"
    return (due, Tick())


def active_alone(*, primary: bool = True, preempt: bool = True, epoch: int = 0) -> Failover:
    """A node that started alone, found the LAN silent and took the VIP with epoch + 1 at 3.1,
    and sent its second burst at 5.1 (its next periodic announcement is due at 5.6)."""
    fo = make(primary=primary, preempt=preempt, epoch=epoch)
    acts = drive(fo, [(0.0, Start(present=False)), (3.0, Tick())])
    drive(fo, [(3.1, silent(probe_of(acts)))])
    assert fo.state is S.ACTIVE and fo.epoch == epoch + 1
    # Alone with the link down it announces every 0.5 s; the second burst replaces one of those.
    for due in (3.6, 4.1, 4.6, 5.1):
        assert fo.next_timer() == pytest.approx(due)
        assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]
    assert fo.next_timer() == pytest.approx(5.6)
    return fo


def standby_behind_owner(*, primary: bool = False, peer_epoch: int = 4) -> Failover:
    """A node whose live peer holds the VIP."""
    fo = make(primary=primary)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, peer_epoch))])
    assert fo.state is S.STANDBY
    return fo


# ---- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
def test_cold_start_alone_probes_after_startup_wait_and_takes(primary: bool) -> None:
    fo = make(primary=primary)
    assert drive(fo, [(0.0, Start(present=False))]) == []
    assert fo.state is S.INIT
    assert fo.next_timer() == 3.0
    assert drive(fo, [(1.0, Tick()), (2.99, Tick())]) == []  # early ticks change nothing
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)]
    acts = drive(fo, [(3.2, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 1), ("to", S.ACTIVE, R.PROBE_SILENT)]
    assert fo.local_status() == LocalStatus(state=S.ACTIVE, owns=True, epoch=1, eligible=True)
    assert fo.next_timer() == pytest.approx(3.7)  # alone: announces every 0.5 s
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]


def test_nothing_happens_before_start() -> None:
    fo = make()
    assert drive(fo, [(0.0, Tick()), (100.0, Tick())]) == []
    assert fo.state is S.INIT
    assert fo.next_timer() is None


@pytest.mark.parametrize(
    ("primary", "peer", "expected"),
    [
        pytest.param(
            True,
            status(S.INIT),
            [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)],
            id="primary-peer-init",
        ),
        pytest.param(
            True,
            status(S.STANDBY),
            [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)],
            id="primary-peer-standby",
        ),
        pytest.param(
            False, status(S.INIT), [("to", S.STANDBY, R.PEER_CANDIDATE)], id="secondary-peer-init"
        ),
        pytest.param(
            False,
            status(S.STANDBY),
            [("to", S.STANDBY, R.PEER_CANDIDATE)],
            id="secondary-peer-standby",
        ),
        pytest.param(
            False,
            status(S.PROBING),
            [("to", S.STANDBY, R.PEER_CANDIDATE)],
            id="secondary-peer-probing",
        ),
        pytest.param(
            False,
            status(S.FAULT),
            [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)],
            id="secondary-peer-fault",
        ),
        pytest.param(
            True, status(S.ACTIVE, 3), [("to", S.STANDBY, R.PEER_OWNS)], id="primary-peer-owns"
        ),
        pytest.param(
            False, status(S.ACTIVE, 3), [("to", S.STANDBY, R.PEER_OWNS)], id="secondary-peer-owns"
        ),
    ],
)
def test_cold_start_with_peer_connected_decides_at_once(
    primary: bool, peer: PeerStatus, expected: list[Summary]
) -> None:
    fo = make(primary=primary)
    drive(fo, [(0.0, Start(present=False))])
    acts = drive(fo, [(0.4, PeerUp(status=peer, mac=MAC))])  # long before startup_wait
    assert summary(acts) == expected
    assert fo.epoch == peer.epoch


def test_cold_start_both_connected_primary_takes_with_epoch_above_the_peers() -> None:
    fo = make(primary=True, epoch=2)
    acts = drive(fo, [(0.0, Start(present=False)), (0.2, up(S.INIT, 6))])
    acts = drive(fo, [(0.3, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 7), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_peer_up_before_start_is_remembered() -> None:
    fo = make(primary=False)
    assert drive(fo, [(0.0, up(S.ACTIVE, 2))]) == []
    acts = drive(fo, [(0.1, Start(present=False))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_OWNS)]


def test_peer_that_came_and_went_during_startup_wait() -> None:
    fo = make(primary=False)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.INIT))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_CANDIDATE)]
    # Seeing the peer made us defer; losing it makes us a candidate again, after a probe.
    acts = drive(fo, [(0.6, DOWN)])
    assert summary(acts) == [("to", S.PROBING, R.PEER_LOST), ("probe", TAKEOVER)]
    acts = drive(fo, [(0.7, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 1), ("to", S.ACTIVE, R.PROBE_SILENT)]


# ---- start-up with a VIP already on our interface ------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "peer", "known", "reason"),
    [
        pytest.param(True, status(S.ACTIVE, 3), True, R.PEER_OWNS, id="peer-owns"),
        pytest.param(False, status(S.ACTIVE, 0), True, R.PEER_OWNS, id="peer-owns-same-epoch"),
        # The peer heard of a later epoch than ours: we lost the VIP while away.
        pytest.param(False, status(S.INIT, 3), True, R.PEER_CANDIDATE, id="peer-epoch-higher"),
        # Our epoch file was corrupt: never resume on our own say-so.
        pytest.param(False, status(S.INIT, 0), False, R.PEER_CANDIDATE, id="epoch-unknown"),
    ],
)
def test_present_vip_is_released_when_not_entitled(
    primary: bool, peer: PeerStatus, known: bool, reason: Reason
) -> None:
    fo = make(primary=primary)
    start = Start(present=True, epoch_known=known)
    acts = drive(fo, [(0.0, start), (0.5, PeerUp(status=peer, mac=MAC))])
    assert summary(acts) == [("release", reason), ("to", S.STANDBY, reason)]


def test_present_vip_kept_when_peer_hands_over_during_init() -> None:
    fo = make(primary=False)
    acts = drive(fo, [(0.0, Start(present=True)), (0.5, PeerResigned(epoch=4))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PEER_RESIGNED)]


def test_present_vip_released_when_the_lan_answers() -> None:
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=True)), (3.0, Tick())])
    acts += drive(fo, [(3.1, answered(probe_of(acts)))])
    assert Release in kinds(acts)
    assert Acquire not in kinds(acts)
    assert fo.state is not S.ACTIVE


@pytest.mark.parametrize(
    ("peer", "known"),
    [(None, True), (None, False), (status(S.STANDBY, 2), True), (status(S.STANDBY), False)],
    ids=["alone", "alone-epoch-unknown", "peer-epoch-higher", "with-peer-epoch-unknown"],
)
def test_present_vip_not_released_when_node_becomes_active(
    peer: PeerStatus | None, known: bool
) -> None:
    fo = make(primary=True)
    steps: list[tuple[float, Event]] = [(0.0, Start(present=True, epoch_known=known))]
    steps.append((3.0, Tick()) if peer is None else (0.5, PeerUp(status=peer, mac=MAC)))
    acts = drive(fo, steps)
    assert summary(acts)[-2:] == [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)]
    acts += drive(fo, [(3.1, silent(probe_of(acts)))])
    # Kept through the probe: removing and re-adding it would be a client outage on restart.
    assert fo.state is S.ACTIVE
    assert Release not in kinds(acts)


def test_present_vip_released_on_backend_fault_in_init() -> None:
    fo = make()
    acts = drive(fo, [(0.0, Start(present=True)), (1.0, BackendFailed(op="add", error="x"))])
    assert summary(acts) == [
        ("release", R.BACKEND_FAILED),
        ("to", S.FAULT, R.BACKEND_FAILED),
    ]


# ---- losing the peer: probe, then take or be vetoed ----------------------------------------------


@pytest.mark.parametrize("reason", list(LinkDown))
@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
def test_peer_lost_probe_silent_acquires(primary: bool, reason: LinkDown) -> None:
    fo = standby_behind_owner(primary=primary, peer_epoch=4)
    acts = drive(fo, [(10.0, PeerDown(reason=reason))])
    assert summary(acts) == [("to", S.PROBING, R.PEER_LOST), ("probe", TAKEOVER)]
    acts = drive(fo, [(10.1, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_peer_lost_probe_answered_is_vetoed_and_retried() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.1, answered(probe))])
    assert Vetoed(answered_by=MAC) in acts
    assert Acquire not in kinds(acts)
    assert fo.state is not S.ACTIVE
    assert fo.vetoed_by == MAC  # shown in status while the veto lasts
    now = 10.1
    for _ in range(5):  # the old owner's host keeps answering for a while
        assert fo.next_timer() == pytest.approx(now + TIMING.retry_interval)
        assert Probe not in kinds(drive(fo, [(now + 0.5, Tick())]))  # not yet
        now = now + TIMING.retry_interval
        retry = probe_of(drive(fo, [(now, Tick())]))
        assert retry.purpose is TAKEOVER
        assert retry.probe_id != probe.probe_id
        assert drive(fo, [(now, silent(probe))]) == []  # the earlier probe is stale
        probe = retry
        acts = drive(fo, [(now, answered(probe))])
        assert Vetoed in kinds(acts) and Acquire not in kinds(acts)
    now += TIMING.retry_interval
    probe = probe_of(drive(fo, [(now, Tick())]))
    acts = drive(fo, [(now + 0.1, silent(probe))])
    assert summary(acts)[0] == ("acquire", 5)
    assert fo.owns  # (not fo.state: mypy narrowed it above)
    assert fo.vetoed_by is None
    assert fo.next_timer() == pytest.approx(now + 0.1 + TIMING.announce_interval)


@pytest.mark.parametrize(
    ("primary", "peer", "to", "reason"),
    [
        pytest.param(False, status(S.ACTIVE, 5), S.STANDBY, R.PEER_OWNS, id="peer-owns"),
        pytest.param(True, status(S.ACTIVE, 5), S.STANDBY, R.PEER_OWNS, id="primary-peer-owns"),
        pytest.param(False, status(S.STANDBY), S.STANDBY, R.PEER_CANDIDATE, id="peer-standby"),
        pytest.param(False, status(S.INIT), S.STANDBY, R.PEER_CANDIDATE, id="peer-restarted"),
    ],
)
def test_peer_up_during_takeover_probe_cancels_it(
    primary: bool, peer: PeerStatus, to: State, reason: Reason
) -> None:
    fo = standby_behind_owner(primary=primary)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.05, PeerUp(status=peer, mac=MAC))])
    assert summary(acts) == [("to", to, reason)]
    assert drive(fo, [(10.1, silent(probe))]) == []  # the cancelled probe's answer is stale
    assert fo.state is to
    assert drive(fo, [(20.0, Tick()), (30.0, info(peer.state, peer.epoch))]) == []


def test_peer_up_during_vetoed_wait_cancels_the_retry() -> None:
    fo = standby_behind_owner()
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.1, answered(probe))])
    acts = drive(fo, [(10.5, up(S.ACTIVE, 4))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_OWNS)]
    assert Probe not in kinds(drive(fo, [(11.1, Tick()), (12.1, Tick())]))


def test_primary_keeps_probing_when_the_peer_returns_in_standby() -> None:
    fo = standby_behind_owner(primary=True, peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    assert drive(fo, [(10.05, up(S.STANDBY, 6))]) == []  # still a candidate: it is the primary
    acts = drive(fo, [(10.1, silent(probe))])
    assert summary(acts) == [("acquire", 7), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_secondary_takes_when_the_live_primary_reports_fault() -> None:
    fo = standby_behind_owner(primary=False, peer_epoch=4)
    acts = drive(fo, [(10.0, info(S.FAULT, 4))])
    assert summary(acts) == [("to", S.PROBING, R.PEER_UP), ("probe", TAKEOVER)]
    acts = drive(fo, [(10.1, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
def test_never_probes_or_acquires_while_live_peer_owns(primary: bool) -> None:
    fo = standby_behind_owner(primary=primary)
    steps: list[tuple[float, Event]] = []
    for i in range(1, 40):
        steps += [
            (i * 0.5, info(S.ACTIVE, 4)),
            (i * 0.5, Tick()),
            (i * 0.5, ProbeDone(probe_id=i % 4, answered_by=None, witness=True)),
        ]
    acts = drive(fo, steps)
    assert not {Probe, Acquire} & set(kinds(acts))
    assert fo.state is S.STANDBY


# ---- planned handover (RESIGN) -------------------------------------------------------------------


def _init_waiting() -> Failover:
    fo = make(primary=False)
    drive(fo, [(9.0, Start(present=False))])  # still waiting for the peer at 10.1
    return fo


def _standby() -> Failover:
    return standby_behind_owner(peer_epoch=4)


def _probing() -> Failover:
    fo = standby_behind_owner(peer_epoch=4)
    drive(fo, [(10.0, DOWN)])
    assert fo.state is S.PROBING
    return fo


def _vetoed() -> Failover:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.05, answered(probe))])
    return fo


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(_init_waiting, id="init"),
        pytest.param(_standby, id="standby"),
        pytest.param(_probing, id="probing"),
        pytest.param(_vetoed, id="vetoed"),
    ],
)
def test_resign_takes_at_once_without_probe(setup: Callable[[], Failover]) -> None:
    fo = setup()
    acts = drive(fo, [(10.1, PeerResigned(epoch=8))])
    assert summary(acts) == [("acquire", 9), ("to", S.ACTIVE, R.PEER_RESIGNED)]
    # Any probe that was in flight is now stale.
    for probe_id in range(5):
        assert (
            drive(fo, [(10.2, ProbeDone(probe_id=probe_id, answered_by=MAC, witness=True))]) == []
        )
    assert fo.state is S.ACTIVE


def test_resign_epoch_below_ours_still_bumps_ours() -> None:
    fo = make(primary=False, epoch=20)
    drive(fo, [(0.0, Start(present=False)), (0.1, up(S.ACTIVE, 3))])
    acts = drive(fo, [(1.0, PeerResigned(epoch=3))])
    assert summary(acts)[0] == ("acquire", 21)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda: active_alone(), id="active"),
        pytest.param(lambda: _fault(), id="fault"),
    ],
)
def test_resign_ignored_when_active_or_in_fault(setup: Callable[[], Failover]) -> None:
    fo = setup()
    state, epoch = fo.state, fo.epoch
    acts = drive(fo, [(11.0, PeerResigned(epoch=50))])  # still in FAULT until 15.0
    assert Acquire not in kinds(acts)
    assert (fo.state, fo.epoch) == (state, epoch)


# ---- preemption ----------------------------------------------------------------------------------


def _secondary_active() -> Failover:
    return active_alone(primary=False)


def test_preemption_after_delay() -> None:
    fo = _secondary_active()
    assert drive(fo, [(20.0, up(S.STANDBY, 1))]) == []
    assert fo.next_timer() == 30.0
    assert drive(fo, [(25.0, info(S.STANDBY, 1)), (29.9, Tick())]) == []
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [
        ("release", R.PREEMPT),
        ("resign", 1),
        ("to", S.STANDBY, R.PREEMPT),
    ]
    # Handed back: the secondary stays put while the primary takes over.
    assert drive(fo, [(30.1, info(S.STANDBY, 1)), (31.0, info(S.ACTIVE, 2))]) == []
    assert fo.state is S.STANDBY
    assert fo.next_timer() is None


@pytest.mark.parametrize(
    "interruption",
    [
        pytest.param(info(S.PROBING, 1), id="primary-probing"),
        pytest.param(info(S.FAULT, 1), id="primary-fault"),
        pytest.param(info(S.INIT, 1), id="primary-restarted"),
    ],
)
def test_preemption_delay_restarts_when_primary_stops_looking_healthy(
    interruption: PeerInfo,
) -> None:
    fo = _secondary_active()
    drive(fo, [(20.0, up(S.STANDBY, 1)), (28.0, interruption)])
    assert fo.next_timer() is None
    drive(fo, [(29.0, info(S.STANDBY, 1))])
    assert fo.next_timer() == 39.0
    assert drive(fo, [(30.0, Tick())]) == []
    assert summary(drive(fo, [fire(fo)]))[0] == ("release", R.PREEMPT)


def test_preemption_cancelled_by_peer_loss() -> None:
    fo = _secondary_active()
    drive(fo, [(20.0, up(S.STANDBY, 1)), (25.0, DOWN)])
    assert fo.next_timer() is None
    acts = drive(fo, [(30.0, Tick()), (31.0, Tick())])
    assert Release not in kinds(acts)
    assert fo.state is S.ACTIVE


def test_no_preemption_when_preempt_is_off() -> None:
    fo = active_alone(primary=False, preempt=False)
    steps: list[tuple[float, Event]] = [(20.0, up(S.STANDBY, 1))]
    steps += [(20.0 + i, info(S.STANDBY, 1)) for i in range(1, 60)]
    steps += [(90.0, Tick())]
    assert drive(fo, steps) == []
    assert fo.state is S.ACTIVE
    assert fo.next_timer() is None


def test_primary_never_preempts() -> None:
    fo = active_alone(primary=True)
    steps: list[tuple[float, Event]] = [(20.0, up(S.STANDBY, 1))]
    steps += [(20.0 + i, info(S.STANDBY, 1)) for i in range(1, 30)]
    assert drive(fo, steps) == []
    assert fo.next_timer() is None


# ---- both own: higher epoch wins, ties go to the primary -----------------------------------------


@pytest.mark.parametrize(
    ("primary", "mine", "theirs", "peer_wins"),
    [
        (True, 5, 6, True),
        (False, 5, 6, True),
        (True, 6, 5, False),
        (False, 6, 5, False),
        (True, 5, 5, False),  # tie: the primary keeps it
        (False, 5, 5, True),  # tie: the secondary gives way
        (False, 1, 100, True),
    ],
)
@pytest.mark.parametrize("kind", [PeerUp, PeerInfo])
def test_both_active_meet(
    primary: bool, mine: int, theirs: int, peer_wins: bool, kind: type[PeerUp | PeerInfo]
) -> None:
    fo = active_alone(primary=primary, epoch=mine - 1)
    # A bare PeerInfo has no HELLO before it: the peer's MAC is then unknown.
    event = up(S.ACTIVE, theirs) if kind is PeerUp else info(S.ACTIVE, theirs)
    acts = drive(fo, [(20.0, event)])
    if peer_wins:
        assert summary(acts) == [
            ("release", R.HIGHER_EPOCH),
            ("to", S.STANDBY, R.HIGHER_EPOCH),
        ]
        assert fo.epoch == theirs
    else:
        # Rule 8: the winner announces at once, so clients that followed the loser come back.
        mac = MAC if kind is PeerUp else "peer"
        assert summary(acts) == [("conflict", mac, True, KEEP), ANNOUNCE]
        assert (fo.state, fo.epoch) == (S.ACTIVE, mine)


def test_epoch_winner_announces_once_per_conflict() -> None:
    fo = active_alone(primary=True, epoch=5)  # epoch 6
    first = [("conflict", MAC, True, KEEP), ANNOUNCE]
    assert summary(drive(fo, [(20.0, up(S.ACTIVE, 6))])) == first
    # The peer still says it owns (it has not processed our status yet): no second burst.
    assert drive(fo, [(20.1, info(S.ACTIVE, 6)), (20.2, info(S.ACTIVE, 6))]) == []
    assert summary(drive(fo, [(20.3, info(S.STANDBY, 6))])) == []  # it gave way
    # A new conflict later (e.g. after another partition) is announced again.
    assert summary(drive(fo, [(30.0, info(S.ACTIVE, 6))])) == first


@pytest.mark.parametrize("e1", range(1, 4))
@pytest.mark.parametrize("e2", range(1, 4))
def test_both_active_exactly_one_survives_and_only_it_announces(e1: int, e2: int) -> None:
    primary = active_alone(primary=True, epoch=e1 - 1)
    secondary = active_alone(primary=False, epoch=e2 - 1)
    a = drive(primary, [(20.0, up(S.ACTIVE, e2))])
    b = drive(secondary, [(20.0, up(S.ACTIVE, e1))])
    assert [primary.state, secondary.state].count(S.ACTIVE) == 1
    assert (Release in kinds(a)) != (Release in kinds(b))
    winner = a if primary.owns else b
    loser = b if primary.owns else a
    assert Announce in kinds(winner) and Announce not in kinds(loser)


# ---- an ACTIVE node that loses the peer looks before it stays ------------------------------------


def _active_with_peer() -> Failover:
    """The primary, ACTIVE at epoch 1 since 3.1, its peer connected in STANDBY since 10.0."""
    fo = active_alone(primary=True)
    assert drive(fo, [(10.0, up(S.STANDBY, 1))]) == []
    assert fo.next_timer() is None  # link up: no periodic announcements
    return fo


def test_conflict_probe_answered_by_the_peer_releases_then_retries() -> None:
    fo = _active_with_peer()
    acts = drive(fo, [(20.0, DOWN)])
    assert summary(acts) == [("probe", CONFLICT)]
    assert probe_of(acts).window == TIMING.probe_window  # no blip guard for a conflict probe
    assert fo.state is S.ACTIVE
    acts = drive(fo, [(20.1, answered(probe_of(acts)))])
    assert summary(acts) == [
        ("release", R.PROBE_ANSWERED),
        ("to", S.STANDBY, R.PROBE_ANSWERED),
    ]
    assert fo.next_timer() == pytest.approx(21.1)
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [("to", S.PROBING, R.PEER_LOST), ("probe", TAKEOVER)]


@pytest.mark.parametrize("mac_known", [True, False], ids=["other-mac", "peer-mac-unknown"])
def test_conflict_probe_answered_by_another_mac_never_releases(mac_known: bool) -> None:
    fo = active_alone(primary=True)
    drive(fo, [(10.0, up(S.STANDBY, 1, mac=MAC if mac_known else None))])
    probe = probe_of(drive(fo, [(20.0, DOWN)]))
    answer = answered(probe, OTHER if mac_known else MAC)
    acts = drive(fo, [(20.1, answer)])
    assert summary(acts) == [("conflict", answer.answered_by, False, KEEP), ANNOUNCE]
    assert fo.state is S.ACTIVE
    # And it keeps announcing while the link is down.
    assert fo.next_timer() == pytest.approx(20.6)
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]


@pytest.mark.parametrize("witness", [True, None], ids=["witness", "no-witnesses-configured"])
def test_conflict_probe_silent_keeps_the_vip_and_announces(witness: bool | None) -> None:
    fo = _active_with_peer()
    acts = drive(fo, [(20.0, DOWN)])
    assert fo.next_timer() is None  # nothing announced while the conflict probe is out
    assert summary(drive(fo, [(20.1, silent(probe_of(acts), witness))])) == [ANNOUNCE]
    assert fo.state is S.ACTIVE and not fo.suspect
    # Then every announce_interval while the link stays down.
    for due in (20.6, 21.1, 21.6):
        assert fo.next_timer() == pytest.approx(due)
        assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]
    # Link back: the periodic announcements stop.
    assert drive(fo, [(21.7, up(S.STANDBY, 1))]) == []
    assert fo.next_timer() is None


@pytest.mark.parametrize("how", ["no-witness", "error"])
def test_conflict_probe_that_hears_nothing_makes_the_owner_suspect(how: str) -> None:
    fo = _active_with_peer()
    probe = probe_of(drive(fo, [(20.0, DOWN)]))
    result = silent(probe, witness=False) if how == "no-witness" else failed(probe)
    acts = drive(fo, [(20.1, result)])
    assert summary(acts) == ([("isolated",)] if how == "no-witness" else [])
    assert fo.state is S.ACTIVE and fo.suspect  # keeps the VIP, says nothing
    # Re-checks every retry_interval, announcing nothing meanwhile, until a witness answers.
    now = 20.1
    for _ in range(3):
        now += TIMING.retry_interval
        assert fo.next_timer() == pytest.approx(now)
        acts = drive(fo, [fire(fo)])
        assert summary(acts) == [("probe", CONFLICT)]
        assert fo.next_timer() is None  # nothing while the probe is out
        acts = drive(fo, [(now + 0.1, silent(probe_of(acts), witness=False))])
        assert summary(acts) == [("isolated",)]
        now += 0.1
    now += TIMING.retry_interval
    probe = probe_of(drive(fo, [fire(fo)]))
    assert summary(drive(fo, [(now + 0.1, silent(probe, witness=True))])) == [ANNOUNCE]
    assert not fo.suspect
    assert fo.next_timer() == pytest.approx(now + 0.1 + TIMING.announce_interval)


def test_suspect_owner_sends_no_second_burst() -> None:
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    acts = drive(fo, [(0.6, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 1), ("to", S.ACTIVE, R.PROBE_SILENT)]
    assert fo.next_timer() == pytest.approx(2.6)  # the second burst
    probe = probe_of(drive(fo, [(1.0, DOWN)]))
    drive(fo, [(1.1, silent(probe, witness=False))])
    assert fo.suspect
    assert fo.next_timer() == pytest.approx(2.1)  # only the re-check
    acts = drive(fo, [fire(fo), (2.6, Tick()), (2.7, Tick())])
    assert summary(acts) == [("probe", CONFLICT)]


def test_second_burst_suppressed_while_a_conflict_probe_is_out() -> None:
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    drive(fo, [(0.6, silent(probe_of(acts)))])
    probe = probe_of(drive(fo, [(2.5, DOWN)]))
    assert drive(fo, [(2.6, Tick())]) == []  # due now, but the LAN is being asked
    assert summary(drive(fo, [(2.7, silent(probe))])) == [ANNOUNCE]  # the probe's own answer


def test_second_burst_with_the_link_up_then_silence() -> None:
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    drive(fo, [(0.6, silent(probe_of(acts)))])
    assert fo.next_timer() == pytest.approx(2.6)
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]
    assert fo.next_timer() is None  # link up: nothing more


def test_second_burst_never_follows_a_release() -> None:
    """Issue 5 part 5: a burst whose timer ran out while frozen must not follow the release."""
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    drive(fo, [(0.6, silent(probe_of(acts)))])
    # Frozen from 1.8 to 5.0: the peer took over with epoch 2 meanwhile.
    acts = drive(fo, [(5.0, Resumed()), (5.0, up(S.ACTIVE, 2)), (5.1, Tick()), (6.0, Tick())])
    assert summary(acts) == [
        ("probe", CONFLICT),
        ("release", R.HIGHER_EPOCH),
        ("to", S.STANDBY, R.HIGHER_EPOCH),
    ]
    assert fo.next_timer() is None


def test_one_conflict_probe_at_a_time() -> None:
    fo = _active_with_peer()
    acts = drive(fo, [(20.0, DOWN), (20.01, PeerDown(reason=LinkDown.CONNECTION_LOST))])
    assert summary(acts) == [("probe", CONFLICT)]


def test_peer_back_during_conflict_probe_then_its_stale_answer() -> None:
    fo = _active_with_peer()
    probe = probe_of(drive(fo, [(20.0, DOWN)]))
    assert drive(fo, [(20.05, up(S.STANDBY, 1))]) == []
    # The peer is back and says it does not own: its MAC's answer is stale, and clients may
    # have followed it. Keep, and announce.
    acts = drive(fo, [(20.1, answered(probe))])
    assert summary(acts) == [("conflict", MAC, True, KEEP), ANNOUNCE]
    assert fo.state is S.ACTIVE


def test_peer_back_owning_during_conflict_probe_uses_epochs() -> None:
    fo = _active_with_peer()
    probe = probe_of(drive(fo, [(20.0, DOWN)]))
    acts = drive(fo, [(20.05, up(S.ACTIVE, 2))])
    assert summary(acts)[0] == ("release", R.HIGHER_EPOCH)
    assert drive(fo, [(20.1, answered(probe))]) == []


# ---- shutdown ------------------------------------------------------------------------------------


def _standby_with_peer() -> Failover:
    return standby_behind_owner(peer_epoch=4)


def _active_no_peer() -> Failover:
    fo = _active_with_peer()
    drive(fo, [(15.0, DOWN)])
    return fo


def _init() -> Failover:
    fo = make()
    drive(fo, [(0.0, Start(present=False))])
    return fo


def _init_present() -> Failover:
    fo = make()
    drive(fo, [(0.0, Start(present=True))])
    return fo


def _fault() -> Failover:
    fo = active_alone()
    drive(fo, [(10.0, BackendFailed(op="add", error="netlink said no"))])
    assert fo.state is S.FAULT
    return fo


STOP_ONLY = [("to", S.STOPPED, R.SHUTDOWN), ("stop",)]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            _active_with_peer,
            [("release", R.SHUTDOWN), ("resign", 1), *STOP_ONLY],
            id="active-with-peer",
        ),
        pytest.param(_active_no_peer, [("release", R.SHUTDOWN), *STOP_ONLY], id="active-alone"),
        pytest.param(_standby_with_peer, STOP_ONLY, id="standby"),
        pytest.param(_probing, STOP_ONLY, id="probing"),
        pytest.param(_vetoed, STOP_ONLY, id="vetoed"),
        pytest.param(_init, STOP_ONLY, id="init"),
        pytest.param(_init_present, [("release", R.SHUTDOWN), *STOP_ONLY], id="init-present"),
        pytest.param(_fault, STOP_ONLY, id="fault"),
    ],
)
def test_shutdown(setup: Callable[[], Failover], expected: list[Summary]) -> None:
    fo = setup()
    acts = drive(fo, [(50.0, Shutdown())])
    assert summary(acts) == expected
    assert fo.state is S.STOPPED
    # After STOPPED nothing happens, whatever comes in.
    later: list[Event] = [
        Tick(),
        up(S.ACTIVE, 9),
        info(S.STANDBY),
        DOWN,
        PeerResigned(epoch=9),
        ProbeDone(probe_id=1, answered_by=None, witness=True),
        ProbeDone(probe_id=2, answered_by=MAC, witness=True),
        BackendFailed(op="remove", error="x"),
        Start(present=True),
        Shutdown(),
    ]
    assert drive(fo, [(60.0 + i, ev) for i, ev in enumerate(later)]) == []
    assert fo.state is S.STOPPED


def test_shutdown_while_probing_makes_the_probe_stale() -> None:
    fo = standby_behind_owner()
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.05, Shutdown())])
    assert drive(fo, [(10.1, silent(probe))]) == []


# ---- backend fault -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            _active_with_peer,
            [("release", R.BACKEND_FAILED), ("to", S.FAULT, R.BACKEND_FAILED)],
            id="active",
        ),
        pytest.param(_standby_with_peer, [("to", S.FAULT, R.BACKEND_FAILED)], id="standby"),
        pytest.param(_probing, [("to", S.FAULT, R.BACKEND_FAILED)], id="probing"),
        pytest.param(_init, [("to", S.FAULT, R.BACKEND_FAILED)], id="init"),
    ],
)
def test_backend_fault_then_retry(setup: Callable[[], Failover], expected: list[Summary]) -> None:
    fo = setup()
    acts = drive(fo, [(40.0, BackendFailed(op="add", error="EPERM"))])
    assert summary(acts) == expected
    assert fo.next_timer() == 45.0
    # In FAULT: no probe results, no handover, no second fault timer.
    for probe_id in range(4):
        assert (
            drive(fo, [(41.0, ProbeDone(probe_id=probe_id, answered_by=None, witness=True))]) == []
        )
    assert drive(fo, [(42.0, BackendFailed(op="add", error="again"))]) == []
    assert drive(fo, [(43.0, PeerResigned(epoch=9))]) == []
    assert drive(fo, [(44.9, Tick())]) == []
    assert fo.state is S.FAULT
    assert fo.next_timer() == 45.0
    acts = drive(fo, [fire(fo)])
    assert summary(acts)[0] == ("to", S.STANDBY, R.FAULT_CLEARED)


def test_fault_cleared_with_peer_down_probes_at_once() -> None:
    fo = _fault()  # ACTIVE alone, then the backend failed
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [
        ("to", S.STANDBY, R.FAULT_CLEARED),
        ("to", S.PROBING, R.PEER_LOST),
        ("probe", TAKEOVER),
    ]
    acts = drive(fo, [(15.1, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 2), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_fault_cleared_behind_an_owner_stays_standby() -> None:
    fo = standby_behind_owner()
    drive(fo, [(10.0, BackendFailed(op="probe", error="x")), (12.0, info(S.ACTIVE, 4))])
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [("to", S.STANDBY, R.FAULT_CLEARED)]


def test_peer_down_in_fault_starts_no_probe() -> None:
    fo = _fault()
    assert drive(fo, [(11.0, DOWN)]) == []


# ---- stale probe results -------------------------------------------------------------------------


def test_probe_done_with_wrong_id_is_ignored() -> None:
    fo = standby_behind_owner()
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    for wrong in (probe.probe_id - 1, probe.probe_id + 1, 0, 999):
        assert drive(fo, [(10.05, ProbeDone(probe_id=wrong, answered_by=None, witness=True))]) == []
        assert drive(fo, [(10.05, ProbeDone(probe_id=wrong, answered_by=MAC, witness=True))]) == []
    assert fo.state is S.PROBING
    assert summary(drive(fo, [(10.1, silent(probe))]))[0] == ("acquire", 5)


def test_probe_done_before_any_probe_is_ignored() -> None:
    fo = _init()
    assert drive(fo, [(1.0, ProbeDone(probe_id=1, answered_by=None, witness=True))]) == []
    assert fo.state is S.INIT


def test_duplicate_probe_done_is_ignored() -> None:
    fo = standby_behind_owner()
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.1, silent(probe))])
    assert drive(fo, [(10.2, silent(probe)), (10.3, answered(probe))]) == []
    assert fo.state is S.ACTIVE


def test_conflict_probe_answer_after_losing_the_vip_is_ignored() -> None:
    fo = _active_with_peer()
    probe = probe_of(drive(fo, [(20.0, DOWN)]))
    drive(fo, [(20.05, BackendFailed(op="present", error="x"))])
    assert drive(fo, [(20.1, answered(probe))]) == []
    assert fo.state is S.FAULT


# ---- epochs --------------------------------------------------------------------------------------


def test_acquire_epoch_above_own_stored_epoch() -> None:
    fo = active_alone(epoch=41)
    assert fo.epoch == 42


def test_acquire_epoch_above_peer_epoch_seen_while_standby() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    drive(fo, [(5.0, info(S.ACTIVE, 11))])
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    assert summary(drive(fo, [(10.1, silent(probe))]))[0] == ("acquire", 12)


def test_acquire_epoch_above_resign_epoch() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    assert summary(drive(fo, [(5.0, PeerResigned(epoch=30))]))[0] == ("acquire", 31)


def test_acquire_epoch_above_peer_epoch_seen_while_active() -> None:
    fo = active_alone(primary=True)  # epoch 1
    # The peer took the VIP with epoch 7 during a partition, then lost it to a backend fault.
    assert drive(fo, [(10.0, up(S.FAULT, 7))]) == []
    probe = probe_of(drive(fo, [(11.0, DOWN)]))
    drive(fo, [(11.1, silent(probe)), (12.0, BackendFailed(op="present", error="x"))])
    acts = drive(fo, [fire(fo)])
    acts = drive(fo, [(17.1, silent(probe_of(acts)))])
    assert summary(acts)[0] == ("acquire", 8)


# ---- timers: next_timer() must never ask for a time already past ---------------------------------
# The shell arms one timer at next_timer() and Ticks when it is due; a time that stays in the past
# after the Tick was handled makes that loop spin at 100% CPU.


def _timer_steps_vetoed_then_owner_back() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    # Vetoed at 10.05 (retry due 11.05); the owner's daemon restarts and reconnects at 10.5.
    return fo, [(10.05, answered(probe)), (10.5, up(S.ACTIVE, 4)), (11.05, Tick()), (12.0, Tick())]


def _timer_steps_preempt_then_fault() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = _secondary_active()
    steps: list[tuple[float, Event]] = [
        (20.0, up(S.STANDBY, 1)),  # preemption due at 30
        (21.0, BackendFailed(op="present", error="x")),  # fault clears at 26
        (26.0, Tick()),
        (30.0, Tick()),
    ]
    return fo, steps


def _timer_steps_preempt_then_higher_epoch() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = _secondary_active()
    return fo, [(20.0, up(S.STANDBY, 1)), (21.0, info(S.ACTIVE, 5)), (30.0, Tick())]


def _timer_steps_vetoed_retries() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    return fo, [
        (10.05, answered(probe)),
        (11.05, Tick()),
        (11.1, ProbeDone(probe_id=2, answered_by=MAC, witness=True)),
    ]


def _timer_steps_startup_and_fault() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = make()
    steps: list[tuple[float, Event]] = [
        (0.0, Start(present=False)),
        (3.0, Tick()),
        (3.1, BackendFailed(op="probe", error="x")),
        (8.1, Tick()),
        (8.2, up(S.ACTIVE, 3)),
    ]
    return fo, steps


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(_timer_steps_vetoed_retries, id="vetoed-retries"),
        pytest.param(_timer_steps_startup_and_fault, id="startup-and-fault"),
        pytest.param(_timer_steps_vetoed_then_owner_back, id="vetoed-then-owner-back"),
        pytest.param(_timer_steps_preempt_then_fault, id="preempt-then-fault"),
        pytest.param(
            _timer_steps_preempt_then_higher_epoch,
            id="preempt-then-higher-epoch",
        ),
    ],
)
def test_next_timer_is_never_in_the_past(
    scenario: Callable[[], tuple[Failover, list[tuple[float, Event]]]],
) -> None:
    fo, steps = scenario()
    for now, event in steps:
        drive(fo, [(now, event)])
        due = fo.next_timer()
        assert due is None or due > now, f"after {event} at {now}: next_timer() = {due}"


# ---- the table -----------------------------------------------------------------------------------


def test_table_shape() -> None:
    assert all(frm is not S.STOPPED for frm, _ in TRANSITIONS)
    assert all(frm is not to for frm, to in TRANSITIONS)
    assert all(reasons for reasons in TRANSITIONS.values())
    targets = {to for _, to in TRANSITIONS}
    assert targets == set(State) - {S.INIT}
    for state in set(State) - {S.STOPPED}:
        assert TRANSITIONS[(state, S.STOPPED)] == {R.SHUTDOWN}
    # Only three ways into ACTIVE, and each is a probe or a handover; resuming only at start-up.
    into_active = {frm: reasons for (frm, to), reasons in TRANSITIONS.items() if to is S.ACTIVE}
    assert set().union(*into_active.values()) <= {R.PROBE_SILENT, R.PEER_RESIGNED, R.RESUMED}
    assert [frm for frm, reasons in into_active.items() if R.RESUMED in reasons] == [S.INIT]


def test_unlisted_transition_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(failover.TRANSITIONS, (S.INIT, S.PROBING), frozenset())
    fo = make()
    drive(fo, [(0.0, Start(present=False))])
    with pytest.raises(TransitionError, match="init -> probing"):
        fo.handle(Tick(), 3.0)


def test_transition_carries_the_epoch_and_a_sentence() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.1, silent(probe))])
    (tr,) = [a for a in acts if isinstance(a, Transition)]
    assert tr.epoch == 5
    assert tr.sentence and "\n" not in tr.sentence
    assert (fo.state, fo.reason, fo.since) == (S.ACTIVE, R.PROBE_SILENT, 10.1)


def test_stop_is_last() -> None:
    acts = drive(_active_with_peer(), [(50.0, Shutdown())])
    assert isinstance(acts[-1], Stop)


@pytest.mark.parametrize("setup", [active_alone, _fault], ids=["active", "fault"])
def test_acquire_epoch_above_resign_epoch_heard_while_not_entitled(
    setup: Callable[[], Failover],
) -> None:
    fo = setup()  # ACTIVE at epoch 1, or in FAULT at epoch 1 (the fault clears at 15.0)
    state = fo.state
    # The peer, not owning, at our epoch; then a RESIGN with epoch 6 (the peer took over with 6
    # while we could not see it, and hands back). Ignored here, but epoch 6 has been heard.
    assert Acquire not in kinds(
        drive(fo, [(11.0, up(S.STANDBY, 1)), (11.1, PeerResigned(epoch=6))])
    )
    assert fo.state is state
    acts = drive(fo, [(11.5, DOWN)])
    if fo.state is S.ACTIVE:  # lose the VIP to the LAN, then win it back
        acts = drive(fo, [(11.6, answered(probe_of(acts)))])
    acts = drive(fo, [fire(fo)])
    acts = drive(fo, [(30.0, silent(probe_of(acts)))])
    assert summary(acts)[0] == ("acquire", 7)


# ---- rule 1: eligibility -------------------------------------------------------------------------


def test_local_status_carries_eligibility() -> None:
    fo = standby_behind_owner()
    assert (fo.local_status().eligible, fo.eligible, fo.cause) == (True, True, Cause.OK)
    drive(fo, [(5.0, SICK)])
    assert fo.local_status() == LocalStatus(
        state=S.STANDBY, owns=False, epoch=4, eligible=False, cause=Cause.NO_CARRIER
    )
    assert (fo.eligible, fo.cause) == (False, Cause.NO_CARRIER)


def test_ineligible_standby_never_probes_until_eligible_again() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    assert drive(fo, [(5.0, SICK)]) == []
    steps: list[tuple[float, Event]] = [(10.0, DOWN)]
    steps += [(10.0 + i, Tick()) for i in range(1, 20)]
    assert drive(fo, steps) == []
    assert fo.state is S.STANDBY
    assert fo.next_timer() is None
    acts = drive(fo, [(30.0, WELL)])
    assert summary(acts) == [("to", S.PROBING, R.PEER_LOST), ("probe", TAKEOVER)]


@pytest.mark.parametrize("present", [False, True])
@pytest.mark.parametrize("peer", [None, status(S.STANDBY)], ids=["alone", "peer-standby"])
def test_ineligible_node_in_init_goes_standby(present: bool, peer: PeerStatus | None) -> None:
    fo = make(primary=True)
    steps: list[tuple[float, Event]] = [(0.0, Start(present=present)), (0.1, SICK)]
    steps.append((3.0, Tick()) if peer is None else (0.5, PeerUp(status=peer, mac=MAC)))
    acts = drive(fo, steps)
    release = [("release", R.INELIGIBLE)] if present else []
    assert summary(acts) == [*release, ("to", S.STANDBY, R.INELIGIBLE)]


def test_ineligible_init_still_waits_for_the_peer() -> None:
    fo = make(primary=True)
    assert drive(fo, [(0.0, Start(present=False)), (0.1, SICK), (1.0, Tick())]) == []
    assert fo.state is S.INIT
    assert fo.next_timer() == 3.0


@pytest.mark.parametrize(
    "setup",
    [pytest.param(_init_waiting, id="init"), pytest.param(_standby, id="standby")],
)
def test_ineligible_node_ignores_resign(setup: Callable[[], Failover]) -> None:
    fo = setup()
    drive(fo, [(10.0, SICK)])
    acts = drive(fo, [(10.1, PeerResigned(epoch=8))])
    assert Acquire not in kinds(acts)
    assert not fo.owns


def test_becoming_ineligible_while_probing_stands_down() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.05, SICK)])
    assert summary(acts) == [("to", S.STANDBY, R.INELIGIBLE)]
    assert drive(fo, [(10.1, silent(probe))]) == []  # the probe's answer is stale
    assert fo.state is S.STANDBY


def test_becoming_ineligible_while_vetoed_stands_down() -> None:
    fo = _vetoed()
    assert fo.vetoed_by == MAC
    acts = drive(fo, [(10.5, SICK)])
    assert summary(acts) == [("to", S.STANDBY, R.INELIGIBLE)]
    assert fo.vetoed_by is None  # cleared on any transition
    assert drive(fo, [(11.05, Tick()), (12.0, Tick())]) == []


@pytest.mark.parametrize(
    ("peer", "candidate"),
    [
        pytest.param(status(S.STANDBY, eligible=False), True, id="primary-ineligible"),
        pytest.param(status(S.INIT, eligible=False), True, id="primary-ineligible-init"),
        pytest.param(status(S.STANDBY), False, id="primary-eligible"),
        pytest.param(status(S.PROBING), False, id="primary-probing"),
        pytest.param(status(S.FAULT), True, id="primary-fault"),
        pytest.param(status(S.ACTIVE, 4, eligible=False), False, id="primary-ineligible-owner"),
    ],
)
def test_secondary_candidate_when_the_primary_cannot_serve(
    peer: PeerStatus, candidate: bool
) -> None:
    fo = make(primary=False)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, PeerUp(status=peer, mac=MAC))])
    if candidate:
        assert summary(acts) == [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)]
        acts = drive(fo, [(0.6, silent(probe_of(acts)))])
        assert summary(acts) == [("acquire", 1), ("to", S.ACTIVE, R.PROBE_SILENT)]
    else:
        assert Probe not in kinds(acts)
        assert fo.state is S.STANDBY


def test_secondary_takes_when_the_standby_primary_becomes_ineligible() -> None:
    fo = make(primary=False)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    assert fo.state is S.STANDBY
    acts = drive(fo, [(5.0, info(S.STANDBY, eligible=False))])
    assert summary(acts) == [("to", S.PROBING, R.PEER_UP), ("probe", TAKEOVER)]
    # The primary recovers before the probe ends: the secondary stands back.
    acts = drive(fo, [(5.05, info(S.STANDBY))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_CANDIDATE)]


# ---- rule 2: an ineligible owner hands over to an eligible peer ----------------------------------


@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
def test_ineligible_active_hands_over_to_an_eligible_peer(primary: bool) -> None:
    fo = active_alone(primary=primary, preempt=False)
    drive(fo, [(10.0, up(S.STANDBY, 1))])
    acts = drive(fo, [(11.0, SICK)])
    assert summary(acts) == [
        ("release", R.INELIGIBLE),
        ("resign", 1),
        ("to", S.STANDBY, R.INELIGIBLE),
    ]
    # It does not come back while ineligible, even when the peer drops.
    assert Probe not in kinds(drive(fo, [(12.0, DOWN), (13.0, Tick())]))


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param(None, id="peer-down"),
        pytest.param(up(S.STANDBY, 1, eligible=False), id="peer-ineligible"),
        pytest.param(up(S.FAULT, 1), id="peer-fault"),
    ],
)
def test_ineligible_active_keeps_the_vip_when_nobody_better_exists(peer: PeerUp | None) -> None:
    fo = active_alone(primary=True)
    if peer is not None:
        drive(fo, [(10.0, peer)])
    acts = drive(fo, [(11.0, SICK), (12.0, Tick()), (20.0, Tick())])
    assert Release not in kinds(acts) and SendResign not in kinds(acts)
    assert Announce not in kinds(acts)  # nor does it announce while it cannot serve
    assert fo.state is S.ACTIVE
    if peer is not None:
        # The peer recovers: now the handover happens.
        acts = drive(fo, [(21.0, info(S.STANDBY, 1))])
        assert summary(acts)[:2] == [("release", R.INELIGIBLE), ("resign", 1)]


def test_ineligible_owner_with_peer_down_stops_periodic_announcements() -> None:
    fo = active_alone()
    assert fo.next_timer() == pytest.approx(5.6)
    assert drive(fo, [(5.5, SICK)]) == []
    assert fo.next_timer() is None
    assert drive(fo, [(10.0, Tick())]) == []
    acts = drive(fo, [(10.2, WELL)])
    assert acts == []
    assert fo.next_timer() == pytest.approx(10.7)
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]


# ---- rule 3: preemption waits for an eligible primary --------------------------------------------


def test_no_preemption_to_an_ineligible_primary() -> None:
    fo = _secondary_active()
    assert drive(fo, [(20.0, up(S.STANDBY, 1, eligible=False))]) == []
    assert fo.next_timer() is None
    assert drive(fo, [(40.0, Tick())]) == []
    assert drive(fo, [(41.0, info(S.STANDBY, 1))]) == []
    assert fo.next_timer() == 51.0
    # It looks ineligible again before the delay ends: the delay restarts.
    drive(fo, [(45.0, info(S.STANDBY, 1, eligible=False)), (46.0, info(S.STANDBY, 1))])
    assert fo.next_timer() == 56.0
    assert summary(drive(fo, [fire(fo)]))[:2] == [("release", R.PREEMPT), ("resign", 1)]


# ---- rule 4: takeover probe results, witnesses and the blip guard --------------------------------


def test_silent_probe_without_a_witness_is_isolation_not_silence() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.3, silent(probe, witness=False))])
    assert summary(acts) == [("isolated",)]
    assert (fo.state, fo.isolated) == (S.PROBING, True)
    now = 10.3
    for _ in range(3):
        now += TIMING.retry_interval
        assert fo.next_timer() == pytest.approx(now)
        probe = probe_of(drive(fo, [fire(fo)]))
        assert probe.window == TIMING.probe_window  # retries use the plain window
        assert summary(drive(fo, [(now, silent(probe, witness=False))])) == [("isolated",)]
        assert fo.isolated
    # A witness answers again: silence now means nobody owns it.
    probe = probe_of(drive(fo, [fire(fo)]))
    acts = drive(fo, [(now + 1.1, silent(probe, witness=True))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]
    assert not fo.isolated


@pytest.mark.parametrize(
    ("witness", "isolated_after"), [(True, False), (None, False), (False, True)]
)
def test_isolation_is_cleared_only_by_a_probe_that_can_hear(
    witness: bool | None, isolated_after: bool
) -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.1, silent(probe, witness=False))])
    probe = probe_of(drive(fo, [fire(fo)]))
    acts = drive(fo, [(11.2, ProbeDone(probe_id=probe.probe_id, answered_by=MAC, witness=witness))])
    assert summary(acts) == [("vetoed", MAC)]
    assert fo.isolated is isolated_after
    assert fo.vetoed_by == MAC


def test_silent_probe_with_no_witnesses_configured_takes() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.3, silent(probe, witness=None))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_failed_probe_is_retried_and_decides_nothing() -> None:
    """Issue 5 part 12: a probe that could not run (EMFILE) is no fault, no release, no take."""
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    for i in range(5):
        acts = drive(fo, [(10.1 + i, failed(probe))])
        assert acts == []
        assert fo.state is S.PROBING
        assert fo.next_timer() == pytest.approx(11.1 + i)
        probe = probe_of(drive(fo, [fire(fo)]))
    acts = drive(fo, [(15.2, silent(probe))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


@pytest.mark.parametrize(
    ("reason", "window"),
    [
        (LinkDown.DEADLINE_MISSED, 0.3),  # max(probe_window 0.1, blip_guard 0.3)
        (LinkDown.CONNECTION_LOST, 0.1),
        (LinkDown.PROTOCOL_ERROR, 0.1),
    ],
)
def test_takeover_after_a_deadline_miss_listens_past_a_blip(
    reason: LinkDown, window: float
) -> None:
    fo = standby_behind_owner(peer_epoch=4)
    first = probe_of(drive(fo, [(10.0, PeerDown(reason=reason))]))
    assert (first.purpose, first.window) == (TAKEOVER, window)
    drive(fo, [(10.4, answered(first))])
    retry = probe_of(drive(fo, [fire(fo)]))
    # After an answer the VIP must stay silent as long as a peer must to count as gone.
    assert retry.window == TIMING.dead_time + TIMING.blip_guard


def test_after_a_veto_only_a_full_dead_time_of_silence_takes() -> None:
    """Issue 5 part 9: the holder answered, then blipped; a short retry window would have
    fallen inside the blip and taken the VIP from a live owner."""
    fo = standby_behind_owner(peer_epoch=4)
    first = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.3, answered(first))])
    retry = probe_of(drive(fo, [fire(fo)]))
    assert retry.window >= TIMING.dead_time
    # Answered again inside the long window (the blip ended): still vetoed, nothing moves.
    acts = drive(fo, [(10.45 + 0.3, answered(retry))])
    assert summary(acts) == [("vetoed", MAC)]
    # Silent for the whole long window: the holder is really gone.
    again = probe_of(drive(fo, [fire(fo)]))
    assert again.window == TIMING.dead_time + TIMING.blip_guard
    acts = drive(fo, [(fo.next_timer() or 12.0, silent(again))])
    assert fo.state is S.ACTIVE, summary(acts)


def test_a_blip_shorter_than_the_dead_time_moves_nothing() -> None:
    """Issue 5 part 9: the peer blipped; it answers within the longer window and comes back."""
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    assert probe.window == 0.3
    # The owner answers for the VIP inside the window: vetoed, no early verdict to act on.
    acts = drive(fo, [(10.25, answered(probe))])
    assert summary(acts) == [("vetoed", MAC)]
    acts = drive(fo, [(10.5, up(S.ACTIVE, 4))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_OWNS)]
    assert fo.epoch == 4


def test_blip_guard_shorter_than_the_window_changes_nothing() -> None:
    timing = FailoverTiming(
        retry_interval=1.0,
        startup_wait=3.0,
        preempt_delay=10.0,
        fault_retry=5.0,
        probe_window=0.5,
        blip_guard=0.2,
        dead_time=0.32,
    )
    fo = Failover(is_primary=False, preempt=True, timing=timing, epoch=0, now=0.0)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, 4))])
    assert probe_of(drive(fo, [(10.0, DOWN)])).window == 0.5


def test_default_timings() -> None:
    timing = FailoverTiming(
        retry_interval=1.0,
        startup_wait=3.0,
        preempt_delay=10.0,
        fault_retry=5.0,
        probe_window=0.06,
        blip_guard=0.15,
        dead_time=0.32,
    )
    assert (
        timing.fault_retry_max,
        timing.announce_again,
        timing.announce_interval,
        timing.conflict_grace,
    ) == (60.0, 2.0, 0.5, 0.15)


# ---- rule 6: a resumed owner re-checks before it speaks ------------------------------------------


@pytest.mark.parametrize("link", ["up", "down"])
def test_resumed_owner_becomes_suspect_and_probes(link: str) -> None:
    fo = _active_with_peer()
    if link == "down":
        drive(fo, [(15.1, silent(probe_of(drive(fo, [(15.0, DOWN)]))))])
        assert fo.next_timer() == pytest.approx(15.6)  # periodic announcements
    acts = drive(fo, [(30.0, Resumed())])
    assert summary(acts) == [("probe", CONFLICT)]
    assert fo.suspect
    assert fo.next_timer() is None  # no announcement while we look
    acts = drive(fo, [(30.1, silent(probe_of(acts)))])
    assert summary(acts) == [ANNOUNCE]
    assert not fo.suspect


def test_resumed_owner_replaces_a_probe_sent_before_the_freeze() -> None:
    fo = _active_with_peer()
    old = probe_of(drive(fo, [(15.0, DOWN)]))
    new = probe_of(drive(fo, [(30.0, Resumed())]))
    assert new.probe_id != old.probe_id
    assert drive(fo, [(30.05, silent(old))]) == []  # from before the freeze: stale
    assert fo.suspect
    assert summary(drive(fo, [(30.1, silent(new))])) == [ANNOUNCE]


def test_resumed_owner_that_lost_the_vip_to_the_peer_releases() -> None:
    fo = _active_with_peer()
    drive(fo, [(15.1, silent(probe_of(drive(fo, [(15.0, DOWN)]))))])
    probe = probe_of(drive(fo, [(30.0, Resumed())]))
    acts = drive(fo, [(30.1, answered(probe))])
    assert summary(acts) == [("release", R.PROBE_ANSWERED), ("to", S.STANDBY, R.PROBE_ANSWERED)]


@pytest.mark.parametrize("setup", [_standby_with_peer, _probing, _init_waiting, _fault])
def test_resumed_is_ignored_unless_active(setup: Callable[[], Failover]) -> None:
    fo = setup()
    assert drive(fo, [(10.01, Resumed())]) == []
    assert not fo.suspect


# ---- rule 7: another MAC claims our VIP ----------------------------------------------------------


def _claim(mac: str = MAC) -> Claimed:
    return Claimed(mac=mac)


def _active_link_down(primary: bool = True) -> Failover:
    """ACTIVE at epoch 1, the peer (MAC known) connected at 10.0, lost at 15.0, and the conflict
    probe found the VIP silent at 15.1 (announced; periodic due at 15.6)."""
    fo = active_alone(primary=primary, preempt=False)
    drive(fo, [(10.0, up(S.STANDBY, 1))])
    acts = drive(fo, [(15.1, silent(probe_of(drive(fo, [(15.0, DOWN)]))))])
    assert summary(acts) == [ANNOUNCE]
    return fo


@pytest.mark.parametrize("link", ["up", "down"])
def test_claim_by_a_third_host_never_releases_and_is_rate_limited(link: str) -> None:
    fo = _active_with_peer() if link == "up" else _active_link_down()
    keep = ("conflict", OTHER, False, KEEP)
    assert summary(drive(fo, [(20.0, _claim(OTHER))])) == [keep, ANNOUNCE]
    assert fo.last_claim == OTHER
    # A flood: every claim is reported, but at most one announcement per announce_interval.
    acts = drive(fo, [(20.0 + i * 0.01, _claim(OTHER.upper())) for i in range(1, 100)])
    assert summary(acts).count(keep) == 99
    # One more, at 20.5 (with the link down it also stands for the periodic one).
    assert [a for a in acts if isinstance(a, Announce)] == [acts[summary(acts).index(ANNOUNCE)]]
    assert summary(acts).index(ANNOUNCE) == 50  # right after the 50th claim, at 20.50
    assert Release not in kinds(acts)
    assert fo.state is S.ACTIVE


def test_claim_rate_limit_exact_sequence() -> None:
    fo = _active_with_peer()
    keep = ("conflict", OTHER, False, KEEP)
    assert summary(drive(fo, [(20.0, _claim(OTHER))])) == [keep, ANNOUNCE]
    assert summary(drive(fo, [(20.3, _claim(OTHER))])) == [keep]
    assert summary(drive(fo, [(20.49, _claim(OTHER))])) == [keep]
    assert summary(drive(fo, [(20.5, _claim(OTHER))])) == [keep, ANNOUNCE]


@pytest.mark.parametrize("setup", [_standby_with_peer, _probing, _vetoed, _fault])
def test_claims_are_only_remembered_when_not_active(setup: Callable[[], Failover]) -> None:
    fo = setup()
    state = fo.state
    assert drive(fo, [(10.2, _claim(OTHER)), (10.3, _claim(MAC.upper()))]) == []
    assert fo.state is state
    assert fo.last_claim == MAC


def test_claim_in_the_peers_name_while_it_says_it_does_not_own_is_stale() -> None:
    fo = _active_with_peer()  # the peer is STANDBY and connected
    acts = drive(fo, [(20.0, _claim(MAC))])
    assert summary(acts) == [("conflict", MAC, True, KEEP), ANNOUNCE]
    assert fo.state is S.ACTIVE


def test_claim_by_an_owning_peer_with_the_link_up_is_left_to_the_epochs() -> None:
    fo = _active_with_peer()
    drive(fo, [(19.0, info(S.ACTIVE, 1))])  # a tie: we are the primary and keep it
    assert fo.state is S.ACTIVE
    assert drive(fo, [(20.0, _claim(MAC)), (20.6, _claim(MAC))]) == []


def test_secondary_yields_at_once_to_the_peers_claim_with_the_link_down() -> None:
    fo = _active_link_down(primary=False)
    acts = drive(fo, [(20.0, _claim(MAC))])
    assert summary(acts) == [
        ("release", R.CONFLICT),
        ("to", S.STANDBY, R.CONFLICT),
        ("conflict", MAC, True, YIELD),
    ]
    # Then the normal retry: probe after retry_interval, vetoed while the peer answers.
    assert fo.next_timer() == pytest.approx(21.0)
    probe = probe_of(drive(fo, [fire(fo)]))
    assert summary(drive(fo, [(21.1, answered(probe))])) == [("vetoed", MAC)]


@pytest.mark.parametrize("why", ["suspect", "ineligible"])
def test_primary_that_is_suspect_or_ineligible_yields_to_the_peer(why: str) -> None:
    fo = _active_with_peer()
    probe = probe_of(drive(fo, [(15.0, DOWN)]))
    if why == "suspect":
        drive(fo, [(15.1, silent(probe, witness=False))])
        assert fo.suspect
    else:
        drive(fo, [(15.1, silent(probe)), (15.2, SICK)])
    acts = drive(fo, [(16.0, _claim(MAC))])
    assert summary(acts) == [
        ("release", R.CONFLICT),
        ("to", S.STANDBY, R.CONFLICT),
        ("conflict", MAC, True, YIELD),
    ]
    assert not fo.suspect


def test_primary_answers_the_peers_claim_and_keeps_when_the_peer_gives_way() -> None:
    fo = _active_link_down()
    acts = drive(fo, [(20.0, _claim(MAC))])
    assert summary(acts) == [("conflict", MAC, True, KEEP), ANNOUNCE]
    # Frames of the peer's burst already on the way: still KEEP, no new announcement.
    assert summary(drive(fo, [(20.1, _claim(MAC))])) == [("conflict", MAC, True, KEEP)]
    assert summary(drive(fo, [(20.15, _claim(MAC))])) == [("conflict", MAC, True, KEEP)]
    # The peer heard us and gave way: no more claims; we keep announcing as usual.
    assert fo.next_timer() == pytest.approx(20.5)
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]
    assert fo.state is S.ACTIVE


def test_primary_yields_when_the_peer_keeps_claiming_past_the_grace() -> None:
    """One-way loss: the peer cannot hear our announcement, so keep the owner clients heard."""
    fo = _active_link_down()
    drive(fo, [(20.0, _claim(MAC))])
    acts = drive(fo, [(20.16, _claim(MAC))])
    assert summary(acts) == [
        ("release", R.CONFLICT),
        ("to", S.STANDBY, R.CONFLICT),
        ("conflict", MAC, True, YIELD),
    ]
    assert fo.next_timer() == pytest.approx(21.16)


def test_a_much_later_claim_starts_a_new_conflict() -> None:
    fo = _active_link_down()
    keep = [("conflict", MAC, True, KEEP), ANNOUNCE]
    assert summary(drive(fo, [(20.0, _claim(MAC))])) == keep
    assert summary(drive(fo, [(25.0, _claim(MAC))])) == keep  # not a YIELD
    assert fo.state is S.ACTIVE


def test_claim_with_the_peers_mac_unknown_is_a_third_host() -> None:
    fo = active_alone(primary=False)  # never heard a HELLO: peer_mac unknown
    assert fo.peer_mac is None
    acts = drive(fo, [(20.0, _claim(MAC))])
    assert summary(acts) == [("conflict", MAC, False, KEEP), ANNOUNCE]
    assert fo.state is S.ACTIVE


def test_peer_mac_is_kept_across_link_drops_and_replaced_by_a_new_hello() -> None:
    fo = _active_with_peer()
    assert fo.peer_mac == MAC
    drive(fo, [(15.0, DOWN)])
    assert fo.peer_mac == MAC
    drive(fo, [(16.0, up(S.STANDBY, 1, mac=None))])  # a HELLO without one keeps the old
    assert fo.peer_mac == MAC
    drive(fo, [(17.0, DOWN), (18.0, up(S.STANDBY, 1, mac="02:AA:00:00:00:02"))])
    assert fo.peer_mac == "02:aa:00:00:00:02"


# ---- rule 9: a restarted daemon resumes the VIP it still holds -----------------------------------


@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
@pytest.mark.parametrize(
    "peer",
    [status(S.STANDBY, 7), status(S.INIT, 3), status(S.PROBING, 7), status(S.FAULT, 0)],
    ids=["standby", "init", "probing", "fault"],
)
def test_restart_with_the_vip_present_resumes_it(primary: bool, peer: PeerStatus) -> None:
    fo = make(primary=primary, preempt=False, epoch=7)
    acts = drive(fo, [(0.0, Start(present=True)), (0.5, PeerUp(status=peer, mac=MAC))])
    assert summary(acts) == [("acquire", 7), ("to", S.ACTIVE, R.RESUMED)]  # no bump, no probe
    assert fo.next_timer() == pytest.approx(2.5)  # the second burst, as after any takeover
    assert summary(drive(fo, [fire(fo)])) == [ANNOUNCE]


def test_resume_waits_for_the_peer_and_falls_back_to_probing() -> None:
    fo = make(primary=False, epoch=7)
    assert drive(fo, [(0.0, Start(present=True)), (1.0, Tick())]) == []
    acts = drive(fo, [(3.0, Tick())])
    assert summary(acts) == [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)]
    acts = drive(fo, [(3.1, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 8), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_no_resume_after_the_peer_had_a_later_epoch() -> None:
    fo = make(primary=True, epoch=7)
    acts = drive(fo, [(0.0, Start(present=True)), (0.2, up(S.STANDBY, 9))])
    # The peer owned after us: do not trust the address left here; ask the LAN (keeping it
    # meanwhile, as before: the probe decides).
    assert summary(acts) == [("to", S.PROBING, R.STARTUP), ("probe", TAKEOVER)]
    acts = drive(fo, [(0.3, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 10), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_resume_refused_when_ineligible() -> None:
    fo = make(primary=False, epoch=7)
    acts = drive(fo, [(0.0, Start(present=True)), (0.1, SICK), (0.5, up(S.STANDBY, 7))])
    assert summary(acts) == [("release", R.INELIGIBLE), ("to", S.STANDBY, R.INELIGIBLE)]


# ---- rule 10: fault backoff ----------------------------------------------------------------------


def test_fault_backoff_doubles_up_to_the_cap_and_acquired_resets_it() -> None:
    fo = make(primary=True)
    drive(fo, [(0.0, Start(present=False))])
    now = 3.0
    waits = []
    for _ in range(7):
        acts = drive(fo, [(now, Tick())])  # INIT or FAULT cleared: probing again
        assert fo.state is S.PROBING, summary(acts)
        drive(fo, [(now + 0.1, BackendFailed(op="probe", error="x"))])
        due = fo.next_timer()
        assert due is not None
        waits.append(round(due - (now + 0.1), 6))
        now = due
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    acts = drive(fo, [(now, Tick())])
    acts = drive(fo, [(now + 0.1, silent(probe_of(acts)))])
    assert summary(acts)[0] == ("acquire", 1)
    drive(fo, [(now + 0.2, Acquired(epoch=0))])  # stale: not this ownership
    drive(fo, [(now + 0.3, BackendFailed(op="add", error="x"))])
    assert fo.next_timer() == pytest.approx(now + 60.3)
    now += 60.3
    acts = drive(fo, [(now, Tick())])
    acts = drive(fo, [(now + 0.1, silent(probe_of(acts)))])
    assert summary(acts)[0] == ("acquire", 2)
    drive(fo, [(now + 0.2, Acquired(epoch=2))])
    drive(fo, [(now + 0.3, BackendFailed(op="present", error="x"))])
    assert fo.next_timer() == pytest.approx(now + 5.3)


# ---- rule 11: shutdown hands over only to an eligible peer ---------------------------------------


def test_shutdown_with_an_ineligible_peer_only_releases() -> None:
    fo = active_alone(primary=True)
    drive(fo, [(10.0, up(S.STANDBY, 1, eligible=False))])
    acts = drive(fo, [(20.0, Shutdown())])
    assert summary(acts) == [("release", R.SHUTDOWN), *STOP_ONLY]


# ---- rule 12: the epoch bound --------------------------------------------------------------------


def test_takeover_epoch_saturates_at_the_bound() -> None:
    fo = active_alone(epoch=MAX_EPOCH - 1)
    assert fo.epoch == MAX_EPOCH
    fo = standby_behind_owner(peer_epoch=MAX_EPOCH)
    acts = drive(fo, [(10.1, silent(probe_of(drive(fo, [(10.0, DOWN)]))))])
    assert summary(acts)[0] == ("acquire", MAX_EPOCH)
    fo = standby_behind_owner(peer_epoch=4)
    assert summary(drive(fo, [(5.0, PeerResigned(epoch=MAX_EPOCH))]))[0] == ("acquire", MAX_EPOCH)


def test_at_the_bound_ties_still_go_to_the_primary() -> None:
    fo = make(primary=False, epoch=MAX_EPOCH)
    acts = drive(fo, [(0.0, Start(present=False)), (3.0, Tick())])
    acts = drive(fo, [(3.1, silent(probe_of(acts)))])
    assert summary(acts)[0] == ("acquire", MAX_EPOCH)  # saturated, not MAX_EPOCH + 1
    acts = drive(fo, [(20.0, up(S.ACTIVE, MAX_EPOCH))])
    assert summary(acts)[0] == ("release", R.HIGHER_EPOCH)


# ---- timers under the new rules ------------------------------------------------------------------


def _timer_steps_claims_and_suspect() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = _active_link_down()
    return fo, [
        (15.6, Tick()),
        (16.0, _claim(OTHER)),
        (16.1, Resumed()),
        (16.2, ProbeDone(probe_id=99, answered_by=None, witness=False)),
        (16.3, Tick()),
        (20.0, _claim(MAC)),
        (21.0, Tick()),
    ]


def _timer_steps_ineligible_owner() -> tuple[Failover, list[tuple[float, Event]]]:
    fo = active_alone()
    return fo, [(5.5, SICK), (6.0, Tick()), (7.0, WELL), (7.5, Tick()), (9.0, Tick())]


@pytest.mark.parametrize(
    "scenario", [_timer_steps_claims_and_suspect, _timer_steps_ineligible_owner]
)
def test_next_timer_is_never_in_the_past_under_the_new_rules(
    scenario: Callable[[], tuple[Failover, list[tuple[float, Event]]]],
) -> None:
    test_next_timer_is_never_in_the_past(scenario)


def test_isolation_ends_with_the_takeover_attempt() -> None:
    fo = standby_behind_owner(peer_epoch=4)
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.1, silent(probe, witness=False))])
    assert fo.isolated
    assert summary(drive(fo, [(10.5, up(S.ACTIVE, 4))])) == [("to", S.STANDBY, R.PEER_OWNS)]
    assert not fo.isolated  # a standby behind a live owner is not "isolated"


def test_no_second_burst_while_ineligible() -> None:
    fo = make(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.STANDBY))])
    drive(fo, [(0.6, silent(probe_of(acts)))])
    # The peer is ineligible too, so the owner keeps the VIP, but announces nothing.
    drive(fo, [(1.0, info(S.STANDBY, 1, eligible=False)), (1.5, SICK)])
    assert fo.state is S.ACTIVE
    assert drive(fo, [(2.6, Tick()), (3.0, WELL), (5.0, Tick())]) == []


# ---- announcements heard while the link is down --------------------------------------------------


def test_an_owner_announcing_after_the_link_dropped_vetoes_a_silent_probe() -> None:
    """Issue 5 part 3b: with frames from us to the owner dropped, our probes never reach it, so
    they are silent; its announcements (every announce_interval while its link is down) still
    prove it is alive, and nothing is taken."""
    fo = standby_behind_owner()
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    drive(fo, [(10.2, Claimed(mac=MAC))])
    acts = drive(fo, [(10.35, silent(probe))])
    assert summary(acts) == [("vetoed", MAC)]
    assert fo.local_status().state is S.PROBING
    # Two announce intervals (and the grace) without one: the owner is really gone.
    retry = probe_of(drive(fo, [fire(fo)]))
    gone = 10.2 + 2 * TIMING.announce_interval + TIMING.conflict_grace + 0.01
    acts = drive(fo, [(max(gone, fo.next_timer() or gone), silent(retry))])
    assert fo.state is S.ACTIVE, summary(acts)


def test_announcements_heard_while_the_link_was_up_do_not_veto() -> None:
    """The owner's second burst shortly before it lost power must not delay the takeover."""
    fo = standby_behind_owner()
    drive(fo, [(9.9, Claimed(mac=MAC))])
    probe = probe_of(drive(fo, [(10.0, DOWN)]))
    acts = drive(fo, [(10.35, silent(probe))])
    assert fo.state is S.ACTIVE, summary(acts)
