"""Carrying out the machine's decisions on the interface, one at a time, in order.

Every effect on the VIP (add, remove, announce, hand over, reconcile) goes through one queue and
one task, so a removal always completes before the RESIGN that follows it, and an announcement
queued before a removal can never be sent after it. Blocking backend calls run in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from havip.backends.base import Backend, BackendError, BackendOp
from havip.config import Vip
from havip.core.events import (
    Acquire,
    Acquired,
    Announce,
    BackendFailed,
    Claimed,
    Event,
    Release,
    SendResign,
    Stop,
)
from havip.core.states import Reason, State
from havip.shell.epochstore import EpochStore
from havip.shell.logs import event
from havip.shell.metrics import Metrics


@dataclass(frozen=True, kw_only=True)
class Reconcile:
    """Put the interface back in the state the machine wants (queued like any action)."""


@dataclass(frozen=True, kw_only=True)
class Then:
    """Call `fn` (quick, non-blocking) once every job queued before it is done: notify hooks
    run after the VIP was added and announced, or removed and handed over."""

    fn: Callable[[], None]


Job = Acquire | Release | Announce | SendResign | Stop | Reconcile | Then


class Actuator:
    """Runs VIP actions in order on one task; reports failures back to the machine."""

    def __init__(
        self,
        *,
        backend: Backend,
        vips: tuple[Vip, ...],
        epochs: EpochStore,
        metrics: Metrics,
        feed: Callable[[Event], None],
        state: Callable[[], State],
        resign: Callable[[int], Awaitable[bool]],
        probe_owner: Callable[[], Awaitable[str | None]],
        stop: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.vips = vips
        self.epochs = epochs
        self.metrics = metrics
        self._feed = feed
        self._state = state
        self._resign = resign
        self._probe_owner = probe_owner
        self._stop = stop
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.owned: dict[str, bool] = {str(v): False for v in vips}
        self._released_ok = True  # whether the last Release removed every VIP

    def put(self, job: Job) -> None:
        self.queue.put_nowait(job)

    async def run(self) -> None:
        while True:
            job = await self.queue.get()
            await self._do(job)

    async def _do(self, job: Job) -> None:
        if isinstance(job, Acquire):
            await self._acquire(job.epoch)
        elif isinstance(job, Release):
            await self._release(job.reason)
        elif isinstance(job, Announce):
            if self._state() is State.ACTIVE and any(self.owned.values()):
                await self.announce(job.reason)
        elif isinstance(job, SendResign):
            if not self._released_ok:
                # The peer would add the VIP without probing while we may still hold it.
                event(
                    "resign_skipped",
                    "the VIP could not be removed: not handing over",
                    level=logging.ERROR,
                )
            elif await self._resign(job.epoch):
                event("resign_sent", "handed the VIP over", epoch=job.epoch)
        elif isinstance(job, Stop):
            self._stop()  # after the Release and SendResign queued before it
        elif isinstance(job, Then):
            job.fn()
        else:
            await self._reconcile()

    # ---- the VIP -------------------------------------------------------------------------------

    async def _call(self, op: str, fn: Callable[..., object], *args: object) -> object:
        try:
            return await asyncio.to_thread(fn, *args)
        except BackendError as exc:
            self.metrics.backend_error(op)
            event("backend_error", str(exc), level=logging.ERROR, op=op)
            self._feed(BackendFailed(op=op, error=str(exc)))
            raise

    def set_owned(self, vip: Vip, owned: bool) -> None:
        """Record what the interface holds, for /status and the metric alike."""
        self.owned[str(vip)] = owned
        self.metrics.set_vip_owned(vip.ip, vip.interface, owned)

    async def _acquire(self, epoch: int) -> None:
        try:
            # Durable before we claim anything with it: a restart must never reuse an epoch.
            await asyncio.to_thread(self.epochs.save, epoch)
        except (OSError, ValueError) as exc:
            self.metrics.backend_error(BackendOp.EPOCH)
            event("epoch_save_failed", str(exc), level=logging.ERROR, path=self.epochs.path)
            self._feed(BackendFailed(op="epoch", error=f"cannot save epoch {epoch}: {exc}"))
            return
        for vip in self.vips:
            try:
                await self._call("add", self.backend.add, vip)
            except BackendError:
                return
            self.set_owned(vip, True)
            event("vip_added", vip=vip, interface=vip.interface, epoch=epoch)
        await self.announce("acquired")
        self._feed(Acquired(epoch=epoch))

    async def announce(self, reason: str) -> None:
        for vip in self.vips:
            try:
                frames = await asyncio.to_thread(self.backend.announce, vip)
            except BackendError as exc:
                # Not fatal: the VIP is up; clients will find it by ARP on their own.
                self.metrics.backend_error("announce")
                event("backend_error", str(exc), level=logging.ERROR, op="announce")
                continue
            self.metrics.garp_sent(frames)
            event("garp_sent", vip=vip, frames=frames, reason=reason)

    async def _release(self, reason: Reason) -> None:
        ok = True
        for vip in self.vips:
            try:
                await self._call("remove", self.backend.remove, vip)
            except BackendError:
                ok = False
                continue
            self.set_owned(vip, False)
            event("vip_removed", vip=vip, reason=reason)
        self._released_ok = ok

    # ---- reconcile -----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        state = self._state()
        if state not in (State.ACTIVE, State.STANDBY, State.FAULT):
            return
        want = state is State.ACTIVE
        for vip in self.vips:
            try:
                present = await asyncio.to_thread(self.backend.present, vip)
            except BackendError as exc:
                self.metrics.backend_error("present")
                event("backend_error", str(exc), level=logging.ERROR, op="present")
                continue
            if present == want:
                continue
            if not want:
                event(
                    "drift",
                    "the VIP is on our interface but this node does not own it: removing it",
                    level=logging.WARNING,
                    vip=vip,
                    state=state,
                )
                try:
                    await self._call("remove", self.backend.remove, vip)
                except BackendError:
                    continue
                self.set_owned(vip, False)
                continue
            # We own the VIP and it is gone: somebody removed it by hand. Put it back only if
            # we are still entitled to it, i.e. nobody else answers for it now.
            event(
                "drift",
                "the VIP was removed from our interface behind our back (by an operator?)",
                level=logging.WARNING,
                vip=vip,
                state=state,
                cause="removed_externally",
            )
            self.set_owned(vip, False)
            answered = await self._probe_owner()
            if answered is not None:
                self._feed(Claimed(mac=answered))
            if self._state() is not State.ACTIVE:
                event("drift_kept", "not re-adding: this node no longer owns the VIP", vip=vip)
                continue
            try:
                await self._call("add", self.backend.add, vip)
            except BackendError:
                continue
            self.set_owned(vip, True)
            event("vip_added", vip=vip, interface=vip.interface, reason="reconcile")
            await self.announce("reconcile")
