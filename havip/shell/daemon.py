"""The asyncio shell around the pure core: sockets, timers, the VIP backend, metrics, signals.

One loop owns everything. Events from the network, the timer and the backend are fed to the
failover machine on the loop thread; its actions run in order on one actuator task, so a Release
always completes before the SendResign that follows it. Blocking backend calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from havip import __version__
from havip.backends.base import Backend, BackendError
from havip.config import Config, Vip
from havip.core.failover import (
    Acquire,
    Action,
    BackendFailed,
    Event,
    Failover,
    FailoverTiming,
    PeerDown,
    PeerInfo,
    PeerQuiet,
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
    TransitionError,
    Vetoed,
)
from havip.core.session import PeerHello, PeerResign, PeerSession, PeerUpdate
from havip.core.states import LinkDown, Reason, State
from havip.core.wire import Message, ProtocolError
from havip.shell.epochstore import EpochStore
from havip.shell.httpd import start_http
from havip.shell.logs import event
from havip.shell.metrics import Metrics
from havip.shell.transport import (
    Connection,
    PeerRejected,
    client_context,
    dial,
    listen,
    server_context,
)

SECOND_ANNOUNCE_AFTER = 2.0  # keepalived's habit: a second gratuitous ARP burst a little later
RECONCILE_EVERY = 5.0  # also how often a freeze (SIGSTOP, paused VM) is noticed
SHUTDOWN_LIMIT = 5.0
FAULT_RETRY = 5.0
VETO_LOG_EVERY = 10.0
PROBE_OVERHEAD = 0.015  # a probe's socket set-up and thread hand-off, on top of its window


@dataclass(frozen=True, kw_only=True)
class _Reconcile:
    """Put the interface back in the state the machine wants (queued like any action)."""


@dataclass(eq=False)
class _Link:
    conn: Connection
    session: PeerSession
    speak_first: bool
    up: bool = False
    quiet: bool = (
        False  # PeerQuiet reported for the current silence  # HELLO accepted on this connection
    )
    inherited: bool = False  # replaced a connection the core still counts as up


class Daemon:
    """`havip run`: one node of the pair."""

    def __init__(self, cfg: Config, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        t = cfg.timing
        self.epochs = EpochStore(cfg.state_dir, cfg.node)
        self.failover = Failover(
            is_primary=cfg.is_primary,
            preempt=cfg.preempt,
            timing=FailoverTiming(
                retry_interval=t.keepalive_interval,
                startup_wait=t.dead_time + t.reconnect_max,
                preempt_delay=t.preempt_delay,
                fault_retry=FAULT_RETRY,
            ),
            epoch=self.epochs.load(),
            now=self.loop.time(),
        )
        self.metrics = Metrics(
            node=cfg.node,
            peer=cfg.peer_name,
            vips=[str(v) for v in cfg.vips],
            states=[s.value for s in State],
            reasons=[r.value for r in Reason],
            version=__version__,
        )
        self.boot_id = os.urandom(16)
        # Built once: a bad certificate or key stops the daemon at start, not at the first peer.
        self.tls = server_context(cfg.tls) if cfg.is_primary else client_context(cfg.tls)
        # Probe this long before the deadline when the peer goes quiet, so a real failure is
        # already checked when the deadline passes; never so early that one late keepalive
        # (half an interval) counts as quiet.
        lead = min(t.probe_window + PROBE_OVERHEAD, t.dead_time - 1.5 * t.keepalive_interval)
        self._quiet_lead: float | None = lead if lead > 0 else None
        self.link: _Link | None = None
        self.actions: asyncio.Queue[Action | _Reconcile] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self.done = asyncio.Event()
        self.owned: dict[str, bool] = {str(v): False for v in cfg.vips}
        self.last_rtt: float | None = None
        self.since_wall = time.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.exit_code = 0
        self.servers: list[asyncio.Server] = []
        self._veto_logged_at: float | None = None
        self._vetoes = 0

    # ---- entry point ---------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.cfg
        role = "primary" if cfg.is_primary else "standby"
        event(
            "started",
            state=self.failover.state,
            role=role,
            backend=self.backend.name,
            vips=",".join(str(v) for v in cfg.vips),
            epoch=self.failover.epoch,
            version=__version__,
        )
        self.metrics.set_state(self.failover.state)
        self.metrics.set_epoch(self.failover.epoch)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._request_stop)
        if cfg.metrics_listen is not None:
            host, port = cfg.metrics_listen
            self.servers.append(
                await start_http(host, port, metrics=self.metrics, status=self.status)
            )
        if cfg.is_primary:
            host, port = cfg.listen
            self.servers.append(
                await listen(
                    host,
                    port,
                    self.tls,
                    cfg.peer_name,
                    cfg.timing.handshake_timeout,
                    lambda conn: self._start_link(conn, speak_first=True),
                    self._on_reject,
                )
            )
        else:
            self._spawn(self._dial_loop())
        present = any(
            await asyncio.gather(*(asyncio.to_thread(self.backend.present, v) for v in cfg.vips))
        )
        if present:
            event("vip_found", "an earlier run left the VIP on our interface", level=logging.INFO)
        self._spawn(self._actuator())
        self._spawn(self._reconcile_loop())
        self.feed(Start(present=present))
        # Everything loaded so far lives as long as the daemon: keep the collector from
        # re-scanning it every time its oldest generation fills.
        gc.freeze()
        await self.done.wait()
        if self._timer is not None:
            self._timer.cancel()
        for server in self.servers:
            server.close()
        if self.link is not None:
            await self.link.conn.drain(0.5)
            self.link.conn.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.backend.close()
        event("stopped", state=self.failover.state, epoch=self.failover.epoch)
        return self.exit_code

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._fail(f"task failed: {task.exception()!r}")

    def _fail(self, why: str) -> None:
        event("internal_error", why, level=logging.CRITICAL)
        self.exit_code = 1
        self.done.set()

    def _request_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.loop.call_later(SHUTDOWN_LIMIT, self.done.set)
        self.feed(Shutdown())

    # ---- feeding the core ---------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        """Give one event to the failover machine and dispatch what it decides."""
        try:
            actions = self.failover.handle(ev, self.loop.time())
        except TransitionError as exc:
            # A bug in the core, not the peer's doing: stop (the host keeps any VIP it holds,
            # and a restarted daemon resumes) rather than run on in an unknown state.
            self._fail(f"state machine error: {exc}")
            return
        for action in actions:
            if isinstance(action, Transition):
                self._log_transition(action)
            elif isinstance(action, Vetoed):
                self._on_vetoed(action)
            elif isinstance(action, Probe):
                self._spawn(self._probe(action))
            else:
                self.actions.put_nowait(action)
        self.metrics.set_epoch(self.failover.epoch)
        if self.failover.state is not State.ACTIVE:
            # Adopting a higher epoch from the peer must be durable too.
            self._save_epoch()
        self._arm()

    def _on_vetoed(self, action: Vetoed) -> None:
        for vip in self.cfg.vips:
            self.metrics.takeover_vetoed(str(vip))
        self._vetoes += 1
        now = self.loop.time()
        # A crashed daemon on a live host is vetoed every interval: log once, then a summary.
        if self._veto_logged_at is not None and now - self._veto_logged_at < VETO_LOG_EVERY:
            return
        first = self._veto_logged_at is None
        event(
            "takeover_vetoed",
            "somebody on the LAN still answers for the VIP: not taking it"
            + ("" if first else f" (still, {self._vetoes} probes answered)"),
            level=logging.WARNING if first else logging.INFO,
            mac=action.answered_by,
            vip=",".join(str(v) for v in self.cfg.vips),
        )
        self._veto_logged_at, self._vetoes = now, 0

    def _save_epoch(self) -> None:
        try:
            self.epochs.save(self.failover.epoch)
        except OSError as exc:
            event("epoch_save_failed", str(exc), level=logging.ERROR, path=self.epochs.path)

    def _log_transition(self, tr: Transition) -> None:
        self.since_wall = time.time()
        self._veto_logged_at, self._vetoes = None, 0
        self.metrics.set_state(tr.to)
        self.metrics.transition(tr.frm, tr.to, tr.reason)
        peer = self.failover.peer
        event(
            "transition",
            tr.sentence,
            level=logging.WARNING if tr.to in (State.ACTIVE, State.FAULT) else logging.INFO,
            **{"from": tr.frm.value},
            to=tr.to,
            reason=tr.reason,
            epoch=tr.epoch,
            peer_state=peer.state if peer else "down",
        )

    # ---- actions ------------------------------------------------------------------------------

    async def _actuator(self) -> None:
        while True:
            action = await self.actions.get()
            await self._do(action)

    async def _do(self, action: Action | _Reconcile) -> None:
        if isinstance(action, Acquire):
            await self._acquire(action.epoch)
        elif isinstance(action, Release):
            await self._release(action.reason)
        elif isinstance(action, SendResign):
            link = self.link
            if link is not None and link.up:
                link.conn.send(link.session.resign(action.epoch))
                await link.conn.drain(1.0)
                event("resign_sent", "handed the VIP over", peer=self.cfg.peer_name)
        elif isinstance(action, Stop):
            self.done.set()
        elif isinstance(action, _Reconcile):
            await self._reconcile()

    async def _call(self, op: str, fn: Callable[..., object], *args: object) -> object:
        try:
            return await asyncio.to_thread(fn, *args)
        except BackendError as exc:
            self.metrics.backend_error(op)
            event("backend_error", str(exc), level=logging.ERROR, op=op)
            self.feed(BackendFailed(op=op, error=str(exc)))
            raise

    async def _acquire(self, epoch: int) -> None:
        self._save_epoch()  # durable before we claim anything with it
        for vip in self.cfg.vips:
            try:
                await self._call("add", self.backend.add, vip)
            except BackendError:
                return
            self._set_owned(vip, True)
            event("vip_added", vip=vip, interface=vip.interface, epoch=epoch)
        await self._announce()
        self._spawn(self._announce_later(epoch))

    def _set_owned(self, vip: Vip, owned: bool) -> None:
        """Record what the interface holds, for /status and the metric alike."""
        self.owned[str(vip)] = owned
        self.metrics.set_vip_owned(str(vip), owned)

    async def _announce(self) -> None:
        for vip in self.cfg.vips:
            try:
                frames = await asyncio.to_thread(self.backend.announce, vip)
            except BackendError as exc:
                # Not fatal: the VIP is up; clients will find it by ARP on their own.
                self.metrics.backend_error("announce")
                event("backend_error", str(exc), level=logging.ERROR, op="announce")
                continue
            self.metrics.garp_sent(frames)
            event("garp_sent", vip=vip, frames=frames)

    async def _announce_later(self, epoch: int) -> None:
        await asyncio.sleep(SECOND_ANNOUNCE_AFTER)
        if self.failover.state is State.ACTIVE and self.failover.epoch == epoch:
            await self._announce()

    async def _release(self, reason: Reason) -> None:
        for vip in self.cfg.vips:
            with contextlib.suppress(BackendError):
                await self._call("remove", self.backend.remove, vip)
                self._set_owned(vip, False)
                event("vip_removed", vip=vip, reason=reason)

    async def _probe(self, probe: Probe) -> None:
        t = self.cfg.timing
        results = await asyncio.gather(
            *(
                asyncio.to_thread(self.backend.probe, vip, t.probe_count, t.probe_window)
                for vip in self.cfg.vips
            ),
            return_exceptions=True,
        )
        answered: str | None = None
        for vip, result in zip(self.cfg.vips, results, strict=True):
            if isinstance(result, BaseException):
                self.metrics.backend_error("probe")
                event("backend_error", str(result), level=logging.ERROR, op="probe", vip=vip)
                self.feed(BackendFailed(op="probe", error=str(result)))
                return
            self.metrics.arp_probe(result is not None)
            event(
                "probe",
                vip=vip,
                purpose=probe.purpose,
                result="answered" if result else "silent",
                mac=result,
                level=logging.DEBUG if result else logging.INFO,
            )
            answered = answered or result
        self.feed(ProbeDone(probe_id=probe.probe_id, answered_by=answered))

    async def _reconcile_loop(self) -> None:
        stall = self.cfg.timing.dead_time
        while True:
            before = self.loop.time()
            await asyncio.sleep(RECONCILE_EVERY)
            late = self.loop.time() - before - RECONCILE_EVERY
            if late > stall:
                # Frozen (SIGSTOP, a paused VM): the peer may have taken over meanwhile.
                event("resumed", f"this process did not run for {late:.1f}s", level=logging.WARNING)
                self.feed(Resumed())
            self.actions.put_nowait(_Reconcile())

    async def _reconcile(self) -> None:
        state = self.failover.state
        if state not in (State.ACTIVE, State.STANDBY, State.FAULT):
            return
        for vip in self.cfg.vips:
            try:
                present = await asyncio.to_thread(self.backend.present, vip)
            except BackendError as exc:
                self.metrics.backend_error("present")
                event("backend_error", str(exc), level=logging.ERROR, op="present")
                continue
            want = state is State.ACTIVE
            if present == want:
                continue
            event(
                "drift",
                "the interface disagrees with our state: putting it back",
                level=logging.WARNING,
                vip=vip,
                state=state,
                present=present,
            )
            if want:
                with contextlib.suppress(BackendError):
                    await self._call("add", self.backend.add, vip)
                    await self._announce()
            else:
                with contextlib.suppress(BackendError):
                    await self._call("remove", self.backend.remove, vip)
            self._set_owned(vip, want)

    # ---- the timer ----------------------------------------------------------------------------

    def _arm(self) -> None:
        """(Re)arm the one timer at the earliest moment the link or the machine needs us."""
        now = self.loop.time()
        wakeups: list[float] = []
        link = self.link
        if link is not None:
            wakeups.append(link.session.next_wakeup() if link.up else link.session.deadline)
            if link.up and not link.quiet and self._quiet_lead is not None:
                wakeups.append(link.session.deadline - self._quiet_lead)
        due = self.failover.next_timer()
        if due is not None and due > now:  # a timer already handled must not make us spin
            wakeups.append(due)
        when = min(wakeups) if wakeups else None
        if self._timer is not None:
            if when == self._timer.when():
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer) if when is not None else None

    def _send_keepalive(self, link: _Link, now: float) -> None:
        link.conn.send(link.session.keepalive(self.failover.local_status(), now))
        self.metrics.keepalive_sent()

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        link = self.link
        if link is not None:
            if link.session.expired(now):
                if link.up:
                    self.metrics.keepalive_missed()
                self._drop(link, LinkDown.DEADLINE_MISSED, "no keepalive within the dead time")
            else:
                if link.up and now >= link.session.next_send:
                    self._send_keepalive(link, now)
                lead = self._quiet_lead
                quiet = lead is not None and now >= link.session.deadline - lead
                if link.up and not link.quiet and quiet:
                    link.quiet = True
                    self.feed(PeerQuiet())
        due = self.failover.next_timer()
        if due is not None and due <= now:
            self.feed(Tick())
        self._arm()

    # ---- the peer link ------------------------------------------------------------------------

    def _on_reject(self, exc: PeerRejected) -> None:
        self.metrics.peer_rejected(exc.reason)
        event("peer_rejected", exc.detail, level=logging.WARNING, reason=exc.reason)

    async def _dial_loop(self) -> None:
        cfg = self.cfg
        t = cfg.timing
        host, port = cfg.peer_address
        failing = False
        while not self._stopping:
            conn: Connection | None = None
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(
                    multiplier=t.keepalive_interval,
                    max=t.reconnect_max,
                    jitter=t.keepalive_interval,
                ),
                retry=retry_if_exception_type((OSError, PeerRejected)),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    try:
                        conn = await dial(host, port, self.tls, cfg.peer_name, t.handshake_timeout)
                    except (OSError, PeerRejected) as exc:
                        if isinstance(exc, PeerRejected):
                            self.metrics.peer_rejected(exc.reason)
                        if not failing:
                            failing = True
                            event(
                                "peer_unreachable",
                                f"retrying every <= {t.reconnect_max}s",
                                level=logging.WARNING,
                                peer=cfg.peer_name,
                                addr=f"{host}:{port}",
                                error=str(exc),
                            )
                        raise
            failing = False
            if conn is not None:
                started = self.loop.time()
                self._start_link(conn, speak_first=False)
                await conn.done
                if self.loop.time() - started < 1.0:
                    await asyncio.sleep(t.keepalive_interval)

    def _start_link(self, conn: Connection, *, speak_first: bool) -> None:
        """Take `conn` as the one peer link (the primary speaks first)."""
        t = self.cfg.timing
        session = PeerSession(
            me=self.cfg.node,
            peer=self.cfg.peer_name,
            primary=self.cfg.primary,
            preempt=self.cfg.preempt,
            boot_id=self.boot_id,
            interval=t.keepalive_interval,
            dead_time=t.dead_time,
            now=self.loop.time(),
            hello_timeout=max(t.dead_time, t.handshake_timeout),
        )
        link = _Link(conn, session, speak_first=speak_first)
        old = self.link
        self.link = link
        if old is not None:
            # A new authenticated connection replaces the old one, silently for the core.
            old.conn.close()
            link.inherited = old.up or old.inherited
        if speak_first:
            conn.send(session.hello(self.failover.local_status()))
        conn.attach(
            lambda msg: self._on_message(link, msg), lambda why: self._on_link_end(link, why)
        )
        self._arm()

    def _on_message(self, link: _Link, msg: Message) -> None:
        """One message from the peer; a ProtocolError raised here closes the connection."""
        if self.link is not link:
            return
        self._on_session_event(link, link.session.receive(msg, self.loop.time()))

    def _on_link_end(self, link: _Link, why: BaseException | None) -> None:
        if isinstance(why, ProtocolError):
            self.metrics.protocol_error(why.kind)
            event(
                "protocol_error",
                why.detail,
                level=logging.WARNING,
                kind=why.kind,
                peer=self.cfg.peer_name,
                addr=link.conn.peer_addr,
            )
            self._drop(link, LinkDown.PROTOCOL_ERROR, str(why))
        else:
            text = "peer closed the connection" if why is None else str(why) or type(why).__name__
            self._drop(link, LinkDown.CONNECTION_LOST, text)

    def _on_session_event(self, link: _Link, ev: PeerHello | PeerUpdate | PeerResign) -> None:
        if isinstance(ev, PeerHello):
            if not link.speak_first:
                link.conn.send(link.session.hello(self.failover.local_status()))
            link.up = True
            self.metrics.peer_connected_event()
            self.metrics.set_peer_connected(True)
            self.metrics.set_peer_state(ev.status.state)
            event(
                "peer_up",
                peer=self.cfg.peer_name,
                addr=link.conn.peer_addr,
                peer_state=ev.status.state,
                peer_owns=ev.status.owns,
                peer_epoch=ev.status.epoch,
            )
            self.feed(PeerUp(status=ev.status))
        elif isinstance(ev, PeerUpdate):
            self.metrics.keepalive_received()
            if ev.rtt is not None:
                self.last_rtt = ev.rtt
                self.metrics.observe_rtt(ev.rtt)
            if ev.status != self.failover.peer or link.quiet:
                link.quiet = False
                # A repeated status is a no-op for the machine (its timers come from Tick),
                # and this runs for every keepalive: skip the work.
                self.metrics.set_peer_state(ev.status.state)
                self.feed(PeerInfo(status=ev.status))
            now = self.loop.time()
            if link.up and self.link is link and link.session.reply_due(now):
                self._send_keepalive(link, now)
                self._arm()
        else:
            event("resign_received", "peer handed the VIP over", peer=self.cfg.peer_name)
            self.feed(PeerResigned(epoch=ev.epoch))

    def _drop(self, link: _Link, reason: LinkDown, why: str) -> None:
        link.conn.close()
        if self.link is not link:
            return
        self.link = None
        self.metrics.set_peer_connected(False)
        self.metrics.set_peer_state(None)
        if not (link.up or link.inherited):
            event("peer_dropped", why, level=logging.INFO, addr=link.conn.peer_addr, reason=reason)
            return
        event(
            "peer_lost",
            why,
            level=logging.WARNING,
            peer=self.cfg.peer_name,
            reason=reason,
            state=self.failover.state,
        )
        self.feed(PeerDown(reason=reason))

    # ---- status -------------------------------------------------------------------------------

    def status(self) -> Mapping[str, object]:
        """What `havip status` shows."""
        fo = self.failover
        peer = fo.peer
        return {
            "node": self.cfg.node,
            "peer": self.cfg.peer_name,
            "role": "primary" if self.cfg.is_primary else "standby",
            "state": fo.state.value,
            "reason": fo.reason.value,
            "since": self.since_wall,
            "epoch": fo.epoch,
            "owns_vip": fo.owns,
            "vips": [
                {"address": str(v), "interface": v.interface, "present": self.owned[str(v)]}
                for v in self.cfg.vips
            ],
            "peer_connected": self.link is not None and self.link.up,
            "peer_state": peer.state.value if peer else None,
            "peer_owns_vip": peer.owns if peer else None,
            "peer_epoch": peer.epoch if peer else None,
            "rtt_seconds": self.last_rtt,
            "backend": self.backend.name,
            "version": __version__,
        }
