"""Listening to the LAN from the event loop: claims on our VIPs, witnesses, link state.

One `LanSocket` per VIP interface stays open for the daemon's whole life, with a kernel filter
so that the loop wakes only for ARP (IPv4) or Neighbour Discovery (IPv6) about our VIPs and
witnesses; one `LinkMonitor` reports
link changes as the kernel announces them. On top of that:

- `probe()` is the RFC 5227 check before a takeover (for an IPv6 VIP its RFC 4862 twin, a
  DAD-style neighbour solicitation): probes for every VIP, timed from the first
  frame actually sent (a stalled loop must not eat the listening time), plus a request to each
  witness in the same round, so that silence counts only when we demonstrably hear the LAN.
- `check()` is the periodic check: witness requests, and for an owner one probe per VIP, which
  a third host holding the VIP answers (unicast to us): that answer is a claim.
- Every claim heard at any time goes to `on_claim`, at most once per (VIP, MAC) per 0.2 s.

Nothing here raises into the caller's task: a socket that cannot be opened or used is an
error outcome (logged once per distinct error) and is retried on the next probe or check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from havip.backends.base import (
    Backend,
    BackendError,
    BackendOp,
    Heard,
    HeardKind,
    IPAddress,
    LanSocket,
    LinkMonitor,
    LinkState,
)
from havip.config import Vip
from havip.shell.logs import event

CLAIM_REPEAT = 0.2  # seconds: one on_claim per (VIP, MAC) at most this often
_CLAIM_MEMORY = 1024  # remembered (VIP, MAC) pairs before old ones are forgotten
UNKNOWN_LINK = LinkState(exists=False, up=False, carrier=False)


@dataclass(frozen=True, kw_only=True)
class ProbeOutcome:
    """What one probe round found."""

    answered_by: str | None  # MAC of the first host that answered for a VIP (claim/probe)
    witness: bool | None  # a witness answered in this round; None: no witnesses configured
    error: str | None = None  # the probe could not be done; answered_by is then None
    rival: bool = False  # what answered was another host probing for the VIP, not holding it


class _Round:
    """One probe or check in progress: what it has heard so far."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, vips: bool, witnesses: set[str]):
        self.vips = vips  # whether VIP answers (claims and rival probes) end this round
        self.want = witnesses  # interfaces whose witnesses have not answered yet
        self.answered_by: str | None = None
        self.rival = False
        self.done: asyncio.Future[None] = loop.create_future()

    def heard(self, interface: str, heard: Heard) -> None:
        if heard.kind is HeardKind.WITNESS:
            self.want.discard(interface)
            if not self.vips and not self.want and not self.done.done():
                self.done.set_result(None)  # a check ends when every witness answered
        elif self.vips and self.answered_by is None:
            self.answered_by = heard.mac
            self.rival = heard.kind is HeardKind.PROBE
            if not self.done.done():
                self.done.set_result(None)


class LanWatch:
    """The LAN as the daemon sees it: one listener per VIP interface and the link monitor."""

    def __init__(
        self,
        backend: Backend,
        vips: Sequence[Vip],
        witnesses: Mapping[str, Sequence[IPAddress]],
        *,
        on_claim: Callable[[Vip, str], None],
        on_link: Callable[[str, LinkState], None],
    ) -> None:
        if not vips:
            raise ValueError("LanWatch: at least one VIP is needed")
        self.backend = backend
        self._on_claim = on_claim
        self._on_link = on_link
        self._vips: dict[str, list[Vip]] = {}
        for vip in vips:
            self._vips.setdefault(vip.interface, []).append(vip)
        self._by_ip = {vip.ip: vip for vip in vips}
        for interface in witnesses:
            if interface not in self._vips:
                raise ValueError(f"LanWatch: witnesses on {interface}, which carries no VIP")
        self._witnesses = {
            interface: tuple(dict.fromkeys(ips)) for interface, ips in witnesses.items() if ips
        }
        self._socks: dict[str, LanSocket] = {}
        self._macs: dict[str, bytes] = {}
        self._monitor: LinkMonitor | None = None
        self._links: dict[str, LinkState] = {}
        self._rounds: set[_Round] = set()
        self._claimed: dict[tuple[IPAddress, str], float] = {}
        self._errors: dict[str, str] = {}  # last error logged per place, so each logs once
        self._open_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.wakeups = 0  # LAN socket wake-ups: ARP or ND frames the kernel filter let through
        self.link_wakeups = 0  # link monitor wake-ups

    # --- public ----------------------------------------------------------------------------

    @property
    def has_witnesses(self) -> bool:
        """Whether any witness is configured."""
        return bool(self._witnesses)

    @property
    def interfaces(self) -> list[str]:
        """The VIP interfaces, in configuration order."""
        return list(self._vips)

    def link(self, interface: str) -> LinkState:
        """The last known link state (all False until known)."""
        return self._links.get(interface, UNKNOWN_LINK)

    def mac(self, interface: str) -> bytes | None:
        """This node's MAC on `interface`, once a listener was opened there."""
        return self._macs.get(interface)

    async def start(self) -> None:
        """Open the link monitor, learn the initial link states (reported via on_link) and
        open the listeners. What cannot be opened now is logged and retried by each check."""
        self._loop = asyncio.get_running_loop()
        self._open_monitor()
        await self._refresh_links()
        await self._ensure_open()

    def close(self) -> None:
        """Stop listening and close every descriptor."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for interface in list(self._socks):
            self._drop(interface)
        self._drop_monitor()

    async def probe(self, count: int, window: float) -> ProbeOutcome:
        """Every VIP: `count` probes spread over the first 2/3 of `window`, the window timed
        from the first frames sent, and a request to each witness with the first probe and
        again with the last. Returns at the first VIP answer, else when the window ends.
        Never raises: what prevents the probe is ProbeOutcome(error=...)."""
        try:
            return await self._probe(count, window)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a task must not die of a probe (issue 5 part 12)
            error = f"probe failed: {exc}"
            event("lan_error", error, level=logging.ERROR, op="probe")
            return ProbeOutcome(answered_by=None, witness=self._no_witness(), error=error)

    async def check(self, *, probe_vips: bool, window: float) -> bool | None:
        """The periodic check: a request to each witness and, with `probe_vips`, one probe per
        VIP (a third host holding it answers, and on_claim fires). Whether every interface's
        witnesses answered within `window`; None when no witnesses are configured; False when
        the check could not be done. Never raises."""
        try:
            return await self._check(probe_vips, window)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            event("lan_error", f"check failed: {exc}", level=logging.ERROR, op="check")
            return self._no_witness()

    # --- rounds ----------------------------------------------------------------------------

    def _no_witness(self) -> bool | None:
        return False if self._witnesses else None

    def _running(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("LanWatch.start() was not awaited")
        return self._loop

    async def _probe(self, count: int, window: float) -> ProbeOutcome:
        loop = self._running()
        if count < 1:
            raise ValueError(f"probe count must be at least 1, got {count}")
        window = max(window, 0.0)
        error = await self._ensure_open()
        if error is not None:
            return ProbeOutcome(answered_by=None, witness=self._no_witness(), error=error)
        round_ = _Round(loop, vips=True, witnesses=set(self._witnesses))
        self._rounds.add(round_)
        try:
            spacing = window * 2 / 3 / (count - 1) if count > 1 else 0.0
            self._send_all(probes=True, requests=True)
            start = loop.time()  # after the first frames left: a stall before costs nothing
            for sent in range(1, count):
                await self._until(round_.done, start + sent * spacing)
                if round_.answered_by is not None:
                    break
                last = sent == count - 1
                if last:
                    # Only an answer to the last request proves we could still hear at the
                    # end of the round: a port that died mid-probe must not count as heard.
                    round_.want = set(self._witnesses)
                self._send_all(probes=True, requests=last)
            await self._until(round_.done, start + window)
            witness = not round_.want if self._witnesses else None
            return ProbeOutcome(answered_by=round_.answered_by, witness=witness, rival=round_.rival)
        except BackendError as exc:
            self._failed(exc)
            return ProbeOutcome(answered_by=None, witness=self._no_witness(), error=str(exc))
        finally:
            self._rounds.discard(round_)

    async def poll_links(self) -> None:
        """Without a link monitor (it cannot be opened: say PF_ROUTE on illumos), ask for the
        link states instead. Called by every periodic check, so a dead link is still seen
        within a check interval rather than never."""
        if self._monitor is None and not self._open_monitor():
            await self._refresh_links()

    async def _check(self, probe_vips: bool, window: float) -> bool | None:
        loop = self._running()
        monitored = self._monitor is not None
        await self.poll_links()
        reopened = not monitored and self._monitor is not None
        if reopened or any(interface not in self._links for interface in self._vips):
            await self._refresh_links()  # events were missed, or the first query failed
        await self._ensure_open()
        round_ = _Round(loop, vips=False, witnesses=set(self._witnesses))
        self._rounds.add(round_)
        try:
            for interface in list(self._socks):
                try:
                    self._send(interface, probes=probe_vips, requests=True)
                except BackendError as exc:
                    self._failed(exc)
            if not self._witnesses:
                return None
            await self._until(round_.done, loop.time() + max(window, 0.0))
            return not round_.want
        finally:
            self._rounds.discard(round_)

    async def _until(self, done: asyncio.Future[None], when: float) -> None:
        delay = when - self._running().time()
        if delay > 0 and not done.done():
            await asyncio.wait([done], timeout=delay)

    def _send_all(self, *, probes: bool, requests: bool) -> None:
        for interface in self._vips:
            self._send(interface, probes=probes, requests=requests)

    def _send(self, interface: str, *, probes: bool, requests: bool) -> None:
        sock = self._socks.get(interface)
        if sock is None:
            raise BackendError(BackendOp.PROBE, None, "not listening", interface=interface)
        if probes:
            for vip in self._vips[interface]:
                sock.send_probe(vip.ip)
        if requests:
            for witness in self._witnesses.get(interface, ()):
                sock.send_request(witness)

    # --- descriptors -----------------------------------------------------------------------

    async def _ensure_open(self) -> str | None:
        """Open the listeners that are not open; the first error, if any."""
        loop = self._running()
        first: str | None = None
        async with self._open_lock:
            for interface, vips in self._vips.items():
                if interface in self._socks or self._closed:
                    continue
                ips = [vip.ip for vip in vips]
                witnesses = self._witnesses.get(interface, ())
                try:
                    sock = await asyncio.to_thread(self.backend.open_lan, interface, ips, witnesses)
                except (BackendError, OSError) as exc:
                    # OSError: the thread pool itself could not start (descriptors exhausted).
                    self._report(interface, str(exc))
                    first = first or str(exc)
                    continue
                if self._closed:
                    sock.close()
                    break
                self._socks[interface] = sock
                self._macs[interface] = sock.mac
                loop.add_reader(sock.fileno(), self._readable, interface)
                self._cleared(interface)
        return first

    def _open_monitor(self) -> bool:
        """Open the link monitor if it is closed; whether it is open now."""
        if self._monitor is not None:
            return True
        try:
            monitor = self.backend.open_link_monitor()
        except BackendError as exc:
            self._report("link-monitor", str(exc))
            return False
        self._monitor = monitor
        self._running().add_reader(monitor.fileno(), self._link_readable)
        self._cleared("link-monitor")
        return True

    async def _refresh_links(self) -> None:
        results = await asyncio.gather(
            *(asyncio.to_thread(self.backend.link_state, i) for i in self._vips),
            return_exceptions=True,
        )
        for interface, result in zip(self._vips, results, strict=True):
            if isinstance(result, LinkState):
                self._set_link(interface, result)
            elif isinstance(result, Exception):
                self._report(f"link:{interface}", str(result))
            else:
                raise result

    def _drop(self, interface: str) -> None:
        sock = self._socks.pop(interface, None)
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _drop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(monitor.fileno())
        monitor.close()

    def _failed(self, exc: BackendError) -> None:
        """A send failed. With the link down that is expected and the socket recovers with
        the link; otherwise the socket may be bound to an interface that is gone: reopen."""
        interface = exc.interface or ""
        self._report(interface, str(exc))
        state = self._links.get(interface)
        if state is None or (state.exists and state.up):
            self._drop(interface)

    def _report(self, where: str, error: str) -> None:
        if self._errors.get(where) != error:
            self._errors[where] = error
            event("lan_error", error, level=logging.WARNING, where=where)

    def _cleared(self, where: str) -> None:
        if self._errors.pop(where, None) is not None:
            event("lan_ok", f"{where} works again", where=where)

    def _spawn(self, coro: Any) -> None:
        task = self._running().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- readers ---------------------------------------------------------------------------

    def _readable(self, interface: str) -> None:
        self.wakeups += 1
        sock = self._socks.get(interface)
        if sock is None:
            return
        try:
            heard = sock.read()
        except BackendError as exc:
            self._report(interface, str(exc))
            self._drop(interface)  # reopened by the next probe or check
            return
        for item in heard:
            self._heard(interface, item)

    def _heard(self, interface: str, heard: Heard) -> None:
        for round_ in list(self._rounds):
            round_.heard(interface, heard)
        if heard.kind is not HeardKind.CLAIM:
            return
        vip = self._by_ip.get(heard.ip)
        if vip is None:
            return
        now = self._running().time()
        key = (heard.ip, heard.mac)
        last = self._claimed.get(key)
        if last is not None and now - last < CLAIM_REPEAT:
            return
        if len(self._claimed) >= _CLAIM_MEMORY:  # a flood of forged MACs must not grow this
            self._claimed = {k: t for k, t in self._claimed.items() if now - t < CLAIM_REPEAT}
        self._claimed[key] = now
        self._on_claim(vip, heard.mac)

    def _link_readable(self) -> None:
        self.link_wakeups += 1
        monitor = self._monitor
        if monitor is None:
            return
        try:
            changes = monitor.read()
        except BackendError as exc:
            self._report("link-monitor", str(exc))
            self._drop_monitor()  # reopened, with a fresh query, by the next check
            return
        for interface, state in changes:
            if interface in self._vips:
                self._set_link(interface, state)

    def _set_link(self, interface: str, state: LinkState) -> None:
        old = self._links.get(interface)
        self._links[interface] = state
        if state == old:
            return
        if not state.exists:
            self._drop(interface)  # its socket is bound to an interface that is gone
        elif old is not None and interface not in self._socks and not self._closed:
            self._spawn(self._ensure_open())  # listen again as soon as it is back
        self._on_link(interface, state)
