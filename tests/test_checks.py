"""Health checks through real commands and real TCP listeners: hysteresis, schedule, reload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from havip.config import Check
from havip.core.health import Health
from havip.lab.netns import process_running
from havip.shell import checks as checks_module
from havip.shell.checks import Checks, RunResult, describe, next_due
from havip.shell.metrics import Metrics

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 10.0 * SCALE  # upper bound for anything we wait for
TICK = 0.05 * SCALE  # check interval in these tests
PY = sys.executable


def make_metrics() -> Metrics:
    return Metrics(node="n1", peer="n2", vips=(), states=(), reasons=(), version="0")


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def runs(m: Metrics, check: str, outcome: str) -> float:
    return sample(m, "havip_check_runs_total", check=check, outcome=outcome) or 0.0


def hang_check(name: str, pid_file: Path) -> Check:
    """A check whose command writes its PID, then hangs for good (until killed)."""
    code = (
        f"import os, time; p = {str(pid_file)!r}; open(p + '.tmp', 'w').write(str(os.getpid()));"
        "os.rename(p + '.tmp', p); time.sleep(300)"
    )
    return Check(name=name, command=(PY, "-c", code), interval=TICK, timeout=300)


def file_check(name: str, flag: Path, *, rise: int = 2, fall: int = 3, **kw: float) -> Check:
    """A check that passes while `flag` exists."""
    return Check(
        name=name,
        command=("/usr/bin/test", "-e", str(flag)),
        interval=kw.get("interval", TICK),
        timeout=kw.get("timeout", WAIT),
        rise=rise,
        fall=fall,
    )


async def until(pred: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `pred()` holds."""
    deadline = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(c: Checks) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(c.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Changes:
    """on_change callback that snapshots what the daemon would see."""

    def __init__(self) -> None:
        self.checks: Checks | None = None
        self.seen: list[tuple[bool | None, list[str]]] = []

    def __call__(self) -> None:
        assert self.checks is not None
        self.seen.append((self.checks.passing(), self.checks.failing()))


def test_no_checks_configured() -> None:
    c = Checks([], metrics=make_metrics(), on_change=lambda: None)
    assert (c.passing(), c.failing(), c.status()) == (None, [], [])


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    check = file_check("web", tmp_path / "up")
    with pytest.raises(ValueError, match=r"duplicate check name.*web"):
        Checks([check, check], metrics=make_metrics(), on_change=lambda: None)


def test_unknown_before_the_first_run_is_not_passing(tmp_path: Path) -> None:
    c = Checks([file_check("web", tmp_path / "up")], metrics=make_metrics(), on_change=lambda: None)
    assert (c.passing(), c.failing()) == (False, ["web"])
    [st] = c.status()
    assert (st["state"], st["passing"], st["last_outcome"], st["last_run"]) == (
        Health.UNKNOWN,
        False,
        None,
        None,
    )


def test_rise_and_fall_through_a_real_command(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.touch()
    m = make_metrics()
    changes = Changes()
    c = Checks([file_check("svc", flag, rise=2, fall=3)], metrics=m, on_change=changes)
    changes.checks = c

    def svc_runs(outcome: str) -> float:
        return runs(m, "svc", outcome)

    async def main() -> None:
        async with running(c):
            # The first result decides at once.
            await until(lambda: len(changes.seen) == 1, "the first result")
            assert changes.seen == [(True, [])]
            assert svc_runs("ok") == 1
            assert c.status()[0]["state"] == Health.UP

            flag.unlink()
            failed_before = svc_runs("failed")
            await until(lambda: len(changes.seen) == 2, "the check to stop passing")
            assert changes.seen[1] == (False, ["svc"])
            assert svc_runs("failed") - failed_before == 3  # exactly `fall` failures, not fewer
            [st] = c.status()
            assert (st["state"], st["consecutive_failures"], st["last_outcome"]) == (
                Health.DOWN,
                3,
                "failed",
            )
            assert st["last_output"] == "exited with code 1"
            assert sample(m, "havip_check_passing", check="svc") == 0
            assert sample(m, "havip_check_consecutive_failures", check="svc") == 3
            assert sample(m, "havip_check_last_ok", check="svc") == 0

            ok_before = svc_runs("ok")
            flag.touch()
            await until(lambda: len(changes.seen) == 3, "the check to pass again")
            assert changes.seen[2] == (True, [])
            assert svc_runs("ok") - ok_before == 2  # exactly `rise` successes
            assert sample(m, "havip_check_passing", check="svc") == 1
            assert sample(m, "havip_check_last_ok", check="svc") == 1
            assert sample(m, "havip_check_consecutive_failures", check="svc") == 0

    asyncio.run(main())


def test_one_failure_in_a_row_does_not_change_anything(tmp_path: Path) -> None:
    # A check that fails every other run, with fall=2, never stops passing.
    counter = tmp_path / "n"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(counter)!r});"
        "n = int(p.read_text() or 0) if p.exists() else 0; p.write_text(str(n + 1));"
        "sys.exit(n % 2)"
    )
    check = Check(name="flaky", command=(PY, "-c", code), interval=TICK, timeout=WAIT, fall=2)
    m = make_metrics()
    changes = Changes()
    c = Checks([check], metrics=m, on_change=changes)
    changes.checks = c

    async def main() -> None:
        async with running(c):
            await until(lambda: runs(m, "flaky", "failed") >= 3, "three failed runs")
            assert changes.seen == [(True, [])]
            assert c.status()[0]["state"] in (Health.UP, Health.FALLING)

    asyncio.run(main())


def test_status_of_a_failing_command_names_its_last_output_line(tmp_path: Path) -> None:
    code = "print('checking'); print('service down: port closed'); raise SystemExit(2)"
    check = Check(name="app", command=(PY, "-c", code), interval=TICK, timeout=WAIT, fall=1)
    c = Checks([check], metrics=make_metrics(), on_change=lambda: None)

    async def main() -> None:
        before = time.time()
        async with running(c):
            await until(lambda: c.status()[0]["last_outcome"] is not None, "a run")
        [st] = c.status()
        assert st["kind"] == "command"
        assert st["target"] == f"{PY} -c {code}"
        assert st["last_outcome"] == "failed"
        assert st["last_output"] == "exited with code 2: service down: port closed"
        assert isinstance(st["last_run"], float) and st["last_run"] >= before
        assert isinstance(st["last_duration_seconds"], float)

    asyncio.run(main())


def test_a_command_past_its_timeout_is_a_timeout(tmp_path: Path) -> None:
    check = Check(
        name="slow",
        command=(PY, "-c", "import time; time.sleep(300)"),
        interval=TICK,
        timeout=0.3 * SCALE,
        fall=1,
    )
    m = make_metrics()
    c = Checks([check], metrics=m, on_change=lambda: None)

    async def main() -> None:
        async with running(c):
            await until(lambda: c.status()[0]["last_outcome"] is not None, "a run")
        [st] = c.status()
        assert (st["last_outcome"], st["passing"]) == ("timeout", False)
        assert str(st["last_output"]).startswith("timed out after")
        assert sample(m, "havip_check_runs_total", check="slow", outcome="timeout") == 1

    asyncio.run(main())


def test_tcp_check_passes_while_something_listens() -> None:
    m = make_metrics()

    async def main() -> None:
        accepted = 0

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        check = Check(name="tcp", tcp=("127.0.0.1", port), interval=TICK, timeout=WAIT, fall=1)
        c = Checks([check], metrics=m, on_change=lambda: None)
        assert describe(check) == ("tcp", f"127.0.0.1:{port}")
        async with running(c):
            await until(lambda: c.passing() is True, "the TCP check to pass")
            await until(lambda: accepted >= 1, "the listener to see the connection")
            server.close()
            await server.wait_closed()
            await until(lambda: c.passing() is False, "the TCP check to fail")
        [st] = c.status()
        assert (st["kind"], st["target"]) == ("tcp", f"127.0.0.1:{port}")
        assert st["last_outcome"] == "failed"
        assert st["last_output"] == f"connect 127.0.0.1:{port}: Connection refused"

    asyncio.run(main())


def test_runs_never_overlap_and_are_spaced_from_the_previous_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.05 * SCALE
    spans: list[tuple[float, float]] = []
    durations = iter([0.0, 0.12 * SCALE, 0.0, 0.0, 0.08 * SCALE, 0.0])  # some longer than interval

    async def fake_run_once(check: Check) -> RunResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(next(durations, 0.0))
        spans.append((start, loop.time()))
        return RunResult(outcome="ok", duration=loop.time() - start)

    monkeypatch.setattr(checks_module, "run_once", fake_run_once)
    check = Check(name="x", command=("/bin/true",), interval=interval, timeout=1.0)
    c = Checks([check], metrics=make_metrics(), on_change=lambda: None)

    async def main() -> None:
        async with running(c):
            await until(lambda: len(spans) >= 6, "six runs")

    asyncio.run(main())
    # Each run is due one interval after the previous one was due (no drift), or when the
    # previous one ended if it overran. A run may start late (a busy machine), never early.
    due = spans[0][0]
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        due = max(due + interval, end)
        assert next_start >= end  # no overlap
        assert next_start >= due - 0.001  # never sooner than its slot


@pytest.mark.parametrize(
    ("previous", "now", "due"),
    [
        (10.0, 10.5, 12.0),  # a 0.5 s run: due 2 s after the previous start, not its end
        (10.0, 12.0, 12.0),
        (10.0, 13.5, 13.5),  # overran: next at once, and no burst of runs to catch up
    ],
)
def test_next_run_is_due_an_interval_after_the_previous_start(
    previous: float, now: float, due: float
) -> None:
    assert next_due(previous, 2.0, now) == due


def test_log_lines_only_on_state_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flag = tmp_path / "up"
    flag.touch()
    m = make_metrics()
    c = Checks([file_check("svc", flag, rise=1, fall=2)], metrics=m, on_change=lambda: None)

    async def main() -> None:
        async with running(c):
            await until(lambda: runs(m, "svc", "ok") >= 5, "five passing runs")
            flag.unlink()
            await until(lambda: c.passing() is False, "the check to fail")

    caplog.set_level(logging.INFO, logger="havip")
    asyncio.run(main())
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "event=check" in r.getMessage()]
    assert [level for level, _ in lines] == [logging.INFO, logging.INFO, logging.WARNING]
    assert "state=up" in lines[0][1]
    assert "state=falling" in lines[1][1]
    assert "state=down" in lines[2][1] and "failures=2" in lines[2][1]
    assert "output=" in lines[2][1]


def test_replace_keeps_unchanged_checks_and_kills_removed_ones(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.touch()
    pid_file = tmp_path / "pid"
    keep = file_check("keep", flag, rise=1, fall=5)
    hang = hang_check("hang", pid_file)
    m = make_metrics()
    calls: list[int] = []
    c = Checks([keep, hang], metrics=m, on_change=lambda: calls.append(1))

    async def main() -> None:
        async with running(c):
            await until(lambda: runs(m, "keep", "ok") >= 2, "keep to run twice")
            await until(pid_file.exists, "hang to start")
            pid = int(pid_file.read_text())
            flag.unlink()  # keep now fails, but with fall=5 still passes for a while
            await until(lambda: c.status()[0]["state"] == Health.FALLING, "a failed run")
            before = c.status()[0]
            calls.clear()
            fresh = file_check("fresh", flag)
            c.replace([dataclasses.replace(keep), fresh])  # an equal, new object: unchanged
            assert calls == [1]  # on_change on reload
            after = c.status()[0]
            assert after["state"] == Health.FALLING  # kept its state, not back to unknown
            assert after["consecutive_failures"] == before["consecutive_failures"]
            assert [s["name"] for s in c.status()] == ["keep", "fresh"]
            assert c.failing() == []  # added by a reload: passes until its first run
            # The removed check's command is killed.
            await until(lambda: not process_running(pid), "the removed check's command to die")
            await until(lambda: c.status()[1]["last_outcome"] == "failed", "fresh to run")
            assert c.failing() == ["fresh"]  # its first result decides
            # Its series are gone; the new one has its own.
            assert sample(m, "havip_check_passing", check="hang") is None
            assert sample(m, "havip_check_runs_total", check="hang", outcome="ok") is None
            assert sample(m, "havip_check_passing", check="fresh") == 0

            # A changed definition under the same name starts again from unknown.
            c.replace([file_check("keep", flag, rise=1, fall=6), fresh])
            assert c.status()[0]["state"] == Health.UNKNOWN
            assert sample(m, "havip_check_consecutive_failures", check="keep") == 0

    asyncio.run(main())


def test_cancelling_run_kills_running_commands(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hang = hang_check("hang", pid_file)
    c = Checks([hang], metrics=make_metrics(), on_change=lambda: None)

    async def main() -> int:
        async with running(c):
            await until(pid_file.exists, "the command to start")
            return int(pid_file.read_text())

    pid = asyncio.run(main())
    try:
        deadline = time.monotonic() + WAIT
        while process_running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_running(pid)
    finally:
        if process_running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_failing_on_change_does_not_stop_the_checks(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.touch()
    m = make_metrics()

    def broken() -> None:
        raise RuntimeError("daemon bug")

    c = Checks([file_check("svc", flag, fall=1)], metrics=m, on_change=broken)

    async def main() -> None:
        async with running(c):
            await until(lambda: c.passing() is True, "the check to pass")
            flag.unlink()
            await until(lambda: c.passing() is False, "the check to fail after a broken callback")

    asyncio.run(main())


def test_a_check_added_by_replace_passes_until_its_first_result() -> None:
    """Reload must not move the VIP because a new check has not run yet; at start-up, though,
    a check with no result does not pass (a node waits for its checks)."""
    metrics = make_metrics()
    slow = Check(name="slow", command=("/bin/sleep", "5"), interval=10.0, timeout=9.0)
    fresh = Checks([slow], metrics=metrics, on_change=lambda: None)
    assert fresh.passing() is False and fresh.failing() == ["slow"]
    reloaded = Checks([], metrics=metrics, on_change=lambda: None)
    reloaded.replace([slow])
    assert reloaded.passing() is True and reloaded.failing() == []
    assert reloaded.status()[0]["state"] == "unknown" and reloaded.status()[0]["passing"] is True
