"""The failover machine and the operator: handover, maintenance (as eligibility) and fencing.

Same fake time and helpers as test_failover.py: every step says when it happens.
"""

from __future__ import annotations

import pytest
from test_failover import (
    DOWN,
    OTHER,
    TIMING,
    active_alone,
    drive,
    fire,
    info,
    make,
    probe_of,
    silent,
    standby_behind_owner,
    summary,
    up,
)

from havip.core.events import (
    Acquire,
    Announce,
    Claimed,
    Fence,
    Fenced,
    Handover,
    LocalHealth,
    PeerResigned,
    Start,
    Tick,
)
from havip.core.failover import Failover
from havip.core.states import Cause, Reason, State

S, R = State, Reason
MAINTENANCE = LocalHealth(eligible=False, cause=Cause.MAINTENANCE)


def owner_with_standby_peer(*, primary: bool = True, preempt: bool = False) -> Failover:
    """An owner (epoch 1) whose peer is connected, STANDBY and eligible, at t=6."""
    fo = active_alone(primary=primary, preempt=preempt)
    drive(fo, [(6.0, up(S.STANDBY, 1))])
    assert fo.state is S.ACTIVE
    return fo


# ---- handover ------------------------------------------------------------------------------------


def test_handover_releases_then_resigns_and_does_not_take_back_the_silent_vip() -> None:
    fo = owner_with_standby_peer()
    assert fo.handover_refusal() is None
    acts = drive(fo, [(7.0, Handover())])
    assert summary(acts) == [
        ("release", R.HANDOVER),
        ("resign", 1),
        ("to", S.STANDBY, R.HANDOVER),
    ]
    # Between our release and the peer's add, the VIP is silent and the peer still says
    # STANDBY: the primary must not see that as a reason to take the VIP back.
    assert drive(fo, [(7.01, info(S.STANDBY, 1)), (7.02, info(S.STANDBY, 1))]) == []
    assert fo.state is S.STANDBY
    acts = drive(fo, [(7.05, info(S.ACTIVE, 2))])
    assert acts == [] and fo.state is S.STANDBY
    assert fo.next_timer() is None  # nothing left to wait for


def test_a_peer_that_never_takes_after_a_handover_is_overruled_by_the_probe() -> None:
    fo = owner_with_standby_peer()
    drive(fo, [(7.0, Handover())])
    assert fo.next_timer() == pytest.approx(7.0 + TIMING.startup_wait)
    acts = drive(fo, [(7.5, info(S.STANDBY, 1)), fire(fo)])
    # The peer did not take it: the primary wants it again, and asks the LAN first.
    assert summary(acts) == [("to", S.PROBING, R.PEER_UP), ("probe", "takeover")]


def test_a_link_lost_right_after_a_handover_falls_back_to_the_failure_rules() -> None:
    fo = owner_with_standby_peer()
    drive(fo, [(7.0, Handover())])
    acts = drive(fo, [(7.2, DOWN)])
    assert summary(acts) == [("to", S.PROBING, R.PEER_LOST), ("probe", "takeover")]


def test_the_secondary_hands_back_to_the_primary_with_preempt_on() -> None:
    fo = owner_with_standby_peer(primary=False, preempt=True)
    assert fo.handover_refusal() is None
    acts = drive(fo, [(6.5, Handover())])
    assert summary(acts)[:2] == [("release", R.HANDOVER), ("resign", 1)]


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        pytest.param(lambda: standby_behind_owner(), "does not hold the VIP", id="not-active"),
        pytest.param(lambda: active_alone(preempt=False), "peer link is down", id="no-peer"),
        pytest.param(
            lambda: _with(owner_with_standby_peer(), info(S.STANDBY, 1, eligible=False)),
            "not eligible",
            id="peer-ineligible",
        ),
        pytest.param(
            lambda: _with(owner_with_standby_peer(), info(S.FAULT, 1)), "fault", id="peer-fault"
        ),
        pytest.param(
            lambda: owner_with_standby_peer(preempt=True), "preempt is on", id="primary-preempt"
        ),
    ],
)
def test_handover_is_refused_with_a_reason_and_changes_nothing(setup: object, words: str) -> None:
    assert callable(setup)
    fo: Failover = setup()
    refusal = fo.handover_refusal()
    assert refusal is not None and words in refusal
    state, epoch = fo.state, fo.epoch
    acts = drive(fo, [(8.0, Handover())])
    # An owner alone still announces on its schedule; nothing else may happen.
    assert [a for a in acts if not isinstance(a, Announce)] == []
    assert (fo.state, fo.epoch) == (state, epoch)


def _with(fo: Failover, event: object) -> Failover:
    drive(fo, [(6.1, event)])  # type: ignore[list-item]
    return fo


def test_the_peer_cause_is_named_in_the_refusal() -> None:
    fo = owner_with_standby_peer()
    ev = info(S.STANDBY, 1, eligible=False)
    ev = type(ev)(status=type(ev.status)(**{**ev.status.__dict__, "cause": Cause.MAINTENANCE}))
    drive(fo, [(6.1, ev)])
    assert "maintenance" in (fo.handover_refusal() or "")


# ---- maintenance (an eligibility cause) ----------------------------------------------------------


def test_maintenance_on_the_owner_hands_over_and_is_told_to_the_peer() -> None:
    fo = owner_with_standby_peer()
    acts = drive(fo, [(7.0, MAINTENANCE)])
    assert summary(acts) == [
        ("release", R.INELIGIBLE),
        ("resign", 1),
        ("to", S.STANDBY, R.INELIGIBLE),
    ]
    assert fo.local_status().cause is Cause.MAINTENANCE
    # And it never takes it back, even handed over or with the peer gone.
    assert drive(fo, [(8.0, PeerResigned(epoch=2))]) == []
    assert drive(fo, [(9.0, DOWN), (20.0, Tick())]) == []
    assert fo.state is S.STANDBY


def test_maintenance_with_no_eligible_peer_keeps_the_vip_where_it_is() -> None:
    fo = owner_with_standby_peer()
    drive(fo, [(6.5, info(S.STANDBY, 1, eligible=False))])
    assert drive(fo, [(7.0, MAINTENANCE)]) == []
    assert fo.state is S.ACTIVE
    # The peer becomes eligible again: now the drained node hands over.
    acts = drive(fo, [(8.0, info(S.STANDBY, 1))])
    assert summary(acts)[:2] == [("release", R.INELIGIBLE), ("resign", 1)]


# ---- fencing -------------------------------------------------------------------------------------


def fencing(*, primary: bool = False, required: bool = False) -> Failover:
    """A machine with a fence hook (preempt off)."""
    return Failover(
        is_primary=primary,
        preempt=False,
        timing=TIMING,
        epoch=0,
        now=0.0,
        fence=True,
        fence_required=required,
    )


def fencing_standby(*, required: bool) -> tuple[Failover, Fence]:
    """A secondary whose owner vanished: the probe was silent, so it asks for the fence."""
    fo = fencing(required=required)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, 4))])
    acts = drive(fo, [(2.0, DOWN)])
    acts = drive(fo, [(2.4, silent(probe_of(acts)))])
    fences = [a for a in acts if isinstance(a, Fence)]
    assert [type(a) for a in acts] == [Fence], summary(acts)
    assert fo.state is S.PROBING and fo.fencing
    return fo, fences[0]


@pytest.mark.parametrize("required", [True, False])
def test_a_successful_fence_comes_before_the_takeover(required: bool) -> None:
    fo, fence = fencing_standby(required=required)
    assert fence.epoch == 5 and fence.reason is R.PEER_LOST and fence.old_state is S.STANDBY
    assert fo.next_timer() is None  # nothing else happens while the fence runs
    acts = drive(fo, [(5.0, Fenced(fence_id=fence.fence_id, ok=True))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_a_failed_fence_blocks_the_takeover_when_required_and_is_retried_later() -> None:
    fo, fence = fencing_standby(required=True)
    assert drive(fo, [(5.0, Fenced(fence_id=fence.fence_id, ok=False))]) == []
    assert fo.state is S.PROBING and fo.fence_failed and not fo.fencing
    assert fo.next_timer() == pytest.approx(5.0 + TIMING.fault_retry)
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [("probe", "takeover")]  # look again, then fence again
    acts = drive(fo, [(10.2, silent(probe_of(acts)))])
    assert [type(a) for a in acts] == [Fence]


def test_a_failed_fence_that_is_not_required_still_lets_the_takeover_go() -> None:
    fo, fence = fencing_standby(required=False)
    acts = drive(fo, [(5.0, Fenced(fence_id=fence.fence_id, ok=False))])
    assert isinstance(acts[0], Acquire)


def test_the_peer_back_during_the_fence_cancels_the_takeover() -> None:
    fo, fence = fencing_standby(required=False)
    acts = drive(fo, [(3.0, up(S.ACTIVE, 4))])
    assert summary(acts) == [("to", S.STANDBY, R.PEER_OWNS)]
    assert drive(fo, [(5.0, Fenced(fence_id=fence.fence_id, ok=True))]) == []
    assert fo.state is S.STANDBY


def test_a_claim_heard_during_the_fence_makes_it_look_again() -> None:
    fo, fence = fencing_standby(required=False)
    drive(fo, [(3.0, Claimed(mac=OTHER))])
    assert drive(fo, [(3.1, Fenced(fence_id=fence.fence_id, ok=True))]) == []
    assert fo.state is S.PROBING
    acts = drive(fo, [fire(fo)])
    assert summary(acts) == [("probe", "takeover")]


def test_a_stale_fence_result_is_ignored() -> None:
    fo, fence = fencing_standby(required=True)
    assert drive(fo, [(3.0, Fenced(fence_id=fence.fence_id + 1, ok=True))]) == []
    assert fo.fencing


def test_no_fence_before_a_resign_handover_or_with_the_peer_link_up() -> None:
    fo = fencing(primary=True)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, 4))])
    acts = drive(fo, [(1.0, PeerResigned(epoch=4))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PEER_RESIGNED)]
    # The primary with its peer connected but in FAULT: the peer says it holds nothing.
    fo = fencing(primary=True)
    acts = drive(fo, [(0.0, Start(present=False)), (0.5, up(S.FAULT, 4))])
    acts = drive(fo, [(0.7, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_without_a_fence_hook_nothing_waits() -> None:
    fo = make(primary=False)
    drive(fo, [(0.0, Start(present=False)), (0.5, up(S.ACTIVE, 4))])
    acts = drive(fo, [(2.0, DOWN)])
    acts = drive(fo, [(2.4, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 5), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_a_cold_start_that_never_saw_the_peer_does_not_fence() -> None:
    fo = fencing(required=True)
    drive(fo, [(0.0, Start(present=False))])
    acts = drive(fo, [fire(fo)])  # alone after the start-up wait: probe
    acts = drive(fo, [(3.2, silent(probe_of(acts)))])
    assert summary(acts) == [("acquire", 1), ("to", S.ACTIVE, R.PROBE_SILENT)]


def test_a_peer_back_and_gone_again_is_a_new_failure_to_fence() -> None:
    fo, _ = fencing_standby(required=True)
    drive(fo, [(3.0, up(S.ACTIVE, 4))])  # back: the fence result no longer matters
    acts = drive(fo, [(4.0, DOWN)])
    acts = drive(fo, [(4.4, silent(probe_of(acts)))])
    assert [type(a) for a in acts] == [Fence]
