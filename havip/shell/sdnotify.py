"""systemd's notify protocol with the stdlib: one datagram to `$NOTIFY_SOCKET` per message.

Under `Type=notify` systemd waits for READY=1 before it calls the unit started, shows the
latest STATUS= in `systemctl status`, and with `WatchdogSec=` restarts a daemon whose
WATCHDOG=1 pings stop. Outside systemd (no `$NOTIFY_SOCKET`) every method does nothing.
A failed send never raises into the daemon: it is logged once, until a send works again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

from havip.shell.logs import event

# What systemd hands the main process; hooks and checks must not inherit them (see unset_environ).
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends READY, STATUS, RELOADING, STOPPING and WATCHDOG messages to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether systemd gave us a socket to notify (`$NOTIFY_SOCKET` set)."""
        return self._address is not None

    def ready(self, status: str) -> None:
        """Start-up is done: systemd calls the unit active (READY=1) and shows `status`."""
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """The one line `systemctl status` shows (state and owner)."""
        self._send(f"STATUS={_one_line(text)}")

    def reloading(self) -> None:
        """A reload has begun; reloaded() ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def reloaded(self) -> None:
        """The reload is over (applied or refused): the unit is ready again."""
        self._send("READY=1")

    def stopping(self) -> None:
        """Shutdown has begun (the handover on SIGTERM)."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Keep-alive for `WatchdogSec=`: send from the event loop's own timer, so that a hung
        loop stops the pings and systemd restarts the daemon."""
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog() calls (half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
        advises), or None when the watchdog is off or meant for another process."""
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            event(
                "sdnotify_bad_watchdog",
                "WATCHDOG_USEC is not a whole number of microseconds; watchdog off",
                level=logging.WARNING,
                value=self._watchdog_usec,
            )
            return None
        return usec / 2_000_000 if usec > 0 else None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never wait on a full queue: a lost STATUS is better than a stalled loop.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                event(
                    "sdnotify_failed",
                    "cannot notify systemd; further failures are not logged until a send works",
                    level=logging.WARNING,
                    socket=_printable(self._address),
                    error=exc.strerror or str(exc),
                    message=message.split("\n", 1)[0],
                )
            return
        self._failing = False


def unset_environ(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove systemd's notify variables (from os.environ by default) once a Notifier holds
    them, so hooks and health checks, which inherit the daemon's environment, do not."""
    env = os.environ if environ is None else environ
    for name in NOTIFY_VARIABLES:
        env.pop(name, None)


def _address(value: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` -> a sendto() address: a path, or an abstract name (`@name`)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # unset, or a form we do not speak (e.g. vsock:): notify nothing


def _printable(address: str | bytes) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace")
    return address


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())
