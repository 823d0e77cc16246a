"""The switchboard between the pure core and the world.

One loop owns everything. Events from the peer link (`peerlink`), the LAN (`lanwatch`: probes,
claims, link state), the timer and the actuator are fed to the failover machine on the loop
thread; its actions go to the actuator's queue (`actuator`), which runs them in order, so a
Release always completes before the SendResign that follows it and no announcement follows a
release. Eligibility (`havip.core.eligibility`) turns link states, witness checks, health checks
(`checks`) and the maintenance switch (`maintenance`) into one yes/no for the machine. Hooks
(`hooks`) run after the effects of each transition; the operator's commands (`control`) and
reloads (SIGHUP) come in here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address

from havip import __version__
from havip.backends.base import Backend, LinkState
from havip.config import Config, Vip, witness_plan
from havip.core.eligibility import Eligibility
from havip.core.events import (
    Acquire,
    Acquired,
    Announce,
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
    Failover,
    TransitionError,
)
from havip.core.states import Cause, Reason, State
from havip.shell.actuator import Actuator, Reconcile, Then
from havip.shell.certinfo import CertInfo, peer_certificate, read_pem_file
from havip.shell.checks import Checks
from havip.shell.control import (
    HANDOVER_WAIT,
    RELOAD_WAIT,
    CommandRefused,
    Reply,
    remove_control,
    start_control,
)
from havip.shell.epochstore import EpochCorrupt, EpochStore
from havip.shell.hooks import HookRunner
from havip.shell.httpd import serve_metrics
from havip.shell.lanwatch import LanWatch, ProbeOutcome
from havip.shell.logs import event
from havip.shell.maintenance import MaintenanceSwitch
from havip.shell.metrics import ConflictKind, Metrics, ProbeResult
from havip.shell.peerlink import PeerLink
from havip.shell.reload import ReloadRefused, prepare_reload, tls_context, tls_digest
from havip.shell.sdnotify import Notifier

RECONCILE_EVERY = 5.0
CHECK_EVERY = 1.0  # witness checks (and, while we own the VIP, a probe for third hosts)
SHUTDOWN_LIMIT = 5.0
FAULT_RETRY = 5.0
FAULT_RETRY_MAX = 60.0
ANNOUNCE_AGAIN = 2.0  # keepalived's habit: a second gratuitous ARP burst a little later
ANNOUNCE_INTERVAL = 0.5  # while we own the VIP and the peer link is down
CONFLICT_GRACE = 0.15
PROBE_SPACING_MAX = 0.1
QUIET_LOG_EVERY = 10.0  # repeated vetoes, isolation and conflicts: one line, then a summary
# Transitions logged as warnings (besides a failover): the node lost the VIP or cannot serve.
_NOTEWORTHY = frozenset(
    {
        Reason.BACKEND_FAILED,
        Reason.CONFLICT,
        Reason.HIGHER_EPOCH,
        Reason.PROBE_ANSWERED,
        Reason.INELIGIBLE,
    }
)
WAIT_STEP = 0.05  # how often an operator command looks whether its effect happened


class _Summary:
    """Log the first of a repeated condition, then one summary line every QUIET_LOG_EVERY."""

    def __init__(self) -> None:
        self.logged_at: float | None = None
        self.count = 0

    def due(self, now: float) -> tuple[bool, bool, int]:
        """(log now?, first time?, occurrences since the last line)."""
        self.count += 1
        if self.logged_at is not None and now - self.logged_at < QUIET_LOG_EVERY:
            return False, False, self.count
        first, count = self.logged_at is None, self.count
        self.logged_at, self.count = now, 0
        return True, first, count

    def reset(self) -> None:
        self.logged_at, self.count = None, 0


class Daemon:
    """`havip run`: one node of the pair."""

    def __init__(self, cfg: Config, backend: Backend, *, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        # systemd's Type=notify (READY, STATUS, WATCHDOG); silent when not under systemd.
        self.notifier = notifier if notifier is not None else Notifier(environ={})
        self.loop = asyncio.get_running_loop()
        t = cfg.timing
        self.epochs = EpochStore(cfg.state_dir, cfg.node)
        self.epoch_known = True
        try:
            epoch = self.epochs.load()
        except EpochCorrupt as exc:
            # Start safely instead of not at all: learn the epoch from the peer, probe first.
            event("epoch_corrupt", str(exc), level=logging.ERROR, path=self.epochs.path)
            epoch, self.epoch_known = 0, False
        self.failover = Failover(
            is_primary=cfg.is_primary,
            preempt=cfg.preempt,
            timing=FailoverTiming(
                retry_interval=t.keepalive_interval,
                startup_wait=t.dead_time + t.reconnect_max,
                preempt_delay=t.preempt_delay,
                fault_retry=FAULT_RETRY,
                fault_retry_max=FAULT_RETRY_MAX,
                probe_window=t.probe_window,
                blip_guard=t.guard,
                dead_time=t.dead_time,
                announce_again=ANNOUNCE_AGAIN,
                announce_interval=ANNOUNCE_INTERVAL,
                conflict_grace=CONFLICT_GRACE,
            ),
            epoch=epoch,
            now=self.loop.time(),
            fence=cfg.hooks.fence is not None,
            fence_required=cfg.hooks.fence_required,
        )
        self.metrics = Metrics(
            node=cfg.node,
            peer=cfg.peer_name,
            vips=[(v.ip, v.interface) for v in cfg.vips],
            states=[s.value for s in State],
            reasons=[r.value for r in Reason],
            causes=[c.value for c in Cause if c is not Cause.OK],
            version=__version__,
        )
        self.maintenance = MaintenanceSwitch(cfg.state_dir, cfg.node)
        on, since = self.maintenance.load()
        self.maintenance_since: float | None = since if on else None
        self.in_maintenance = on
        self.metrics.set_maintenance(on)
        self.checks = Checks(cfg.checks, metrics=self.metrics, on_change=self._on_checks)
        self.hooks = HookRunner(
            cfg.hooks,
            metrics=self.metrics,
            node=cfg.node,
            peer=cfg.peer_name,
            vips=[str(v) for v in cfg.vips],
        )
        self.boot_id = os.urandom(16)
        # Built once: a bad certificate or key stops the daemon at start, not at the first peer.
        self.tls = tls_context(cfg)
        self._tls_digest = tls_digest(cfg.tls)
        self._reloading = False
        self._status_sent = ""  # the last STATUS= told to systemd
        self.certificates: dict[str, list[CertInfo]] = {}  # own, ca, peer: what is in use
        self._read_certificates(cfg)
        self.metrics.peer_keepalive_source(self._keepalive_age)
        self._failure_at: float | None = None  # the failure signal not yet followed by a takeover
        self._takeover_from: float | None = None  # a failover waiting for its VIP to be up
        self.link = PeerLink(
            cfg,
            self.tls,
            self.metrics,
            boot_id=self.boot_id,
            status=self.failover.local_status,
            mac=self._vip_mac,
            feed=self.feed,
            rearm=self._arm,
            spawn=self._spawn,
        )
        self.done = asyncio.Event()
        self.lan: LanWatch | None = None
        self.eligibility: Eligibility | None = None
        self._eligible: tuple[bool, Cause] = (True, Cause.OK)
        self.actuator = Actuator(
            backend=backend,
            vips=cfg.vips,
            epochs=self.epochs,
            metrics=self.metrics,
            feed=self.feed,
            state=lambda: self.failover.state,
            resign=self.link.send_resign,
            probe_owner=self._probe_owner,
            stop=self.done.set,
        )
        self._timer: asyncio.TimerHandle | None = None
        self.since_wall = time.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.exit_code = 0
        self.servers: list[asyncio.AbstractServer] = []
        self._vetoes = _Summary()
        self._isolation = _Summary()
        self._conflicts: dict[tuple[str, str], _Summary] = {}
        self.witness_warnings: list[str] = []
        self.witnesses: Mapping[str, Sequence[IPv4Address | IPv6Address]] = {}
        self._link_events = 0  # link changes seen so far (a check compares before and after)

    @property
    def owned(self) -> dict[str, bool]:
        return self.actuator.owned

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
            pid=os.getpid(),
            keepalive=cfg.timing.keepalive_interval,
            dead_time=cfg.timing.dead_time,
            probe_window=cfg.timing.probe_window,
            version=__version__,
        )
        self.metrics.set_state(self.failover.state)
        self.metrics.set_epoch(self.failover.epoch)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._request_stop)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self.in_maintenance:
            event(
                "maintenance",
                "maintenance is on (set before this start): will not claim the VIP",
                level=logging.WARNING,
                on="true",
                path=self.maintenance.path,
            )
        if cfg.control_socket is not None:
            handlers: dict[str, Callable[[dict[str, object]], Awaitable[Reply] | Reply]] = {
                "status": lambda _req: self.status(),
                "handover": self._cmd_handover,
                "maintenance": self._cmd_maintenance,
                "reload": lambda _req: self.reload("command"),
            }
            self.servers.append(await start_control(cfg.control_socket, handlers))
        # Checks start first: their first results usually arrive before the first decision.
        self._spawn(self.checks.run())
        if cfg.metrics_listen is not None:
            host, port = cfg.metrics_listen
            self._spawn(
                serve_metrics(
                    host,
                    port,
                    metrics=self.metrics,
                    status=self.status,
                    on_bind_error=self._on_metrics_bind_error,
                    on_refused=self.metrics.http_refused,
                    web_config=cfg.metrics_web_config,
                )
            )
        await self._start_lan()
        self.servers.extend(await self.link.start())
        found = await asyncio.gather(
            *(asyncio.to_thread(self.backend.present, v) for v in cfg.vips)
        )
        for vip, here in zip(cfg.vips, found, strict=True):
            self.actuator.set_owned(vip, here)
        present = any(found)
        if present:
            event("vip_found", "an earlier run left the VIP on our interface", level=logging.INFO)
        self._spawn(self.actuator.run())
        self._spawn(self.hooks.run())
        self._spawn(self._reconcile_loop())
        self._spawn(self._check_loop())
        self.feed(Start(present=present, epoch_known=self.epoch_known))
        self.notifier.ready(self._status_line())
        watchdog = self.notifier.watchdog_interval()
        if watchdog is not None:
            self._spawn(self._watchdog_loop(watchdog))
        # Everything loaded so far lives as long as the daemon: keep the collector from
        # re-scanning it every time its oldest generation fills.
        gc.freeze()
        await self.done.wait()
        if self._timer is not None:
            self._timer.cancel()
        if self._stopping:
            # notify_stopped (queued after the release and the RESIGN) gets its chance.
            await self.hooks.drain(SHUTDOWN_LIMIT)
        for server in self.servers:
            server.close()
        if cfg.control_socket is not None:
            remove_control(cfg.control_socket)
        await self.link.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.lan is not None:
            self.lan.close()
        self.backend.close()
        event("stopped", state=self.failover.state, epoch=self.failover.epoch)
        return self.exit_code

    async def _start_lan(self) -> None:
        cfg = self.cfg
        witnesses, warnings = await asyncio.to_thread(witness_plan, cfg)
        for text in warnings:
            event("no_witness", text, level=logging.WARNING)
        self.witness_warnings = warnings
        self.witnesses = witnesses
        self.lan = LanWatch(
            self.backend,
            cfg.vips,
            witnesses,
            on_claim=self._on_claim,
            on_link=self._on_link,
        )
        await self.lan.start()
        interfaces = sorted({v.interface for v in cfg.vips})
        now = self.loop.time()
        self.eligibility = Eligibility(
            interfaces,
            debounce=cfg.timing.dead_time,
            witnesses=self.lan.has_witnesses,
            now=now,
        )
        for name in interfaces:
            self.eligibility.link(name, self.lan.link(name), now)
        self.eligibility.checks(self.checks.passing() is not False)
        self.eligibility.maintenance(self.in_maintenance)
        event(
            "lan_watch",
            interfaces=",".join(interfaces),
            witnesses=",".join(str(w) for ws in witnesses.values() for w in ws) or "none",
        )
        self._update_eligibility()

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
        self.notifier.stopping()
        self.link.stopping = True
        self.loop.call_later(SHUTDOWN_LIMIT, self.done.set)
        self.feed(Shutdown())

    def _on_sighup(self) -> None:
        self._spawn(self._reload_quietly("sighup"))

    async def _reload_quietly(self, source: str) -> None:
        with contextlib.suppress(CommandRefused):  # already logged and counted
            await self.reload(source)

    def _on_metrics_bind_error(self, exc: OSError) -> None:
        self.metrics.metrics_bind_error()
        event(
            "metrics_listen_failed",
            f"{exc.strerror or exc}; retrying in 5s",
            level=logging.ERROR,
            addr="{}:{}".format(*self.cfg.metrics_listen) if self.cfg.metrics_listen else None,
        )

    # ---- feeding the core ----------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        """Give one event to the failover machine and dispatch what it decides."""
        self._notice_freeze()
        self._time_takeover(ev)
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
            elif isinstance(action, Isolated):
                self._on_isolated(action)
            elif isinstance(action, Conflict):
                self._on_conflict(action)
            elif isinstance(action, Probe):
                self._spawn(self._probe(action))
            elif isinstance(action, Fence):
                self._spawn(self._fence(action))
            elif isinstance(action, Acquire | Release | Announce | SendResign | Stop):
                self.actuator.put(action)
        fo = self.failover
        self.metrics.set_epoch(fo.epoch)
        self.metrics.set_isolated(fo.isolated or fo.suspect)
        self.metrics.set_peer_eligible(fo.peer.eligible if fo.peer else None)
        if fo.state is not State.ACTIVE:
            # Adopting a higher epoch from the peer must be durable too.
            self._save_epoch()
        if self.notifier.enabled:  # not under systemd: no string to build on every event
            line = self._status_line()
            if line != self._status_sent:
                self._status_sent = line
                self.notifier.status(line)
        self._arm()

    def _read_certificates(self, cfg: Config) -> None:
        """Our certificate and the CA's, for their expiry in metrics and status (read without
        `cryptography`: the daemon never loads it)."""
        for role, path in (("own", cfg.tls.cert), ("ca", cfg.tls.ca)):
            try:
                certs = read_pem_file(path)
            except (OSError, ValueError) as exc:
                event("certificate_unreadable", str(exc), level=logging.WARNING, role=role)
                certs = []
            self._set_certificates(role, certs)

    def _set_certificates(self, role: str, certs: list[CertInfo]) -> None:
        self.certificates[role] = certs
        self.metrics.set_certificates(role, certs or None)

    def _time_takeover(self, ev: Event) -> None:
        """Takeover duration: from the failure signal (the peer link lost) to the VIP up and
        announced here (Acquired, fed by the actuator after the add and the burst)."""
        now = self.loop.time()
        if isinstance(ev, PeerDown) and self._failure_at is None:
            self._failure_at = now
        elif isinstance(ev, PeerUp):
            self._failure_at = None
            link = self.link.current
            cert = peer_certificate(link.conn.transport if link is not None else None)
            self._set_certificates("peer", [cert] if cert is not None else [])
        elif isinstance(ev, Acquired) and self._takeover_from is not None:
            self.metrics.observe_takeover(now - self._takeover_from)
            self._takeover_from = None

    def _save_epoch(self) -> None:
        try:
            self.epochs.save(self.failover.epoch)
        except (OSError, ValueError) as exc:
            event("epoch_save_failed", str(exc), level=logging.ERROR, path=self.epochs.path)

    def _log_transition(self, tr: Transition) -> None:
        # Hooks run once the effects queued before this transition are done (the VIP added and
        # announced, or removed and handed over), on their own queue: they never delay one.
        self.actuator.put(
            Then(
                fn=lambda: self.hooks.notify(
                    state=tr.to,
                    old_state=tr.frm,
                    reason=tr.reason,
                    sentence=tr.sentence,
                    epoch=tr.epoch,
                )
            )
        )
        self.since_wall = time.time()
        self._vetoes.reset()
        self._isolation.reset()
        self.metrics.set_state(tr.to)
        self.metrics.transition(tr.frm, tr.to, tr.reason)
        peer = self.failover.peer
        failover = tr.to is State.ACTIVE and tr.reason is Reason.PROBE_SILENT
        failover = failover and self._failure_at is not None
        if failover:
            self._takeover_from, self._failure_at = self._failure_at, None
        event(
            "transition",
            tr.sentence,
            # A start, a resume or a planned handover is routine; a failover, a fault or
            # giving the VIP up for a conflict or a broken link is news for the operator.
            level=logging.WARNING if failover or tr.reason in _NOTEWORTHY else logging.INFO,
            **{"from": tr.frm.value},
            to=tr.to,
            reason=tr.reason,
            epoch=tr.epoch,
            peer_state=peer.state if peer else "down",
            eligible=self._eligible[0],
        )

    def _on_vetoed(self, action: Vetoed) -> None:
        for vip in self.cfg.vips:
            self.metrics.takeover_vetoed(vip.ip, vip.interface)
        # A crashed daemon on a live host is vetoed every interval: log once, then a summary.
        log, first, count = self._vetoes.due(self.loop.time())
        if log:
            event(
                "takeover_vetoed",
                "somebody on the LAN still answers for the VIP: not taking it"
                + ("" if first else f" (still, {count} probes answered)"),
                level=logging.WARNING if first else logging.INFO,
                mac=action.answered_by,
                peer_mac=self.failover.peer_mac,
                vip=",".join(str(v) for v in self.cfg.vips),
            )

    def _on_isolated(self, action: Isolated) -> None:
        log, first, count = self._isolation.due(self.loop.time())
        if log:
            event(
                "isolated",
                action.sentence + ("" if first else f" (still, {count} probes)"),
                level=logging.WARNING if first else logging.INFO,
                state=self.failover.state,
            )

    def _on_conflict(self, action: Conflict) -> None:
        kind = ConflictKind.PEER if action.peer else ConflictKind.FOREIGN
        self.metrics.conflict(kind, action.verdict)
        summary = self._conflicts.setdefault((action.mac, action.verdict), _Summary())
        log, first, count = summary.due(self.loop.time())
        if log:
            who = "the peer" if action.peer else "an unknown host (forged or misconfigured?)"
            what = "we keep it and announce" if action.verdict == "keep" else "we give it up"
            event(
                "conflict",
                f"{who} claims our VIP: {what}" + ("" if first else f" (again, {count} times)"),
                level=logging.ERROR if not action.peer else logging.WARNING,
                mac=action.mac,
                peer=str(action.peer).lower(),
                verdict=action.verdict,
                vip=",".join(str(v) for v in self.cfg.vips),
            )

    # ---- the LAN -------------------------------------------------------------------------------

    def _vip_mac(self) -> bytes:
        mac = self.lan.mac(self.cfg.vips[0].interface) if self.lan is not None else None
        return mac or bytes(6)

    def _on_claim(self, vip: Vip, mac: str) -> None:
        self.feed(Claimed(mac=mac))

    def _on_link(self, interface: str, state: LinkState) -> None:
        self._link_events += 1
        if self.eligibility is None:
            return
        event(
            "link",
            interface=interface,
            exists=str(state.exists).lower(),
            up=str(state.up).lower(),
            carrier=str(state.carrier).lower(),
            level=logging.INFO,
        )
        self.eligibility.link(interface, state, self.loop.time())
        self._update_eligibility()

    def _update_eligibility(self) -> None:
        if self.eligibility is None:
            return
        now_eligible = self.eligibility.evaluate(self.loop.time())
        if now_eligible == self._eligible:
            self._arm()
            return
        self._eligible = now_eligible
        eligible, cause = now_eligible
        self.metrics.set_eligible(eligible, cause)
        event(
            "eligibility",
            self._eligibility_sentence(eligible, cause),
            level=logging.INFO if eligible else logging.WARNING,
            eligible=str(eligible).lower(),
            cause=cause,
        )
        self.feed(LocalHealth(eligible=eligible, cause=cause))

    def _on_checks(self) -> None:
        if self.eligibility is None:
            return  # read when eligibility is built
        self.eligibility.checks(self.checks.passing() is not False)
        self._update_eligibility()

    async def _fence(self, fence: Fence) -> None:
        event(
            "fence",
            "the peer is gone: fencing it before taking the VIP",
            level=logging.WARNING,
            reason=fence.reason,
            epoch=fence.epoch,
            required=str(self.failover.fence_required).lower(),
        )
        ok = await self.hooks.fence(
            reason=fence.reason, epoch=fence.epoch, old_state=fence.old_state
        )
        if ok is False and self.failover.fence_required:
            event(
                "fence_failed",
                "the fence hook failed: not taking the VIP (fence_required)",
                level=logging.ERROR,
            )
        self.feed(Fenced(fence_id=fence.fence_id, ok=ok is not False))

    # ---- operator commands ---------------------------------------------------------------------

    async def _wait_until(self, done: Callable[[], bool], limit: float) -> bool:
        for _ in range(max(1, math.ceil(limit / WAIT_STEP))):
            if done():
                return True
            await asyncio.sleep(WAIT_STEP)
        return done()

    def _peer_holds(self) -> bool:
        peer = self.failover.peer
        return peer is not None and peer.owns

    async def _cmd_handover(self, _req: Mapping[str, object]) -> Reply:
        fo = self.failover
        refusal = fo.handover_refusal()
        if refusal is not None:
            self.metrics.operator_command("handover", "refused")
            event("handover_refused", refusal, level=logging.WARNING, state=fo.state)
            raise CommandRefused(refusal)
        peer = self.cfg.peer_name
        event("handover", "the operator asked to hand the VIP over", peer=peer, epoch=fo.epoch)
        self.metrics.operator_command("handover", "ok")
        self.feed(Handover())
        took = await self._wait_until(self._peer_holds, HANDOVER_WAIT)
        epoch = fo.peer.epoch if fo.peer is not None else None
        message = (
            f"handed the VIP to {peer}, which holds it now (epoch {epoch})"
            if took
            else f"released the VIP for {peer}, which has not said it holds it yet"
        )
        return {"message": message, "peer_owns": took}

    async def _cmd_maintenance(self, req: Mapping[str, object]) -> Reply:
        on = req.get("on")
        if not isinstance(on, bool):
            raise CommandRefused('maintenance needs "on": true or false')
        command = "maintenance_on" if on else "maintenance_off"
        try:
            since = await asyncio.to_thread(self.maintenance.set, on)
        except OSError as exc:
            self.metrics.operator_command(command, "failed")
            text = f"cannot save {self.maintenance.path}: {exc.strerror or exc}; nothing changed"
            event("maintenance_failed", text, level=logging.ERROR)
            raise CommandRefused(text) from None
        self.metrics.operator_command(command, "ok")
        changed = on != self.in_maintenance
        was_owner = self.failover.owns
        self.in_maintenance, self.maintenance_since = on, since
        self.metrics.set_maintenance(on)
        if changed:
            event(
                "maintenance",
                "will not claim the VIP until turned off" if on else "may hold the VIP again",
                level=logging.WARNING if on else logging.INFO,
                on=str(on).lower(),
                path=self.maintenance.path,
            )
        if self.eligibility is not None:
            self.eligibility.maintenance(on)
            self._update_eligibility()
        if not on:
            return {"message": "maintenance off: this node may hold the VIP again"}
        message = "maintenance on: this node will not claim the VIP (kept across restarts)"
        fo = self.failover

        def settled() -> bool:
            peer = fo.peer
            stuck = fo.owns and (peer is None or not peer.eligible)  # nobody to hand it to
            return stuck or (not fo.owns and self._peer_holds())

        if was_owner:
            await self._wait_until(settled, HANDOVER_WAIT)
        if fo.owns:
            message += f"; it still holds the VIP: {self._waiting()}"
        elif was_owner and self._peer_holds():
            message += f"; {self.cfg.peer_name} holds the VIP"
        return {"message": message}

    async def reload(self, source: str) -> Reply:
        """Re-read the config file and the certificates; refuse (CommandRefused, one log line)
        and keep everything as it was when the new config is invalid or needs a restart."""
        if self._reloading:
            raise CommandRefused("a reload is already running")
        self._reloading = True
        self.notifier.reloading()
        try:
            return await self._reload(source)
        except CommandRefused as exc:
            self.metrics.config_reloaded(False)
            self.metrics.operator_command("reload", "refused")
            event(
                "reload_refused",
                f"{exc}; the running config stays",
                level=logging.ERROR,
                source=source,
            )
            raise
        finally:
            self._reloading = False
            self.notifier.reloaded()

    async def _reload(self, source: str) -> Reply:
        try:
            plan = await prepare_reload(self.cfg, self._tls_digest, timeout=RELOAD_WAIT)
        except ReloadRefused as exc:
            raise CommandRefused(str(exc)) from None
        new = plan.config
        self.cfg = new
        self.link.cfg = new
        if plan.tls is not None:
            self.tls, self._tls_digest = plan.tls, plan.tls_digest
            self.link.set_tls(plan.tls, relink=True)
            await asyncio.to_thread(self._read_certificates, new)
        if plan.checks_changed:
            self.checks.replace(new.checks)
        if plan.hooks_changed:
            self.hooks.replace(new.hooks)
            self.failover.fence = new.hooks.fence is not None
            self.failover.fence_required = new.hooks.fence_required
        self.metrics.config_reloaded(True)
        self.metrics.operator_command("reload", "ok")
        what = ", ".join(plan.changes()) or "nothing changed"
        rotated = "rotated" if plan.tls is not None else "unchanged"
        event("reloaded", what, source=source, tls=rotated)
        return {"message": f"reloaded {new.path}: {what}"}

    async def _probe(self, probe: Probe) -> None:
        assert self.lan is not None
        t = self.cfg.timing
        # A longer window (after a veto, or a missed deadline) gets more probes, spaced no
        # further apart than PROBE_SPACING_MAX, so a short blip cannot hide every answer.
        count = max(t.probe_count, math.ceil(probe.window / PROBE_SPACING_MAX))
        out: ProbeOutcome = await self.lan.probe(count, probe.window)
        if out.error is not None:
            self.metrics.arp_probe(ProbeResult.ERROR)
            self.metrics.backend_error("probe")
            event("probe_failed", out.error, level=logging.ERROR, purpose=probe.purpose)
        else:
            if out.answered_by is not None:
                result = ProbeResult.ANSWERED
            elif out.witness is False:
                result = ProbeResult.DEAF
            else:
                result = ProbeResult.SILENT
            self.metrics.arp_probe(result)
            event(
                "probe",
                purpose=probe.purpose,
                result=result,
                mac=out.answered_by,
                rival="true" if out.rival else None,
                witness=None if out.witness is None else str(out.witness).lower(),
                window=probe.window,
                # A vetoed takeover repeats for as long as the holder lives: its own summary
                # line says so (takeover_vetoed); every other probe is worth a line.
                level=logging.DEBUG
                if out.answered_by and probe.purpose is ProbePurpose.TAKEOVER
                else logging.INFO,
            )
            if out.witness and self.eligibility is not None:
                # A witness heard proves we hear the LAN. Silence is left to the periodic
                # checks (a second apart), so a short blip cannot make us ineligible.
                self.eligibility.witness(True, self.loop.time())
        self.feed(
            ProbeDone(
                probe_id=probe.probe_id,
                answered_by=out.answered_by,
                witness=out.witness,
                error=out.error,
                rival=out.rival,
            )
        )
        self._update_eligibility()

    async def _probe_owner(self) -> str | None:
        """Who else answers for the VIP right now (for reconcile)."""
        if self.lan is None:
            return None
        t = self.cfg.timing
        out = await self.lan.probe(t.probe_count, t.probe_window)
        return out.answered_by

    async def _check_loop(self) -> None:
        """Witness checks (eligibility) and, while we own the VIP, a probe for third hosts."""
        assert self.lan is not None
        lan = self.lan
        interfaces = sorted({v.interface for v in self.cfg.vips})
        while True:
            await asyncio.sleep(CHECK_EVERY)
            owns = self.failover.state is State.ACTIVE
            if not lan.has_witnesses and not owns:
                await lan.poll_links()  # nothing to ask the LAN; the links still matter
                continue
            links_before = self._link_events
            heard = await lan.check(probe_vips=owns, window=self.cfg.timing.probe_window)
            if heard is None or self.eligibility is None:
                continue
            link_trouble = self._link_events != links_before or not all(
                lan.link(name).cause is Cause.OK for name in interfaces
            )
            if heard is False and link_trouble:
                # The link itself was down or changed during the check: its state speaks for
                # it (debounced by the dead time), so a short carrier blip is not also counted
                # as a witness miss, which would make two blips in a row cost eligibility.
                continue
            self.eligibility.witness(heard, self.loop.time())
            self._update_eligibility()

    async def _watchdog_loop(self, interval: float) -> None:
        """systemd's watchdog: pinged from the event loop itself, so a hung loop stops the
        pings and systemd restarts the daemon (WatchdogSec=)."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _status_line(self) -> str:
        """What `systemctl status` shows: state, who owns the VIP, the epoch."""
        fo = self.failover
        state = fo.state
        peer = fo.peer
        if state is State.ACTIVE:
            owner = f"{self.cfg.node} (this node)"
        elif peer is not None and peer.owns:
            owner = self.cfg.peer_name
        else:
            owner = "none known"
        vips = ",".join(str(v) for v in self.cfg.vips)
        return f"{state}, VIP {vips} owner {owner}, epoch {fo.epoch}"

    async def _reconcile_loop(self) -> None:
        stall = self.cfg.timing.dead_time
        while True:
            before = self.loop.time()
            await asyncio.sleep(RECONCILE_EVERY)
            late = self.loop.time() - before - RECONCILE_EVERY
            if late > stall:
                self._resumed(late)
            self.actuator.put(Reconcile())

    def _resumed(self, late: float) -> None:
        # Frozen (SIGSTOP, a paused VM): the peer may have taken over meanwhile.
        event("resumed", f"this process did not run for {late:.1f}s", level=logging.WARNING)
        self.feed(Resumed())

    # ---- the timer -----------------------------------------------------------------------------

    def _arm(self) -> None:
        """(Re)arm the one timer at the earliest moment the link or the machine needs us."""
        now = self.loop.time()
        wakeups: list[float] = []
        link_due = self.link.next_wakeup()
        if link_due is not None:
            wakeups.append(link_due)
        for due in (
            self.failover.next_timer(),
            self.eligibility.next_change() if self.eligibility is not None else None,
        ):
            if due is not None and due > now:  # a timer already handled must not make us spin
                wakeups.append(due)
        when = min(wakeups) if wakeups else None
        if self._timer is not None:
            if when == self._timer.when():
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer) if when is not None else None

    def _notice_freeze(self) -> None:
        """If our one timer is long overdue, this process was frozen (SIGSTOP, a paused VM):
        the machine must hear that before anything that queued up meanwhile (a stale
        keepalive, a peer's claim, an old deadline). Runs first in every callback that feeds."""
        timer = self._timer
        if timer is None:
            return
        late = self.loop.time() - timer.when()
        if late > self.cfg.timing.dead_time:
            self._timer = None
            timer.cancel()
            self._resumed(late)

    def _on_timer(self) -> None:
        self._notice_freeze()
        self._timer = None
        now = self.loop.time()
        self.link.on_timer(now)
        if self.eligibility is not None:
            due = self.eligibility.next_change()
            if due is not None and due <= now:
                self._update_eligibility()
        due = self.failover.next_timer()
        if due is not None and due <= now:
            self.feed(Tick())
        self._arm()

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> Mapping[str, object]:
        """What `havip status` shows."""
        fo = self.failover
        peer = fo.peer
        eligible, cause = self._eligible
        lan = self.lan
        witnesses = [str(w) for ws in self.witnesses.values() for w in ws]
        return {
            "node": self.cfg.node,
            "peer": self.cfg.peer_name,
            "role": "primary" if self.cfg.is_primary else "standby",
            "state": fo.state.value,
            "reason": fo.reason.value,
            "since": self.since_wall,
            "epoch": fo.epoch,
            "owns_vip": fo.owns,
            "owner": self.cfg.node
            if fo.owns
            else (self.cfg.peer_name if peer is not None and peer.owns else None),
            "eligible": eligible,
            "ineligible_cause": None if eligible else cause.value,
            "maintenance": self.in_maintenance,
            "maintenance_since": self.maintenance_since,
            "checks": self.checks.status(),
            "fencing": fo.fencing,
            "fence_failed": fo.fence_failed,
            "isolated": fo.isolated,
            "suspect": fo.suspect,
            "waiting": self._waiting(),
            "vetoed_by": fo.vetoed_by,
            "last_claim": fo.last_claim,
            "witnesses": witnesses,
            "witness_warnings": self.witness_warnings,
            "vips": [
                {
                    "address": str(v),
                    "interface": v.interface,
                    "present": self.owned[str(v)],
                    "link": _link_text(lan.link(v.interface)) if lan is not None else None,
                }
                for v in self.cfg.vips
            ],
            "peer_connected": self.link.up,
            "peer_state": peer.state.value if peer else None,
            "peer_owns_vip": peer.owns if peer else None,
            "peer_epoch": peer.epoch if peer else None,
            "peer_eligible": peer.eligible if peer else None,
            "peer_ineligible_cause": peer.cause.value if peer and peer.cause else None,
            "peer_mac": fo.peer_mac,
            "rtt_seconds": self.link.last_rtt,
            "last_keepalive_age_seconds": self._keepalive_age(),
            "certificates": {
                role: _cert_status(self.certificates.get(role, []))
                for role in ("own", "peer", "ca")
            },
            "backend": self.backend.name,
            "version": __version__,
        }

    def _keepalive_age(self) -> float | None:
        """Seconds since the peer last spoke (a HELLO or a keepalive), link up or not: it keeps
        growing while the peer is gone. None until it has spoken once. Also read by the
        metrics endpoint's thread (the loop's clock is monotonic and thread-safe)."""
        heard = self.link.last_heard
        return None if heard is None else max(0.0, self.loop.time() - heard)

    def _waiting(self) -> str | None:
        """Why a node that wants the VIP does not have it, in one sentence (None: not waiting)."""
        fo = self.failover
        eligible, cause = self._eligible
        if fo.state is State.ACTIVE:
            if fo.suspect:
                return "holds the VIP but hears no witness: not announcing until it hears the LAN"
            if not eligible:
                return (
                    f"holds the VIP although not eligible ({self._cause_text(cause)}): "
                    "no eligible peer to take it"
                )
            return None
        if not eligible:
            return f"not eligible ({self._cause_text(cause)}): will not take the VIP"
        if fo.fencing:
            return "fencing the peer before taking the VIP"
        if fo.fence_failed and fo.fence_required:
            return "the fence hook failed: not taking the VIP until a fence succeeds"
        if fo.state is State.PROBING and fo.vetoed_by is not None:
            return f"{fo.vetoed_by} still answers for the VIP: waiting for it to stop"
        if fo.state is State.PROBING and fo.isolated:
            return "probes hear no witness: cannot tell silence from being cut off"
        return None

    def _eligibility_sentence(self, eligible: bool, cause: Cause) -> str:
        if eligible:
            return "this node may hold the VIP"
        if cause is Cause.CHECK_FAILED:
            pending = [c["name"] for c in self.checks.status() if c["state"] == "unknown"]
            if pending and len(pending) == len(self.checks.failing()):
                return f"waiting for the first result of {', '.join(map(str, pending))}"
            return f"health checks fail: {', '.join(self.checks.failing())}"
        return "this node must not hold the VIP"

    def _cause_text(self, cause: Cause) -> str:
        if cause is Cause.CHECK_FAILED:
            return f"{cause}: {', '.join(self.checks.failing())}"
        return str(cause)


def _cert_status(certs: Sequence[CertInfo]) -> dict[str, object] | None:
    """The certificate that expires first (a CA file may hold several), for status."""
    if not certs:
        return None
    first = min(certs, key=lambda c: c.not_after)
    return {"not_after": first.not_after_timestamp, "subject_cn": first.subject_cn}


def _link_text(state: LinkState) -> str:
    if not state.exists:
        return "missing"
    if not state.up:
        return "down"
    return "up" if state.carrier else "no-carrier"
