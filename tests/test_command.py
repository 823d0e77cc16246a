"""run_command: real processes, their process group killed at a timeout or on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from havip.shell.command import OUTPUT_LIMIT, CommandResult, run_command

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 10.0 * SCALE  # upper bound for anything we wait for
PY = sys.executable
LONG = 300  # seconds a test process would live if nothing killed it


def run(argv: list[str], timeout: float = WAIT, **kw: object) -> CommandResult:
    return asyncio.run(run_command(argv, timeout=timeout, **kw))  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """Whether `pid` is a living process (a zombie waiting for init's reaping counts as dead)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat_line.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.fixture
def pids_file(tmp_path: Path) -> Iterator[Path]:
    """A file the test's processes write their PIDs to; whatever survives is killed by PID."""
    path = tmp_path / "pids"
    yield path
    for pid in read_pids(path):
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def family(pids_file: Path, *, exit_after_spawn: bool = False) -> list[str]:
    """A child that starts a sleeping grandchild holding the output pipe, writes both PIDs,
    then sleeps (or exits at once)."""
    code = f"""
import os, subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep({LONG})"])
with open({str(pids_file)!r} + ".tmp", "w") as f:
    f.write(f"{{os.getpid()}} {{g.pid}}")
os.rename({str(pids_file)!r} + ".tmp", {str(pids_file)!r})
print("started", flush=True)
if not {exit_after_spawn}:
    time.sleep({LONG})
"""
    return [PY, "-c", code]


# -- how a command ends ----------------------------------------------------------------------


def test_exit_zero_is_ok() -> None:
    r = run(["/bin/true"])
    assert (r.ok, r.outcome, r.returncode, r.timed_out, r.error) == (True, "ok", 0, False, None)
    assert r.argv == ("/bin/true",)
    assert r.duration >= 0


def test_non_zero_exit_is_failed_with_its_output() -> None:
    r = run([PY, "-c", "import sys; print('one'); print('two: bad', file=sys.stderr); exit(3)"])
    assert (r.ok, r.outcome, r.returncode) == (False, "failed", 3)
    assert r.output == "one\ntwo: bad\n"  # stdout and stderr in one stream
    assert r.last_line == "two: bad"
    assert r.describe() == "exited with code 3"


def test_killed_by_a_signal_is_failed() -> None:
    r = run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert (r.outcome, r.returncode) == ("failed", -signal.SIGTERM)
    assert r.describe() == "killed by SIGTERM"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent/havip-check"], "cannot run /nonexistent/havip-check: No such file"),
        (["/"], "cannot run /: Permission denied"),
        ([], "cannot run an empty command"),
        ([""], "cannot run an empty command"),
        (["/bin/true\0x"], "cannot run /bin/true\0x: embedded null byte"),
    ],
)
def test_cannot_start_is_an_error_with_a_clear_message(argv: list[str], message: str) -> None:
    r = run(argv)
    assert (r.outcome, r.returncode, r.ok) == ("error", None, False)
    assert r.error is not None
    assert r.error.startswith(message)
    assert "\n" not in r.error
    assert r.describe() == r.error


def test_a_file_without_execute_permission_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    r = run([str(script)])
    assert r.outcome == "error"
    assert r.error == f"cannot run {script}: Permission denied"


def test_output_keeps_only_the_tail() -> None:
    code = "import sys; sys.stdout.write('x' * 1_000_000); sys.stdout.flush()"
    code += "; print('LAST', file=sys.stderr)"
    r = run([PY, "-c", code])
    assert r.outcome == "ok"
    assert r.output == "x" * (OUTPUT_LIMIT - len("LAST\n")) + "LAST\n"


def test_output_that_is_not_utf8_is_replaced_not_fatal() -> None:
    r = run([PY, "-c", "import sys; sys.stdout.buffer.write(b'bad \\xff byte\\n')"])
    assert r.output == "bad \ufffd byte\n"


# -- the environment, stdin, the process group -----------------------------------------------


def test_env_none_inherits_and_a_mapping_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVIP_TEST_INHERITED", "yes")
    assert "HAVIP_TEST_INHERITED=yes" in run(["/usr/bin/env"]).output.splitlines()
    exact = run(["/usr/bin/env"], env={"ONLY": "this", "AND": "that one"})
    assert sorted(exact.output.splitlines()) == ["AND=that one", "ONLY=this"]


def test_stdin_is_empty_and_the_command_leads_its_own_session() -> None:
    code = (
        "import os, sys; print(repr(sys.stdin.read()));"
        "print(os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid(), os.getppid())"
    )
    r = run([PY, "-c", code])
    assert r.output.splitlines() == ["''", f"True True {os.getpid()}"]


# -- timeouts, cancellation, grandchildren ---------------------------------------------------


def test_timeout_kills_the_whole_process_group(pids_file: Path) -> None:
    timeout = 1.5 * SCALE  # time enough for the child to start its grandchild
    r = run(family(pids_file), timeout=timeout)
    pids = read_pids(pids_file)
    if not pids:
        pytest.fail(f"the test's child did not start within {timeout}s: raise the time scale")
    child, grandchild = pids
    assert (r.outcome, r.timed_out, r.returncode, r.error) == ("timeout", True, None, None)
    assert r.output == "started\n"
    assert r.duration >= timeout
    assert r.duration < LONG / 2  # it did not wait for either process to end by itself
    assert r.describe().startswith("timed out after")
    assert wait_dead(child)
    assert wait_dead(grandchild)


def test_cancelling_the_caller_kills_the_process_group(pids_file: Path) -> None:
    async def main() -> None:
        task = asyncio.create_task(run_command(family(pids_file), timeout=LONG))
        deadline = time.monotonic() + WAIT
        while not pids_file.exists():
            assert time.monotonic() < deadline, "the test's child never started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    child, grandchild = read_pids(pids_file)
    assert wait_dead(child)
    assert wait_dead(grandchild)


def test_a_grandchild_holding_the_pipe_does_not_hold_us(pids_file: Path) -> None:
    # The child exits 0 at once; its grandchild lives on with our pipe as its stdout.
    r = run(family(pids_file, exit_after_spawn=True), timeout=LONG)
    assert (r.outcome, r.returncode) == ("ok", 0)
    assert r.output == "started\n"
    assert r.duration < LONG / 2
    _, grandchild = read_pids(pids_file)
    assert alive(grandchild)  # left alone after a normal exit (the fixture kills it)


def test_the_loop_keeps_running_while_a_command_runs() -> None:
    async def main() -> int:
        ticks = 0
        task = asyncio.create_task(
            run_command([PY, "-c", f"import time; time.sleep({0.3 * SCALE})"], timeout=WAIT)
        )
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert (await task).ok
        return ticks

    assert asyncio.run(main()) > 1
