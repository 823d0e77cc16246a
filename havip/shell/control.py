"""The local control socket: `havip status`, `handover`, `maintenance` and `reload` talk to the
daemon here.

A Unix stream socket only the daemon's user can use: created under umask 0o077 and chmod
0600, in a folder that is not group/other-writable. One JSON request line in
(`{"cmd": "status"}`, at most MAX_REQUEST bytes, within READ_TIMEOUT), one JSON reply line
out (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`), then close.

The client side (`query`) makes sure it talks to the daemon and not to a squatter: the
socket file must be owned by root or by us, and the process that accepted the
connection (SO_PEERCRED) must run as root or as us.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from havip.shell.logs import event

log = logging.getLogger(__name__)

MAX_REQUEST = 4096  # bytes of one request line
READ_TIMEOUT = 1.0  # seconds a client gets to send its request line
WRITE_TIMEOUT = 1.0  # seconds a client gets to take the reply
MAX_CLIENTS = 8  # served at once; more are told "busy" and closed at once
MAX_REPLY = 1 << 20  # what `query` will read
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
HANDOVER_WAIT = 5.0  # handover, maintenance on: how long the daemon waits to see the VIP move
RELOAD_WAIT = 30.0  # reload: the new config's checks (certificates, interfaces, programs)

Reply = Mapping[str, object]
Handler = Callable[[dict[str, object]], Reply | Awaitable[Reply]]

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlError(Exception):
    """A one-line problem with the control socket, naming its path."""


class CommandRefused(Exception):
    """A handler's one-line answer that the command cannot be done now (not a failure of the
    daemon): the client gets `{"ok": false, "refused": true, "error": <the line>}`."""


# --- server --------------------------------------------------------------------------------


async def start_control(path: Path, handlers: Mapping[str, Handler]) -> asyncio.AbstractServer:
    """Listen on `path` and answer each request with `handlers[request["cmd"]](request)`.

    A handler returns (or, if async, resolves to) a mapping merged into `{"ok": true}`;
    an exception in it becomes `{"ok": false, "error": ...}`. Raises ControlError when the
    folder is unsafe, something that is not a socket sits at `path`, or another daemon
    answers there; a socket left by a dead daemon is replaced.
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise ControlError(f"{path}: control socket path over {SUN_PATH_MAX} bytes")
    _prepare_folder(path.parent)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # umask is process-wide, but nothing else creates files while this runs (no await).
        old = os.umask(0o077)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ControlError(f"{path}: cannot listen: {exc.strerror or exc}") from None

    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CLIENTS:
            # Never wait on a client we will not serve: the reply fits the socket buffer.
            writer.write(_encode({"ok": False, "error": "busy: too many control clients"}))
            writer.close()
            return
        active += 1
        try:
            reply = await _serve_one(reader, handlers)
            writer.write(_encode(reply))
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except Exception as exc:  # a client's problem, never ours
            log.debug("control: %s: %s", type(exc).__name__, exc)
            writer.transport.abort()  # e.g. it never read the reply: drop it
        finally:
            active -= 1
            writer.close()

    return await asyncio.start_unix_server(handle, sock=sock, limit=MAX_REQUEST + 1)


async def _serve_one(reader: asyncio.StreamReader, handlers: Mapping[str, Handler]) -> Reply:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        return _error(f"request over {MAX_REQUEST} bytes")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return _error("empty request")
        line = exc.partial  # closed its write side without a newline: still one request
    except TimeoutError:
        return _error(f"no request line within {READ_TIMEOUT:g}s")
    if len(line) > MAX_REQUEST:
        return _error(f"request over {MAX_REQUEST} bytes")
    try:
        request = json.loads(line)
    except ValueError:
        return _error('request is not JSON (send e.g. {"cmd": "status"})')
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return _error('request needs a string "cmd" (e.g. {"cmd": "status"})')
    cmd: str = request["cmd"]
    handler = handlers.get(cmd)
    if handler is None:
        known = ", ".join(sorted(handlers)) or "none"
        return _error(f'unknown command "{cmd[:40]}" (known: {known})')
    try:
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        return {"ok": True, **result}
    except CommandRefused as exc:
        return {"ok": False, "refused": True, "error": str(exc)}
    except Exception as exc:
        event("control_error", f"{type(exc).__name__}: {exc}", level=logging.ERROR, cmd=cmd)
        return _error(f"{cmd} failed: {type(exc).__name__}: {exc}")


def _error(text: str) -> Reply:
    return {"ok": False, "error": text}


def _encode(reply: Reply) -> bytes:
    return (json.dumps(dict(reply), sort_keys=True, default=str) + "\n").encode()


def _prepare_folder(folder: Path) -> None:
    """Create the socket's folder 0700 if missing; refuse one others could write to."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(folder)
    except OSError as exc:
        raise ControlError(f"{folder}: cannot create the control socket folder: {exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{folder}: not a folder (control socket)")
    if info.st_uid not in (0, os.geteuid()):
        raise ControlError(
            f"{folder}: owned by uid {info.st_uid}, not by root or us; "
            "it could swap the control socket"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlError(
            f"{folder}: writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            "anyone could replace the control socket: use a folder only its owner can write"
        )


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse a live one or anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path}: exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        event("control_stale", "removing a control socket nobody listens on", path=path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise ControlError(f"{path}: cannot check the existing socket: {exc}") from None
    finally:
        probe.close()
    raise ControlError(f"another havip daemon is running on {path}")


def remove_control(path: Path) -> None:
    """Remove the socket at shutdown, after the server is closed.

    Left alone: anything that is not a socket, and a socket another daemon now answers on
    (it replaced ours as stale while we were stopping).
    """
    try:
        info = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
    finally:
        probe.close()


# --- client --------------------------------------------------------------------------------


def query(
    path: Path, cmd: str, timeout: float = 2.0, args: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Send `{"cmd": cmd, **args}` to the daemon at `path` and return its reply (without "ok").

    Raises ControlError with one line naming `path`: no daemon, not ours (file owner or
    peer uid other than root or us), no answer in time, a bad answer, or the daemon's own
    `{"ok": false}` error.
    """
    me = os.geteuid()
    nobody = f"{path}: no havip daemon is listening (is it running?)"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ControlError(nobody) from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path}: not a socket, so not a havip control socket")
    if info.st_uid not in (0, me):
        raise ControlError(
            f"{path}: owned by uid {info.st_uid}, not by root or us; refusing to trust it"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise ControlError(nobody) from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (run as the daemon's user)") from None
        pid, uid, _ = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid not in (0, me):
            raise ControlError(
                f"{path}: answered by pid {pid} running as uid {uid}, not root or us; "
                "refusing to trust it"
            )
        sock.sendall(json.dumps({**(args or {}), "cmd": cmd}).encode() + b"\n")
        raw = _read_line(sock, path)
    except TimeoutError:
        raise ControlError(f"{path}: no answer within {timeout:g}s") from None
    except ConnectionResetError:
        # What a client sees when the daemon is serving its maximum of clients.
        raise ControlError(f"{path}: the daemon dropped the connection (busy?)") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(raw)
    except ValueError:
        raise ControlError(f"{path}: the answer is not JSON") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f'{path}: the answer is not a havip reply (no "ok")')
    if not reply.pop("ok"):
        if reply.get("refused") is True:
            raise CommandRefused(str(reply.get("error", "refused")))
        raise ControlError(f"{path}: the daemon says: {reply.get('error', 'unknown error')}")
    return reply


def _read_line(sock: socket.socket, path: Path) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # Bounded: each pass reads at least one byte, up to MAX_REPLY in total.
    while size <= MAX_REPLY:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
    if size > MAX_REPLY:
        raise ControlError(f"{path}: the answer is over {MAX_REPLY} bytes")
    if not chunks:
        raise ControlError(f"{path}: the daemon closed the connection without answering")
    return b"".join(chunks)
