"""Property tests of one failover machine fed random events at random times.

Every event type the shell can deliver is generated (including freezes, eligibility changes,
claims from the peer's and from unknown MACs, witness-less and failed probes), and after every
step the promises are checked as an outsider states them, from what the machine was told:
it takes the VIP only with evidence (a hand-over, a silent probe that heard a witness, or a
restart that still holds it); never while the live peer says it owns it; never while ineligible;
never releases it to an unknown MAC; a failed probe alone never releases or faults; RESIGN only
after the VIP was removed. The two-node promises (who holds the address on a modelled LAN) are
in tests/test_failover_sim.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from havip.core.events import (
    Acquire,
    Acquired,
    Action,
    BackendFailed,
    Claimed,
    Event,
    FailoverTiming,
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
    Vetoed,
)
from havip.core.failover import (
    TRANSITIONS,
    Failover,
)
from havip.core.session import PeerStatus
from havip.core.states import Cause, LinkDown, Reason, State

S = State
TIMING = FailoverTiming(
    retry_interval=1.0,
    startup_wait=3.0,
    preempt_delay=10.0,
    fault_retry=5.0,
    probe_window=0.06,
    blip_guard=0.15,
    dead_time=0.32,
)
PEER_MAC = "02:00:00:00:00:99"
STRANGER = "02:00:00:00:00:66"

PROPS = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,  # the same examples every run, so a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class TickAt:
    """A Tick `extra` seconds after the machine's next_timer() (or after now if it has none)."""

    extra: float


@dataclass(frozen=True)
class ProbeResult:
    """A ProbeDone for the last Probe emitted (or for `probe_id` when `last` is false)."""

    last: bool
    probe_id: int
    answered_by: str | None
    witness: bool | None
    error: str | None = None
    rival: bool = False


Spec = Event | TickAt | ProbeResult


@dataclass(frozen=True)
class Scenario:
    primary: bool
    preempt: bool
    epoch: int
    present: bool
    epoch_known: bool
    steps: tuple[tuple[float, Spec], ...]


def _status(state: State, owns: bool | None, epoch: int, eligible: bool = True) -> PeerStatus:
    owns = state is S.ACTIVE if owns is None else owns
    return PeerStatus(state=state, owns=owns, epoch=epoch, eligible=eligible)


peer_states = st.sampled_from([S.STANDBY, S.STANDBY, S.ACTIVE, S.ACTIVE, *State])
statuses = st.builds(
    _status,
    peer_states,
    st.one_of(st.none(), st.none(), st.none(), st.booleans()),
    st.integers(min_value=0, max_value=12),
    st.sampled_from([True, True, True, False]),
)
macs = st.sampled_from([PEER_MAC, PEER_MAC, STRANGER])
delays = st.one_of(
    st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0, 3.0, 5.0, 10.0]),
    st.floats(min_value=0.0, max_value=12.0, allow_nan=False),
)
probe_results = st.builds(
    ProbeResult,
    last=st.sampled_from([True, True, True, False]),
    probe_id=st.integers(min_value=0, max_value=8),
    answered_by=st.one_of(st.none(), st.none(), macs),
    witness=st.sampled_from([True, True, None, False]),
    error=st.sampled_from([None, None, None, None, "EMFILE"]),
    rival=st.sampled_from([False, False, False, True]),
)
specs: st.SearchStrategy[Spec] = st.one_of(
    st.builds(TickAt, extra=st.sampled_from([0.0, 0.0, 0.01, 0.7, 2.0])),
    st.builds(PeerUp, status=statuses, mac=st.sampled_from([PEER_MAC, PEER_MAC, None])),
    st.builds(PeerInfo, status=statuses),
    st.builds(PeerInfo, status=statuses),
    st.builds(PeerDown, reason=st.sampled_from(list(LinkDown))),
    probe_results,
    probe_results,
    st.builds(PeerResigned, epoch=st.integers(min_value=0, max_value=12)),
    st.builds(BackendFailed, op=st.just("add"), error=st.just("EPERM")),
    st.builds(
        LocalHealth,
        eligible=st.booleans(),
        cause=st.sampled_from([Cause.NO_CARRIER, Cause.NO_WITNESS, Cause.LINK_DOWN]),
    ),
    st.builds(Claimed, mac=macs),
    st.builds(Resumed),
    st.builds(Acquired, epoch=st.integers(min_value=0, max_value=12)),
    st.builds(Shutdown),
)
scenarios = st.builds(
    Scenario,
    primary=st.booleans(),
    preempt=st.booleans(),
    epoch=st.integers(min_value=0, max_value=5),
    present=st.booleans(),
    epoch_known=st.sampled_from([True, True, True, False]),
    steps=st.lists(st.tuples(delays, specs), max_size=40).map(tuple),
)


@dataclass
class Checker:
    """Follows what the machine has been told and done; records broken promises by name."""

    fo: Failover
    seen_epoch: int
    held: bool
    peer: PeerStatus | None = None
    eligible: bool = True
    last_probe: Probe | None = None
    stopped: bool = False
    broken: dict[str, str] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)

    def fail(self, promise: str, why: str) -> None:
        self.broken.setdefault(promise, why)

    def feed(self, event: Event, now: float) -> None:
        self.kinds.add(type(event).__name__)
        before = self.fo.state
        probe_before = self.last_probe
        if isinstance(event, PeerUp | PeerInfo):
            self.peer = event.status
            self.seen_epoch = max(self.seen_epoch, event.status.epoch)
        elif isinstance(event, PeerDown):
            self.peer = None
        elif isinstance(event, PeerResigned):
            self.seen_epoch = max(self.seen_epoch, event.epoch)
            if self.peer is not None:  # RESIGN says: I removed the VIP
                self.peer = PeerStatus(
                    state=self.peer.state,
                    owns=False,
                    epoch=self.peer.epoch,
                    eligible=self.peer.eligible,
                )
        elif isinstance(event, LocalHealth):
            self.eligible = event.eligible
        try:
            actions = self.fo.handle(event, now)
        except Exception as exc:  # TransitionError above all
            self.fail("no_exception", f"{event} at {now}: {exc!r}")
            raise
        where = f"{event} at {now} in {before}: {[type(a).__name__ for a in actions]}"
        self._check_actions(event, before, probe_before, actions, where)
        self._check_after(now, where)

    def _check_actions(
        self,
        event: Event,
        before: State,
        probe_before: Probe | None,
        actions: list[Action],
        where: str,
    ) -> None:
        if self.stopped and actions:
            self.fail("nothing_after_stop", where)
        state = before
        released = False
        for action in actions:
            if isinstance(action, Transition):
                allowed = TRANSITIONS.get((action.frm, action.to), frozenset())
                if action.frm is not state or action.reason not in allowed:
                    self.fail("transitions", where)
                state = action.to
            elif isinstance(action, Acquire):
                self._check_acquire(action, event, probe_before, where)
                self.held = True
            elif isinstance(action, Release):
                released = True
                self.held = False
                self._check_release(event, action, where)
            elif isinstance(action, SendResign):
                if not released:
                    self.fail("release_before_resign", where)
            elif isinstance(action, Probe):
                self.last_probe = action
            elif isinstance(action, Vetoed):
                if not (isinstance(event, ProbeDone) and event.answered_by is not None):
                    self.fail("veto_only_when_answered", where)
            elif isinstance(action, Stop):
                if not isinstance(event, Shutdown) or action is not actions[-1]:
                    self.fail("stop_only_last_on_shutdown", where)
                self.stopped = True
        if isinstance(event, ProbeDone) and event.error is not None:
            faulted = self.fo.state is S.FAULT and before is not S.FAULT
            if faulted or any(isinstance(a, Release) for a in actions):
                self.fail("failed_probe_is_harmless", where)
        if state is not self.fo.state:
            self.fail("transitions", f"{where}: transitions end in {state}, not {self.fo.state}")

    def _check_acquire(
        self, action: Acquire, event: Event, probe_before: Probe | None, where: str
    ) -> None:
        resumed = self.fo.reason is Reason.RESUMED
        if resumed:
            if not self.held:
                self.fail("resume_only_what_is_held", where)
            if action.epoch < self.seen_epoch:
                self.fail("resume_only_latest_epoch", where)
        elif action.epoch <= self.seen_epoch and action.epoch < 2**62:
            self.fail("epoch_above_all_seen", f"{where}: epoch {action.epoch} <= seen")
        self.seen_epoch = max(self.seen_epoch, action.epoch)
        if self.peer is not None and self.peer.owns:
            self.fail("never_acquire_while_live_peer_owns", where)
        if not self.eligible:
            self.fail("never_acquire_while_ineligible", where)
        if isinstance(event, PeerResigned) or resumed:
            return
        evidence = (
            isinstance(event, ProbeDone)
            and probe_before is not None
            and probe_before.purpose is ProbePurpose.TAKEOVER
            and event.probe_id == probe_before.probe_id
            and event.error is None
            and event.witness is not False
            and (event.answered_by is None or event.rival)
        )
        if not evidence:
            self.fail("acquire_needs_evidence", where)

    def _check_release(self, event: Event, action: Release, where: str) -> None:
        stranger = (isinstance(event, Claimed) and event.mac == STRANGER) or (
            isinstance(event, ProbeDone) and event.answered_by == STRANGER
        )
        # (A PROBING node dropping a VIP left over from a past run is fine.)
        reason = action.reason in (Reason.CONFLICT, Reason.PROBE_ANSWERED)
        if stranger and reason and self.fo.state is not S.PROBING:
            self.fail("never_release_to_a_stranger", where)

    def _check_after(self, now: float, where: str) -> None:
        state = self.fo.state
        if state is S.ACTIVE and not self.held:
            self.fail("vip_matches_state", where)
        if state in (S.STANDBY, S.FAULT, S.STOPPED) and self.held:
            self.fail("vip_matches_state", f"{where}: holds the VIP in {state}")
        if self.stopped and state is not S.STOPPED:
            self.fail("nothing_after_stop", where)
        due = self.fo.next_timer()
        if state is not S.STOPPED and due is not None and due <= now:
            self.fail("next_timer_in_future", f"{where}: next_timer() = {due}")


def run_scenario(sc: Scenario, machine: type[Failover] = Failover) -> Checker:
    """Play `sc` against a fresh machine; the checker holds what broke, with an example."""
    fo = machine(is_primary=sc.primary, preempt=sc.preempt, timing=TIMING, epoch=sc.epoch, now=0)
    check = Checker(fo=fo, seen_epoch=sc.epoch, held=sc.present)
    now = 0.0
    check.feed(Start(present=sc.present, epoch_known=sc.epoch_known), now)
    for delay, spec in sc.steps:
        event: Event
        if isinstance(spec, TickAt):
            due = fo.next_timer()
            now = max(now, due if due is not None else now + delay) + spec.extra
            event = Tick()
        elif isinstance(spec, ProbeResult):
            now += delay
            probe_id = spec.probe_id
            if spec.last and check.last_probe is not None:
                probe_id = check.last_probe.probe_id
            answered = None if spec.error else spec.answered_by
            event = ProbeDone(
                probe_id=probe_id,
                answered_by=answered,
                witness=spec.witness,
                error=spec.error,
                rival=spec.rival and answered is not None,
            )
        else:
            now += delay
            event = spec
        check.feed(event, now)
    return check


def _broken(sc: Scenario, machine: type[Failover] = Failover) -> dict[str, str]:
    try:
        return run_scenario(sc, machine).broken
    except Exception as exc:
        return {"no_exception": repr(exc)}


_SILENT = ProbeResult(last=True, probe_id=0, answered_by=None, witness=True)
_DEAF = ProbeResult(last=True, probe_id=0, answered_by=None, witness=False)
_ANSWERED = ProbeResult(last=True, probe_id=0, answered_by=PEER_MAC, witness=True)
_DOWN = PeerDown(reason=LinkDown.DEADLINE_MISSED)

# Counterexamples of bugs fixed since, always replayed.
EPOCH_EXAMPLE = Scenario(
    primary=True,
    preempt=False,
    epoch=0,
    present=False,
    epoch_known=True,
    steps=(
        (0.0, TickAt(0.0)),  # startup wait over: probe
        (0.1, _SILENT),  # ACTIVE, epoch 1
        (1.0, PeerUp(status=_status(S.FAULT, False, 7), mac=PEER_MAC)),
        (1.0, _DOWN),  # conflict probe
        (0.1, _ANSWERED),  # released; retry later
        (0.0, TickAt(0.0)),  # takeover probe
        (0.1, _SILENT),  # Acquire(2), though epoch 7 was seen
    ),
)
TIMER_EXAMPLE = Scenario(
    primary=False,
    preempt=True,
    epoch=0,
    present=False,
    epoch_known=True,
    steps=(
        (0.0, TickAt(0.0)),
        (0.1, _SILENT),  # ACTIVE
        (1.0, PeerUp(status=_status(S.STANDBY, False, 1), mac=PEER_MAC)),  # preempt armed
        (1.0, BackendFailed(op="add", error="EPERM")),  # FAULT; the preemption timer stays
        (0.0, TickAt(0.0)),  # fault cleared
        (0.0, TickAt(0.0)),  # the stale preemption timer: due, and due forever
    ),
)


@PROPS
@given(sc=scenarios)
@example(sc=EPOCH_EXAMPLE)
@example(sc=TIMER_EXAMPLE)
def test_promises_hold_for_random_event_sequences(sc: Scenario) -> None:
    broken = _broken(sc)
    assert not broken, broken


def test_the_generator_reaches_every_event_type() -> None:
    seen: set[str] = set()

    @PROPS
    @given(sc=scenarios)
    def collect(sc: Scenario) -> None:
        with contextlib.suppress(Exception):  # reported by the promise test above
            seen.update(run_scenario(sc).kinds)

    collect()
    expected = {
        cls.__name__
        for cls in (
            Start,
            PeerUp,
            PeerInfo,
            PeerDown,
            PeerResigned,
            ProbeDone,
            BackendFailed,
            Shutdown,
            Resumed,
            Tick,
            LocalHealth,
            Claimed,
            Acquired,
        )
    }
    assert expected <= seen, sorted(expected - seen)


# ---- the checker can fail: machines broken on purpose -------------------------------------------

_TAKE_AFTER_STARTUP = (
    (0.0, TickAt(0.0)),  # startup wait over: a takeover probe
)


class _IgnoresOwner(Failover):
    def _candidate(self) -> bool:
        return True


class _Deaf(Failover):
    """Counts every silent probe as having heard a witness."""

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, ProbeDone) and event.witness is False:
            event = ProbeDone(probe_id=event.probe_id, answered_by=event.answered_by, witness=True)
        return super().handle(event, now)


class _Careless(Failover):
    """Does not hear that it became ineligible."""

    def handle(self, event: Event, now: float) -> list[Action]:
        return [] if isinstance(event, LocalHealth) else super().handle(event, now)


class _Meek(Failover):
    """Gives the VIP to anybody who claims it."""

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, Claimed):
            event = Claimed(mac=self.peer_mac or event.mac)
            self.peer = None
            self.is_primary = False
        return super().handle(event, now)


def _scenario(*steps: tuple[float, Spec], primary: bool = True) -> Scenario:
    return Scenario(
        primary=primary, preempt=False, epoch=0, present=False, epoch_known=True, steps=steps
    )


@pytest.mark.parametrize(
    ("machine", "sc", "promise"),
    [
        (
            _IgnoresOwner,
            _scenario(
                (0.1, PeerUp(status=_status(S.ACTIVE, True, 3), mac=PEER_MAC)),
                (0.0, TickAt(0.5)),
                (0.1, _SILENT),
                primary=False,
            ),
            "never_acquire_while_live_peer_owns",
        ),
        (_Deaf, _scenario(*_TAKE_AFTER_STARTUP, (0.1, _DEAF)), "acquire_needs_evidence"),
        (
            _Careless,
            _scenario(
                (0.0, LocalHealth(eligible=False, cause=Cause.NO_CARRIER)),
                *_TAKE_AFTER_STARTUP,
                (0.1, _SILENT),
            ),
            "never_acquire_while_ineligible",
        ),
        (
            _Meek,
            _scenario(
                (0.1, PeerUp(status=_status(S.STANDBY, False, 0), mac=PEER_MAC)),
                (3.0, TickAt(0.0)),
                (0.1, _SILENT),
                (0.5, _DOWN),
                (0.1, Claimed(mac=STRANGER)),
            ),
            "never_release_to_a_stranger",
        ),
    ],
)
def test_the_checker_catches_a_broken_machine(
    machine: type[Failover], sc: Scenario, promise: str
) -> None:
    assert not _broken(sc), "the real machine must pass this scenario"
    assert promise in _broken(sc, machine)
