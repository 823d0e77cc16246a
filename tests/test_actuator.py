"""The actuator: VIP effects in order, and the rules that guard them (issue 5 parts 5, 14, 18;
issue 9 parts 3 and 8). The dry-run backend records what it did, in order."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from havip.backends.base import BackendError, BackendOp
from havip.backends.dryrun import DryRunBackend
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
from havip.shell.actuator import Actuator, Job, Reconcile
from havip.shell.epochstore import EpochStore
from havip.shell.metrics import Metrics

VIP = Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="eth0")
ADD, REMOVE, ANNOUNCE = BackendOp.ADD, BackendOp.REMOVE, BackendOp.ANNOUNCE
V = str(VIP)


class Stubborn(DryRunBackend):
    """A backend whose removals fail (e.g. netlink refuses)."""

    def remove(self, vip: Vip) -> None:
        raise BackendError(BackendOp.REMOVE, vip, "netlink: Operation not permitted (errno 1)")


class Unwritable(EpochStore):
    def save(self, epoch: int) -> None:
        raise OSError(28, "No space left on device")


class Harness:
    def __init__(self, tmp: Path, backend: DryRunBackend, *, epochs: EpochStore | None = None):
        self.backend = backend
        self.state = State.STANDBY
        self.fed: list[Event] = []
        self.resigned: list[tuple[int, int]] = []  # (epoch, len(history) when it was sent)
        self.answer: str | None = None
        self.stopped = False
        self.epochs = epochs or EpochStore(tmp, "n1")
        self.act = Actuator(
            backend=backend,
            vips=(VIP,),
            epochs=self.epochs,
            metrics=Metrics(
                node="n1", peer="n2", vips=[(VIP.ip, VIP.interface)], states=list(State),
                reasons=list(Reason), version="test",
            ),
            feed=self.fed.append,
            state=lambda: self.state,
            resign=self._resign,
            probe_owner=self._probe_owner,
            stop=self._stop,
        )  # fmt: skip

    async def _resign(self, epoch: int) -> bool:
        self.resigned.append((epoch, len(self.backend.history)))
        return True

    async def _probe_owner(self) -> str | None:
        return self.answer

    def _stop(self) -> None:
        self.stopped = True

    def run(self, *jobs: Job) -> None:
        """Queue `jobs` and let the actuator's own task drain the queue, as the daemon does."""

        async def go() -> None:
            for job in jobs:
                self.act.put(job)
            task = asyncio.ensure_future(self.act.run())
            for _ in range(500):  # bounded
                if self.act.queue.empty():
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.02)  # the last job finishes
            task.cancel()

        asyncio.run(go())


def test_acquire_saves_the_epoch_then_adds_then_announces(tmp_path: Path) -> None:
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.run(Acquire(epoch=7))
    assert h.epochs.load() == 7
    assert h.backend.history == [(ADD, V), (ANNOUNCE, V)]
    assert h.fed == [Acquired(epoch=7)]
    assert h.act.owned == {V: True}


def test_no_takeover_without_a_durable_epoch(tmp_path: Path) -> None:
    """Issue 5 part 14: the VIP is not added when its epoch could not be saved."""
    h = Harness(tmp_path, DryRunBackend("n1"), epochs=Unwritable(tmp_path, "n1"))
    h.run(Acquire(epoch=3))
    assert h.backend.history == []
    assert len(h.fed) == 1 and isinstance(h.fed[0], BackendFailed)
    assert h.fed[0].op == "epoch" and "No space left" in h.fed[0].error


def test_the_old_owner_removes_before_it_resigns(tmp_path: Path) -> None:
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.state = State.ACTIVE
    h.run(Acquire(epoch=2))
    h.state = State.STANDBY
    h.run(Release(reason=Reason.SHUTDOWN), SendResign(epoch=2), Stop())
    assert h.backend.history == [(ADD, V), (ANNOUNCE, V), (REMOVE, V)]
    # RESIGN left after the removal, and the daemon stopped after both.
    assert h.resigned == [(2, 3)]
    assert h.stopped


def test_no_resign_when_the_removal_failed(tmp_path: Path) -> None:
    """Issue 5 part 18: the peer would add the VIP without a probe while we still hold it."""
    h = Harness(tmp_path, Stubborn("n1"))
    h.run(Acquire(epoch=2), Release(reason=Reason.SHUTDOWN), SendResign(epoch=2))
    assert h.resigned == []
    assert any(isinstance(e, BackendFailed) and e.op == "remove" for e in h.fed)


def test_an_announcement_queued_behind_a_release_is_dropped(tmp_path: Path) -> None:
    """Issue 5 part 5: no gratuitous ARP ever follows a release."""
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.state = State.ACTIVE
    h.run(Acquire(epoch=2))
    h.state = State.STANDBY  # the machine released meanwhile
    h.run(Release(reason=Reason.CONFLICT), Announce(reason="second burst"))
    assert h.backend.history == [(ADD, V), (ANNOUNCE, V), (REMOVE, V)]


def test_announce_while_active_and_holding(tmp_path: Path) -> None:
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.state = State.ACTIVE
    h.run(Acquire(epoch=2), Announce(reason="periodic"))
    assert h.backend.history == [(ADD, V), (ANNOUNCE, V), (ANNOUNCE, V)]


# ---- reconcile: drift repair (issue 9 part 3) ----------------------------------------------------


def test_reconcile_removes_a_vip_a_standby_should_not_hold(tmp_path: Path) -> None:
    backend = DryRunBackend("n1")
    backend.add(VIP)  # someone put it there behind the daemon's back
    h = Harness(tmp_path, backend)
    h.run(Reconcile())
    assert not backend.present(VIP)
    assert backend.history[-1] == (REMOVE, V)


@pytest.mark.parametrize("answer", [None, "02:00:00:00:00:66"])
def test_reconcile_puts_back_a_vip_removed_from_the_owner(
    tmp_path: Path, answer: str | None
) -> None:
    """Removed by hand while we own it: re-added (and announced) unless somebody else answers;
    a stranger's answer is reported to the machine, which keeps the VIP, so it goes back."""
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.state = State.ACTIVE
    h.run(Acquire(epoch=2))
    h.backend.remove(VIP)  # the operator
    h.answer = answer
    h.run(Reconcile())
    assert h.backend.present(VIP)
    assert h.backend.history[-2:] == [(ADD, V), (ANNOUNCE, V)]
    assert [e for e in h.fed if isinstance(e, Claimed)] == (
        [] if answer is None else [Claimed(mac=answer)]
    )


def test_reconcile_does_not_fight_when_the_machine_gives_way(tmp_path: Path) -> None:
    """The peer answers for the VIP the operator removed: the machine yields (here: the
    harness moves to STANDBY when told of the claim), and the VIP is not put back."""
    h = Harness(tmp_path, DryRunBackend("n1"))
    h.state = State.ACTIVE
    h.run(Acquire(epoch=2))
    h.backend.remove(VIP)
    h.answer = "02:00:00:00:00:02"

    def yields(ev: Event) -> None:
        h.fed.append(ev)
        if isinstance(ev, Claimed):
            h.state = State.STANDBY

    h.act._feed = yields
    h.run(Reconcile())
    assert not h.backend.present(VIP)
    assert h.backend.history[-1] == (REMOVE, V)  # the operator's removal, nothing after it
