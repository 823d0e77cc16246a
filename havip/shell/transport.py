"""Mutual TLS 1.3 between the two nodes: contexts, dialing, accepting, framed messages.

Both sides trust only the private CA (never the system store) and require the peer's certificate
to name the configured peer node. TLS 1.3 reports a rejected client certificate to the client only
on its first read, so the server speaks first and the client reads before it writes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from enum import StrEnum

from havip.config import TlsFiles
from havip.core.wire import FrameDecoder, Message, ProtocolError, encode

MAX_PENDING_HANDSHAKES = 16


class RejectReason(StrEnum):
    """Why an incoming or outgoing connection was refused; a metric label."""

    TLS_HANDSHAKE = "tls_handshake"  # wrong CA, expired certificate, plain TCP, garbage...
    WRONG_PEER_NAME = "wrong_peer_name"
    TIMEOUT = "timeout"
    BUSY = "busy"  # too many handshakes already under way: dropped unread


class PeerRejected(Exception):
    """A connection attempt failed authentication; one line for the log."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _base_context(purpose: int, tls: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=str(tls.ca))
    ctx.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    return ctx


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """The primary's context: requires a client certificate from our CA."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, tls)


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    """The standby's context: the server must present our CA's certificate for the peer name."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, tls)
    ctx.check_hostname = True
    return ctx


def peer_dns_names(transport: asyncio.BaseTransport) -> set[str]:
    """DNS names in the verified peer certificate's subjectAltName."""
    cert = transport.get_extra_info("peercert") or {}
    return {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection(asyncio.Protocol):
    """One TLS connection: frames in, messages out, through callbacks.

    Messages are decoded and handed over inside `data_received`, with no task or future per
    read: a keepalive costs one wake-up of the loop, which is most of what an idle daemon does.
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer_addr = "?"
        self.closed = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_message: Callable[[Message], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None
        self._early: list[Message] = []
        self._ended: tuple[BaseException | None] | None = None

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer_addr = _addr(transport)

    def data_received(self, data: bytes) -> None:
        try:
            for msg in self._decoder.feed(data):
                if self.closed:
                    return
                if self._on_message is None:
                    self._early.append(msg)
                else:
                    self._on_message(msg)
        except ProtocolError as exc:
            self._end(exc)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    # ---- for the daemon --------------------------------------------------------------------

    def attach(
        self,
        on_message: Callable[[Message], None],
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        """Start delivering: `on_message` for each message (it may raise ProtocolError), then
        `on_end` once with why the peer's side ended (None: closed; ProtocolError: bad input)."""
        self._on_message, self._on_end = on_message, on_end
        early, self._early = self._early, []
        try:
            for msg in early:
                if not self.closed:
                    on_message(msg)
        except ProtocolError as exc:
            self._end(exc)
        if self._ended is not None:
            on_end(self._ended[0])

    def send(self, msg: Message) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(encode(msg))

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until what we wrote has left our buffers."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (
            self.transport is not None
            and not self.transport.is_closing()
            and self.transport.get_write_buffer_size()
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.001)

    def close(self) -> None:
        """Our side ends the connection (no `on_end` callback)."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._resolve()

    def abort(self) -> None:
        """Drop the connection at once, unsent data and all."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._resolve()

    def _end(self, why: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            if isinstance(why, ProtocolError):
                self.transport.abort()
            else:
                self.transport.close()
        self._resolve()
        if self._on_end is None:
            self._ended = (why,)
        else:
            self._on_end(why)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Plain(asyncio.Protocol):
    """An accepted TCP connection, held still until it is upgraded to TLS."""

    def __init__(self, upgrade: Callable[[asyncio.Transport], None]) -> None:
        self._upgrade = upgrade

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # not a byte of the ClientHello may be read before TLS starts
        self._upgrade(transport)


async def listen(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    peer_name: str,
    timeout: float,
    on_connection: Callable[[Connection], None],
    on_reject: Callable[[PeerRejected], None],
) -> asyncio.Server:
    """Accept TCP, upgrade to TLS, require the peer's certificate to name `peer_name`."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def upgrade(plain: asyncio.Transport) -> None:
        try:
            conn = await accept(plain, ctx, peer_name, timeout)
        except PeerRejected as exc:
            on_reject(exc)
            return
        on_connection(conn)

    def start(plain: asyncio.Transport) -> None:
        if len(pending) >= MAX_PENDING_HANDSHAKES:
            # Only one peer exists: a crowd of half-open connections is a flood, and each
            # would cost a TLS handshake. Drop the newcomer; the real peer simply retries.
            plain.abort()
            on_reject(PeerRejected(RejectReason.BUSY, f"{_addr(plain)}: too many handshakes"))
            return
        task = loop.create_task(upgrade(plain))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return await loop.create_server(lambda: _Plain(start), host, port)


async def accept(
    plain: asyncio.Transport, ctx: ssl.SSLContext, peer_name: str, timeout: float
) -> Connection:
    """Upgrade an accepted TCP connection to TLS and authenticate the peer by name."""
    loop = asyncio.get_running_loop()
    addr = _addr(plain)
    conn = Connection()
    try:
        tls = await loop.start_tls(
            plain, conn, ctx, server_side=True, ssl_handshake_timeout=timeout
        )
    except TimeoutError:
        plain.abort()
        raise PeerRejected(
            RejectReason.TIMEOUT, f"{addr}: no TLS handshake within {timeout}s"
        ) from None
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        plain.abort()
        raise PeerRejected(RejectReason.TLS_HANDSHAKE, f"{addr}: {_why(exc)}") from None
    if tls is None:
        plain.abort()
        raise PeerRejected(RejectReason.TLS_HANDSHAKE, f"{addr}: closed during the handshake")
    conn.connection_made(tls)
    names = peer_dns_names(tls)
    if peer_name not in names:
        tls.abort()
        raise PeerRejected(
            RejectReason.WRONG_PEER_NAME,
            f"{addr}: certificate names {sorted(names)}, expected {peer_name!r}",
        )
    _nodelay(tls)
    return conn


async def dial(
    host: str, port: int, ctx: ssl.SSLContext, peer_name: str, timeout: float
) -> Connection:
    """Connect to the peer and authenticate it; the server name must be `peer_name`."""
    addr = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        transport, conn = await asyncio.wait_for(
            loop.create_connection(
                Connection,
                host,
                port,
                ssl=ctx,
                server_hostname=peer_name,
                ssl_handshake_timeout=timeout,
            ),
            timeout,
        )
    except TimeoutError:
        raise PeerRejected(
            RejectReason.TIMEOUT, f"{addr}: no TLS handshake within {timeout}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        reason = RejectReason.TLS_HANDSHAKE
        if "hostname" in (exc.verify_message or "").lower() or "match" in str(exc):
            reason = RejectReason.WRONG_PEER_NAME
        raise PeerRejected(reason, f"{addr}: {_why(exc)}") from None
    except ssl.SSLError as exc:
        raise PeerRejected(RejectReason.TLS_HANDSHAKE, f"{addr}: {_why(exc)}") from None
    _nodelay(transport)
    return conn


def _addr(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__
