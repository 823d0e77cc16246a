"""The failover state machine, scenario by scenario: one or more tests per rule of the design.

Time is fake: every step says when it happens, and the tests jump straight to `next_timer()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from havip import failover
from havip.failover import (
    TRANSITIONS,
    Acquire,
    Action,
    BackendFailed,
    Event,
    Failover,
    FailoverTiming,
    PeerDown,
    PeerInfo,
    PeerResigned,
    PeerUp,
    Probe,
    ProbeDone,
    ProbePurpose,
    Release,
    SendResign,
    Shutdown,
    Start,
    Stop,
    Tick,
    Transition,
    TransitionError,
    Vetoed,
)
from havip.session import LocalStatus, PeerStatus
from havip.states import LinkDown, Reason, State

S, R = State, Reason
TIMING = FailoverTiming(retry_interval=1.0, startup_wait=3.0, preempt_delay=10.0, fault_retry=5.0)
MAC = "02:00:00:00:00:01"
DOWN = PeerDown(reason=LinkDown.DEADLINE_MISSED)
TAKEOVER, CONFLICT = ProbePurpose.TAKEOVER, ProbePurpose.CONFLICT


# ---- the tiny driver ----------------------------------------------------------------------------


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
        else:
            out.append(("stop",))
    return out


def kinds(actions: Sequence[Action]) -> list[type]:
    return [type(a) for a in actions]


def probe_of(actions: Sequence[Action]) -> Probe:
    probes = [a for a in actions if isinstance(a, Probe)]
    assert probes, f"no Probe in {summary(actions)}"
    return probes[-1]


def status(state: State, epoch: int = 0, owns: bool | None = None) -> PeerStatus:
    """A consistent peer status: it owns exactly when it is ACTIVE, unless told otherwise."""
    return PeerStatus(state=state, owns=state is S.ACTIVE if owns is None else owns, epoch=epoch)


def up(state: State, epoch: int = 0) -> PeerUp:
    return PeerUp(status=status(state, epoch))


def info(state: State, epoch: int = 0) -> PeerInfo:
    return PeerInfo(status=status(state, epoch))


def silent(probe: Probe) -> ProbeDone:
    return ProbeDone(probe_id=probe.probe_id, answered_by=None)


def answered(probe: Probe) -> ProbeDone:
    return ProbeDone(probe_id=probe.probe_id, answered_by=MAC)


def fire(fo: Failover) -> tuple[float, Tick]:
    """A Tick exactly at the time the machine asked for."""
    due = fo.next_timer()
    assert due is not None, "the machine asked for no timer"
    return (due, Tick())


def active_alone(*, primary: bool = True, preempt: bool = True, epoch: int = 0) -> Failover:
    """A node that started alone, found the LAN silent and took the VIP with epoch + 1."""
    fo = make(primary=primary, preempt=preempt, epoch=epoch)
    acts = drive(fo, [(0.0, Start(present=False)), (3.0, Tick())])
    drive(fo, [(3.1, silent(probe_of(acts)))])
    assert fo.state is S.ACTIVE and fo.epoch == epoch + 1
    return fo


def standby_behind_owner(*, primary: bool = False, peer_epoch: int = 4) -> Failover:
    """A node whose live peer holds the VIP."""
    fo = make(primary=primary)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, peer_epoch))])
    assert fo.state is S.STANDBY
    return fo


# ---- start-up ---------------------------------------------------------------------------------


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
    assert fo.local_status() == LocalStatus(state=S.ACTIVE, owns=True, epoch=1)
    assert fo.next_timer() is None


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
    acts = drive(fo, [(0.4, PeerUp(status=peer))])  # long before startup_wait
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


# ---- start-up with a VIP already on our interface ----------------------------------------------


@pytest.mark.parametrize(
    ("primary", "peer", "reason"),
    [
        pytest.param(True, status(S.ACTIVE, 3), R.PEER_OWNS, id="peer-owns"),
        pytest.param(False, status(S.INIT), R.PEER_CANDIDATE, id="primary-peer-takes"),
    ],
)
def test_present_vip_is_released_when_not_entitled(
    primary: bool, peer: PeerStatus, reason: Reason
) -> None:
    fo = make(primary=primary)
    acts = drive(fo, [(0.0, Start(present=True)), (0.5, PeerUp(status=peer))])
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
    "peer", [None, status(S.STANDBY)], ids=["alone", "primary-with-standby-peer"]
)
def test_present_vip_not_released_when_node_becomes_active(peer: PeerStatus | None) -> None:
    fo = make(primary=True)
    steps: list[tuple[float, Event]] = [(0.0, Start(present=True))]
    steps.append((3.0, Tick()) if peer is None else (0.5, PeerUp(status=peer)))
    acts = drive(fo, steps)
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


# ---- losing the peer: probe, then take or be vetoed --------------------------------------------


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
    assert fo.state is S.ACTIVE
    assert fo.next_timer() is None


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
    acts = drive(fo, [(10.05, PeerUp(status=peer))])
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
            (i * 0.5, ProbeDone(probe_id=i % 4, answered_by=None)),
        ]
    acts = drive(fo, steps)
    assert not {Probe, Acquire} & set(kinds(acts))
    assert fo.state is S.STANDBY


# ---- planned handover (RESIGN) ----------------------------------------------------------------


def _init_with_peer() -> Failover:
    fo = make(primary=False)
    drive(fo, [(0.0, Start(present=False))])
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
    ("setup", "expected_epoch"),
    [
        pytest.param(_init_with_peer, 9, id="init"),
        pytest.param(_standby, 9, id="standby"),
        pytest.param(_probing, 9, id="probing"),
        pytest.param(_vetoed, 9, id="vetoed"),
    ],
)
def test_resign_takes_at_once_without_probe(
    setup: Callable[[], Failover], expected_epoch: int
) -> None:
    fo = setup()
    acts = drive(fo, [(10.1, PeerResigned(epoch=8))])
    assert summary(acts) == [("acquire", expected_epoch), ("to", S.ACTIVE, R.PEER_RESIGNED)]
    # Any probe that was in flight is now stale.
    for probe_id in range(5):
        assert drive(fo, [(10.2, ProbeDone(probe_id=probe_id, answered_by=MAC))]) == []
    assert fo.state is S.ACTIVE


def test_resign_epoch_below_ours_still_bumps_ours() -> None:
    fo = make(primary=False, epoch=20)
    drive(fo, [(0.0, Start(present=False)), (0.1, up(S.ACTIVE, 3))])
    acts = drive(fo, [(1.0, PeerResigned(epoch=3))])
    assert summary(acts)[0] == ("acquire", 21)
