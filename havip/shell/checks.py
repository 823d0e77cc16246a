"""Running the health checks: one loop per check, results through rise/fall hysteresis.

A command check passes when it exits 0 within its timeout; a TCP check when a connection to
(host, port) opens within its timeout (closed at once). Each check runs first at once, then
every `interval` from the start of the previous run; a run never overlaps the previous one
(a slow run pushes the next one back instead). One sleep per check per interval, nothing else.

`on_change()` is called whenever a check starts or stops passing (and on `replace`): the
daemon turns that into eligibility. One log line per state change of a check, not per run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from havip.config import Check
from havip.core.health import CheckHealth, Health
from havip.shell.command import run_command
from havip.shell.logs import event
from havip.shell.metrics import Metrics


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One run of a check."""

    outcome: str  # "ok", "failed", "timeout" or "error"
    duration: float  # seconds
    detail: str | None = None  # why it failed, one line (the command's last output line...)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def describe(check: Check) -> tuple[str, str]:
    """(kind, target) of a check: ("command", "argv joined") or ("tcp", "host:port")."""
    if check.tcp is not None:
        host, port = check.tcp
        return "tcp", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "command", " ".join(check.command or ())


async def run_once(check: Check) -> RunResult:
    """Run `check` once (never raises, except CancelledError)."""
    if check.tcp is not None:
        return await _connect(*check.tcp, timeout=check.timeout)
    result = await run_command(check.command or (), timeout=check.timeout)
    detail = None
    if not result.ok:
        last = result.last_line
        detail = result.describe() if last is None else f"{result.describe()}: {last}"
    return RunResult(outcome=result.outcome, duration=result.duration, detail=detail)


async def _connect(host: str, port: int, *, timeout: float) -> RunResult:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    detail: str | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except TimeoutError:
        outcome, detail = "timeout", f"no connection to {host}:{port} within {timeout:g}s"
    except OSError as exc:
        # asyncio's own message names the address again; the errno's text says why.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        outcome, detail = "failed", f"connect {host}:{port}: {why}"
    else:
        transport.close()
        outcome = "ok"
    return RunResult(outcome=outcome, duration=time.monotonic() - started, detail=detail)


def next_due(previous: float, interval: float, now: float) -> float:
    """When the next run starts: `interval` after the previous run was due to start (no drift),
    but never before now, when the previous run ended (no overlap, no catch-up burst)."""
    return max(previous + interval, now)


class _Runner:
    """One configured check: its hysteresis, its last run, its loop task."""

    def __init__(self, check: Check, *, trusted: bool = False) -> None:
        self.check = check
        # Added by a reload: counts as passing until its first result, so that a reload never
        # moves the VIP just because a new check has not run yet (at start-up nothing is
        # trusted: a node waits for its checks before it claims the VIP).
        self.trusted = trusted
        self.health = CheckHealth(rise=check.rise, fall=check.fall)
        self.last: RunResult | None = None
        self.last_run: float | None = None  # wall clock, for status
        self.task: asyncio.Task[None] | None = None


def _passes(r: _Runner) -> bool:
    return r.health.passing or (r.trusted and r.last is None)


class Checks:
    """The configured health checks, each in its own loop while `run()` runs."""

    def __init__(
        self, checks: Sequence[Check], *, metrics: Metrics, on_change: Callable[[], None]
    ) -> None:
        self._metrics = metrics
        self._on_change = on_change
        self._runners: list[_Runner] = []
        self._stopping: set[asyncio.Task[None]] = set()  # removed checks, being cancelled
        self._running = False
        self._set(checks)

    # -- reading ----------------------------------------------------------------------------

    def passing(self) -> bool | None:
        """None: no checks configured; else whether every check passes."""
        if not self._runners:
            return None
        return not self.failing()

    def failing(self) -> list[str]:
        """Names of the checks not passing (including those with no result yet, unless a
        reload added them), config order."""
        return [r.check.name for r in self._runners if not _passes(r)]

    def status(self) -> list[dict[str, object]]:
        """One entry per check, config order (for `status --json`)."""
        out: list[dict[str, object]] = []
        for r in self._runners:
            kind, target = describe(r.check)
            last = r.last
            out.append(
                {
                    "name": r.check.name,
                    "kind": kind,
                    "target": target,
                    "state": r.health.state,
                    "passing": _passes(r),
                    "last_outcome": None if last is None else last.outcome,
                    "last_duration_seconds": None if last is None else round(last.duration, 6),
                    "consecutive_failures": r.health.consecutive_failures,
                    "last_output": None if last is None or last.ok else last.detail,
                    "last_run": r.last_run,
                }
            )
        return out

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every check's loop until cancelled (then every running command is killed)."""
        self._running = True
        try:
            for r in self._runners:
                self._start(r)
            await asyncio.Event().wait()  # forever: the loops are tasks of their own
        finally:
            self._running = False
            tasks = [r.task for r in self._runners if r.task is not None] + list(self._stopping)
            for task in tasks:
                task.cancel()
            for r in self._runners:
                r.task = None
            # Each cancelled loop kills and reaps its command before it ends.
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def replace(self, checks: Sequence[Check]) -> None:
        """Reload: unchanged checks keep their state and loop; removed ones are cancelled (their
        commands killed); new or changed ones start from scratch. Calls on_change."""
        old = {r.check.name: r for r in self._runners}
        self._set(checks, keep=old)
        kept = {id(r) for r in self._runners}
        for r in old.values():
            if id(r) not in kept:
                event("check", f"check {r.check.name} removed or redefined", check=r.check.name)
                if r.task is not None:
                    r.task.cancel()
                    self._stopping.add(r.task)
                    r.task.add_done_callback(self._stopping.discard)
                    r.task = None
        if self._running:
            for r in self._runners:
                if r.task is None:
                    self._start(r)
        self._notify_change()

    def _set(self, checks: Sequence[Check], keep: dict[str, _Runner] | None = None) -> None:
        names = [c.name for c in checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"checks: duplicate check name(s): {', '.join(dupes)}")
        reloaded = keep is not None
        keep = keep or {}
        runners = []
        for check in checks:
            same = keep.get(check.name)
            if same is not None and same.check == check:
                runners.append(same)
            else:
                runners.append(_Runner(check, trusted=reloaded))
        # A redefined check starts again from "unknown": drop its old series, then recreate.
        fresh = [r.check.name for r in runners if r not in keep.values()]
        self._metrics.set_checks([n for n in keep if n not in fresh])
        self._metrics.set_checks(names)
        self._runners = runners

    def _start(self, r: _Runner) -> None:
        r.task = asyncio.get_running_loop().create_task(
            self._loop(r), name=f"havip-check-{r.check.name}"
        )

    async def _loop(self, r: _Runner) -> None:
        loop = asyncio.get_running_loop()
        interval = r.check.interval
        due = loop.time()
        while True:
            r.last_run = time.time()
            try:
                result = await run_once(r.check)
            except Exception as exc:  # a bug here must not end the check: count it, go on
                result = RunResult(outcome="error", duration=0.0, detail=f"{exc!r}")
            self._record(r, result)
            due = next_due(due, interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def _record(self, r: _Runner, result: RunResult) -> None:
        before = r.health.state
        changed = r.health.record(result.ok)
        r.last = result
        h = r.health
        self._metrics.check_run(
            r.check.name,
            outcome=result.outcome,
            duration=result.duration,
            passing=h.passing,
            consecutive_failures=h.consecutive_failures,
        )
        if h.state is not before:
            self._log_state(r, result, before)
        if changed:
            self._notify_change()

    def _log_state(self, r: _Runner, result: RunResult, before: Health) -> None:
        h, name = r.health, r.check.name
        if h.state is Health.UP:
            sentence = f"check {name} passes"
        elif h.state is Health.DOWN:
            sentence = f"check {name} fails"
            if before is not Health.UNKNOWN:
                sentence += f" ({h.consecutive_failures} failures in a row, fall {h.fall})"
        elif h.state is Health.FALLING:
            sentence = f"check {name} failed {h.consecutive_failures} of {h.fall} times in a row"
        else:
            sentence = f"check {name} passed {h.consecutive_successes} of {h.rise} times in a row"
        stopped = before in (Health.UP, Health.FALLING, Health.UNKNOWN) and not h.passing
        event(
            "check",
            sentence,
            level=logging.WARNING if stopped else logging.INFO,
            check=name,
            state=h.state,
            outcome=result.outcome,
            duration=f"{result.duration:.3f}",
            failures=h.consecutive_failures,
            output=None if result.ok else result.detail,
        )

    def _notify_change(self) -> None:
        # The callback is the daemon's; its bug must not stop our check loop.
        try:
            self._on_change()
        except Exception as exc:
            event("check", "on_change callback failed", level=logging.ERROR, error=repr(exc))
