"""A tiny asyncio HTTP/1.1 server for /metrics, /status and /healthz.

One request per connection (`Connection: close`), the request head capped in size and
time, at most MAX_CONNECTIONS served at once (more are closed at once), and nothing a
client sends can raise out of the handler: a scraper, a port scanner or a local user
holding connections open must never disturb the daemon that hosts this endpoint.
`serve_metrics` keeps trying a busy port instead of failing the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

from havip.shell.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_HEAD = 8192  # bytes of request line + headers
HEAD_TIMEOUT = 5.0  # seconds to receive the whole head
LINGER = 1.0  # seconds to drain a client's unread input after an error response
LINGER_BYTES = 64 * 1024
MAX_CONNECTIONS = 16  # served at once; each holds a descriptor for up to 2 x HEAD_TIMEOUT
BIND_RETRY = 5.0  # seconds between attempts to bind a busy metrics port

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class Exposition(Protocol):
    """What /metrics needs: `havip.shell.metrics.Metrics` or anything with its method."""

    def exposition(self) -> bytes: ...


class _BadRequest(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


async def start_http(
    host: str,
    port: int,
    *,
    metrics: Exposition,
    status: Callable[[], Mapping[str, object]],
    timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    on_refused: Callable[[], None] | None = None,
) -> asyncio.Server:
    """Serve GET /metrics, /status (JSON of `status()`) and /healthz on host:port.

    `timeout` bounds both receiving the request head and sending the response. Beyond
    `max_connections` open at once, a new connection is closed unread and `on_refused`
    is called. Port 0 picks a free port; read it from the returned server's sockets.
    """
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= max_connections:
            # Close without reading: every open connection costs a descriptor, and the
            # daemon's probes and peer link need theirs.
            writer.transport.abort()
            if on_refused is not None:
                _call_quietly(on_refused)
            return
        active += 1
        try:
            await serve(reader, writer)
        finally:
            active -= 1

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                async with asyncio.timeout(timeout):
                    head = await _read_head(reader)
                method, path = _parse_head(head)
                code, ctype, body = _route(method, path, metrics, status)
            except _BadRequest as e:
                log.debug("http %s: %s", peer, e)
                code, ctype, body = e.code, _TEXT, f"{_REASONS[e.code].lower()}\n".encode()
                method = "GET"
            except TimeoutError:
                log.debug("http %s: request head not received within %.3gs", peer, timeout)
                code, ctype, body = 408, _TEXT, b"request timeout\n"
                method = "GET"
            await _respond(writer, code, ctype, body, with_body=method != "HEAD", timeout=timeout)
            if code != 200:
                await _linger(reader, writer, min(timeout, LINGER))
        except Exception as e:  # a client's bytes or a dropped socket: its problem, not ours
            log.debug("http %s: %s: %s", peer, type(e).__name__, e)
        finally:
            writer.close()
            try:
                async with asyncio.timeout(timeout):
                    await writer.wait_closed()
            except TimeoutError:
                writer.transport.abort()  # unread response still queued: drop it
            except Exception as e:
                log.debug("http %s: closing: %s: %s", peer, type(e).__name__, e)

    # The stream limit bounds a single line; _read_head bounds the head as a whole.
    return await asyncio.start_server(handle, host, port, limit=MAX_HEAD + 2)


async def serve_metrics(
    host: str,
    port: int,
    *,
    metrics: Exposition,
    status: Callable[[], Mapping[str, object]],
    on_bind_error: Callable[[OSError], None],
    on_refused: Callable[[], None] | None = None,
    on_listening: Callable[[asyncio.Server], None] | None = None,
    retry: float = BIND_RETRY,
    timeout: float = HEAD_TIMEOUT,
) -> None:
    """Bind host:port and serve until cancelled; never raises out (except cancellation).

    A port that cannot be bound (taken by another process, EACCES, address not here yet)
    is reported through `on_bind_error` and tried again every `retry` seconds: the
    metrics endpoint is never worth the daemon's life. `on_listening` gets the server
    once bound (its sockets tell the port, when port is 0).
    """
    while True:
        try:
            server = await start_http(
                host,
                port,
                metrics=metrics,
                status=status,
                timeout=timeout,
                on_refused=on_refused,
            )
        except OSError as exc:
            _call_quietly(on_bind_error, exc)
            await asyncio.sleep(retry)
            continue
        try:
            if on_listening is not None:
                _call_quietly(on_listening, server)
            await server.serve_forever()  # ends only by cancellation
        finally:
            server.close()


def _call_quietly(callback: Callable[..., object], *args: object) -> None:
    """A reporting callback that raises must not take the server down with it."""
    try:
        callback(*args)
    except Exception:
        log.exception("http: callback failed")


async def _read_head(reader: asyncio.StreamReader) -> list[str]:
    """Lines of the request head up to the blank line (CRLF or bare LF endings)."""
    lines: list[str] = []
    size = 0
    # Each line costs at least one byte of the MAX_HEAD budget, so this loop is bounded.
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as e:
            raise _BadRequest(431, f"request head line over {MAX_HEAD} bytes") from e
        except asyncio.IncompleteReadError as e:
            raise _BadRequest(400, "connection closed inside the request head") from e
        size += len(raw)
        if size > MAX_HEAD:
            raise _BadRequest(431, f"request head over {MAX_HEAD} bytes")
        line = raw.rstrip(b"\r\n")
        if not line:
            return lines
        try:
            lines.append(line.decode("ascii"))
        except UnicodeDecodeError as e:
            raise _BadRequest(400, "non-ASCII byte in the request head") from e


def _parse_head(lines: list[str]) -> tuple[str, str]:
    """The method and path (query string dropped) of a well-formed request head."""
    if not lines:
        raise _BadRequest(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(400, f"unsupported HTTP version {version[:20]!r}")
    if not method.isalpha() or not method.isupper():
        raise _BadRequest(400, f"malformed method {method[:20]!r}")
    if target.lower().startswith(("http://", "https://")):
        # absolute-form: HTTP/1.1 servers must accept it, though only proxies are sent it
        target = urllib.parse.urlsplit(target).path or "/"
    if not target.startswith("/"):
        raise _BadRequest(400, f"unsupported request target {target[:80]!r}")
    for header in lines[1:]:
        name, colon, _ = header.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(400, f"malformed header line {header[:80]!r}")
    return method, target.split("?", 1)[0]


def _route(
    method: str,
    path: str,
    metrics: Exposition,
    status: Callable[[], Mapping[str, object]],
) -> tuple[int, str, bytes]:
    if path not in ("/metrics", "/status", "/healthz"):
        return 404, _TEXT, b"not found\n"
    # HEAD is served like GET without a body, as HTTP requires of any server that does GET.
    if method not in ("GET", "HEAD"):
        return 405, _TEXT, b"method not allowed\n"
    if path == "/metrics":
        return 200, CONTENT_TYPE, metrics.exposition()
    if path == "/healthz":
        return 200, _TEXT, b"ok\n"
    try:
        text = json.dumps(dict(status()), sort_keys=True, indent=2, default=str)
    except Exception:
        log.exception("http: building /status failed")
        return 500, _TEXT, b"internal server error\n"
    return 200, _JSON, (text + "\n").encode()


async def _respond(
    writer: asyncio.StreamWriter,
    code: int,
    ctype: str,
    body: bytes,
    *,
    with_body: bool,
    timeout: float,
) -> None:
    head = [
        f"HTTP/1.1 {code} {_REASONS[code]}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if code == 405:
        head.append("Allow: GET, HEAD")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
    if with_body:
        writer.write(body)
    async with asyncio.timeout(timeout):  # a client that never reads must not pin us
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: float) -> None:
    """Half-close, then discard what the client still sends, for a bounded time and size.

    Closing a socket with unread input makes the kernel send a reset, which can destroy
    the error response before the client reads it (the "lingering close" of RFC 9112).
    """
    if not writer.can_write_eof():
        return
    writer.write_eof()
    budget = LINGER_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            while budget > 0:
                chunk = await reader.read(min(budget, 4096))
                if not chunk:
                    return
                budget -= len(chunk)
