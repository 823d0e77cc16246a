"""The control socket: owner-only, one JSON line each way, bounded, never fooled by a squatter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from havip.shell import control
from havip.shell.control import ControlError, query, remove_control, start_control

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
NOBODY = 65534
STATUS = {"node": "n1", "state": "active", "epoch": 3}


@pytest.fixture
def folder() -> Iterator[Path]:
    # Short on purpose: a Unix socket path must fit in 107 bytes, and tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="hvc", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _handlers(**extra: control.Handler) -> dict[str, control.Handler]:
    return {"status": lambda request: STATUS, **extra}


def serve(
    path: Path,
    body: Callable[[], Awaitable[None]],
    handlers: Mapping[str, control.Handler] | None = None,
) -> None:
    """Run `body` while a control server listens on `path`, then check it still answers."""

    async def main() -> None:
        server = await start_control(path, _handlers() if handlers is None else handlers)
        try:
            await body()
            if handlers is None:
                assert await asyncio.to_thread(query, path, "status") == STATUS
        finally:
            server.close()
            await server.wait_closed()
            remove_control(path)

    asyncio.run(main())


async def raw(path: Path, data: bytes, *, eof: bool = False) -> dict[str, object]:
    """Send raw bytes and return the one reply line (the server must close afterwards)."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(5 * SCALE):
            answer = await reader.read()  # to EOF
        reply = json.loads(answer)
        assert isinstance(reply, dict) and answer.endswith(b"\n") and answer.count(b"\n") == 1
        return reply
    finally:
        writer.close()


def test_status_round_trip_and_permissions(folder: Path) -> None:
    path = folder / "run" / "n1.sock"

    async def body() -> None:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert await asyncio.to_thread(query, path, "status", 5 * SCALE) == STATUS
        assert await raw(path, b'{"cmd": "status"}\n') == {"ok": True, **STATUS}

    serve(path, body)
    assert not path.exists()  # removed at shutdown


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"cmd": "nope"}\n', 'unknown command "nope" (known: status)'),
        (b"status\n", 'request is not JSON (send e.g. {"cmd": "status"})'),
        (b"[1]\n", 'request needs a string "cmd" (e.g. {"cmd": "status"})'),
        (b'{"cmd": 5}\n', 'request needs a string "cmd" (e.g. {"cmd": "status"})'),
        (b'{"cmd": "status"' + b" " * 5000 + b"}\n", "request over 4096 bytes"),
    ],
    ids=["unknown", "not-json", "not-object", "cmd-not-string", "too-long"],
)
def test_bad_requests_get_one_error_line(folder: Path, data: bytes, error: str) -> None:
    path = folder / "c.sock"

    async def body() -> None:
        assert await raw(path, data) == {"ok": False, "error": error}

    serve(path, body)


def test_request_without_newline_then_eof_is_still_served(folder: Path) -> None:
    path = folder / "c.sock"

    async def body() -> None:
        assert await raw(path, b'{"cmd": "status"}', eof=True) == {"ok": True, **STATUS}
        assert await raw(path, b"", eof=True) == {"ok": False, "error": "empty request"}

    serve(path, body)


def test_silent_client_is_cut_off(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.2 * SCALE)
    path = folder / "c.sock"

    async def body() -> None:
        reply = await raw(path, b'{"cmd": "sta')  # never finishes its line
        assert reply["ok"] is False and "no request line within" in str(reply["error"])

    serve(path, body)


def test_handler_errors_are_replies_not_crashes(folder: Path) -> None:
    path = folder / "c.sock"

    def broken(request: dict[str, object]) -> Mapping[str, object]:
        raise RuntimeError("boom")

    async def later(request: dict[str, object]) -> Mapping[str, object]:
        await asyncio.sleep(0)
        return {"echo": request.get("arg")}

    async def body() -> None:
        assert await raw(path, b'{"cmd": "broken"}\n') == {
            "ok": False,
            "error": "broken failed: RuntimeError: boom",
        }
        # The map is open: async handlers work too, and see the whole request.
        assert await raw(path, b'{"cmd": "later", "arg": 7}\n') == {"ok": True, "echo": 7}
        with pytest.raises(ControlError, match=r"the daemon says: broken failed"):
            await asyncio.to_thread(query, path, "broken")
        assert await asyncio.to_thread(query, path, "status") == STATUS

    serve(path, body, _handlers(broken=broken, later=later))


def test_at_most_eight_clients_at_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "READ_TIMEOUT", 30 * SCALE)  # the 8 hold their slots
    path = folder / "c.sock"

    async def body() -> None:
        held = [await asyncio.open_unix_connection(os.fspath(path)) for _ in range(8)]
        try:
            # The ninth is answered "busy" and closed at once, not after READ_TIMEOUT. It sends
            # nothing: a request the server never reads would turn its close into a reset.
            async with asyncio.timeout(5 * SCALE):
                reply = await raw(path, b"")
            assert reply == {"ok": False, "error": "busy: too many control clients"}
        finally:
            for _, writer in held:
                writer.close()
        # Closing the 8 frees their slots: served again (serve() checks once more after body).
        for _ in range(100):  # bounded wait for the server to notice the closes
            with contextlib.suppress(ConnectionResetError):
                if (await raw(path, b'{"cmd": "status"}\n'))["ok"]:
                    break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("slots were never freed")

    serve(path, body)


def test_stale_socket_from_a_dead_daemon_is_replaced(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = folder / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.fspath(path))
    dead.close()  # the file stays, nobody listens: what a SIGKILLed daemon leaves
    with pytest.raises(ControlError, match="no havip daemon is listening"):
        query(path, "status")

    async def body() -> None:
        assert await asyncio.to_thread(query, path, "status") == STATUS

    with caplog.at_level("INFO"):
        serve(path, body)
    assert any("event=control_stale" in r.getMessage() for r in caplog.records)


def test_a_live_daemon_is_not_replaced(folder: Path) -> None:
    path = folder / "c.sock"

    async def body() -> None:
        with pytest.raises(ControlError, match=f"another havip daemon is running on {path}"):
            await start_control(path, _handlers())

    serve(path, body)  # and the first one still answers afterwards


@pytest.mark.parametrize("kind", ["file", "folder", "symlink"])
def test_something_else_at_the_path_is_never_deleted(folder: Path, kind: str) -> None:
    path = folder / "c.sock"
    if kind == "file":
        path.write_text("precious")
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(folder / "elsewhere")

    async def main() -> None:
        with pytest.raises(ControlError, match=f"{path}: exists and is not a socket"):
            await start_control(path, _handlers())

    asyncio.run(main())
    assert path.is_symlink() if kind == "symlink" else path.exists()
    if kind == "file":
        assert path.read_text() == "precious"


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_folder_writable_by_others_is_refused(folder: Path, mode: int) -> None:
    run = folder / "run"
    run.mkdir()
    run.chmod(mode)

    async def main() -> None:
        with pytest.raises(ControlError, match="writable by group or others"):
            await start_control(run / "c.sock", _handlers())

    asyncio.run(main())
    assert not (run / "c.sock").exists()


def test_folder_owned_by_someone_else_is_refused(folder: Path) -> None:
    run = folder / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)

    async def main() -> None:
        with pytest.raises(ControlError, match=f"owned by uid {NOBODY}"):
            await start_control(run / "c.sock", _handlers())

    asyncio.run(main())


def test_too_long_path_is_a_clear_error(folder: Path) -> None:
    async def main() -> None:
        with pytest.raises(ControlError, match="over 107 bytes"):
            await start_control(folder / ("x" * 120), _handlers())

    asyncio.run(main())


def test_remove_control_leaves_a_newer_daemons_socket(folder: Path) -> None:
    path = folder / "c.sock"

    async def main() -> None:
        server = await start_control(path, _handlers())
        server.close()
        await server.wait_closed()
        # A newer daemon took over the path (stale-socket replacement) before we exit.
        newer = await start_control(path, _handlers())
        try:
            remove_control(path)
            assert await asyncio.to_thread(query, path, "status") == STATUS
        finally:
            newer.close()
            await newer.wait_closed()
        remove_control(path)  # now nobody answers: it goes
        assert not path.exists()

    asyncio.run(main())


# -- the client ------------------------------------------------------------------------------


def test_query_without_daemon(folder: Path) -> None:
    path = folder / "c.sock"
    message = f"{path}: no havip daemon is listening (is it running?)"
    with pytest.raises(ControlError) as exc:
        query(path, "status")
    assert str(exc.value) == message
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.fspath(path))
    dead.close()
    with pytest.raises(ControlError) as exc:
        query(path, "status")
    assert str(exc.value) == message


def test_query_refuses_a_plain_file(folder: Path) -> None:
    path = folder / "c.sock"
    path.write_text('{"ok": true, "state": "active"}\n')
    with pytest.raises(ControlError, match="not a socket"):
        query(path, "status")


def _squatter(path: Path, *, chown_file: bool) -> int:
    """A process running as nobody that listens on `path` and answers a fake healthy status.

    With chown_file=False root binds the file (so it is root-owned, as the daemon's is),
    and only the listen() happens as nobody: SO_PEERCRED must still expose it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fspath(path))
    if chown_file:
        os.chown(path, NOBODY, NOBODY)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock.listen(1)  # peer credentials are those of the process that listens
            sock.settimeout(10 * SCALE)
            conn, _ = sock.accept()
            conn.recv(4096)
            conn.sendall(b'{"ok": true, "state": "active", "node": "fake"}\n')
            conn.close()
        finally:
            os._exit(0)
    sock.close()
    return pid


@pytest.mark.parametrize("chown_file", [False, True], ids=["peercred", "file-owner"])
def test_query_refuses_a_squatter(folder: Path, chown_file: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user")
    folder.chmod(0o755)
    path = folder / "c.sock"
    pid = _squatter(path, chown_file=chown_file)
    try:
        want = f"owned by uid {NOBODY}" if chown_file else f"running as uid {NOBODY}"
        # The child may not have called listen() yet: bounded retry while it starts.
        for _ in range(200):
            try:
                query(path, "status", timeout=5 * SCALE)
            except ControlError as exc:
                if "no havip daemon" in str(exc):
                    os.sched_yield()
                    continue
                assert want in str(exc) and "refusing to trust it" in str(exc)
                break
            pytest.fail("query trusted a squatter")
        else:
            pytest.fail("the squatter never listened")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"hello\n", "not JSON"),
        (b"[1]\n", 'not a havip reply \\(no "ok"\\)'),
        (b'{"ok": false, "error": "nope"}\n', "the daemon says: nope"),
        (b"", "closed the connection without answering"),
        (None, "no answer within"),
    ],
    ids=["not-json", "no-ok", "error", "closed", "silent"],
)
def test_query_bad_answers(folder: Path, answer: bytes | None, match: str) -> None:
    path = folder / "c.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.fspath(path))
    server.listen(1)

    async def main() -> None:
        async def answer_once() -> None:
            loop = asyncio.get_running_loop()
            server.setblocking(False)
            conn, _ = await loop.sock_accept(server)
            with conn:
                await loop.sock_recv(conn, 4096)
                if answer is None:
                    await asyncio.sleep(2 * SCALE)  # longer than the client's timeout
                else:
                    await loop.sock_sendall(conn, answer)

        task = asyncio.create_task(answer_once())
        try:
            with pytest.raises(ControlError, match=match) as exc:
                await asyncio.to_thread(query, path, "status", 0.3 * SCALE)
            assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        server.close()


# ---- operator commands (issue 6) ------------------------------------------------------------


def test_arguments_reach_the_handler_and_a_refusal_is_its_own_error(folder: Path) -> None:
    path = folder / "n1.sock"
    seen: list[dict[str, object]] = []

    def maintenance(request: dict[str, object]) -> control.Reply:
        seen.append(request)
        if request.get("on") is not True:
            raise control.CommandRefused("not now: the peer is not eligible")
        return {"message": "drained"}

    async def body() -> None:
        reply = await asyncio.to_thread(query, path, "maintenance", 2.0, {"on": True})
        assert reply == {"message": "drained"}
        with pytest.raises(control.CommandRefused) as refused:
            await asyncio.to_thread(query, path, "maintenance", 2.0, {"on": False})
        assert str(refused.value) == "not now: the peer is not eligible"
        # The command name cannot be overridden by an argument called "cmd".
        with pytest.raises(control.CommandRefused):
            await asyncio.to_thread(query, path, "maintenance", 2.0, {"cmd": "status"})

    serve(path, body, _handlers(maintenance=maintenance))
    assert seen[0] == {"cmd": "maintenance", "on": True}
    assert seen[2]["cmd"] == "maintenance"
