"""The failover state machine, sans I/O: events in, actions out, time passed in.

The rule it enforces: a node takes the VIP only when its owner hands it over (RESIGN), or when the
peer link is down *and* an ARP probe finds nobody on the LAN answering for the VIP *and* that same
probe heard a witness (so the silence is the LAN's, not our own deafness). A node that cannot serve
the VIP (not *eligible*) never takes it and hands it to an eligible peer. A live peer that says it
owns the VIP is never contested; when both somehow own it, the higher ownership epoch wins (ties
go to the primary) and the winner announces at once. An owner never releases the VIP to a MAC that
is not the peer's. The old owner removes before the new owner adds, and no announcement ever
follows a release: every effect is an action, in order.
"""

from __future__ import annotations

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
    Fence,
    Fenced,
    Handover,
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
    Transition,
    Verdict,
    Vetoed,
)
from havip.core.session import LocalStatus, PeerStatus
from havip.core.states import Cause, LinkDown, Reason, State
from havip.core.wire import MAX_EPOCH

S, R = State, Reason

#: Every allowed transition and the reasons that may cause it. The README diagram is drawn from
#: this table (`havip.diagram`), and the machine refuses any transition not listed here.
TRANSITIONS: dict[tuple[State, State], frozenset[Reason]] = {
    (S.INIT, S.PROBING): frozenset({R.STARTUP}),
    (S.INIT, S.STANDBY): frozenset({R.PEER_OWNS, R.PEER_CANDIDATE, R.INELIGIBLE}),
    (S.INIT, S.ACTIVE): frozenset({R.PEER_RESIGNED, R.RESUMED}),
    (S.STANDBY, S.PROBING): frozenset({R.PEER_LOST, R.PEER_UP}),
    (S.STANDBY, S.ACTIVE): frozenset({R.PEER_RESIGNED}),
    (S.PROBING, S.ACTIVE): frozenset({R.PROBE_SILENT, R.PEER_RESIGNED}),
    (S.PROBING, S.STANDBY): frozenset({R.PEER_OWNS, R.PEER_CANDIDATE, R.INELIGIBLE}),
    (S.ACTIVE, S.STANDBY): frozenset(
        {R.HIGHER_EPOCH, R.PREEMPT, R.PROBE_ANSWERED, R.INELIGIBLE, R.CONFLICT, R.HANDOVER}
    ),
    (S.FAULT, S.STANDBY): frozenset({R.FAULT_CLEARED}),
    **{(s, S.FAULT): frozenset({R.BACKEND_FAILED}) for s in (S.INIT, S.STANDBY, S.PROBING)},
    (S.ACTIVE, S.FAULT): frozenset({R.BACKEND_FAILED}),
    **{(s, S.STOPPED): frozenset({R.SHUTDOWN}) for s in State if s is not S.STOPPED},
}


class TransitionError(AssertionError):
    """A bug: the machine tried a transition that TRANSITIONS does not allow."""


class Failover:
    """The two-node failover decision maker for one node.

    Read by the shell for status: `state`, `reason`, `since`, `epoch`, `peer`, `peer_mac`,
    `eligible`, `cause`, `isolated` (the last takeover probe heard no witness), `suspect` (we hold
    the VIP but may be cut off: not announcing, re-checking), `vetoed_by` (the MAC of the last
    veto, cleared on any transition), `last_claim` (the last MAC heard claiming the VIP),
    `fencing` (a fence hook runs before a takeover) and `fence_failed` (the last one failed and
    `fence_required` holds the takeover back).

    With `fence`, a takeover that follows a failure signal (the peer link was up, then dropped or
    missed its deadline) first asks for the fence hook (Fence, answered by Fenced); with
    `fence_required`, only a successful fence lets it go ahead. Never before a RESIGN handover,
    nor at a cold start that never saw the peer (there is no failure to fence).
    """

    def __init__(
        self,
        *,
        is_primary: bool,
        preempt: bool,
        timing: FailoverTiming,
        epoch: int,
        now: float,
        fence: bool = False,
        fence_required: bool = False,
    ) -> None:
        self.is_primary = is_primary
        self.fence = fence
        self.fence_required = fence_required
        self.preempt = preempt
        self.timing = timing
        self.state = State.INIT
        self.epoch = epoch  # the epoch we own with (or last learned, when not owning)
        self._stored_epoch = epoch  # what the epoch store said: a restart resumes only with it
        self._seen_epoch = epoch  # the highest epoch ever heard: every takeover goes above it
        self.peer: PeerStatus | None = None
        self.peer_mac: str | None = None  # from the peer's HELLO; kept while the link is down
        self.reason = Reason.STARTUP
        self.since = now
        self.eligible = True
        self.cause = Cause.OK
        self.isolated = False
        self.suspect = False
        self.vetoed_by: str | None = None
        self.last_claim: str | None = None
        self._claim_at: float | None = None  # when last_claim was heard
        self._started: float | None = None
        self._present = False  # INIT only: an earlier run left the VIP on our interface
        self._epoch_known = True
        self._blip = False  # the link went down on a missed deadline: the next probe waits longer
        self._next_probe_id = 0
        self._probe: tuple[int, ProbePurpose] | None = None
        self._retry_at: float | None = None  # STANDBY/PROBING: next takeover probe
        self._recheck_at: float | None = None  # ACTIVE and suspect: next conflict probe
        self._preempt_at: float | None = None
        self._fault_until: float | None = None
        self._fault_delay = timing.fault_retry
        self._burst_at: tuple[float, int] | None = None  # the second burst: when, for which epoch
        self._periodic_at: float | None = None  # next periodic announcement (link down)
        self._last_announce: float | None = None
        self._conflict_at: float | None = None  # when we answered the peer's claim (link down)
        self._won_epoch = False  # both own, we won, and announced: once per conflict
        self._next_fence_id = 0
        self._fencing: int | None = None  # the Fence we wait for
        self._peer_failed = False  # the link was up and went down: a failure signal
        self._came_from = State.INIT  # the state before the current one
        self.fence_failed = False
        # After a handover, not a candidate until the peer holds the VIP (or this passes): the
        # VIP is briefly silent between our release and its add, and we must not take it back.
        self._yield_until: float | None = None

    # ---- what the shell reads --------------------------------------------------------------

    @property
    def owns(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def fencing(self) -> bool:
        return self._fencing is not None

    def local_status(self) -> LocalStatus:
        return LocalStatus(
            state=self.state,
            owns=self.owns,
            epoch=self.epoch,
            eligible=self.eligible,
            cause=None if self.eligible else self.cause,
        )

    def handover_refusal(self) -> str | None:
        """Why `havip handover` cannot be done now, in one sentence; None: it can."""
        peer = self.peer
        if self.state is not State.ACTIVE:
            return f"this node does not hold the VIP (state {self.state}): nothing to hand over"
        if peer is None:
            return "the peer link is down: nobody to hand the VIP to"
        if not peer.eligible:
            cause = f" ({peer.cause})" if peer.cause is not None else ""
            return f"the peer is not eligible{cause}: it would not take the VIP"
        if peer.owns or peer.state not in (S.INIT, S.STANDBY, S.PROBING):
            return f"the peer is {peer.state}: it cannot take the VIP now"
        if self.is_primary and self.preempt:
            return (
                "preempt is on, so the peer would hand the VIP straight back; "
                "use `havip maintenance on` to keep it off this node"
            )
        return None

    def next_timer(self) -> float | None:
        """When the machine next needs a Tick, if ever (only timers that matter now)."""
        state = self.state
        if state is State.INIT:
            if self._started is None or self.peer is not None:
                return None
            return self._started + self.timing.startup_wait
        if state is State.STANDBY and self._yield_until is not None:
            return self._yield_until
        if state in (State.STANDBY, State.PROBING) and self._candidate():
            return self._retry_at
        if state is State.ACTIVE:
            due = [
                self._preempt_at,
                self._burst_at[0] if self._burst_at is not None else None,
                self._periodic_at,
                self._recheck_at if self._probe is None else None,
            ]
            return min((t for t in due if t is not None), default=None)
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
            if self._started is None:
                self._started = now
                self._present = event.present
                self._epoch_known = event.epoch_known
        elif isinstance(event, PeerUp):
            if event.mac is not None:
                self.peer_mac = event.mac.lower()
            self._on_peer_status(event.status, now, out)
        elif isinstance(event, PeerInfo):
            self._on_peer_status(event.status, now, out)
        elif isinstance(event, PeerDown):
            self._on_peer_down(event, out)
        elif isinstance(event, PeerResigned):
            self._on_resigned(now, out)
        elif isinstance(event, LocalHealth):
            self.eligible, self.cause = event.eligible, event.cause
        elif isinstance(event, ProbeDone):
            self._on_probe_done(event, now, out)
        elif isinstance(event, Claimed):
            self._on_claimed(event.mac.lower(), now, out)
        elif isinstance(event, Acquired):
            if self.state is State.ACTIVE and event.epoch == self.epoch:
                self._fault_delay = self.timing.fault_retry
        elif isinstance(event, BackendFailed):
            self._on_backend_failed(event, now, out)
        elif isinstance(event, Resumed):
            if self.state is State.ACTIVE:
                # Timers ran out while we were frozen, and the peer may have taken over: announce
                # nothing (no late second burst) until a fresh probe says we are still the owner.
                self.suspect = True
                self._burst_at = None
                self._start_probe(ProbePurpose.CONFLICT, out)
        elif isinstance(event, Handover):
            self._on_handover(now, out)
        elif isinstance(event, Fenced):
            self._on_fenced(event, now, out)
        elif isinstance(event, Shutdown):
            self._on_shutdown(now, out)
            return out
        self._evaluate(now, out)
        return out

    # ---- event handlers ---------------------------------------------------------------------

    def _on_peer_status(self, status: PeerStatus, now: float, out: list[Action]) -> None:
        self.peer = status
        self._peer_failed = False
        self._blip = False
        if status.owns:
            self._yield_until = None
        if self.state is State.ACTIVE:
            if not status.owns:
                self._won_epoch = False
            elif self._peer_wins(status):
                self.epoch = status.epoch
                out.append(Release(reason=R.HIGHER_EPOCH))
                self._go(
                    S.STANDBY,
                    R.HIGHER_EPOCH,
                    f"peer also holds the VIP with epoch {status.epoch}, which wins",
                    now,
                    out,
                )
            elif not self._won_epoch:
                # We keep it: clients may have followed the peer's announcement, so bring them
                # back now rather than when their ARP entries expire.
                self._won_epoch = True
                out.append(Conflict(mac=self.peer_mac or "peer", peer=True, verdict=Verdict.KEEP))
                self._announce("won the epoch", now, out)
            return
        self.epoch = max(self.epoch, status.epoch)
        if self.state is State.PROBING:
            if status.owns:
                self._cancel_probe()
                self._go(S.STANDBY, R.PEER_OWNS, "peer is back and holds the VIP", now, out)
            elif not self._candidate():
                self._cancel_probe()
                self._go(S.STANDBY, R.PEER_CANDIDATE, "peer is back and takes the VIP", now, out)

    def _on_peer_down(self, event: PeerDown, out: list[Action]) -> None:
        self._peer_failed = self._peer_failed or self.peer is not None
        self.peer = None
        self._yield_until = None  # whatever we handed over, the failure rules decide now
        # Announcements heard while the link was up were the owner we knew about; only what
        # it announces from now on proves it is still alive (see _claimed_lately).
        self._claim_at = None
        self._preempt_at = None
        self._won_epoch = False
        # After a missed deadline the peer may only have blipped: see _start_probe.
        self._blip = event.reason is LinkDown.DEADLINE_MISSED
        if self.state is State.ACTIVE and self._probe is None:
            # We may have been frozen or cut off while the peer took over: look before we stay.
            self._start_probe(ProbePurpose.CONFLICT, out)
        elif self.state is State.STANDBY:
            self._retry_at = None  # probe right away (when a candidate)

    def _on_resigned(self, now: float, out: list[Action]) -> None:
        if self.state not in (S.INIT, S.STANDBY, S.PROBING) or self._started is None:
            return
        if not self.eligible:
            # Never take while we cannot serve the VIP. The peer resigns only to an eligible
            # node, so this is a race; the peer sees us ineligible and takes it back after a probe.
            return
        self._cancel_probe()
        self._take(R.PEER_RESIGNED, "peer handed over", now, out)

    def _on_probe_done(self, event: ProbeDone, now: float, out: list[Action]) -> None:
        if self._probe is None or self._probe[0] != event.probe_id:
            return  # stale: the situation changed while the probe ran
        purpose = self._probe[1]
        self._probe = None
        if event.rival and event.answered_by is not None:
            # A rival probe holds nothing. When both nodes probe at once (both lost the link and
            # the VIP), the primary goes ahead and the secondary waits, so they cannot collide
            # forever; a stranger's probe still makes us wait.
            ahead = purpose is ProbePurpose.CONFLICT or (
                self.is_primary and self._is_peer(event.answered_by)
            )
            if ahead:
                event = ProbeDone(probe_id=event.probe_id, answered_by=None, witness=event.witness)
        if event.error is None and event.witness is not False:
            self.isolated = False
        if purpose is ProbePurpose.CONFLICT:
            if self.state is State.ACTIVE:
                self._on_conflict_probe(event, now, out)
            return
        if self.state is not State.PROBING:
            return
        answered = event.answered_by
        if answered is None and event.error is None and self._claimed_lately(now):
            # Silence now, but somebody announced the VIP moments ago: an owner whose peer
            # link is down announces every announce_interval, and one we cannot reach (one-way
            # loss) never answers our probes. Its announcements are the proof it lives.
            answered = self.last_claim
        if event.error is not None:
            # Not the backend's fault and no evidence either way: ask again soon.
            self._retry_at = now + self.timing.retry_interval
        elif answered is not None:
            # Stay PROBING and ask again shortly: take over the moment the VIP falls silent.
            self.vetoed_by = answered
            out.append(Vetoed(answered_by=answered))
            if self._present:
                self._present = False
                out.append(Release(reason=R.PROBE_ANSWERED))
            self._retry_at = now + self.timing.retry_interval
        elif event.witness is False:
            self.vetoed_by = None
            self.isolated = True
            sentence = "nobody answered for the VIP, but no witness did either: not taking"
            out.append(Isolated(sentence=sentence))
            self._retry_at = now + self.timing.retry_interval
        elif self._candidate():
            self.vetoed_by = None
            if self.fence and self.peer is None and self._peer_failed:
                self._start_fence(out)
            else:
                self._take(R.PROBE_SILENT, "nobody answers for the VIP", now, out)

    def _start_fence(self, out: list[Action]) -> None:
        self._next_fence_id += 1
        self._fencing = self._next_fence_id
        epoch = min(max(self.epoch, self._seen_epoch) + 1, MAX_EPOCH)
        out.append(
            Fence(
                fence_id=self._fencing, reason=self.reason, epoch=epoch, old_state=self._came_from
            )
        )

    def _on_fenced(self, event: Fenced, now: float, out: list[Action]) -> None:
        if self._fencing != event.fence_id:
            return  # stale: the peer came back, or we stopped wanting the VIP, meanwhile
        self._fencing = None
        self.fence_failed = not event.ok
        if self.state is not State.PROBING or not self._candidate():
            return
        if self._claimed_lately(now):
            # The peer (or somebody) announced the VIP while the fence ran: look again.
            self._retry_at = now + self.timing.retry_interval
            return
        if event.ok:
            self._take(
                R.PROBE_SILENT, "nobody answers for the VIP and the peer is fenced", now, out
            )
        elif not self.fence_required:
            self._take(
                R.PROBE_SILENT,
                "nobody answers for the VIP (the fence failed, not required)",
                now,
                out,
            )
        else:
            # A fence is slow and heavy: do not hammer it; try again like after a backend fault.
            self._retry_at = now + self.timing.fault_retry

    def _on_handover(self, now: float, out: list[Action]) -> None:
        if self.handover_refusal() is not None:
            return
        self._preempt_at = None
        out.append(Release(reason=R.HANDOVER))
        out.append(SendResign(epoch=self.epoch))
        self._go(S.STANDBY, R.HANDOVER, "the operator asked to hand the VIP to the peer", now, out)
        self._yield_until = now + self.timing.startup_wait

    def _on_conflict_probe(self, event: ProbeDone, now: float, out: list[Action]) -> None:
        answered = event.answered_by
        if event.error is not None or (answered is None and event.witness is False):
            # We may be the one cut off: keep the VIP (the peer may not have it either) but do
            # not pull clients our way until a probe hears a witness.
            self.suspect = True
            self._burst_at = None
            self._recheck_at = now + self.timing.retry_interval
            if event.error is None:
                out.append(Isolated(sentence="holds the VIP but hears no witness: not announcing"))
            return
        self.suspect = False
        self._recheck_at = None
        if answered is None:
            self._announce("nobody else answers for the VIP", now, out)
        elif not self._is_peer(answered):
            # Never release to a MAC that is not the peer's: a forged reply must not take the VIP
            # down. Announce so that clients come back to us.
            out.append(Conflict(mac=answered, peer=False, verdict=Verdict.KEEP))
            self._announce("another MAC answers for the VIP", now, out)
        elif self.peer is None:
            out.append(Release(reason=R.PROBE_ANSWERED))
            self._go(
                S.STANDBY,
                R.PROBE_ANSWERED,
                f"lost the peer and {answered} now answers for the VIP: it took over",
                now,
                out,
            )
            self._retry_at = now + self.timing.retry_interval
        elif not self.peer.owns:
            # The link is up and the peer says it does not own: its answer is stale.
            out.append(Conflict(mac=answered, peer=True, verdict=Verdict.KEEP))
            self._announce("the peer's stale answer for the VIP", now, out)
        # else: the link is up and both own; the epoch rule has already decided in our favour.

    def _on_claimed(self, mac: str, now: float, out: list[Action]) -> None:
        self.last_claim = mac
        self._claim_at = now
        if self.state is not State.ACTIVE:
            return
        if not self._is_peer(mac):
            out.append(Conflict(mac=mac, peer=False, verdict=Verdict.KEEP))
            self._announce_limited("another MAC claims the VIP", now, out)
            return
        if self.peer is not None:
            # The link is up: the keepalives decide who owns (epoch rule in _on_peer_status).
            if not self.peer.owns:
                out.append(Conflict(mac=mac, peer=True, verdict=Verdict.KEEP))
                self._announce_limited("stale or forged claim in the peer's name", now, out)
            return
        if self.suspect or not self.eligible or not self.is_primary:
            self._yield(mac, "the peer claims the VIP and we are the one to give way", now, out)
            return
        since = self._conflict_at
        # A claim long after our answer is a new conflict, not the same one still going on: a
        # peer that cannot hear us announces every announce_interval, so twice that is plenty.
        if since is None or now - since > 2 * self.timing.announce_interval:
            self._conflict_at = now
            out.append(Conflict(mac=mac, peer=True, verdict=Verdict.KEEP))
            self._announce("the peer claims the VIP while the link is down", now, out)
        elif now - since > self.timing.conflict_grace:
            # The peer (secondary) gives way the moment it hears us; it still claims well after
            # our announcement, so it cannot hear us: keep the owner the clients heard last.
            self._yield(mac, "the peer keeps claiming the VIP: it cannot hear us", now, out)
        else:
            # Its frames were already on the way when we announced.
            out.append(Conflict(mac=mac, peer=True, verdict=Verdict.KEEP))

    def _claimed_lately(self, now: float) -> bool:
        """Since the peer link went down, another host announced the VIP within two of its
        announce intervals."""
        at = self._claim_at
        window = 2 * self.timing.announce_interval + self.timing.conflict_grace
        return at is not None and now - at <= window

    def _yield(self, mac: str, sentence: str, now: float, out: list[Action]) -> None:
        out.append(Release(reason=R.CONFLICT))
        self._go(S.STANDBY, R.CONFLICT, sentence, now, out)
        out.append(Conflict(mac=mac, peer=True, verdict=Verdict.YIELD))
        self._retry_at = now + self.timing.retry_interval

    def _on_backend_failed(self, event: BackendFailed, now: float, out: list[Action]) -> None:
        if self.state is State.FAULT:
            return
        self._cancel_probe()
        self._fault_until = now + self._fault_delay
        # Back off: a backend that keeps failing (e.g. a missing interface) must not make the
        # VIP move back and forth every few seconds. Reset by Acquired.
        ceiling = max(self.timing.fault_retry_max, self.timing.fault_retry)
        self._fault_delay = min(self._fault_delay * 2, ceiling)
        if self.state is State.ACTIVE:
            out.append(Release(reason=R.BACKEND_FAILED))
        self._go(S.FAULT, R.BACKEND_FAILED, f"{event.op} failed: {event.error}", now, out)

    def _on_shutdown(self, now: float, out: list[Action]) -> None:
        was_active = self.state is State.ACTIVE
        self._cancel_probe()
        if was_active:
            out.append(Release(reason=R.SHUTDOWN))
        if was_active and self.peer is not None and self.peer.eligible:
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
            if self._yield_until is not None and now >= self._yield_until:
                self._yield_until = None
            due = self._retry_at is None or now >= self._retry_at
            if self._candidate() and due:
                self._retry_at = None
                reason = R.PEER_LOST if self.peer is None else R.PEER_UP
                self._go(S.PROBING, reason, "wants the VIP, asking the LAN first", now, out)
                self._start_probe(ProbePurpose.TAKEOVER, out)
        elif self.state is State.PROBING:
            if not self.eligible:
                self._cancel_probe()
                self._go(S.STANDBY, R.INELIGIBLE, f"not eligible ({self.cause})", now, out)
                return
            due = self._retry_at is not None and now >= self._retry_at
            if due and self._probe is None and self._fencing is None and self._candidate():
                self._retry_at = None
                self._start_probe(ProbePurpose.TAKEOVER, out)
        elif self.state is State.ACTIVE:
            self._evaluate_active(now, out)

    def _evaluate_init(self, now: float, out: list[Action]) -> None:
        if self._started is None:
            return
        if self.peer is None and now < self._started + self.timing.startup_wait:
            return
        peer = self.peer
        if peer is not None and peer.owns:
            self._go(S.STANDBY, R.PEER_OWNS, "peer holds the VIP", now, out)
        elif not self.eligible:
            self._go(S.STANDBY, R.INELIGIBLE, f"not eligible ({self.cause})", now, out)
        elif (
            peer is not None
            and self._present
            and self._epoch_known
            and self._seen_epoch <= self._stored_epoch
        ):
            # A restarted daemon whose host kept serving the VIP: keep serving it, no bump and no
            # move (a crashed daemon must not cause an outage, preempt or not).
            self.epoch = self._stored_epoch
            self._present = False
            self.isolated = False
            out.append(Acquire(epoch=self.epoch))
            self._go(
                S.ACTIVE, R.RESUMED, "still holds the VIP and the peer does not: resuming", now, out
            )
        elif self._candidate():
            alone = "peer not reachable" if peer is None else "peer does not hold the VIP"
            self._go(S.PROBING, R.STARTUP, f"{alone}; asking the LAN first", now, out)
            self._start_probe(ProbePurpose.TAKEOVER, out)
        else:
            self._go(S.STANDBY, R.PEER_CANDIDATE, "the primary peer takes the VIP", now, out)

    def _evaluate_active(self, now: float, out: list[Action]) -> None:
        peer = self.peer
        if (
            not self.eligible
            and peer is not None
            and peer.eligible
            and not peer.owns
            and peer.state in (S.INIT, S.STANDBY, S.PROBING)  # it takes on RESIGN; FAULT would not
        ):
            self._preempt_at = None
            out.append(Release(reason=R.INELIGIBLE))
            out.append(SendResign(epoch=self.epoch))
            self._go(
                S.STANDBY, R.INELIGIBLE, f"not eligible ({self.cause}): handing over", now, out
            )
            return
        self._evaluate_preempt(now, out)
        if self.state is not State.ACTIVE:
            return
        recheck = self._recheck_at
        if self.suspect and self._probe is None and recheck is not None and now >= recheck:
            self._recheck_at = None
            self._start_probe(ProbePurpose.CONFLICT, out)
        if self._burst_at is not None and now >= self._burst_at[0]:
            epoch = self._burst_at[1]
            self._burst_at = None
            if epoch == self.epoch and self._may_announce():
                self._announce("second burst", now, out)
        if self.peer is None and self._may_announce():
            # So that a peer that took the VIP blind hears us (and we hear it back).
            if self._periodic_at is None:
                self._periodic_at = now + self.timing.announce_interval
            elif now >= self._periodic_at:
                self._announce("peer link down", now, out)
        else:
            self._periodic_at = None

    def _evaluate_preempt(self, now: float, out: list[Action]) -> None:
        peer = self.peer
        wants_back = (
            not self.is_primary
            and self.preempt
            and peer is not None
            and peer.state is State.STANDBY
            and peer.eligible
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
        if not self.eligible or self._yield_until is not None:
            return False
        peer = self.peer
        if peer is None:
            return True
        if peer.owns:
            return False
        if self.is_primary:
            return peer.state is not State.ACTIVE
        return peer.state in (State.FAULT, State.STOPPED) or not peer.eligible

    def _peer_wins(self, peer: PeerStatus) -> bool:
        return peer.epoch > self.epoch or (peer.epoch == self.epoch and not self.is_primary)

    def _is_peer(self, mac: str) -> bool:
        return self.peer_mac is not None and mac.lower() == self.peer_mac

    def _may_announce(self) -> bool:
        """Periodic and second bursts: only an owner sure of itself, and not mid-check."""
        checking = self._probe is not None and self._probe[1] is ProbePurpose.CONFLICT
        return self.state is State.ACTIVE and self.eligible and not self.suspect and not checking

    def _announce(self, reason: str, now: float, out: list[Action]) -> None:
        assert self.state is State.ACTIVE, "an announcement never follows a release"
        out.append(Announce(reason=reason))
        self._last_announce = now
        self._periodic_at = now + self.timing.announce_interval if self.peer is None else None

    def _announce_limited(self, reason: str, now: float, out: list[Action]) -> None:
        """An announcement in answer to a claim: at most one per announce_interval, so that a
        hostile host cannot make us flood the LAN; none while suspect."""
        last = self._last_announce
        if self.suspect or (last is not None and now - last < self.timing.announce_interval):
            return
        self._announce(reason, now, out)

    def _take(self, reason: Reason, sentence: str, now: float, out: list[Action]) -> None:
        # Saturate rather than exceed the bound: a peer's key holder pushing the epoch to
        # MAX_EPOCH must not make our next takeover unsendable (the pair would never relink);
        # at the bound, ties go to the primary like any other tie.
        epoch = min(max(self.epoch, self._seen_epoch) + 1, MAX_EPOCH)
        self.epoch = self._seen_epoch = epoch
        self._present = False
        self._retry_at = None
        self.isolated = False
        out.append(Acquire(epoch=epoch))
        self._go(S.ACTIVE, reason, sentence, now, out)

    def _start_probe(self, purpose: ProbePurpose, out: list[Action]) -> None:
        window = self.timing.probe_window
        if purpose is ProbePurpose.TAKEOVER and self.vetoed_by is not None:
            # The VIP answered our last probe: it must now stay silent as long as a peer must
            # before it counts as gone (dead time, plus the blip guard as below), or a blip of
            # its holder's carrier would hand us the VIP between two of its answers.
            window = max(window, self.timing.dead_time + self.timing.blip_guard)
        elif purpose is ProbePurpose.TAKEOVER and self._blip:
            # The deadline passed dead_time after the last keepalive, and a carrier blip that
            # hid the peer began at most one keepalive interval after that keepalive. A blip
            # shorter than the dead time is therefore over by deadline + interval: listening
            # that long lets a peer that merely blipped answer before we decide.
            window = max(window, self.timing.blip_guard)
        self._blip = False
        self._next_probe_id += 1
        self._probe = (self._next_probe_id, purpose)
        out.append(Probe(probe_id=self._next_probe_id, purpose=purpose, window=window))

    def _cancel_probe(self) -> None:
        self._probe = None
        self._fencing = None  # a fence result no longer leads to a takeover

    def _go(self, to: State, reason: Reason, sentence: str, now: float, out: list[Action]) -> None:
        frm = self.state
        if reason not in TRANSITIONS.get((frm, to), frozenset()):
            raise TransitionError(f"{frm} -> {to} for {reason} is not in TRANSITIONS")
        if self._present and to in (S.STANDBY, S.FAULT, S.STOPPED):
            # An earlier run left the VIP here and we are not entitled to it: remove it.
            self._present = False
            out.append(Release(reason=reason))
        if frm is S.ACTIVE:
            self._probe = None  # a conflict probe's answer no longer matters
            self._preempt_at = self._recheck_at = self._periodic_at = self._conflict_at = None
            self._burst_at = None
            self.suspect = self._won_epoch = False
        if to is S.ACTIVE:
            self._burst_at = (now + self.timing.announce_again, self.epoch)
        if to is S.FAULT:
            self._retry_at = None
        if frm is S.PROBING:
            self.isolated = False  # it describes the takeover probes, which end here
            self._fencing = None
            self.fence_failed = False
        self.vetoed_by = None
        self._came_from = frm
        self.state, self.reason, self.since = to, reason, now
        out.append(Transition(frm=frm, to=to, reason=reason, sentence=sentence, epoch=self.epoch))
