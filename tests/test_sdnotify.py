"""havip.shell.sdnotify against real AF_UNIX datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from havip.shell.sdnotify import NOTIFY_VARIABLES, Notifier, unset_environ


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        yield path, sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"havip-test-{uuid.uuid4().hex}"
    with _receiver(b"\0" + name.encode()) as sock:
        yield "@" + name, sock


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def _no_more(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_every_message_is_one_datagram(
    kind: str,
    request: pytest.FixtureRequest,
) -> None:
    address, sock = request.getfixturevalue(f"{kind}_socket")
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    notifier.ready("standby, owner n1")
    assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "standby, owner n1"}
    notifier.status("active, owner n2\nsecond line")
    # A newline in the text must not smuggle in another assignment.
    assert _fields(sock.recv(4096)) == {"STATUS": "active, owner n2 second line"}

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = _fields(sock.recv(4096))
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    notifier.reloaded()
    assert _fields(sock.recv(4096)) == {"READY": "1"}
    notifier.watchdog()
    assert _fields(sock.recv(4096)) == {"WATCHDOG": "1"}
    notifier.stopping()
    assert _fields(sock.recv(4096)) == {"STOPPING": "1"}
    assert _no_more(sock)


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        notifier = Notifier(environ)
        assert not notifier.enabled
        notifier.ready("x")
        notifier.watchdog()
        assert notifier.watchdog_interval() is None


def test_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, path_socket: tuple[str, socket.socket]
) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    Notifier().status("from os.environ")
    assert _fields(sock.recv(4096)) == {"STATUS": "from os.environ"}


def test_a_failed_send_never_raises_and_is_logged_once_per_failure_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})  # nobody listens yet
    with caplog.at_level(logging.WARNING, logger="havip"):
        notifier.ready("a")
        notifier.watchdog()
        notifier.status("b")
    failed = [r for r in caplog.records if "event=sdnotify_failed" in r.getMessage()]
    assert len(failed) == 1
    assert f"socket={path}" in failed[0].getMessage()
    assert 'message="READY=1"' in failed[0].getMessage()

    with _receiver(str(path)) as sock:
        notifier.status("works again")
        assert _fields(sock.recv(4096)) == {"STATUS": "works again"}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="havip"):
        notifier.watchdog()  # the listener is gone again: a new failure run, logged again
    assert sum("event=sdnotify_failed" in r.getMessage() for r in caplog.records) == 1


def test_a_full_queue_does_not_block(
    path_socket: tuple[str, socket.socket], time_scale: float
) -> None:
    address, _ = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})

    def flood() -> None:
        # Nobody reads: the receiver's queue fills, and a blocking send would hang here.
        for _ in range(5000):
            notifier.watchdog()

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    worker.join(timeout=30 * time_scale)
    assert not worker.is_alive(), "a send to a full notify socket blocked"
    assert notifier._failing  # the queue did fill: the sends failed instead of waiting


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 5.0),
        ("10000000", "self", 5.0),
        ("10000000", "other", None),
        ("0", None, None),
        ("", None, None),
        ("ten", None, None),
    ],
)
def test_watchdog_interval(
    usec: str, pid: str | None, expected: float | None, tmp_path: Path
) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": usec}
    if pid is not None:
        environ["WATCHDOG_PID"] = str(os.getpid() if pid == "self" else os.getpid() + 1)
    assert Notifier(environ).watchdog_interval() == expected


def test_unset_environ_removes_only_the_notify_variables() -> None:
    environ = {name: "x" for name in NOTIFY_VARIABLES} | {"PATH": "/usr/bin"}
    notifier = Notifier(environ)
    unset_environ(environ)
    assert environ == {"PATH": "/usr/bin"}
    assert notifier.enabled is False  # "x" is no socket address
    environ = {"NOTIFY_SOCKET": "@sock", "WATCHDOG_USEC": "4000000"}
    notifier = Notifier(environ)
    unset_environ(environ)
    assert not environ
    assert notifier.enabled and notifier.watchdog_interval() == 2.0  # kept what it read
