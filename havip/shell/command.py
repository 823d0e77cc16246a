"""Running an external command (health checks, notify and fence hooks): the one way havip does it.

An argument list, never a shell; stdin from /dev/null; stdout and stderr into one pipe of which
only the last `OUTPUT_LIMIT` bytes are kept (a chatty script cannot grow our memory); its own
session and so its own process group, which is SIGKILLed as a whole at the timeout or when the
awaiting task is cancelled. Nothing here blocks the loop or raises for the command's failures.

Why `loop.subprocess_exec` with our own protocol rather than `asyncio.create_subprocess_exec`
(the same machinery underneath): on Python 3.11 `Process.wait()` returns only once the pipes
are closed too, so a grandchild left holding stdout would hold us past the child's exit. The
protocol tells the exit and the pipe's end apart; after the exit we read on for at most
`EXIT_GRACE` seconds, then stop. A grandchild still running after a normal exit is left
alone (a hook may start something on purpose); at a timeout the whole group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OUTPUT_LIMIT = 2048  # bytes of output kept: the tail, where the error usually is
EXIT_GRACE = 0.2  # seconds to keep reading after the child exited (its last buffered output)
REAP_LIMIT = 2.0  # seconds to wait for a SIGKILLed child to be reaped


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    """How one run of a command ended."""

    argv: tuple[str, ...]
    returncode: int | None  # None: it did not finish (timeout) or could not start
    duration: float  # seconds, monotonic
    timed_out: bool = False
    error: str | None = None  # could not start, one line: "cannot run /x: No such file ..."
    output: str = ""  # the last (at most OUTPUT_LIMIT bytes) of stdout+stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def outcome(self) -> str:
        """ "ok", "failed", "timeout" or "error" (the metric label values)."""
        if self.error is not None:
            return "error"
        if self.timed_out:
            return "timeout"
        return "ok" if self.returncode == 0 else "failed"

    @property
    def last_line(self) -> str | None:
        """The last non-blank line of the output, or None."""
        for line in reversed(self.output.splitlines()):
            if line.strip():
                return line.strip()
        return None

    def describe(self) -> str:
        """One line saying how it ended, e.g. "exited with code 3", "timed out after 1s"."""
        if self.error is not None:
            return self.error
        if self.timed_out:
            return f"timed out after {self.duration:.3g}s"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"killed by {name}"
        return f"exited with code {self.returncode}"


OUTCOMES = ("ok", "failed", "timeout", "error")


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the output's tail; tells the process's exit and the pipe's end apart."""

    def __init__(self) -> None:
        self.tail = bytearray()
        # Events, not futures: cancelling a task that awaits a future cancels the future too.
        self.exited = asyncio.Event()
        self.pipe_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self.tail += data
        if len(self.tail) > 2 * OUTPUT_LIMIT:  # trim in batches, not on every chunk
            del self.tail[:-OUTPUT_LIMIT]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.pipe_closed.set()

    def process_exited(self) -> None:
        self.exited.set()

    def output(self) -> str:
        return bytes(self.tail[-OUTPUT_LIMIT:]).decode("utf-8", errors="replace")


async def run_command(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run `argv` for at most `timeout` seconds and say how it ended.

    `env`: None inherits the daemon's environment, else exactly the mapping given. Never raises
    for the command's own failures (missing, not executable, non-zero exit, timeout): see the
    result. If the awaiting task is cancelled, the process group is killed and reaped first.
    """
    args = tuple(argv)
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    def failed_to_start(error: str) -> CommandResult:
        return CommandResult(
            argv=args, returncode=None, duration=time.monotonic() - started, error=error
        )

    if not args or not args[0]:
        return failed_to_start("cannot run an empty command")
    collector = _Collector()
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: collector,
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=None if env is None else dict(env),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return failed_to_start(f"cannot run {args[0]}: {reason}")

    pid = transport.get_pid()
    try:
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await collector.exited.wait()
        except TimeoutError:
            timed_out = True
            await _kill_group(pid, transport, collector)
        # Its last output may still be in the pipe; a grandchild may hold the pipe forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_GRACE):
                await collector.pipe_closed.wait()
        return CommandResult(
            argv=args,
            returncode=None if timed_out else transport.get_returncode(),
            duration=time.monotonic() - started,
            timed_out=timed_out,
            output=collector.output(),
        )
    except asyncio.CancelledError:
        if not collector.exited.is_set():
            # A second cancel while we reap changes nothing: the first is re-raised below.
            with contextlib.suppress(asyncio.CancelledError):
                await _kill_group(pid, transport, collector)
        raise
    finally:
        transport.close()


async def _kill_group(
    pid: int, transport: asyncio.SubprocessTransport, collector: _Collector
) -> None:
    """SIGKILL the command's process group and wait (bounded) until the child is reaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except OSError:
        # Should not happen (it is our child's group); at least kill the child.
        with contextlib.suppress(ProcessLookupError):
            transport.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_LIMIT):
            await collector.exited.wait()
