"""The metrics endpoint: /metrics, /status and /healthz, served by prometheus-client's handler.

/metrics is `prometheus_client.exposition.MetricsHandler` (content negotiation including
OpenMetrics, gzip, `name[]` filters); /status and /healthz are routed beside it. The server is
a `ThreadingHTTPServer` in its own thread, started and stopped from the asyncio daemon:

- one request per connection, at most MAX_CONNECTIONS at once (more are closed at once and
  reported through `on_refused`); the request head is capped in size and time and every
  connection has a hard deadline, so a scanner or a client holding sockets open costs a few
  descriptors and threads, never the daemon;
- /status is computed on the event loop (the daemon's state lives there) and waited for at
  most STATUS_TIMEOUT;
- optional TLS, client certificates and basic auth from an exporter-toolkit web-config file
  (havip.shell.webconfig); default plain HTTP;
- `serve_metrics` keeps retrying a busy port (or unusable TLS files) instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from havip.shell.webconfig import WebConfigError, WebSecurity

log = logging.getLogger(__name__)

MAX_HEAD = 8192  # bytes of request line + headers
HEAD_TIMEOUT = 5.0  # seconds for the TLS handshake and the whole request head
LINGER = 1.0  # seconds to drain a client's unread input after an error response
LINGER_BYTES = 64 * 1024
MAX_CONNECTIONS = 16  # served at once, one thread each
BIND_RETRY = 5.0  # seconds between attempts to bind a busy metrics port
STATUS_TIMEOUT = 2.0  # seconds to wait for the event loop to build /status
PATHS = ("/metrics", "/status", "/healthz")

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_METHOD_RE = re.compile(r"[A-Z]+")


class Exposition(Protocol):
    """What /metrics needs: `havip.shell.metrics.Metrics`, or anything with a registry."""

    @property
    def registry(self) -> Collector: ...


class _HeadTooLarge(Exception):
    pass


class _HeadTimeout(Exception):
    pass


class _HeadReader:
    """The request head from a socket, bounded in bytes and in total time.

    Reads the socket directly (no buffered file) so each recv waits at most until the
    deadline: a client dripping one byte at a time cannot stretch it.
    """

    def __init__(self, sock: socket.socket, *, budget: int, deadline: float) -> None:
        self._sock = sock
        self._budget = budget
        self._deadline = deadline
        self._buf = b""

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line, self._buf = self._buf[: end + 1], self._buf[end + 1 :]
                return line
            if self._budget <= 0:
                raise _HeadTooLarge
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise _HeadTimeout
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(min(4096, self._budget))
            except TimeoutError as exc:
                raise _HeadTimeout from exc
            if not chunk:  # closed mid-line: what there is (the parser rejects it)
                line, self._buf = self._buf, b""
                return line
            self._budget -= len(chunk)
            self._buf += chunk

    def read(self, size: int = -1) -> bytes:
        return b""  # nothing we serve has a request body

    def close(self) -> None:
        pass


class _Writer(io.RawIOBase):
    """All of each write, or an exception (socket.makefile's writer may write part)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with memoryview(data) as view:
            self._sock.sendall(view)
            return view.nbytes


class _Conn:
    """One accepted connection: its socket, replaced by the TLS one once wrapped (its hard
    deadline is a loop timer: `_Server._expire`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


class _Handler(MetricsHandler):
    """MetricsHandler for /metrics, plus /status, /healthz, limits and web-config security."""

    server: _Server
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # error replies always get a status line

    def setup(self) -> None:
        srv = self.server
        deadline = time.monotonic() + srv.timeout_s
        context, self.auth = srv.security.current() if srv.security else (None, None)
        sock: socket.socket = self.request
        if context is not None:
            sock.settimeout(srv.timeout_s)
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            srv.rewrap(self.request, sock)
            self.request = sock
            sock.do_handshake()  # the hard deadline bounds a client that drips its hello
        self.connection = sock
        self.rfile = _HeadReader(sock, budget=MAX_HEAD, deadline=deadline)  # type: ignore[assignment]
        self.wfile = _Writer(sock)  # type: ignore[assignment]
        self._capture: io.BytesIO | None = None
        self._connection_sent = False
        self._errored = False
        self.command, self.requestline, self.request_version = "GET", "", "HTTP/1.0"

    def finish(self) -> None:
        if self._errored and not isinstance(self.connection, ssl.SSLSocket):
            _linger(self.connection, min(self.server.timeout_s, LINGER))

    def handle(self) -> None:
        """One request, then close (no keep-alive: scrapes are seconds apart)."""
        self.close_connection = True
        try:
            self.raw_requestline = self.rfile.readline(MAX_HEAD + 1)
            if not self.raw_requestline:
                return
            if not self.parse_request():
                return
            self._dispatch()
        except _HeadTooLarge:
            self.send_error(431)
        except _HeadTimeout:
            self.send_error(408)

    def parse_request(self) -> bool:
        line = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        parts = line.split(" ")
        if (
            len(parts) != 3
            or not _METHOD_RE.fullmatch(parts[0])
            or parts[2] not in ("HTTP/1.0", "HTTP/1.1")
            or not line.isascii()
        ):
            self.requestline = line[:80]
            self.send_error(400)
            return False
        target = parts[1]
        if target.lower().startswith(("http://", "https://")):
            # absolute-form: HTTP/1.1 servers must accept it, though only proxies are sent it
            split = urllib.parse.urlsplit(target)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        if not target.startswith("/"):
            self.send_error(400)
            return False
        if not super().parse_request():  # headers: too many or too long -> 431, else 400
            return False
        self.path = target
        self.close_connection = True
        raw = "".join(f"{k}{v}" for k, v in self.headers.items())
        if self.headers.defects or not raw.isascii():
            self.send_error(400)
            return False
        return True

    def _dispatch(self) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0]
        if self.auth is not None and not self.auth.check(self.headers.get("Authorization")):
            self._reply(
                401, _TEXT, b"unauthorized\n", [("WWW-Authenticate", 'Basic realm="havip"')]
            )
            return
        if path not in PATHS:
            self._reply(404, _TEXT, b"not found\n")
            return
        # HEAD is served like GET without a body, as HTTP requires of any server that does GET.
        if self.command not in ("GET", "HEAD"):
            self._reply(405, _TEXT, b"method not allowed\n", [("Allow", "GET, HEAD")])
            return
        if path == "/healthz":
            self._reply(200, _TEXT, b"ok\n")
        elif path == "/status":
            code, body = srv.status_json()
            self._reply(code, _JSON if code == 200 else _TEXT, body)
        else:
            self._metrics()

    def _metrics(self) -> None:
        """The library's handler, its output captured to add Content-Length (and serve HEAD)."""
        real, self._capture = self.wfile, io.BytesIO()
        self.wfile = self._capture
        try:
            MetricsHandler.do_GET(self)
        except Exception:
            log.exception("http: building /metrics failed")
            self.wfile, self._capture = real, None
            self._headers_buffer: list[bytes] = []
            self._reply(500, _TEXT, b"internal server error\n")
            return
        body = self._capture.getvalue()
        self.wfile, self._capture = real, None
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply(
        self,
        code: int,
        ctype: str,
        body: bytes,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self._errored = code >= 400
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra or ():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        self.command = getattr(self, "command", None) or "GET"
        reason = self.responses.get(code, ("error",))[0].lower()
        self._reply(code, _TEXT, f"{reason}\n".encode())

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection":
            self._connection_sent = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        if self._capture is not None and self.wfile is self._capture:
            return  # the library's headers wait until the body's length is known
        if not self._connection_sent:
            self.send_header("Connection", "close")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def version_string(self) -> str:
        return "havip"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        *,
        loop: asyncio.AbstractEventLoop,
        metrics: Exposition,
        status: Callable[[], Mapping[str, object]],
        timeout: float,
        max_connections: int,
        on_refused: Callable[[], None] | None,
        security: WebSecurity | None,
    ) -> None:
        self.host = address[0]
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.loop = loop
        self.status = status
        self.timeout_s = timeout
        self.max_connections = max_connections
        self.on_refused = on_refused
        self.security = security
        self.conns: dict[socket.socket, _Conn] = {}
        self.lock = threading.Lock()
        self.stopping = False
        handler = type("HavipMetricsHandler", (_Handler,), {"registry": metrics.registry})
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn): a DNS query on the loop.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.host, self.socket.getsockname()[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            admit = not self.stopping and len(self.conns) < self.max_connections
            if admit:
                # handshake + head, response, linger: each bounded by timeout
                conn = _Conn(request)
                self.conns[request] = conn
        if admit:
            # The hard deadline is a loop timer, armed only while the connection lives: an idle
            # endpoint costs no wake-up at all.
            self.loop.call_later(3 * self.timeout_s, self._expire, request)
        if not admit:
            # Closed unread, with a reset: every open connection costs a descriptor and a
            # thread, and the daemon's probes and peer link need theirs.
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
            if self.on_refused is not None:
                self._on_loop(self.on_refused)
            return
        thread = threading.Thread(
            target=self._serve_one, args=(request, client_address, conn), daemon=True
        )
        thread.name = "havip-http"
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: as if refused
            with self.lock:
                self.conns.pop(request, None)
            request.close()
            log.warning("http: cannot start a thread for a connection; closed it")

    def _serve_one(self, request: socket.socket, client_address: Any, conn: _Conn) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self.lock:
                self.conns.pop(request, None)
            self.shutdown_request(conn.sock)

    def rewrap(self, request: socket.socket, sock: socket.socket) -> None:
        with self.lock:
            if request in self.conns:
                self.conns[request].sock = sock

    def accept_ready(self) -> None:
        """The listening socket is readable (an event-loop reader): accept what is waiting
        and hand each connection to its own thread."""
        for _ in range(self.request_queue_size):  # bounded: a flood cannot hold the loop
            try:
                request, client_address = self.get_request()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: the next readiness retries
                log.warning("http: cannot accept: %s", exc)
                return
            request.setblocking(True)  # the handler thread blocks, with its own timeouts
            self.process_request(request, client_address)

    def _expire(self, request: socket.socket) -> None:
        """The connection's hard deadline passed: end it if it is still open."""
        with self.lock:
            conn = self.conns.get(request)
        if conn is not None:
            _kill(conn.sock)

    def stop_connections(self) -> None:
        with self.lock:
            self.stopping = True
            socks = [c.sock for c in self.conns.values()]
        for sock in socks:
            _kill(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client's bytes, a failed handshake or a dropped socket: its problem, not ours.
        exc = sys.exc_info()[1]
        log.debug("http %s: %s: %s", client_address, type(exc).__name__, exc)

    def status_json(self) -> tuple[int, bytes]:
        """/status as JSON, built on the event loop from the daemon's own state."""

        async def build() -> str:
            return json.dumps(dict(self.status()), sort_keys=True, indent=2, default=str)

        try:
            future = asyncio.run_coroutine_threadsafe(build(), self.loop)
        except RuntimeError:  # the loop is closed: the daemon is going away
            return 503, b"service unavailable\n"
        try:
            text = future.result(STATUS_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.warning("http: /status not built within %.3gs", STATUS_TIMEOUT)
            return 503, b"service unavailable\n"
        except Exception:
            log.exception("http: building /status failed")
            return 500, b"internal server error\n"
        return 200, (text + "\n").encode()

    def _on_loop(self, callback: Callable[[], None]) -> None:
        """Report on the event loop thread, where the daemon's callbacks expect to run."""
        with contextlib.suppress(RuntimeError):  # loop closed
            self.loop.call_soon_threadsafe(_call_quietly, callback)


class MetricsServer:
    """A running endpoint. Like `asyncio.Server`: `sockets`, `close()`, `wait_closed()`."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self.sockets = [httpd.socket]
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self._closing = False
        # Accepting is an event-loop reader, not a polling thread: no wake-up while idle.
        httpd.socket.setblocking(False)
        self._loop.add_reader(httpd.socket.fileno(), httpd.accept_ready)

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    def close(self) -> None:
        """Stop accepting and end open connections; `wait_closed` waits until done."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(ValueError, OSError):  # already gone with a closed loop
            self._loop.remove_reader(self._httpd.socket.fileno())
        self._httpd.stop_connections()
        self._httpd.server_close()
        _resolve(self._closed)

    async def wait_closed(self) -> None:
        """Wait until the listening socket is closed (after `close`)."""
        await asyncio.shield(self._closed)


async def start_http(
    host: str,
    port: int,
    *,
    metrics: Exposition,
    status: Callable[[], Mapping[str, object]],
    timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    on_refused: Callable[[], None] | None = None,
    security: WebSecurity | None = None,
) -> MetricsServer:
    """Serve GET/HEAD /metrics, /status (JSON of `status()`, called on this event loop)
    and /healthz on host:port, from a server thread.

    `timeout` bounds the TLS handshake with the request head, and the response. Beyond
    `max_connections` open at once a new connection is closed unread and `on_refused`
    is called (on the event loop). `security` adds TLS and basic auth. Port 0 picks a free
    port: read `port` on the result. OSError if the port cannot be bound.
    """
    httpd = _Server(
        (host, port),
        loop=asyncio.get_running_loop(),
        metrics=metrics,
        status=status,
        timeout=timeout,
        max_connections=max_connections,
        on_refused=on_refused,
        security=security,
    )
    return MetricsServer(httpd)


async def serve_metrics(
    host: str,
    port: int,
    *,
    metrics: Exposition,
    status: Callable[[], Mapping[str, object]],
    on_bind_error: Callable[[OSError], None],
    on_refused: Callable[[], None] | None = None,
    on_listening: Callable[[MetricsServer], None] | None = None,
    retry: float = BIND_RETRY,
    timeout: float = HEAD_TIMEOUT,
    web_config: Path | None = None,
) -> None:
    """Bind host:port and serve until cancelled; never raises out (except cancellation).

    A port that cannot be bound (taken by another process, EACCES, address not here yet),
    or a `web_config` whose files do not load, is reported through `on_bind_error` and
    tried again every `retry` seconds: the endpoint never serves with less security than
    configured, and is never worth the daemon's life. `on_listening` gets the server once
    bound (its `port` tells the port, when port is 0).
    """
    while True:
        try:
            security = None
            if web_config is not None:
                security = await asyncio.to_thread(WebSecurity.load, web_config)
            server = await start_http(
                host,
                port,
                metrics=metrics,
                status=status,
                timeout=timeout,
                on_refused=on_refused,
                security=security,
            )
        except (OSError, WebConfigError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(str(exc))
            _call_quietly(on_bind_error, error)
            await asyncio.sleep(retry)
            continue
        try:
            if on_listening is not None:
                _call_quietly(on_listening, server)
            await asyncio.get_running_loop().create_future()  # ends only by cancellation
        finally:
            server.close()
            with contextlib.suppress(asyncio.CancelledError):
                await server.wait_closed()


def _call_quietly(callback: Callable[..., object], *args: object) -> None:
    """A reporting callback that raises must not take the server down with it."""
    try:
        callback(*args)
    except Exception:
        log.exception("http: callback failed")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _kill(sock: socket.socket) -> None:
    """Wake a handler blocked on `sock`: shut the descriptor down (not the TLS layer: that
    belongs to the handler's thread)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _linger(sock: socket.socket, limit: float) -> None:
    """Half-close, then discard what the client still sends, for a bounded time and size.

    Closing a socket with unread input makes the kernel send a reset, which can destroy
    the error response before the client reads it (the "lingering close" of RFC 9112).
    """
    budget = LINGER_BYTES
    deadline = time.monotonic() + limit
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while budget > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            chunk = sock.recv(min(budget, 4096))
            if not chunk:
                return
            budget -= len(chunk)
