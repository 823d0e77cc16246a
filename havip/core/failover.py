"""The failover state machine, sans I/O: events in, actions out, time passed in.

The rule it enforces: a node takes the VIP only when its owner hands it over (RESIGN), or when the
peer link is down *and* an ARP probe finds nobody on the LAN answering for the VIP. A live peer
that says it owns the VIP is never contested; when both somehow own it, the higher ownership
epoch wins (ties go to the primary). The old owner removes before the new owner adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from havip.core.session import LocalStatus, PeerStatus
from havip.core.states import LinkDown, Reason, State

S, R = State, Reason

#: Every allowed transition and the reasons that may cause it. The README diagram is drawn from
#: this table (`havip.diagram`), and the machine refuses any transition not listed here.
TRANSITIONS: dict[tuple[State, State], frozenset[Reason]] = {
    (S.INIT, S.PROBING): frozenset({R.STARTUP}),
    (S.INIT, S.STANDBY): frozenset({R.PEER_OWNS, R.PEER_CANDIDATE}),
    (S.INIT, S.ACTIVE): frozenset({R.PEER_RESIGNED}),
    (S.STANDBY, S.PROBING): frozenset({R.PEER_LOST, R.PEER_UP}),
    (S.STANDBY, S.ACTIVE): frozenset({R.PEER_RESIGNED}),
    (S.PROBING, S.ACTIVE): frozenset({R.PROBE_SILENT, R.PEER_RESIGNED}),
    (S.PROBING, S.STANDBY): frozenset({R.PEER_OWNS, R.PEER_CANDIDATE}),
    (S.ACTIVE, S.STANDBY): frozenset({R.HIGHER_EPOCH, R.PREEMPT, R.PROBE_ANSWERED}),
    (S.FAULT, S.STANDBY): frozenset({R.FAULT_CLEARED}),
    **{(s, S.FAULT): frozenset({R.BACKEND_FAILED}) for s in (S.INIT, S.STANDBY, S.PROBING)},
    (S.ACTIVE, S.FAULT): frozenset({R.BACKEND_FAILED}),
    **{(s, S.STOPPED): frozenset({R.SHUTDOWN}) for s in State if s is not S.STOPPED},
}


# ---- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Start:
    """The daemon started; `present` says whether the VIP is already on our interface."""

    present: bool


@dataclass(frozen=True, kw_only=True)
class PeerUp:
    """An authenticated connection to the peer and its HELLO."""

    status: PeerStatus


@dataclass(frozen=True, kw_only=True)
class PeerInfo:
    """A keepalive from the peer."""

    status: PeerStatus


@dataclass(frozen=True, kw_only=True)
class PeerDown:
    """The failure signal: the connection dropped or the keepalive deadline passed."""

    reason: LinkDown


@dataclass(frozen=True, kw_only=True)
class PeerQuiet:
    """The peer has been silent for most of the dead time (the link is still up).

    A standby then probes the LAN ahead of the deadline, so that if the deadline does pass it
    already knows whether anybody answers for the VIP, and takes over without a further wait.
    """


@dataclass(frozen=True, kw_only=True)
class PeerResigned:
    """The peer removed the VIP and hands it over."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class ProbeDone:
    """Result of a Probe action: the MAC (or id) that answered for the VIP, or None for silence."""

    probe_id: int
    answered_by: str | None


@dataclass(frozen=True, kw_only=True)
class BackendFailed:
    op: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Shutdown:
    """SIGTERM/SIGINT: hand over deliberately and stop."""


@dataclass(frozen=True, kw_only=True)
class Resumed:
    """The shell noticed this process did not run for longer than the dead time (frozen,
    suspended): whatever happened meanwhile, an active node must look at the LAN again."""


@dataclass(frozen=True, kw_only=True)
class Tick:
    """A timer the machine asked for (see `next_timer`) has come due."""


Event = (
    Start
    | PeerUp
    | PeerInfo
    | PeerDown
    | PeerQuiet
    | PeerResigned
    | ProbeDone
    | BackendFailed
    | Shutdown
    | Resumed
    | Tick
)

# ---- outputs -----------------------------------------------------------------------------------


class ProbePurpose(StrEnum):
    TAKEOVER = "takeover"  # we want the VIP: does anybody still answer for it?
    CONFLICT = "conflict"  # we hold it and lost the peer: did somebody take it while we were away?
    EARLY = "early"  # the peer went quiet: ask now, so a takeover need not wait for a probe later


@dataclass(frozen=True, kw_only=True)
class Acquire:
    """Add the VIP, confirm it, announce it (gratuitous ARP). Record `epoch` durably."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class Release:
    """Remove the VIP from our interface."""

    reason: Reason


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Ask the LAN whether anybody answers for the VIP; answer with ProbeDone(probe_id)."""

    probe_id: int
    purpose: ProbePurpose


@dataclass(frozen=True, kw_only=True)
class SendResign:
    """Tell the peer we removed the VIP and it should take it (only ever after Release)."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class Transition:
    """The machine changed state; `sentence` is the one-line human reason to log."""

    frm: State
    to: State
    reason: Reason
    sentence: str
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Vetoed:
    """A takeover was refused because somebody on the LAN still answers for the VIP."""

    answered_by: str


@dataclass(frozen=True, kw_only=True)
class Stop:
    """Shutdown finished deciding; the shell may exit once earlier actions are done."""


Action = Acquire | Release | Probe | SendResign | Transition | Vetoed | Stop


@dataclass(frozen=True, kw_only=True)
class FailoverTiming:
    """The durations the machine itself uses (seconds)."""

    retry_interval: float  # STANDBY with the peer down: re-probe this often while vetoed
    startup_wait: float  # INIT: how long to wait for the peer before deciding alone
    preempt_delay: float  # how long the returning primary must look healthy before failback
    fault_retry: float  # FAULT: how long before trying again


class TransitionError(AssertionError):
    """A bug: the machine tried a transition that TRANSITIONS does not allow."""


class Failover:
    """The two-node failover decision maker for one node."""

    def __init__(
        self,
        *,
        is_primary: bool,
        preempt: bool,
        timing: FailoverTiming,
        epoch: int,
        now: float,
    ) -> None:
        self.is_primary = is_primary
        self.preempt = preempt
        self.timing = timing
        self.state = State.INIT
        self.epoch = epoch  # the epoch we own with (or last learned, when not owning)
        self._seen_epoch = epoch  # the highest epoch ever heard: every takeover goes above it
        self.peer: PeerStatus | None = None
        self.reason = Reason.STARTUP
        self.since = now
        self._started: float | None = None
        self._present = False  # INIT only: an earlier run left the VIP on our interface
        self._early_silent = False  # the peer went quiet and an early probe found the VIP silent
        self._next_probe_id = 0
        self._probe: tuple[int, ProbePurpose] | None = None
        self._retry_at: float | None = None
        self._preempt_at: float | None = None
        self._fault_until: float | None = None

    # ---- what the shell reads --------------------------------------------------------------

    @property
    def owns(self) -> bool:
        return self.state is State.ACTIVE

    def local_status(self) -> LocalStatus:
        return LocalStatus(state=self.state, owns=self.owns, epoch=self.epoch)

    def next_timer(self) -> float | None:
        """When the machine next needs a Tick, if ever (only timers that matter now)."""
        state = self.state
        if state is State.INIT:
            if self._started is None or self.peer is not None:
                return None
            return self._started + self.timing.startup_wait
        if state in (State.STANDBY, State.PROBING) and self._candidate():
            return self._retry_at
        if state is State.ACTIVE:
            return self._preempt_at
        if state is State.FAULT:
            return self._fault_until
        return None

    # ---- the one entry point ----------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to run, in order."""
        if self.state is State.STOPPED:
            return []
        out: list[Action] = []
        if isinstance(event, PeerUp | PeerInfo | PeerResigned):
            heard = event.epoch if isinstance(event, PeerResigned) else event.status.epoch
            self._seen_epoch = max(self._seen_epoch, heard)
        if isinstance(event, Start):
            self._started = now
            self._present = event.present
        elif isinstance(event, PeerQuiet):
            if self.state is State.STANDBY and self.peer is not None and self._probe is None:
                self._start_probe(ProbePurpose.EARLY, out)
        elif isinstance(event, Resumed):
            if self.state is State.ACTIVE and self.peer is None and self._probe is None:
                self._start_probe(ProbePurpose.CONFLICT, out)
        elif isinstance(event, PeerUp | PeerInfo):
            self._on_peer_status(event.status, now, out)
        elif isinstance(event, PeerDown):
            self._on_peer_down(event, now, out)
        elif isinstance(event, PeerResigned):
            self._on_resigned(event, now, out)
        elif isinstance(event, ProbeDone):
            self._on_probe_done(event, now, out)
        elif isinstance(event, BackendFailed):
            self._on_backend_failed(event, now, out)
        elif isinstance(event, Shutdown):
            self._on_shutdown(now, out)
            return out
        self._evaluate(now, out)
        return out

    # ---- event handlers ---------------------------------------------------------------------

    def _on_peer_status(self, status: PeerStatus, now: float, out: list[Action]) -> None:
        self.peer = status
        self._early_silent = False  # the peer spoke: whatever the early probe found is moot
        if self._probe is not None and self._probe[1] is ProbePurpose.EARLY:
            self._cancel_probe()
        if self.state is State.ACTIVE:
            if self._probe is not None:
                self._cancel_probe()  # the peer is back and speaks for itself
            if status.owns and self._peer_wins(status):
                self.epoch = status.epoch
                out.append(Release(reason=R.HIGHER_EPOCH))
                self._go(
                    S.STANDBY,
                    R.HIGHER_EPOCH,
                    f"peer also holds the VIP with epoch {status.epoch}, which wins",
                    now,
                    out,
                )
            return
        self.epoch = max(self.epoch, status.epoch)
        if self.state is State.PROBING:
            if status.owns:
                self._cancel_probe()
                self._go(S.STANDBY, R.PEER_OWNS, "peer is back and holds the VIP", now, out)
            elif not self._candidate():
                self._cancel_probe()
                self._go(S.STANDBY, R.PEER_CANDIDATE, "peer is back and takes the VIP", now, out)

    def _on_peer_down(self, event: PeerDown, now: float, out: list[Action]) -> None:
        self.peer = None
        self._preempt_at = None
        if self.state is State.ACTIVE and self._probe is None:
            # We may have been frozen or cut off while the peer took over: look before we stay.
            self._start_probe(ProbePurpose.CONFLICT, out)
        elif self.state is State.STANDBY:
            early, self._early_silent = self._early_silent, False
            if self._probe is not None and self._probe[1] is ProbePurpose.EARLY:
                # The probe sent when the peer went quiet is still out: its answer decides.
                self._probe = (self._probe[0], ProbePurpose.TAKEOVER)
                self._go(S.PROBING, R.PEER_LOST, "wants the VIP, asking the LAN first", now, out)
            elif early:
                self._go(S.PROBING, R.PEER_LOST, "wants the VIP, already asked the LAN", now, out)
                self._take(
                    R.PROBE_SILENT, "nobody answered the probe sent before the deadline", now, out
                )
            else:
                self._retry_at = None  # probe right away

    def _on_resigned(self, event: PeerResigned, now: float, out: list[Action]) -> None:
        if self.state not in (S.INIT, S.STANDBY, S.PROBING) or self._started is None:
            return
        self._cancel_probe()
        self._take(R.PEER_RESIGNED, "peer handed over", now, out)

    def _on_probe_done(self, event: ProbeDone, now: float, out: list[Action]) -> None:
        if self._probe is None or self._probe[0] != event.probe_id:
            return  # stale: the situation changed while the probe ran
        purpose = self._probe[1]
        self._probe = None
        answered = event.answered_by
        if purpose is ProbePurpose.EARLY:
            self._early_silent = self.state is State.STANDBY and answered is None
            return
        if purpose is ProbePurpose.CONFLICT:
            if answered is not None and self.state is State.ACTIVE:
                out.append(Release(reason=R.PROBE_ANSWERED))
                self._go(
                    S.STANDBY,
                    R.PROBE_ANSWERED,
                    f"lost the peer and {answered} now answers for the VIP: it took over",
                    now,
                    out,
                )
                self._retry_at = now + self.timing.retry_interval
            return
        if self.state is not State.PROBING:
            return
        if answered is not None:
            # Stay PROBING and ask again shortly: take over the moment the VIP falls silent.
            out.append(Vetoed(answered_by=answered))
            if self._present:
                self._present = False
                out.append(Release(reason=R.PROBE_ANSWERED))
            self._retry_at = now + self.timing.retry_interval
        elif self._candidate():
            self._take(R.PROBE_SILENT, "nobody answers for the VIP", now, out)

    def _on_backend_failed(self, event: BackendFailed, now: float, out: list[Action]) -> None:
        if self.state is State.FAULT:
            return
        self._cancel_probe()
        self._fault_until = now + self.timing.fault_retry
        if self.state is State.ACTIVE:
            out.append(Release(reason=R.BACKEND_FAILED))
        self._go(S.FAULT, R.BACKEND_FAILED, f"{event.op} failed: {event.error}", now, out)

    def _on_shutdown(self, now: float, out: list[Action]) -> None:
        was_active = self.state is State.ACTIVE
        self._cancel_probe()
        if was_active:
            out.append(Release(reason=R.SHUTDOWN))
        if was_active and self.peer is not None:
            out.append(SendResign(epoch=self.epoch))
        self._go(S.STOPPED, R.SHUTDOWN, "asked to stop", now, out)
        out.append(Stop())

    # ---- level-triggered decisions ----------------------------------------------------------

    def _evaluate(self, now: float, out: list[Action]) -> None:
        if self.state is State.FAULT:
            if self._fault_until is not None and now >= self._fault_until:
                self._fault_until = None
                self._go(S.STANDBY, R.FAULT_CLEARED, "retrying after a backend fault", now, out)
            else:
                return
        if self.state is State.INIT:
            self._evaluate_init(now, out)
        elif self.state is State.STANDBY:
            due = self._retry_at is None or now >= self._retry_at
            if self._candidate() and due:
                self._retry_at = None
                reason = R.PEER_LOST if self.peer is None else R.PEER_UP
                self._go(S.PROBING, reason, "wants the VIP, asking the LAN first", now, out)
                self._start_probe(ProbePurpose.TAKEOVER, out)
        elif self.state is State.PROBING:
            due = self._retry_at is not None and now >= self._retry_at
            if due and self._probe is None and self._candidate():
                self._retry_at = None
                self._start_probe(ProbePurpose.TAKEOVER, out)
        elif self.state is State.ACTIVE:
            self._evaluate_preempt(now, out)

    def _evaluate_init(self, now: float, out: list[Action]) -> None:
        if self._started is None:
            return
        if self.peer is None and now < self._started + self.timing.startup_wait:
            return
        if self.peer is not None and self.peer.owns:
            self._go(S.STANDBY, R.PEER_OWNS, "peer holds the VIP", now, out)
        elif self._candidate():
            alone = "peer not reachable" if self.peer is None else "peer does not hold the VIP"
            self._go(S.PROBING, R.STARTUP, f"{alone}; asking the LAN first", now, out)
            self._start_probe(ProbePurpose.TAKEOVER, out)
        else:
            self._go(S.STANDBY, R.PEER_CANDIDATE, "the primary peer takes the VIP", now, out)

    def _evaluate_preempt(self, now: float, out: list[Action]) -> None:
        peer = self.peer
        wants_back = (
            not self.is_primary
            and self.preempt
            and peer is not None
            and peer.state is State.STANDBY
            and not peer.owns
        )
        if not wants_back:
            self._preempt_at = None
            return
        if self._preempt_at is None:
            self._preempt_at = now + self.timing.preempt_delay
        if now >= self._preempt_at:
            self._preempt_at = None
            out.append(Release(reason=R.PREEMPT))
            out.append(SendResign(epoch=self.epoch))
            self._go(S.STANDBY, R.PREEMPT, "handing the VIP back to the primary", now, out)

    # ---- helpers ----------------------------------------------------------------------------

    def _candidate(self) -> bool:
        """Should this node try for the VIP now (subject to the LAN probe)?"""
        peer = self.peer
        if peer is None:
            return True
        if peer.owns:
            return False
        if self.is_primary:
            return peer.state is not State.ACTIVE
        return peer.state in (State.FAULT, State.STOPPED)

    def _peer_wins(self, peer: PeerStatus) -> bool:
        return peer.epoch > self.epoch or (peer.epoch == self.epoch and not self.is_primary)

    def _take(self, reason: Reason, sentence: str, now: float, out: list[Action]) -> None:
        epoch = max(self.epoch, self._seen_epoch) + 1
        self.epoch = self._seen_epoch = epoch
        self._early_silent = False
        self._present = False
        self._retry_at = None
        out.append(Acquire(epoch=epoch))
        self._go(S.ACTIVE, reason, sentence, now, out)

    def _start_probe(self, purpose: ProbePurpose, out: list[Action]) -> None:
        self._next_probe_id += 1
        self._probe = (self._next_probe_id, purpose)
        out.append(Probe(probe_id=self._next_probe_id, purpose=purpose))

    def _cancel_probe(self) -> None:
        self._probe = None

    def _go(self, to: State, reason: Reason, sentence: str, now: float, out: list[Action]) -> None:
        frm = self.state
        if reason not in TRANSITIONS.get((frm, to), frozenset()):
            raise TransitionError(f"{frm} -> {to} for {reason} is not in TRANSITIONS")
        if self._present and to in (S.STANDBY, S.FAULT, S.STOPPED):
            # An earlier run left the VIP here and we are not entitled to it: remove it.
            self._present = False
            out.append(Release(reason=reason))
        if frm is S.ACTIVE:
            self._preempt_at = None
        if to is S.FAULT:
            self._retry_at = None
        self.state, self.reason, self.since = to, reason, now
        out.append(Transition(frm=frm, to=to, reason=reason, sentence=sentence, epoch=self.epoch))
