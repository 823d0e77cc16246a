"""A discrete-event model of two havip nodes on a LAN, driving the real failover machines.

Time is modelled honestly: every event carries a timestamp and both nodes' events interleave in
one queue; a probe takes its window and is answered only by what the LAN would have carried
during that window; frames (probe answers, claims, witness answers) can be lost; a node can be
frozen and resumed later (its queued input is delivered on resume, and the shell's freeze
notice comes either before or after it); a node can be cut off from the LAN while it runs; a
daemon can be killed while its host keeps the VIP; a host can lose power.

The promises are stated from the outside (who holds the address, who can see whom), never by
re-deriving the machine's own rules, and checked after every step by `Checker`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from havip.core.events import (
    Acquire,
    Acquired,
    Action,
    Announce,
    BackendFailed,
    Claimed,
    Event,
    FailoverTiming,
    Handover,
    LocalHealth,
    PeerDown,
    PeerInfo,
    PeerResigned,
    PeerUp,
    Probe,
    ProbeDone,
    Release,
    Resumed,
    SendResign,
    Shutdown,
    Start,
    Stop,
    Tick,
    Transition,
)
from havip.core.failover import (
    Failover,
)
from havip.core.session import LocalStatus, PeerStatus
from havip.core.states import Cause, LinkDown, Reason, State

INTERVAL = 0.15
DEAD = 0.32
WINDOW = 0.06
CHECK_EVERY = 1.0  # the shell's witness check
WITNESS_MISSES = 2
ADD_DELAY = 0.004  # a netlink round trip
OUTAGE_BOUND = 3.0  # no lock-out: an able node serves the VIP within this
TWO_OWNER_BOUND = 1.5  # issue 5: two owners for at most 1 s after a conflict; slack for delays
SETTLE = 12.0  # after the last fault heals, the pair must have settled within this

TIMING = FailoverTiming(
    retry_interval=INTERVAL,
    startup_wait=DEAD + 0.5,
    preempt_delay=1.0,
    fault_retry=5.0,
    fault_retry_max=60.0,
    probe_window=WINDOW,
    blip_guard=INTERVAL,
    dead_time=DEAD,
    announce_again=2.0,
    announce_interval=0.5,
    conflict_grace=0.15,
)

Machine = Callable[..., Failover]
Action_ = Callable[[], None]


@dataclass(frozen=True)
class _Moment:
    at: float
    held: tuple[bool, bool]
    visible: tuple[bool, bool]
    both_ways: bool


def _peer_view(status: LocalStatus) -> PeerStatus:
    return PeerStatus(
        state=status.state, owns=status.owns, epoch=status.epoch, eligible=status.eligible
    )


@dataclass
class Host:
    """One server: its host (power, LAN port, the address) and its daemon (a Failover)."""

    index: int
    name: str
    mac: str
    primary: bool
    fo: Failover | None = None
    powered: bool = True
    running: bool = False
    frozen_since: float | None = None
    frozen_inbox: list[Event] = field(default_factory=list)
    carrier: bool = True  # its VIP link
    port_ok: bool = True  # its switch port passes frames
    vip: bool = False  # the address is on its interface
    stored_epoch: int = 0
    eligible_fed: bool = True
    witness_misses: int = 0
    busy_until: float = 0.0  # its actuator runs actions one after another
    generation: int = 0  # bumps on every daemon (re)start: stale callbacks are dropped
    announced_at: float | None = None
    probing: list[tuple[float, float]] = field(default_factory=list)  # takeover probe windows
    carrier_lost_at: float = 0.0
    last_request: float = 0.0  # when its last probe round sent its last witness request
    maintenance: bool = False  # the operator drained it (kept across daemon restarts)
    check_failed: bool = False  # its service's health check fails (after rise/fall)

    @property
    def alive(self) -> bool:
        return self.powered and self.running and self.frozen_since is None

    @property
    def visible(self) -> bool:
        """Clients on the LAN can reach this host."""
        return self.powered and self.port_ok and self.carrier


class World:
    """Two hosts, a heartbeat path, a LAN with per-direction reachability, and a clock."""

    def __init__(
        self,
        *,
        preempt: bool,
        seed: int,
        loss: float = 0.0,
        machine: Machine = Failover,
        hb_separate: bool = False,
        add_failures: float = 0.0,
    ) -> None:
        self.add_failures = add_failures  # chance that adding the VIP fails (backend error)
        self.preempt = preempt
        self.hb_separate = hb_separate  # the heartbeat has a network of its own
        self.rng = random.Random(seed)
        self.loss = loss
        self.machine = machine
        self.now = 0.0
        self._seq = 0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self.hosts = [
            Host(0, "n1", "02:00:00:00:00:01", True),
            Host(1, "n2", "02:00:00:00:00:02", False),
        ]
        self.hb_cut = False
        self.partitioned = False
        self.one_way: set[tuple[int, int]] = set()  # (from, to) frames dropped
        self.connected = False
        self.conn_epoch = 0  # bumps per connection, so stale deliveries are dropped
        self.last_status: list[LocalStatus | None] = [None, None]
        self.delivered: set[str] = set()  # event types fed at least once (generator coverage)
        self.acquires: list[tuple[float, int, Reason]] = []
        self.checker: Checker | None = None
        self.log: list[str] = []
        self.history: list[_Moment] = []
        self._stream_at = [0.0, 0.0]  # when the last message on each direction arrives
        self._connecting = False

    # ---- the clock -----------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn))

    def run_until(self, end: float) -> None:
        for _ in range(2_000_000):  # bounded: a runaway model is a bug
            if not self._queue or self._queue[0][0] > end:
                self.now = end
                return
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
            if self.checker is not None:
                self.checker.check(self)
        raise AssertionError("simulation did not finish")

    # ---- the LAN -------------------------------------------------------------------------------

    def reaches(self, src: int, dst: int) -> bool:
        """A frame from host src reaches host dst (both powered, ports up, no partition)."""
        a, b = self.hosts[src], self.hosts[dst]
        if not (a.visible and b.visible):
            return False
        return not self.partitioned and (src, dst) not in self.one_way

    def lost(self) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss

    def hb_possible(self) -> bool:
        a, b = self.hosts
        if self.hb_cut or not (a.alive and b.alive):
            return False
        return self.hb_separate or (self.reaches(0, 1) and self.reaches(1, 0))

    # ---- feeding a daemon ----------------------------------------------------------------------

    def feed(self, i: int, ev: Event, generation: int | None = None) -> None:
        host = self.hosts[i]
        if generation is not None and generation != host.generation:
            return  # meant for a daemon that is gone
        if not (host.powered and host.running) or host.fo is None:
            return
        if host.frozen_since is not None:
            host.frozen_inbox.append(ev)
            return
        self.delivered.add(type(ev).__name__)
        actions = host.fo.handle(ev, self.now)
        if host.fo.state is not State.ACTIVE:
            host.stored_epoch = max(host.stored_epoch, host.fo.epoch)
        for action in actions:
            self._execute(i, action)
        self._after_handle(i)

    def _after_handle(self, i: int) -> None:
        host = self.hosts[i]
        assert host.fo is not None
        status = host.fo.local_status()
        if self.connected and status != self.last_status[i]:
            self.last_status[i] = status
            conn = self.conn_epoch
            # The status reaches the peer with the next keepalive (or the lockstep reply), in
            # order: one TCP stream never overtakes itself.
            when = max(self.now + self.rng.uniform(0.001, INTERVAL), self._stream_at[i])
            self._stream_at[i] = when
            self.at(when, lambda: self._deliver_info(i, status, conn))
        due = host.fo.next_timer()
        if due is not None and due > self.now:  # as the daemon: a timer already handled is done
            gen = host.generation
            self.at(due, lambda: self._tick(i, gen, due))

    def _tick(self, i: int, gen: int, due: float) -> None:
        host = self.hosts[i]
        if host.fo is None or gen != host.generation or not host.alive:
            return
        if host.fo.next_timer() == due:
            self.feed(i, Tick())

    def _deliver_info(self, i: int, status: LocalStatus, conn: int) -> None:
        if self.connected and conn == self.conn_epoch:
            self.feed(1 - i, PeerInfo(status=_peer_view(status)))

    # ---- carrying out actions ------------------------------------------------------------------

    def _execute(self, i: int, action: Action) -> None:
        host = self.hosts[i]
        gen = host.generation
        start = max(self.now, host.busy_until)
        if isinstance(action, Acquire):
            reason = host.fo.reason if host.fo is not None else Reason.STARTUP
            self.acquires.append((self.now, i, reason))
            if self.checker is not None:
                self.checker.on_acquire(self, i, action, reason)
            host.stored_epoch = max(host.stored_epoch, action.epoch)
            host.busy_until = start + ADD_DELAY
            self.at(host.busy_until, lambda: self._added(i, gen, action.epoch))
        elif isinstance(action, Release):
            host.busy_until = start + ADD_DELAY
            self.at(host.busy_until, lambda: self._removed(i, gen))
        elif isinstance(action, Announce):
            host.busy_until = start + 0.001
            self.at(host.busy_until, lambda: self._announce(i, gen))
        elif isinstance(action, SendResign):
            conn = self.conn_epoch
            host.busy_until = start + 0.001
            self.at(host.busy_until, lambda: self._resign(i, gen, conn, action.epoch))
        elif isinstance(action, Probe):
            self._probe(i, action)
        elif isinstance(action, Stop):
            self.at(max(self.now, host.busy_until), lambda: self._stopped(i, gen))
        elif isinstance(action, Transition):
            self.log.append(
                f"{self.now:8.3f} {host.name} {action.frm}->{action.to} {action.reason}"
            )

    def _added(self, i: int, gen: int, epoch: int) -> None:
        host = self.hosts[i]
        if gen != host.generation or not host.powered:
            return
        if self.add_failures and self.rng.random() < self.add_failures:
            self.feed(i, BackendFailed(op="add", error="EPERM (simulated)"), gen)
            return
        host.vip = True
        self.snapshot()
        self._announce(i, gen)
        self.feed(i, Acquired(epoch=epoch), gen)

    def _removed(self, i: int, gen: int) -> None:
        host = self.hosts[i]
        if gen == host.generation:
            host.vip = False
            self.snapshot()

    def _announce(self, i: int, gen: int) -> None:
        host = self.hosts[i]
        if gen != host.generation or not host.vip or not host.powered:
            return
        host.announced_at = self.now
        other = 1 - i
        if self.reaches(i, other) and not self.lost():
            self.at(self.now + 0.0005, lambda: self._claim_heard(other, host.mac))

    def _claim_heard(self, i: int, mac: str) -> None:
        self.log.append(f"{self.now:8.3f} {self.hosts[i].name} hears a claim from {mac}")
        # The packet socket queues it even while the daemon is frozen.
        self.feed(i, Claimed(mac=mac))

    def _resign(self, i: int, gen: int, conn: int, epoch: int) -> None:
        if gen != self.hosts[i].generation:
            return
        if self.connected and conn == self.conn_epoch:
            if self.checker is not None:
                self.checker.on_resign(self, i)
            when = max(self.now + 0.0005, self._stream_at[i])
            self._stream_at[i] = when
            self.at(when, lambda: self.feed(1 - i, PeerResigned(epoch=epoch)))

    def _stopped(self, i: int, gen: int) -> None:
        host = self.hosts[i]
        if gen == host.generation:
            host.running = False
            host.fo = None
            self._link_check()

    def _probe(self, i: int, probe: Probe) -> None:
        host = self.hosts[i]
        gen = host.generation
        start = self.now + 0.002
        end = start + probe.window
        if not host.carrier:
            failed = ProbeDone(
                probe_id=probe.probe_id, answered_by=None, witness=None, error="Network is down"
            )
            self.at(start, lambda: self.feed(i, failed, gen))
            return
        samples = [start + probe.window * k / 4 for k in range(5)]
        other = self.hosts[1 - i]
        host.probing.append((start, end))

        def finish() -> None:
            answered, rival = None, False
            for t in samples:
                if self._held_and_reachable(1 - i, i, t) and not self.lost():
                    answered = other.mac
                    break
            if answered is None and self.reaches(1 - i, i) and not self.lost():
                # RFC 5227: the other host probing for the VIP at the same time also answers.
                for s, e in other.probing:
                    if s < end and e > start:
                        answered, rival = other.mac, True
                        break
            # The witness must answer the round's last request (sent at 2/3 of the window).
            last_request = start + probe.window * 2 / 3
            witness = self.port_ok_at(i, last_request) and not self.lost()
            host.last_request = last_request
            self.feed(
                i,
                ProbeDone(
                    probe_id=probe.probe_id, answered_by=answered, witness=witness, rival=rival
                ),
                gen,
            )

        self.at(end, finish)

    # The LAN's past: what held when, and who reached whom (recorded on every change).
    def snapshot(self) -> None:
        a, b = self.hosts
        self.history.append(
            _Moment(
                at=self.now,
                held=(a.vip and a.powered, b.vip and b.powered),
                visible=(a.visible, b.visible),
                both_ways=self.reaches(0, 1) and self.reaches(1, 0),
            )
        )

    def _moment(self, t: float) -> _Moment:
        for moment in reversed(self.history):
            if moment.at <= t:
                return moment
        return self.history[0]

    def _held_and_reachable(self, holder: int, prober: int, t: float) -> bool:
        """At time t, would `prober`'s probe have been answered by `holder`?"""
        moment = self._moment(t)
        return holder != prober and moment.held[holder] and moment.both_ways

    def port_ok_at(self, i: int, t: float) -> bool:
        return self._moment(t).visible[i]

    # ---- the peer link -------------------------------------------------------------------------

    def _link_check(self) -> None:
        possible = self.hb_possible()
        if self.connected and not possible:
            self.connected = False
            self.conn_epoch += 1
            self.last_status = [None, None]
            for i, host in enumerate(self.hosts):
                other = self.hosts[1 - i]
                if not (host.powered and host.running):
                    continue
                if not other.running and other.powered:
                    delay, why = 0.001, LinkDown.CONNECTION_LOST  # the peer's kernel sends a FIN
                else:
                    delay, why = DEAD - self.rng.uniform(0, INTERVAL), LinkDown.DEADLINE_MISSED
                self.at(
                    self.now + delay, partial(self.feed, i, PeerDown(reason=why), host.generation)
                )
        elif not self.connected and possible and not self._connecting:
            self._connecting = True
            self.at(self.now + self.rng.uniform(0.05, 0.5), self._connect)

    def _connect(self) -> None:
        self._connecting = False
        if self.connected or not self.hb_possible():
            return
        self.connected = True
        self.conn_epoch += 1
        a, b = self.hosts
        assert a.fo is not None and b.fo is not None
        sa, sb = a.fo.local_status(), b.fo.local_status()
        self.last_status = [sa, sb]
        self.feed(0, PeerUp(status=_peer_view(sb), mac=b.mac))
        self.feed(1, PeerUp(status=_peer_view(sa), mac=a.mac))

    # ---- the shell's periodic witness check and link tracking ----------------------------------

    def _witness_loop(self, i: int) -> None:
        host = self.hosts[i]
        self.at(self.now + CHECK_EVERY, lambda: self._witness_loop(i))
        if not host.alive or host.fo is None:
            return
        heard = host.visible and not self.lost()
        if heard or host.carrier:
            # As the daemon: a check during a carrier loss is left to the (debounced) link
            # state, not counted as a witness miss as well.
            host.witness_misses = 0 if heard else host.witness_misses + 1
        self._health(i)
        if host.fo is not None and host.fo.state is State.ACTIVE:
            # The owner's periodic probe of its own VIP: another holder's kernel replies.
            other = self.hosts[1 - i]
            if self._held_and_reachable(1 - i, i, self.now) and not self.lost():
                self.at(self.now + 0.001, partial(self._claim_heard, i, other.mac))

    def _health(self, i: int) -> None:
        host = self.hosts[i]
        if not host.alive or host.fo is None:
            return
        if not host.carrier and self.now - host.carrier_lost_at >= DEAD - 1e-9:
            # The shell debounces link loss by the dead time: a shorter blip changes nothing.
            eligible, cause = False, Cause.NO_CARRIER
        elif host.witness_misses >= WITNESS_MISSES:
            eligible, cause = False, Cause.NO_WITNESS
        elif host.check_failed:
            eligible, cause = False, Cause.CHECK_FAILED
        elif host.maintenance:
            eligible, cause = False, Cause.MAINTENANCE
        else:
            eligible, cause = True, Cause.OK
        if eligible != host.eligible_fed:
            host.eligible_fed = eligible
            self.feed(i, LocalHealth(eligible=eligible, cause=cause))

    # ---- faults --------------------------------------------------------------------------------

    def changed(self) -> None:
        """Something about the hosts or the LAN changed: record it and re-check the link."""
        self.snapshot()
        self._link_check()

    def start_daemon(self, i: int) -> None:
        host = self.hosts[i]
        if not host.powered or host.running:
            return
        host.generation += 1
        host.running = True
        host.frozen_since = None
        host.frozen_inbox = []
        host.eligible_fed = True
        host.witness_misses = 0
        host.busy_until = self.now
        host.fo = self.machine(
            is_primary=host.primary,
            preempt=self.preempt,
            timing=TIMING,
            epoch=host.stored_epoch,
            now=self.now,
        )
        self.feed(i, Start(present=host.vip))
        self._health(i)
        self.changed()

    def kill(self, i: int) -> None:
        """SIGKILL: the daemon is gone, its host (and the VIP on it) stays."""
        host = self.hosts[i]
        if not host.running:
            return
        host.running = False
        host.fo = None
        host.generation += 1
        host.frozen_since = None
        self.changed()

    def stop(self, i: int) -> None:
        host = self.hosts[i]
        if host.alive:
            self.feed(i, Shutdown())

    def power(self, i: int, on: bool) -> None:
        host = self.hosts[i]
        if on and not host.powered:
            host.powered = True
            self.changed()
            self.start_daemon(i)
        elif not on and host.powered:
            host.powered = False
            host.running = False
            host.fo = None
            host.vip = False  # the address does not survive a power cycle
            host.generation += 1
            self.changed()

    def freeze(self, i: int) -> None:
        host = self.hosts[i]
        if host.alive:
            host.frozen_since = self.now
            self.changed()

    def thaw(self, i: int) -> None:
        host = self.hosts[i]
        if host.frozen_since is None or host.fo is None:
            return
        frozen_for = self.now - host.frozen_since
        inbox, host.frozen_inbox = host.frozen_inbox, []
        host.frozen_since = None
        pending: list[Event] = list(inbox)
        if frozen_for > DEAD:
            # The daemon notices the freeze before it feeds anything that queued meanwhile.
            pending.insert(0, Resumed())
        for ev in pending:
            self.feed(i, ev)
        # The daemon's one timer fires late, once: whatever came due while frozen runs now.
        due = host.fo.next_timer() if host.fo is not None else None
        if due is not None and due <= self.now:
            self.feed(i, Tick())
        self.changed()

    def set_carrier(self, i: int, up: bool) -> None:
        host = self.hosts[i]
        if not up and host.carrier:
            host.carrier_lost_at = self.now
            self.at(self.now + DEAD, partial(self._health, i))
        host.carrier = up
        self.changed()
        self._health(i)

    def set_port(self, i: int, ok: bool) -> None:
        self.hosts[i].port_ok = ok
        self.changed()

    def set_drained(self, i: int, what: str, on: bool) -> None:
        """Maintenance or a failing health check: the node must not hold the VIP."""
        setattr(self.hosts[i], what, on)
        self.changed()
        self._health(i)

    def set_hb_cut(self, cut: bool) -> None:
        self.hb_cut = cut
        self.changed()

    def set_partition(self, on: bool) -> None:
        self.partitioned = on
        self.changed()

    def set_one_way(self, pair: tuple[int, int], dropped: bool) -> None:
        """Frames from pair[0] to pair[1] are dropped (or pass again)."""
        if dropped:
            self.one_way.add(pair)
        else:
            self.one_way.discard(pair)
        self.changed()

    def note(self, text: str, then: Callable[[], None]) -> None:
        self.log.append(f"{self.now:8.3f} {text}")
        then()

    # ---- start ---------------------------------------------------------------------------------

    def boot(self) -> None:
        self.snapshot()
        for i in (0, 1):
            self.start_daemon(i)
            self.at(self.now + CHECK_EVERY * (0.5 + i * 0.3), partial(self._witness_loop, i))

    # ---- what an observer sees -----------------------------------------------------------------

    def owners(self) -> list[int]:
        return [h.index for h in self.hosts if h.vip and h.powered]


class Violation(AssertionError):
    pass


@dataclass
class Checker:
    """The promises, stated from the outside and checked after every step."""

    double_since: float | None = None
    unserved_since: float | None = None
    broken: dict[str, str] = field(default_factory=dict)

    def fail(self, name: str, why: str) -> None:
        self.broken.setdefault(name, why)

    def check(self, w: World) -> None:
        a, b = w.hosts
        both = a.vip and b.vip and a.visible and b.visible
        see_each_other = w.reaches(0, 1) or w.reaches(1, 0)
        if both and see_each_other:
            if self.double_since is None:
                self.double_since = w.now
            elif w.now - self.double_since > TWO_OWNER_BOUND:
                self.fail(
                    "two_owners",
                    f"both hold the VIP and can see each other since {self.double_since:.3f}"
                    f" (now {w.now:.3f})",
                )
        else:
            self.double_since = None
        served = any(h.vip and h.visible for h in w.hosts)
        able = any(
            h.alive and h.visible and not h.maintenance and not h.check_failed for h in w.hosts
        )
        if served or not able or w.add_failures:
            self.unserved_since = None
        elif self.unserved_since is None:
            self.unserved_since = w.now
        elif w.now - self.unserved_since > OUTAGE_BOUND:
            self.fail(
                "outage",
                f"nobody serves the VIP since {self.unserved_since:.3f} although a node could",
            )

    def on_acquire(self, w: World, i: int, action: Acquire, reason: Reason) -> None:
        host, other = w.hosts[i], w.hosts[1 - i]
        if not host.eligible_fed:
            self.fail(
                "ineligible_takes", f"{host.name} took the VIP at {w.now:.3f} while ineligible"
            )
        if reason is Reason.PROBE_SILENT and not w.port_ok_at(i, host.last_request):
            self.fail(
                "isolated_takes",
                f"{host.name} took the VIP at {w.now:.3f}: it was cut off when it last asked",
            )
        if (
            reason is Reason.PROBE_SILENT
            and w.loss == 0
            and other.vip
            and other.powered
            and w.reaches(0, 1)
            and w.reaches(1, 0)
        ):
            self.fail(
                "blind_takeover",
                f"{host.name} took the VIP at {w.now:.3f} while {other.name} visibly held it",
            )

    def on_resign(self, w: World, i: int) -> None:
        if w.hosts[i].vip:
            self.fail("resign_before_remove", f"{w.hosts[i].name} resigned while holding the VIP")

    def final(self, w: World) -> None:
        """After every fault healed and the pair had time to settle."""
        owners = w.owners()
        if len(owners) != 1:
            self.fail("settled_one_owner", f"owners at the end: {owners}")
            return
        owner = w.hosts[owners[0]]
        other = w.hosts[1 - owners[0]]
        if owner.fo is None or owner.fo.state is not State.ACTIVE:
            self.fail("owner_active", f"{owner.name} holds the VIP but is not ACTIVE")
        if other.fo is not None and other.fo.state is State.ACTIVE:
            self.fail("one_active", "both daemons are ACTIVE at the end")
        if w.preempt and not owner.primary:
            self.fail("preempt", "preempt is on but the secondary holds the VIP at the end")


# ---- random fault plans --------------------------------------------------------------------------

FAULTS = (
    "power",
    "kill",
    "stop",
    "freeze",
    "cut_hb",
    "partition",
    "port",
    "carrier",
    "one_way",
    "handover",
    "maintenance",
    "check",
)


def fault(w: World, kind: str, i: int) -> tuple[Action_, Action_]:
    """The (inflict, undo) pair of one fault on host i."""
    pair = (i, 1 - i)
    if kind == "power":
        return partial(w.power, i, False), partial(w.power, i, True)
    if kind == "kill":
        return partial(w.kill, i), partial(w.start_daemon, i)
    if kind == "stop":
        return partial(w.stop, i), partial(w.start_daemon, i)
    if kind == "freeze":
        return partial(w.freeze, i), partial(w.thaw, i)
    if kind == "cut_hb":
        return partial(w.set_hb_cut, True), partial(w.set_hb_cut, False)
    if kind == "partition":
        return partial(w.set_partition, True), partial(w.set_partition, False)
    if kind == "port":
        return partial(w.set_port, i, False), partial(w.set_port, i, True)
    if kind == "carrier":
        return partial(w.set_carrier, i, False), partial(w.set_carrier, i, True)
    if kind == "one_way":
        return partial(w.set_one_way, pair, True), partial(w.set_one_way, pair, False)
    if kind == "handover":  # the operator's command (refused unless it can work)
        return partial(w.feed, i, Handover()), lambda: None
    if kind == "maintenance":
        return partial(w.set_drained, i, "maintenance", True), partial(
            w.set_drained, i, "maintenance", False
        )
    if kind == "check":
        return partial(w.set_drained, i, "check_failed", True), partial(
            w.set_drained, i, "check_failed", False
        )
    raise ValueError(kind)


def random_plan(w: World, rng: random.Random, n_faults: int, horizon: float) -> float:
    """Schedule `n_faults` random faults, each undone later; returns when the last one heals."""
    healed = 0.0
    for _ in range(n_faults):
        kind = rng.choice(FAULTS)
        i = rng.randrange(2)
        t0 = rng.uniform(1.0, horizon)
        dur = rng.choice([0.1, 0.25, 0.5, 1.0, 1.2, 3.0, rng.uniform(0.05, 6.0)])
        inflict, undo = fault(w, kind, i)
        w.at(t0, partial(w.note, f"FAULT {kind} n{i + 1} for {dur:.2f}s", inflict))
        w.at(t0 + dur, partial(w.note, f"HEAL {kind} n{i + 1}", undo))
        healed = max(healed, t0 + dur)
    return healed


def simulate(
    seed: int,
    *,
    preempt: bool,
    n_faults: int = 3,
    horizon: float = 20.0,
    loss: float = 0.0,
    machine: Machine = Failover,
    add_failures: float = 0.0,
) -> tuple[World, Checker]:
    rng = random.Random(seed * 7919 + 1)
    w = World(preempt=preempt, seed=seed, loss=loss, machine=machine, add_failures=add_failures)
    checker = Checker()
    w.checker = checker
    w.boot()
    healed = random_plan(w, rng, n_faults, horizon)
    # A backend that keeps failing backs off (5, 10, 20 s...): give it the time to retry.
    end = max(healed, 2.0) + SETTLE + (40.0 if add_failures else 0.0)
    w.run_until(end)
    checker.final(w)
    return w, checker
