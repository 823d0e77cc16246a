"""The one mutual-TLS link to the peer: dialing or accepting, the session, keepalives, deadline.

It turns what happens on the connection into failover events (PeerUp, PeerInfo, PeerDown,
PeerResigned) and hands them to the daemon; the daemon owns the single loop timer and asks the
link when it next needs waking (`next_wakeup`) and calls `on_timer` when that moment comes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from havip.config import Config
from havip.core.events import (
    Event,
    PeerDown,
    PeerInfo,
    PeerResigned,
    PeerUp,
)
from havip.core.session import (
    LocalStatus,
    PeerClosing,
    PeerHello,
    PeerResign,
    PeerSession,
    PeerStatus,
    PeerUpdate,
    SessionEvent,
)
from havip.core.states import LinkDown
from havip.core.wire import Message, ProtocolError
from havip.shell.logs import event
from havip.shell.metrics import Metrics
from havip.shell.transport import Connection, Listener, PeerRejected, RejectReason, dial, listen

QUIET_LOG_EVERY = 10.0  # seconds between summary lines of a repeated refusal
REFUSED_BACKOFF_MAX = 4.0  # seconds: the standby's longest wait after the peer refused it
STABLE_LINK = 1.0  # seconds a link must stay up before the standby's backoff starts over


def backoff(attempt: int, *, first: float, cap: float, jitter: float) -> float:
    """The wait before reconnect attempt `attempt` (1, 2, ...): `first` doubling per attempt,
    plus up to `jitter` at random, never above `cap`.

    Computed here rather than with tenacity's own wait helpers, whose parameter names changed
    between the versions we allow (8.2 rejects `multiplier=`, 9.2 deprecates `initial=`).
    """
    base = first * 2 ** min(attempt - 1, 30)
    return float(min(cap, base + random.uniform(0.0, jitter)))


class _Refused(Exception):
    """The standby's connection was accepted, then ended before it had stayed up: back off."""


@dataclass(eq=False)
class _Link:
    conn: Connection
    session: PeerSession
    speak_first: bool
    up: bool = False  # HELLO accepted on this connection
    up_at: float | None = None  # when it was
    refused: bool = False  # the peer refused it (CLOSE, or a protocol error): the reason is logged


class _Quiet:
    """A repeated warning, summarised: the first line of each reason at once, then one summary
    line per QUIET_LOG_EVERY with the counts by reason; a reason quiet for that long is logged in
    full again. Counting for the metrics is the caller's: every occurrence counts there."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._name = name
        self._seen: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: str, detail: str, **fields: object) -> None:
        if reason in self._seen:
            self._counts[reason] += 1
        else:
            self._seen.add(reason)
            event(self._name, detail, level=logging.WARNING, reason=reason, **fields)
        if self._timer is None:
            self._timer = self._loop.call_later(QUIET_LOG_EVERY, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if not self._counts:
            self._seen.clear()
            return
        total = sum(self._counts.values())
        counts = {str(reason): n for reason, n in sorted(self._counts.items())}
        event(
            f"{self._name}_summary",
            f"{total} more in the last {QUIET_LOG_EVERY:g}s",
            level=logging.WARNING,
            **counts,
        )
        self._counts.clear()
        self._timer = self._loop.call_later(QUIET_LOG_EVERY, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PeerLink:
    """The peer connection of one daemon (the primary listens, the standby dials)."""

    def __init__(
        self,
        cfg: Config,
        tls: ssl.SSLContext,
        metrics: Metrics,
        *,
        boot_id: bytes,
        status: Callable[[], LocalStatus],
        mac: Callable[[], bytes],
        feed: Callable[[Event], None],
        rearm: Callable[[], None],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.cfg = cfg
        self.tls = tls
        self.metrics = metrics
        self.boot_id = boot_id
        self._status = status
        self._mac = mac
        self._feed = feed
        self._rearm = rearm
        self._spawn = spawn
        self.loop = asyncio.get_running_loop()
        self.current: _Link | None = None  # the link the failover machine knows (HELLO accepted)
        self.pending: _Link | None = None  # a newer connection whose HELLO is not yet accepted
        self._rejects = _Quiet(self.loop, "peer_rejected")  # refused before authentication
        self._refusals = _Quiet(self.loop, "peer_refused")  # refused after (CLOSE, bad input)
        self._unreachable = _Quiet(self.loop, "peer_unreachable")  # the standby cannot connect
        self.last_rtt: float | None = None
        self.last_heard: float | None = None  # loop time of the peer's last HELLO or keepalive
        self._peer_status_seen: PeerStatus | None = None
        self._listener: Listener | None = None
        self.stopping = False

    # ---- for the daemon ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """An authenticated connection whose HELLO was accepted."""
        return self.current is not None and self.current.up

    async def start(self) -> list[asyncio.AbstractServer]:
        """The primary listens (returns its server); the standby starts dialing."""
        cfg = self.cfg
        if cfg.is_primary:
            host, port = cfg.listen
            server = await listen(
                host,
                port,
                self.tls,
                cfg.peer_name,
                cfg.timing.handshake_timeout,
                self._on_accepted,
                self._on_reject,
                # The standby connects from the address we dial it at: it gets its own slots.
                peer_host=cfg.peer_address[0],
            )
            self._listener = server
            return [server]
        self._spawn(self._dial_loop())
        return []

    def next_wakeup(self) -> float | None:
        wakeups = []
        if self.current is not None:
            wakeups.append(self.current.session.next_wakeup())
        if self.pending is not None:
            wakeups.append(self.pending.session.deadline)  # its HELLO deadline
        return min(wakeups, default=None)

    def on_timer(self, now: float) -> None:
        """Send a due keepalive, or declare the peer lost when its deadline passed."""
        pending = self.pending
        if pending is not None and pending.session.expired(now):
            self._drop(pending, LinkDown.DEADLINE_MISSED, "no HELLO within the hello timeout")
        link = self.current
        if link is None:
            return
        if link.session.expired(now):
            if link.up:
                self.metrics.keepalive_missed()
            self._drop(link, LinkDown.DEADLINE_MISSED, "no keepalive within the dead time")
        elif link.up and now >= link.session.next_send:
            self._send_keepalive(link, now)

    def set_tls(self, ctx: ssl.SSLContext, *, relink: bool) -> None:
        """Use `ctx` from the next connection on (reload, certificate rotation). With `relink`,
        the standby dials a new connection now; it replaces the live one only once its HELLO is
        accepted, so the link moves to the new certificates without ever going down."""
        self.tls = ctx
        if self._listener is not None:
            self._listener.ctx = ctx
        if relink and not self.cfg.is_primary and self.up and not self.stopping:
            self._spawn(self._relink())

    async def _relink(self) -> None:
        cfg = self.cfg
        host, port = cfg.peer_address
        try:
            conn = await dial(host, port, self.tls, cfg.peer_name, cfg.timing.handshake_timeout)
        except (PeerRejected, OSError) as exc:
            if isinstance(exc, PeerRejected):
                self.metrics.peer_rejected(exc.reason)
            event(
                "relink_failed",
                f"{exc}; the live link carries on",
                level=logging.WARNING,
                peer=cfg.peer_name,
            )
            return
        if self.stopping:
            conn.close()
            return
        event("relink", "new connection with the reloaded certificates", peer=cfg.peer_name)
        self._start_link(conn, speak_first=False)

    async def send_resign(self, epoch: int) -> bool:
        """Tell the peer we removed the VIP; False when there is no live link to tell."""
        link = self.current
        if link is None or not link.up:
            return False
        link.conn.send(link.session.resign(epoch))
        await link.conn.drain(1.0)
        return True

    async def close(self) -> None:
        self.stopping = True
        self._rejects.close()
        self._refusals.close()
        self._unreachable.close()
        if self.pending is not None:
            self.pending.conn.close()
        link = self.current
        if link is not None:
            await link.conn.drain(0.5)
            link.conn.close()

    def abort(self) -> None:
        """Drop the connection at once (tests: a crash without goodbye)."""
        for link in (self.pending, self.current):
            if link is not None:
                link.conn.abort()

    # ---- connections ---------------------------------------------------------------------------

    def _on_accepted(self, conn: Connection) -> None:
        self._start_link(conn, speak_first=True)

    def _on_reject(self, exc: PeerRejected) -> None:
        # Every refusal counts; under a flood only the first of each reason (and then one
        # summary line every QUIET_LOG_EVERY) reaches the log.
        self.metrics.peer_rejected(exc.reason)
        self._rejects.note(exc.reason, exc.detail)

    async def _dial_loop(self) -> None:
        cfg = self.cfg
        t = cfg.timing
        host, port = cfg.peer_address
        # Unreachable (nothing listens yet, e.g. the primary restarts): retry every
        # <= reconnect_max. Refused (bad certificate, config mismatch, a link that died young):
        # back off further, as retrying at once cannot help and only floods both logs.
        unreachable = (t.keepalive_interval, t.reconnect_max)
        refused = (t.keepalive_interval, max(REFUSED_BACKOFF_MAX, t.reconnect_max))

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            refusal = isinstance(exc, _Refused) or (
                isinstance(exc, PeerRejected)
                and exc.reason in (RejectReason.TLS_HANDSHAKE, RejectReason.WRONG_PEER_NAME)
            )
            first, cap = refused if refusal else unreachable
            return backoff(state.attempt_number, first=first, cap=cap, jitter=t.keepalive_interval)

        while not self.stopping:
            retrying = AsyncRetrying(
                wait=wait,
                retry=retry_if_exception_type((OSError, PeerRejected, _Refused)),
                reraise=True,
            )
            # A fresh backoff after every link that stayed up.
            async for attempt in retrying:
                with attempt:
                    await self._dial_once(host, port)
                if self.stopping:
                    return

    async def _dial_once(self, host: str, port: int) -> None:
        """One connection: dial, run the link until it ends; raise to back off before the next."""
        cfg = self.cfg
        t = cfg.timing
        try:
            conn = await dial(host, port, self.tls, cfg.peer_name, t.handshake_timeout)
        except PeerRejected as exc:
            self.metrics.peer_rejected(exc.reason)
            self._rejects.note(exc.reason, exc.detail, peer=cfg.peer_name)
            raise
        except OSError as exc:
            self._unreachable.note(
                "unreachable",
                f"retrying every <= {t.reconnect_max}s",
                peer=cfg.peer_name,
                addr=f"{host}:{port}",
                error=str(exc),
            )
            raise
        link = self._start_link(conn, speak_first=False)
        await conn.done
        while not self.stopping and self.current is not None and self.current is not link:
            # Replaced by a relink (reload) whose HELLO was accepted: follow the new link, so
            # this loop does not dial a third connection that would replace it in turn.
            link = self.current
            await link.conn.done
        if self.stopping:
            return
        stayed = link.up_at is not None and self.loop.time() - link.up_at >= STABLE_LINK
        if not stayed:
            raise _Refused("the link ended before it had stayed up")

    def _start_link(self, conn: Connection, *, speak_first: bool) -> _Link:
        """Take `conn` as the pending link; it replaces the live one once its HELLO is accepted
        (the primary speaks first)."""
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
        old, self.pending = self.pending, link
        if old is not None:
            # Two newcomers: the peer gave up on the older one (it never said HELLO).
            self._drop(old, LinkDown.CONNECTION_LOST, "replaced by a newer connection")
        if speak_first:
            conn.send(session.hello(self._status(), self._mac()))
        conn.attach(
            lambda msg: self._on_message(link, msg), lambda why: self._on_link_end(link, why)
        )
        self._rearm()
        return link

    def _send_keepalive(self, link: _Link, now: float) -> None:
        link.conn.send(link.session.keepalive(self._status(), now))
        self.metrics.keepalive_sent()

    def _on_message(self, link: _Link, msg: Message) -> None:
        """One message from the peer; a ProtocolError raised here closes the connection (and the
        connection tells the peer why, in a CLOSE)."""
        if link is not self.current and link is not self.pending:
            return
        self._on_session_event(link, link.session.receive(msg, self.loop.time()))

    def _on_link_end(self, link: _Link, why: BaseException | None) -> None:
        if isinstance(why, ProtocolError):
            # We refuse the peer: counted on both sides, as it counts our CLOSE.
            self.metrics.protocol_error(why.kind)
            link.refused = True
            self._refusals.note(
                why.kind, why.detail, side="ours", peer=self.cfg.peer_name, addr=link.conn.peer_addr
            )
            self._drop(link, LinkDown.PROTOCOL_ERROR, str(why))
        else:
            text = "peer closed the connection" if why is None else str(why) or type(why).__name__
            self._drop(link, LinkDown.CONNECTION_LOST, text)

    def _on_session_event(self, link: _Link, ev: SessionEvent) -> None:
        if isinstance(ev, PeerHello):
            if not link.speak_first:
                link.conn.send(link.session.hello(self._status(), self._mac()))
            if link is self.pending:
                # Its HELLO passed every check: only now may it replace the live link, and
                # silently for the core (which gets the new PeerUp below).
                self.pending = None
                old, self.current = self.current, link
                if old is not None:
                    old.conn.close()
            link.up, link.up_at = True, self.loop.time()
            self.last_heard = link.up_at
            self._peer_status_seen = ev.status
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
                peer_eligible=ev.status.eligible,
                peer_mac=ev.mac,
            )
            self._feed(PeerUp(status=ev.status, mac=ev.mac))
        elif isinstance(ev, PeerUpdate):
            self.last_heard = self.loop.time()
            self.metrics.keepalive_received()
            if ev.rtt is not None:
                self.last_rtt = ev.rtt
                self.metrics.observe_rtt(ev.rtt)
            if ev.status != self._peer_status_seen:
                # A repeated status is a no-op for the machine (its timers come from Tick),
                # and this runs for every keepalive: skip the work.
                self._peer_status_seen = ev.status
                self.metrics.set_peer_state(ev.status.state)
                self._feed(PeerInfo(status=ev.status))
            now = self.loop.time()
            if link.up and self.current is link and link.session.reply_due(now):
                self._send_keepalive(link, now)
                self._rearm()
        elif isinstance(ev, PeerClosing):
            # The peer refuses us and says why: the real reason, counted and logged here too.
            self.metrics.protocol_error(ev.kind)
            link.refused = True
            self._refusals.note(
                ev.kind, ev.detail, side="theirs", peer=self.cfg.peer_name, addr=link.conn.peer_addr
            )
            self._drop(link, LinkDown.PROTOCOL_ERROR, f"peer refused us: {ev.detail}")
        elif isinstance(ev, PeerResign):
            event("resign_received", "peer handed the VIP over", peer=self.cfg.peer_name)
            self._feed(PeerResigned(epoch=ev.epoch))

    def _drop(self, link: _Link, reason: LinkDown, why: str) -> None:
        link.conn.close()
        if link is self.pending:
            # Never up: the live link (if any) carries on, the core never heard of this one.
            self.pending = None
            if not link.refused:  # a refusal was logged with its reason already
                event("peer_dropped", why, level=logging.INFO, addr=link.conn.peer_addr)
            self._rearm()
            return
        if self.current is not link:
            return
        self.current = None
        self._peer_status_seen = None
        self.metrics.set_peer_connected(False)
        self.metrics.set_peer_state(None)
        event("peer_lost", why, level=logging.WARNING, peer=self.cfg.peer_name, reason=reason)
        self._feed(PeerDown(reason=reason))
