"""Two real failover machines in a discrete-event model of the LAN (`tests/lansim.py`).

Random fault plans (power loss, SIGKILL, SIGTERM, freezes, a cut heartbeat, layer-2 partitions,
a dead switch port, carrier loss, one-way loss) run against the promises: never two owners that
can see each other for longer than the bound, no takeover while cut off or ineligible, no
takeover while the holder visibly answers, RESIGN only after removal, one owner once healed.
Then deliberately broken machines show that each promise can fail in this model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import pytest
from lansim import Checker, World, simulate

from havip.core.events import (
    Action,
    Claimed,
    Event,
    Handover,
    LocalHealth,
    ProbeDone,
    Release,
    SendResign,
)
from havip.core.failover import (
    Failover,
)
from havip.core.states import Reason

SEEDS = range(300)
EVENT_TYPES = {
    "Start",
    "PeerUp",
    "PeerInfo",
    "PeerDown",
    "PeerResigned",
    "ProbeDone",
    "BackendFailed",
    "Shutdown",
    "Handover",
    "Resumed",
    "Tick",
    "LocalHealth",
    "Claimed",
    "Acquired",
}


def _explain(w: World, broken: dict[str, str]) -> str:
    return f"{broken}\n" + "\n".join(w.log[-40:])


@pytest.mark.parametrize("preempt", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_keep_the_promises(seed: int, preempt: bool) -> None:
    w, checker = simulate(seed, preempt=preempt)
    assert not checker.broken, _explain(w, checker.broken)


@pytest.mark.parametrize("seed", range(100))
def test_random_faults_with_frame_loss_settle(seed: int) -> None:
    w, checker = simulate(seed, preempt=seed % 2 == 0, loss=0.02)
    assert not checker.broken, _explain(w, checker.broken)


@pytest.mark.parametrize("seed", range(30))
def test_random_faults_with_backend_failures_settle(seed: int) -> None:
    w, checker = simulate(seed, preempt=seed % 2 == 1, add_failures=0.05)
    assert not checker.broken, _explain(w, checker.broken)


def test_the_generator_reaches_every_event_type() -> None:
    seen: set[str] = set()
    for seed in range(60):
        w, _ = simulate(seed, preempt=seed % 2 == 0, n_faults=5, add_failures=0.05)
        seen |= w.delivered
    assert seen >= EVENT_TYPES, f"never generated: {sorted(EVENT_TYPES - seen)}"


# ---- targeted plans, and machines broken on purpose ---------------------------------------------


def _plan(
    preempt: bool,
    steps: Iterable[tuple[float, Callable[[World], None]]],
    machine: Callable[..., Failover] = Failover,
    end: float = 25.0,
    hb_separate: bool = False,
) -> tuple[World, dict[str, str]]:
    w = World(preempt=preempt, seed=1, machine=machine, hb_separate=hb_separate)
    checker = Checker()
    w.checker = checker
    w.boot()
    for when, fn in steps:
        w.at(when, partial(fn, w))
    w.run_until(end)
    checker.final(w)
    return w, checker.broken


def _rewriting(rewrite: Callable[[Event], Event | None]) -> Callable[..., Failover]:
    """A machine that sees events through `rewrite` (None: the event is lost on it)."""

    class Rewritten(Failover):
        def handle(self, event: Event, now: float) -> list[Action]:
            ev = rewrite(event)
            return [] if ev is None else super().handle(ev, now)

    return Rewritten


def _blind(ev: Event) -> Event | None:
    """Ignores what proves it cannot hear: every silent probe 'heard a witness'."""
    if isinstance(ev, LocalHealth):
        return None
    if isinstance(ev, ProbeDone) and ev.witness is False:
        return ProbeDone(probe_id=ev.probe_id, answered_by=ev.answered_by, witness=True)
    return ev


def _deaf_to_answers(ev: Event) -> Event | None:
    if isinstance(ev, ProbeDone) and ev.answered_by is not None:
        return ProbeDone(probe_id=ev.probe_id, answered_by=None, witness=True)
    return ev


def _deaf_to_claims(ev: Event) -> Event | None:
    return None if isinstance(ev, Claimed) else ev


class _ResignFirst(Failover):
    """Hands over before it has removed the VIP."""

    def handle(self, event: Event, now: float) -> list[Action]:
        out = super().handle(event, now)
        releases = [a for a in out if isinstance(a, Release)]
        resigns = [a for a in out if isinstance(a, SendResign)]
        if releases and resigns:
            rest = [a for a in out if not isinstance(a, Release | SendResign)]
            return [*resigns, *releases, *rest]
        return out


def _isolate_standby(w: World) -> None:
    w.set_port(1, False)


def _heal_standby(w: World) -> None:
    w.set_port(1, True)


ISOLATED_STANDBY: list[tuple[float, Callable[[World], None]]] = [
    (3.0, _isolate_standby),
    (7.0, _heal_standby),
]


def test_isolated_standby_never_takes() -> None:
    w, broken = _plan(False, ISOLATED_STANDBY)
    assert not broken, _explain(w, broken)
    assert all(i == 0 for _, i, _ in w.acquires), w.acquires


def test_a_blind_machine_is_caught_taking_while_cut_off() -> None:
    w, broken = _plan(False, ISOLATED_STANDBY, machine=_rewriting(_blind))
    assert "isolated_takes" in broken, _explain(w, broken)


VIP_LINK_DOWN: list[tuple[float, Callable[[World], None]]] = [
    (3.0, lambda w: w.set_carrier(0, False)),
    (9.0, lambda w: w.set_carrier(0, True)),
]


def test_vip_link_down_on_the_active_node_hands_over() -> None:
    w, broken = _plan(True, VIP_LINK_DOWN, hb_separate=True, end=15.0)
    assert not broken, _explain(w, broken)
    movers = [i for _, i, _ in w.acquires]
    assert movers[:2] == [0, 1], w.acquires  # n2 took over while n1's VIP link was down
    assert w.owners() == [0]  # and preempt brought it back once the link returned


def test_a_machine_ignoring_its_eligibility_is_caught() -> None:
    def no_health(ev: Event) -> Event | None:
        return None if isinstance(ev, LocalHealth) else ev

    w, broken = _plan(
        True, VIP_LINK_DOWN, machine=_rewriting(no_health), hb_separate=True, end=15.0
    )
    assert "outage" in broken, _explain(w, broken)


KILLED_PRIMARY: list[tuple[float, Callable[[World], None]]] = [
    (3.0, lambda w: w.kill(0)),
    (8.0, lambda w: w.start_daemon(0)),
]


def test_a_crashed_daemon_on_a_live_host_keeps_the_vip() -> None:
    w, broken = _plan(True, KILLED_PRIMARY)
    assert not broken, _explain(w, broken)
    # n1 only: its first takeover, then its restarted daemon resuming what its host still holds.
    assert [(i, reason) for _, i, reason in w.acquires] == [
        (0, Reason.PROBE_SILENT),
        (0, Reason.RESUMED),
    ], w.acquires


def test_a_machine_deaf_to_probe_answers_is_caught_taking_blind() -> None:
    w, broken = _plan(True, KILLED_PRIMARY, machine=_rewriting(_deaf_to_answers))
    assert "blind_takeover" in broken, _explain(w, broken)


ONE_WAY: list[tuple[float, Callable[[World], None]]] = [
    (3.0, lambda w: w.set_one_way((0, 1), True)),
    (8.0, lambda w: w.set_one_way((0, 1), False)),
]


def test_one_way_loss_ends_two_owners_quickly() -> None:
    w, broken = _plan(True, ONE_WAY)
    assert not broken, _explain(w, broken)


def test_a_machine_deaf_to_claims_is_caught_with_two_owners() -> None:
    w, broken = _plan(True, ONE_WAY, machine=_rewriting(_deaf_to_claims))
    assert "two_owners" in broken, _explain(w, broken)


def test_a_machine_that_resigns_before_removing_is_caught() -> None:
    steps = [(3.0, lambda w: w.stop(0)), (6.0, lambda w: w.start_daemon(0))]
    w, broken = _plan(True, steps)
    assert not broken, _explain(w, broken)
    w, broken = _plan(True, steps, machine=_ResignFirst)
    assert "resign_before_remove" in broken, _explain(w, broken)


def test_a_machine_that_never_takes_is_caught_at_the_end() -> None:
    def never(ev: Event) -> Event | None:
        if isinstance(ev, ProbeDone):
            return ProbeDone(probe_id=ev.probe_id, answered_by="02:00:00:00:00:99", witness=True)
        return ev

    steps = [(3.0, lambda w: w.power(0, False))]
    w, broken = _plan(False, steps, machine=_rewriting(never))
    assert "settled_one_owner" in broken, _explain(w, broken)


def test_freeze_of_the_owner_then_resume_leaves_one_owner() -> None:
    steps = [(3.0, lambda w: w.freeze(0)), (5.0, lambda w: w.thaw(0))]
    w, broken = _plan(False, steps)
    assert not broken, _explain(w, broken)
    assert len(w.owners()) == 1


# ---- the operator (issue 6) ----------------------------------------------------------------------


def test_a_handover_moves_the_vip_once_and_it_stays() -> None:
    w, broken = _plan(False, [(3.0, lambda w: w.feed(0, Handover()))], end=12.0)
    assert not broken, _explain(w, broken)
    assert w.owners() == [1]
    n1 = w.hosts[0].fo
    assert n1 is not None and n1.reason is Reason.HANDOVER


def test_maintenance_on_both_nodes_leaves_the_vip_where_it_is() -> None:
    steps: list[tuple[float, Callable[[World], None]]] = [
        (3.0, lambda w: w.set_drained(1, "maintenance", True)),
        (4.0, lambda w: w.set_drained(0, "maintenance", True)),
    ]
    w, broken = _plan(True, steps, end=12.0)
    assert w.owners() == [0], _explain(w, broken)
    w.set_drained(1, "maintenance", False)
    w.run_until(20.0)
    assert w.owners() == [1]  # the first eligible node gets it, handed over
