"""Notify and fence hooks through real processes: order, environment, failures, the queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from havip.config import Hooks
from havip.lab.netns import process_running
from havip.shell.hooks import QUEUE_LIMIT, HookRunner, notify_commands
from havip.shell.metrics import Metrics

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 10.0 * SCALE  # upper bound for anything we wait for
PY = sys.executable
VIPS = ("198.18.0.100/24", "198.18.0.101/24")

# A hook that appends a "start" record, lingers a little (so that an overlap would show),
# then an "end" record with every HAVIP_* variable and one inherited variable.
HOOK = """
import json, os, sys, time
log, label = sys.argv[1], sys.argv[2]
def put(kind, **extra):
    with open(log, "a") as f:
        f.write(json.dumps({"kind": kind, "label": label, **extra}) + "\\n")
put("start")
time.sleep(0.05)
env = {k: v for k, v in os.environ.items() if k.startswith("HAVIP_") and "_TEST_" not in k}
put("end", env=env, inherited=os.environ.get("HAVIP_TEST_INHERITED"))
"""


@pytest.fixture
def hook(tmp_path: Path) -> list[str]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    return [PY, str(script), str(tmp_path / "log")]


def records(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def hang_command(pid_file: Path) -> tuple[str, ...]:
    """A command that writes its PID (atomically), then hangs for good (until killed)."""
    code = (
        f"import os, time; p = {str(pid_file)!r}; open(p + '.tmp', 'w').write(str(os.getpid()));"
        "os.rename(p + '.tmp', p); time.sleep(300)"
    )
    return (PY, "-c", code)


def make_metrics() -> Metrics:
    vips = [(v, "eth0") for v in VIPS]
    return Metrics(node="n1", peer="n2", vips=vips, states=(), reasons=(), version="0")


def hook_runs(m: Metrics, hook: str, outcome: str) -> float | None:
    return m.registry.get_sample_value("havip_hook_runs_total", {"hook": hook, "outcome": outcome})


def runner(hooks: Hooks, m: Metrics | None = None) -> HookRunner:
    return HookRunner(hooks, metrics=m or make_metrics(), node="n1", peer="n2", vips=VIPS)


@contextlib.asynccontextmanager
async def working(r: HookRunner) -> AsyncIterator[None]:
    task = asyncio.create_task(r.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def notify(r: HookRunner, state: str, old: str, epoch: int, reason: str = "peer_lost") -> None:
    r.notify(state=state, old_state=old, reason=reason, sentence=f"now {state}", epoch=epoch)


def test_notify_commands_name_what_for_state_returns() -> None:
    hooks = Hooks(notify=("/g",), notify_active=("/a",), notify_fault=("/f",))
    for state in ("active", "standby", "fault", "stopped", "probing", "init"):
        named = notify_commands(hooks, state)
        assert tuple(argv for _, argv in named) == hooks.for_state(state)
    assert notify_commands(hooks, "active") == [("notify_active", ("/a",)), ("notify", ("/g",))]
    assert notify_commands(hooks, "standby") == [("notify", ("/g",))]
    assert notify_commands(Hooks(), "active") == []


def test_hooks_run_one_at_a_time_in_order_with_their_environment(
    tmp_path: Path, hook: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAVIP_TEST_INHERITED", "from-the-daemon")
    hooks = Hooks(
        notify=(*hook, "any"),
        notify_active=(*hook, "active"),
        notify_standby=(*hook, "standby"),
        timeout=WAIT,
    )
    r = runner(hooks)

    async def main() -> None:
        async with working(r):
            # A failover as the machine would report it, queued faster than hooks run.
            notify(r, "standby", "init", 1, reason="startup")
            notify(r, "probing", "standby", 1)  # only the generic hook
            notify(r, "active", "probing", 2, reason="probe_silent")
            notify(r, "fault", "active", 2, reason="backend_failed")
            await r.drain(WAIT)

    asyncio.run(main())
    recs = records(tmp_path)
    # Strictly start, end, start, end...: never two at once.
    assert [x["kind"] for x in recs] == ["start", "end"] * 6
    ends = [x for x in recs if x["kind"] == "end"]
    assert [x["label"] for x in ends] == ["standby", "any", "any", "active", "any", "any"]
    assert all(x["inherited"] == "from-the-daemon" for x in ends)
    base = {"HAVIP_NODE": "n1", "HAVIP_PEER": "n2", "HAVIP_VIPS": ",".join(VIPS)}
    expected = [
        ("notify_standby", "standby", "init", "startup", "1"),
        ("notify", "standby", "init", "startup", "1"),
        ("notify", "probing", "standby", "peer_lost", "1"),
        ("notify_active", "active", "probing", "probe_silent", "2"),
        ("notify", "active", "probing", "probe_silent", "2"),
        ("notify", "fault", "active", "backend_failed", "2"),
    ]
    for rec, (name, state, old, reason, epoch) in zip(ends, expected, strict=True):
        assert rec["env"] == {
            **base,
            "HAVIP_HOOK": name,
            "HAVIP_STATE": state,
            "HAVIP_OLD_STATE": old,
            "HAVIP_REASON": reason,
            "HAVIP_SENTENCE": f"now {state}",
            "HAVIP_EPOCH": epoch,
        }


def test_a_failing_hook_is_logged_counted_and_does_not_stop_the_next(
    tmp_path: Path, hook: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    m = make_metrics()
    fail = (PY, "-c", "print('cannot reach the router'); raise SystemExit(4)")
    r = runner(Hooks(notify_active=fail, notify=(*hook, "after"), timeout=WAIT), m)
    caplog.set_level(logging.INFO, logger="havip")

    async def main() -> None:
        async with working(r):
            notify(r, "active", "probing", 3)
            r.replace(Hooks(notify_fault=("/nonexistent/hook",), notify=(*hook, "after")))
            notify(r, "fault", "active", 3)
            await r.drain(WAIT)

    asyncio.run(main())
    assert [x["label"] for x in records(tmp_path) if x["kind"] == "end"] == ["after", "after"]
    assert hook_runs(m, "notify_active", "failed") == 1
    assert hook_runs(m, "notify_fault", "error") == 1
    assert hook_runs(m, "notify", "ok") == 2
    assert hook_runs(m, "notify", "failed") == 0
    lines = [(x.levelno, x.getMessage()) for x in caplog.records if "event=hook" in x.getMessage()]
    assert [level for level, _ in lines] == [
        logging.WARNING,
        logging.INFO,
        logging.WARNING,
        logging.INFO,
    ]
    assert "hook=notify_active outcome=failed" in lines[0][1]
    assert "returncode=4" in lines[0][1] and "state=active" in lines[0][1]
    assert "exited with code 4: cannot reach the router" in lines[0][1]
    assert "outcome=error" in lines[2][1]
    assert "cannot run /nonexistent/hook: No such file or directory" in lines[2][1]


def test_a_hook_past_its_timeout_is_killed_and_the_next_runs(
    tmp_path: Path, hook: list[str]
) -> None:
    m = make_metrics()
    slow = (PY, "-c", "import time; time.sleep(300)")
    r = runner(Hooks(notify_standby=slow, notify=(*hook, "next"), timeout=0.3 * SCALE), m)

    async def main() -> None:
        async with working(r):
            notify(r, "standby", "active", 5)
            await r.drain(WAIT)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 150  # not the hook's own 300 s
    assert hook_runs(m, "notify_standby", "timeout") == 1
    assert [x["label"] for x in records(tmp_path) if x["kind"] == "end"] == ["next"]


def test_a_full_queue_drops_the_oldest_waiting_hook(tmp_path: Path) -> None:
    m = make_metrics()
    log = tmp_path / "epochs"
    # Each run appends its epoch; sh -c only to keep 64 runs quick (still an argument list).
    append = ("/bin/sh", "-c", f'echo "$HAVIP_EPOCH" >> {log}')
    r = runner(Hooks(notify=append, timeout=WAIT), m)
    extra = 6
    for epoch in range(QUEUE_LIMIT + extra):  # the worker is not running yet: all wait
        notify(r, "standby", "active", epoch)
    assert r.dropped == extra
    assert m.registry.get_sample_value("havip_hooks_dropped_total") == extra

    async def main() -> None:
        async with working(r):
            await r.drain(WAIT)

    asyncio.run(main())
    assert [int(x) for x in log.read_text().split()] == list(range(extra, QUEUE_LIMIT + extra))


def test_notify_with_no_hook_for_the_state_runs_nothing() -> None:
    m = make_metrics()
    r = runner(Hooks(notify_active=("/bin/true",)), m)

    async def main() -> None:
        async with working(r):
            notify(r, "standby", "active", 1)
            notify(r, "active", "standby", 2)
            await r.drain(WAIT)

    asyncio.run(main())
    assert hook_runs(m, "notify_standby", "ok") == 0
    assert hook_runs(m, "notify", "ok") == 0
    assert hook_runs(m, "notify_active", "ok") == 1


def test_drain_gives_up_after_its_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "pid"
    hang = hang_command(pid_file)
    r = runner(Hooks(notify=hang, timeout=300))
    caplog.set_level(logging.INFO, logger="havip")

    async def main() -> float:
        async with working(r):
            notify(r, "stopped", "active", 1)
            notify(r, "stopped", "active", 1)
            started = time.monotonic()
            await r.drain(0.3 * SCALE)
            return time.monotonic() - started

    waited = asyncio.run(main())
    assert waited >= 0.3 * SCALE
    assert any("stopped waiting for hooks" in x.getMessage() for x in caplog.records)
    assert any("waiting=1" in x.getMessage() for x in caplog.records)
    # Cancelling the worker (shutdown) killed the running hook.
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + WAIT
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert not process_running(pid)
    finally:
        if process_running(pid):
            os.kill(pid, signal.SIGKILL)


# -- fence -----------------------------------------------------------------------------------


def fence(r: HookRunner, reason: str = "deadline_missed", epoch: int = 8) -> bool | None:
    return asyncio.run(r.fence(reason=reason, epoch=epoch))


def test_no_fence_hook_is_none() -> None:
    assert fence(runner(Hooks(notify=("/bin/true",)))) is None


def test_fence_exit_zero_is_true_with_its_environment(tmp_path: Path, hook: list[str]) -> None:
    m = make_metrics()
    assert fence(runner(Hooks(fence=(*hook, "fence")), m), "connection_lost", 12) is True
    [_, end] = records(tmp_path)
    env = end["env"]
    assert isinstance(env, dict)
    assert env["HAVIP_HOOK"] == "fence"
    assert env["HAVIP_STATE"] == "probing"
    assert env["HAVIP_OLD_STATE"] == "standby"
    assert env["HAVIP_REASON"] == "connection_lost"
    assert env["HAVIP_EPOCH"] == "12"
    assert env["HAVIP_PEER"] == "n2"
    assert env["HAVIP_VIPS"] == ",".join(VIPS)
    assert "n2" in env["HAVIP_SENTENCE"] and "connection_lost" in env["HAVIP_SENTENCE"]
    assert hook_runs(m, "fence", "ok") == 1


@pytest.mark.parametrize(
    ("command", "outcome"),
    [(("/bin/false",), "failed"), (("/nonexistent/fence",), "error")],
)
def test_fence_that_fails_is_false(command: tuple[str, ...], outcome: str) -> None:
    m = make_metrics()
    assert fence(runner(Hooks(fence=command), m)) is False
    assert hook_runs(m, "fence", outcome) == 1


def test_fence_honours_its_own_timeout() -> None:
    m = make_metrics()
    hooks = Hooks(
        fence=(PY, "-c", "import time; time.sleep(300)"),
        fence_timeout=0.3 * SCALE,
        timeout=300,  # the notify timeout does not apply to the fence
    )
    started = time.monotonic()
    assert fence(runner(hooks, m)) is False
    assert 0.3 * SCALE <= time.monotonic() - started < 150
    assert hook_runs(m, "fence", "timeout") == 1


def test_fence_is_not_queued_behind_notify_hooks(tmp_path: Path, hook: list[str]) -> None:
    pid_file = tmp_path / "pid"
    hang = hang_command(pid_file)
    r = runner(Hooks(notify=hang, timeout=300, fence=(*hook, "fence")))

    async def main() -> bool | None:
        async with working(r):
            notify(r, "standby", "active", 1)
            deadline = time.monotonic() + WAIT
            while not pid_file.exists():
                assert time.monotonic() < deadline, "the notify hook never started"
                await asyncio.sleep(0.01)
            result = await r.fence(reason="deadline_missed", epoch=2)
            assert process_running(int(pid_file.read_text()))  # the notify hook still runs
            return result

    assert asyncio.run(main()) is True
    assert [x["label"] for x in records(tmp_path) if x["kind"] == "end"] == ["fence"]
