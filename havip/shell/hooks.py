"""Notify hooks and the fence hook (keepalived's notify_master/backup/fault, plus a fence).

Notify hooks are queued by `notify()` (which never blocks or raises) and run by one worker,
one at a time, in order, each with `hooks.timeout`. The queue is bounded (`QUEUE_LIMIT`): when
full, the oldest waiting hook is dropped, logged and counted. A hook's failure is logged and
counted and changes nothing else. The fence hook runs at once when asked (never behind notify
hooks), with its own timeout, and its result is the daemon's to act on.

Every hook sees the daemon's environment plus HAVIP_HOOK, HAVIP_NODE, HAVIP_PEER,
HAVIP_STATE, HAVIP_OLD_STATE, HAVIP_REASON, HAVIP_SENTENCE, HAVIP_EPOCH and HAVIP_VIPS
(comma-separated), with the same tokens as logs and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from havip.config import Hooks
from havip.shell.command import CommandResult, run_command
from havip.shell.logs import event
from havip.shell.metrics import Metrics

QUEUE_LIMIT = 64  # notify hooks waiting; beyond this the oldest waiting one is dropped


@dataclass(frozen=True, kw_only=True)
class _Job:
    hook: str  # notify, notify_active, ..., fence
    argv: tuple[str, ...]
    timeout: float
    state: str
    env: dict[str, str]  # the HAVIP_* variables only


def notify_commands(hooks: Hooks, state: str) -> list[tuple[str, tuple[str, ...]]]:
    """(hook name, argv) to run on entering `state`, in order: `hooks.for_state(state)`, named."""
    return list(hooks.named_for_state(state))


class HookRunner:
    """Runs the configured hooks: notify hooks through a queue, the fence hook on demand."""

    def __init__(
        self, hooks: Hooks, *, metrics: Metrics, node: str, peer: str, vips: Sequence[str]
    ) -> None:
        self._hooks = hooks
        self._metrics = metrics
        self._base = {
            "HAVIP_NODE": node,
            "HAVIP_PEER": peer,
            "HAVIP_VIPS": ",".join(str(v) for v in vips),
        }
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()  # set while the queue has work
        self._idle = asyncio.Event()  # set while nothing is queued or running
        self._idle.set()
        self.dropped = 0

    @property
    def hooks(self) -> Hooks:
        return self._hooks

    def replace(self, hooks: Hooks) -> None:
        """Reload: hooks queued from now on use the new commands (queued ones keep theirs)."""
        self._hooks = hooks

    # -- notify -----------------------------------------------------------------------------

    def notify(self, *, state: str, old_state: str, reason: str, sentence: str, epoch: int) -> None:
        """Queue the notify hooks for entering `state`. Never blocks, never raises."""
        try:
            for hook, argv in notify_commands(self._hooks, str(state)):
                env = self._env(hook, state, old_state, reason, sentence, epoch)
                self._enqueue(
                    _Job(hook=hook, argv=argv, timeout=self._hooks.timeout, state=state, env=env)
                )
        except Exception as exc:  # a hook must never take a transition down with it
            event("hook", "could not queue notify hooks", level=logging.ERROR, error=repr(exc))

    def _enqueue(self, job: _Job) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            old = self._queue.popleft()
            self.dropped += 1
            self._metrics.hook_dropped()
            event(
                "hook",
                f"too many hooks waiting ({QUEUE_LIMIT}): dropped the oldest, unrun",
                level=logging.WARNING,
                hook=old.hook,
                state=old.state,
                dropped=self.dropped,
            )
        self._queue.append(job)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The worker: run queued notify hooks one at a time, in order, until cancelled."""
        while True:
            if not self._queue:
                self._wake.clear()
                self._idle.set()
                await self._wake.wait()
                continue
            job = self._queue.popleft()
            try:
                await self._run(job)
            except Exception as exc:  # a bug must not stop the worker
                event("hook", "hook runner failed", level=logging.ERROR, error=repr(exc))

    async def drain(self, limit: float) -> None:
        """Shutdown: wait until every queued hook ran, at most `limit` seconds."""
        try:
            async with asyncio.timeout(limit):
                await self._idle.wait()
        except TimeoutError:
            event(
                "hook",
                f"stopped waiting for hooks after {limit:g}s",
                level=logging.WARNING,
                waiting=len(self._queue),
            )

    # -- fence ------------------------------------------------------------------------------

    async def fence(self, *, reason: str, epoch: int, old_state: str = "standby") -> bool | None:
        """Run the fence hook now, with `hooks.fence_timeout`.

        True: it exited 0; False: it failed, timed out or could not start; None: no fence hook
        is configured. `reason` is the failure signal, `epoch` the epoch about to be taken.
        """
        hooks = self._hooks
        if not hooks.fence:
            return None
        peer = self._base["HAVIP_PEER"]
        sentence = f"fencing {peer} before taking over after {reason}"
        env = self._env("fence", "probing", old_state, reason, sentence, epoch)
        job = _Job(
            hook="fence", argv=hooks.fence, timeout=hooks.fence_timeout, state="probing", env=env
        )
        try:
            return (await self._run(job)).ok
        except Exception as exc:  # a bug counts as a failed fence, never as a success
            event("hook", "fence hook failed to run", level=logging.ERROR, error=repr(exc))
            return False

    # -- both -------------------------------------------------------------------------------

    def _env(
        self, hook: str, state: str, old_state: str, reason: str, sentence: str, epoch: int
    ) -> dict[str, str]:
        return {
            **self._base,
            "HAVIP_HOOK": hook,
            "HAVIP_STATE": str(state),
            "HAVIP_OLD_STATE": str(old_state),
            "HAVIP_REASON": str(reason),
            "HAVIP_SENTENCE": sentence,
            "HAVIP_EPOCH": str(epoch),
        }

    async def _run(self, job: _Job) -> CommandResult:
        # The daemon's environment as it is now, then ours on top.
        result = await run_command(job.argv, timeout=job.timeout, env={**os.environ, **job.env})
        self._metrics.hook_run(job.hook, result.outcome, result.duration)
        how = "ran" if result.ok else result.describe()
        last = None if result.ok else result.last_line
        event(
            "hook",
            f"hook {job.hook} {how}" + (f": {last}" if last else ""),
            level=logging.INFO if result.ok else logging.WARNING,
            hook=job.hook,
            outcome=result.outcome,
            duration=f"{result.duration:.3f}",
            returncode=result.returncode,
            state=job.state,
        )
        return result
