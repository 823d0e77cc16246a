"""Mutual TLS 1.3 between the two nodes: contexts, dialing, accepting, framed messages.

Both sides trust only the private CA (never the system store) and require the peer's certificate
to name the configured peer node. TLS 1.3 reports a rejected client certificate to the client only
on its first read, so the server speaks first and `dial` reads before it returns: a refusal (TLS
alert, or a CLOSE message saying why) is known to the standby at once.

The listener is built to keep the configured peer's door open under a flood (issue 5, part 11):
connections from the peer's address have their own slots and are never refused as busy; every
other source may have at most PER_SOURCE_HANDSHAKES under way out of MAX_PENDING_HANDSHAKES;
and a stranger must send its first TLS bytes within CLIENT_HELLO_TIMEOUT. Until those bytes
arrive an accepted socket is only watched for readability (no TLS state, no task), so a silent
client costs one descriptor for half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import socket
import ssl
import struct
from asyncio import sslproto
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from havip.config import TlsFiles
from havip.core.wire import Close, ErrorKind, FrameDecoder, Message, ProtocolError, encode

MAX_PENDING_HANDSHAKES = 16  # strangers' handshakes under way at once, all sources together
PER_SOURCE_HANDSHAKES = 2  # ... from one source address other than the peer's
PEER_HANDSHAKES = 4  # the peer's own slots; a newer attempt replaces the oldest one
CLIENT_HELLO_TIMEOUT = 0.5  # seconds a stranger has to send the first bytes of its ClientHello
CLOSE_LINGER = 1.0  # seconds a closing connection may take to flush its last words
_TLS_HANDSHAKE_RECORD = 0x16  # first byte of every TLS ClientHello
_ACCEPT_BURST = 128  # connections accepted per wake-up, so a flood cannot starve the loop
_ACCEPT_RETRY = 0.05  # seconds to pause accepting when out of descriptors or memory


class RejectReason(StrEnum):
    """Why an incoming or outgoing connection was refused; a metric label."""

    TLS_HANDSHAKE = "tls_handshake"  # wrong CA, expired certificate, not TLS, a TLS alert...
    WRONG_PEER_NAME = "wrong_peer_name"
    TIMEOUT = "timeout"  # no ClientHello in time, or no complete handshake (or HELLO) in time
    BUSY = "busy"  # too many handshakes already under way: dropped unread
    ABORTED = "aborted"  # the other side closed or reset the connection mid-handshake


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
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, tls)
    # Every connection is a full handshake: resumption would only add state to attack.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    return ctx


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
    A ProtocolError (bad bytes, or raised by `on_message`) is answered with a CLOSE naming it,
    so the peer can count and log the real reason, and then the connection is closed.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer_addr = "?"
        self.closed = False
        self.done: asyncio.Future[None] = loop.create_future()
        # Resolved by the first message or the end, whichever comes first (see `dial`).
        self.first: asyncio.Future[None] = loop.create_future()
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
                    if not self.first.done():
                        self.first.set_result(None)
                else:
                    self._on_message(msg)
        except ProtocolError as exc:
            self._end(exc)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    # ---- for the daemon --------------------------------------------------------------------

    @property
    def ended(self) -> tuple[BaseException | None] | None:
        """(why,) once the peer's side ended before `attach`; None while it has not."""
        return self._ended

    @property
    def early(self) -> tuple[Message, ...]:
        """Messages received before `attach`, not yet delivered."""
        return tuple(self._early)

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
                _close_bounded(self.transport)
            self._resolve()

    def refuse(self, kind: ErrorKind, detail: str) -> None:
        """Tell the peer why we hang up (a CLOSE message), then close (no `on_end` callback)."""
        if not self.closed and self.transport is not None:
            self.transport.write(encode(Close(kind=kind, detail=detail)))
        self.close()

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
            if isinstance(why, ProtocolError) and not self.transport.is_closing():
                self.transport.write(encode(Close(kind=why.kind, detail=why.detail)))
            _close_bounded(self.transport)
        self._resolve()
        if self._on_end is None:
            self._ended = (why,)
        else:
            self._on_end(why)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if not self.first.done():
            self.first.set_result(None)


def _close_bounded(transport: asyncio.Transport) -> None:
    """Close after flushing, but abort if the peer does not take our last bytes in time."""
    if transport.is_closing():
        return
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(CLOSE_LINGER, transport.abort)


# ---- the primary's listener -----------------------------------------------------------------


@dataclass(eq=False)
class _Pending:
    """An accepted connection whose handshake is not finished (one slot)."""

    sock: socket.socket
    source: str
    addr: str
    peer: bool
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    watching: bool = False  # readability watched: waiting for the ClientHello's first bytes


@dataclass(eq=False)
class _Slots:
    """Handshakes under way: the peer's (oldest first) and everybody else's, by source."""

    peer: deque[_Pending] = field(default_factory=deque)
    others: dict[str, list[_Pending]] = field(default_factory=dict)
    others_total: int = 0

    def add(self, p: _Pending) -> None:
        if p.peer:
            self.peer.append(p)
        else:
            self.others.setdefault(p.source, []).append(p)
            self.others_total += 1

    def remove(self, p: _Pending) -> bool:
        if p.peer:
            if p in self.peer:
                self.peer.remove(p)
                return True
            return False
        same = self.others.get(p.source)
        if not same or p not in same:
            return False
        same.remove(p)
        if not same:
            del self.others[p.source]
        self.others_total -= 1
        return True

    def all(self) -> list[_Pending]:
        return [*self.peer, *(p for same in self.others.values() for p in same)]


class Listener(asyncio.AbstractServer):
    """The primary's TLS listener (see the module docstring for its admission rules)."""

    def __init__(
        self,
        socks: list[socket.socket],
        ctx: ssl.SSLContext,
        peer_name: str,
        peer_host: str | None,
        timeout: float,
        hello_timeout: float,
        on_connection: Callable[[Connection], None],
        on_reject: Callable[[PeerRejected], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._socks = socks
        self.ctx = ctx  # replaced on reload: the next handshake uses the new certificates
        self._peer_name = peer_name
        self._peer_host = peer_host
        self._timeout = timeout
        self._hello_timeout = hello_timeout
        self._on_connection = on_connection
        self._on_reject = on_reject
        self._slots = _Slots()
        self._serving = True
        self._closed = self._loop.create_future()
        for sock in socks:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    # ---- asyncio.AbstractServer --------------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._socks)

    def close(self) -> None:
        """Stop listening and drop every handshake still under way."""
        if not self._serving:
            return
        self._serving = False
        for sock in self._socks:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for p in self._slots.all():
            self._discard(p)
        if not self._closed.done():
            self._closed.set_result(None)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None  # serving from construction

    async def serve_forever(self) -> None:
        await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # ---- admission ---------------------------------------------------------------------------

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: stop accepting briefly, or we would spin.
                    self._loop.remove_reader(lsock.fileno())
                    self._loop.call_later(_ACCEPT_RETRY, self._resume, lsock)
                    return
                raise
            sock.setblocking(False)
            self._admit(sock, str(peer[0]), f"{peer[0]}:{peer[1]}")

    def _resume(self, lsock: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(lsock.fileno(), self._accept, lsock)

    def _admit(self, sock: socket.socket, source: str, addr: str) -> None:
        slots = self._slots
        p = _Pending(sock, source, addr, peer=source == self._peer_host)
        if p.peer:
            if len(slots.peer) >= PEER_HANDSHAKES:
                # The peer's newest attempt is the one that matters (it gave up on the oldest).
                old = slots.peer[0]
                self._discard(old)
                self._reject(old, RejectReason.BUSY, "replaced by a newer connection from there")
        else:
            why = None
            if len(slots.others.get(source, ())) >= PER_SOURCE_HANDSHAKES:
                why = f"already {PER_SOURCE_HANDSHAKES} handshakes under way from this address"
            elif slots.others_total >= MAX_PENDING_HANDSHAKES:
                why = f"already {MAX_PENDING_HANDSHAKES} handshakes under way"
            if why is not None:
                # Only one peer exists: a crowd of half-open connections is a flood, and each
                # would cost a TLS handshake. Drop the newcomer unread.
                _abort_socket(sock)
                self._on_reject(PeerRejected(RejectReason.BUSY, f"{addr}: {why}"))
                return
        slots.add(p)
        # A stranger must start talking at once; the peer gets the whole handshake time, as a
        # lost ClientHello segment on a lossy link must not cost it its (reserved) slot.
        wait = self._timeout if p.peer else min(self._hello_timeout, self._timeout)
        p.watching = True
        self._loop.add_reader(sock.fileno(), self._readable, p)
        p.timer = self._loop.call_later(wait, self._silent, p, wait)

    def _silent(self, p: _Pending, waited: float) -> None:
        if self._discard(p):
            self._reject(p, RejectReason.TIMEOUT, f"no ClientHello within {waited:g}s")

    def _readable(self, p: _Pending) -> None:
        self._stop_watching(p)
        try:
            first = p.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._loop.add_reader(p.sock.fileno(), self._readable, p)
            p.watching = True
            return
        except OSError as exc:
            if self._discard(p):
                self._reject(p, RejectReason.ABORTED, f"before the handshake: {_why(exc)}")
            return
        if not first:
            if self._discard(p):
                self._reject(p, RejectReason.ABORTED, "closed before the handshake")
            return
        if first[0] != _TLS_HANDSHAKE_RECORD:
            if self._discard(p):
                self._reject(
                    p, RejectReason.TLS_HANDSHAKE, f"not TLS (first byte 0x{first[0]:02x})"
                )
            return
        if p.timer is not None:
            p.timer.cancel()  # `accept` has its own deadline from here
            p.timer = None
        p.task = self._loop.create_task(self._handshake(p))

    async def _handshake(self, p: _Pending) -> None:
        try:
            conn = await accept(p.sock, self.ctx, self._peer_name, self._timeout, addr=p.addr)
        except PeerRejected as exc:
            if self._slots.remove(p):
                self._on_reject(exc)
            return
        finally:
            if p.timer is not None:
                p.timer.cancel()
        if not self._slots.remove(p):
            conn.abort()  # replaced or the listener closed while we finished
            return
        self._on_connection(conn)

    def _stop_watching(self, p: _Pending) -> None:
        if p.watching:
            p.watching = False
            self._loop.remove_reader(p.sock.fileno())

    def _discard(self, p: _Pending) -> bool:
        """Free `p`'s slot and drop its connection; False if it was already gone."""
        if not self._slots.remove(p):
            return False
        if p.timer is not None:
            p.timer.cancel()
        if p.task is not None:
            p.task.cancel()  # the handshake closes its own transport
        else:
            self._stop_watching(p)
            _abort_socket(p.sock)
        return True

    def _reject(self, p: _Pending, reason: RejectReason, why: str) -> None:
        self._on_reject(PeerRejected(reason, f"{p.addr}: {why}"))


def _abort_socket(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): no TIME_WAIT left behind by a flood."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def listen(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    peer_name: str,
    timeout: float,
    on_connection: Callable[[Connection], None],
    on_reject: Callable[[PeerRejected], None],
    *,
    peer_host: str | None = None,
    hello_timeout: float = CLIENT_HELLO_TIMEOUT,
) -> Listener:
    """Accept TCP, upgrade to TLS, require the peer's certificate to name `peer_name`.

    `peer_host` is the address the peer connects from (the standby's address): it gets its
    own handshake slots and the full `timeout` (see the module docstring)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if sockaddr in seen:
                continue
            seen.add(sockaddr)
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}"
                ) from None
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if peer_host is not None:
        peer_host = await _canonical(peer_host)
    return Listener(
        socks, ctx, peer_name, peer_host, timeout, hello_timeout, on_connection, on_reject
    )


async def _canonical(host: str) -> str:
    """An IP address as `accept` reports it (a name is resolved once, here)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return host
    return str(infos[0][4][0]) if infos else host


async def accept(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    peer_name: str,
    timeout: float,
    *,
    addr: str | None = None,
) -> Connection:
    """Run the server side of the TLS handshake on an accepted socket and authenticate the
    peer by name; every failure is a PeerRejected (the socket is closed)."""
    loop = asyncio.get_running_loop()
    addr = addr or _sock_addr(sock)
    conn = Connection()
    handshake: asyncio.Future[None] = loop.create_future()
    # asyncio's own handshake timeout reports itself as a connection error; ours, a little
    # shorter, is the one that fires, so a slow handshake counts as `timeout`.
    tls_proto = _AlertingSSLProtocol(
        loop, conn, ctx, handshake, server_side=True, ssl_handshake_timeout=math.ceil(timeout) + 1
    )
    plain: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            plain, _ = await loop.connect_accepted_socket(lambda: tls_proto, sock)
            await handshake
        tls = conn.transport
        assert tls is not None
    except TimeoutError:
        if isinstance(plain, asyncio.Transport):
            plain.abort()
        raise PeerRejected(
            RejectReason.TIMEOUT, f"{addr}: no TLS handshake within {timeout:g}s"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        if plain is None:
            _abort_socket(sock)
        text = _why(exc)
        if isinstance(exc, ConnectionError) and not str(exc):
            text = "closed or reset during the TLS handshake"  # asyncio says no more than that
        raise PeerRejected(_failure_reason(exc), f"{addr}: {text}") from None
    if tls.is_closing() or tls.get_extra_info("peercert") is None:
        tls.abort()
        raise PeerRejected(RejectReason.ABORTED, f"{addr}: closed during the handshake")
    names = peer_dns_names(tls)
    if peer_name not in names:
        # Our CA vouches for it, so it is one of ours, misconfigured: tell it why.
        detail = f"certificate names {sorted(names)}, expected {peer_name!r}"
        conn.refuse(ErrorKind.CONFIG_MISMATCH, f"the primary refuses your {detail}")
        raise PeerRejected(RejectReason.WRONG_PEER_NAME, f"{addr}: {detail}")
    _nodelay(tls)
    return conn


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, but a failed handshake sends its alert before closing.

    asyncio drops the connection on a failed handshake without sending what OpenSSL wrote for
    the client, so a standby whose certificate we refuse would see a bare EOF. The alert
    ("unknown ca", "certificate expired") is the only way it can learn why. The attributes
    used are asyncio's (3.11+) and typed in typeshed; tests/test_transport.py checks the alert
    arrives, so a Python that changes them fails a test rather than going quiet.
    """

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None and self._transport is not None:
            with contextlib.suppress(Exception):
                alert = getattr(self, "_outgoing").read()  # noqa: B009 - not in typeshed
                if alert:
                    # A few bytes into an idle socket: write() sends them at once, before the
                    # forced close below can discard the transport's buffer.
                    assert isinstance(self._transport, asyncio.WriteTransport)
                    self._transport.write(alert)
        super()._on_handshake_complete(handshake_exc)


def _failure_reason(exc: BaseException) -> RejectReason:
    """A TLS failure's reason: abandoned (EOF, reset) is not a certificate problem."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return RejectReason.ABORTED
    if isinstance(exc, ssl.SSLError):
        return RejectReason.TLS_HANDSHAKE
    return RejectReason.ABORTED  # ConnectionResetError (EOF mid-handshake), other socket errors


# ---- the standby's side -------------------------------------------------------------------------


async def dial(
    host: str, port: int, ctx: ssl.SSLContext, peer_name: str, timeout: float
) -> Connection:
    """Connect to the peer, authenticate it (the server name must be `peer_name`) and wait for
    its first message (bounded by `timeout` in all).

    TLS 1.3 tells a client that the server refused its certificate only on its first read: by
    waiting for the server's first message here, such a refusal is a PeerRejected naming the
    alert (e.g. "tlsv1 alert unknown ca") instead of a link that dies at once. A CLOSE from the
    server is a message: the caller receives it. Connection failures (refused, unreachable) are
    OSError."""
    addr = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, conn = await loop.create_connection(
                Connection,
                host,
                port,
                ssl=ctx,
                server_hostname=peer_name,
                ssl_handshake_timeout=timeout + 1.0,
            )
            await conn.first
    except TimeoutError:
        if conn is not None:
            conn.abort()
        raise PeerRejected(
            RejectReason.TIMEOUT, f"{addr}: no TLS handshake and HELLO within {timeout:g}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        reason = RejectReason.TLS_HANDSHAKE
        if "hostname" in (exc.verify_message or "").lower():
            reason = RejectReason.WRONG_PEER_NAME
        raise PeerRejected(reason, f"{addr}: {_why(exc)}") from None
    except ssl.SSLError as exc:
        raise PeerRejected(_failure_reason(exc), f"{addr}: {_why(exc)}") from None
    except ConnectionResetError:
        # Reset or EOF during the handshake: the server gave up on us (or is not TLS at all).
        raise PeerRejected(
            RejectReason.ABORTED, f"{addr}: closed or reset during the TLS handshake"
        ) from None
    ended = conn.ended
    if ended is not None and not conn.early and not isinstance(ended[0], ProtocolError):
        why = ended[0]
        if why is None or not isinstance(why, ssl.SSLError):
            text = "closed the connection before its HELLO" if why is None else _why(why)
            raise PeerRejected(RejectReason.ABORTED, f"{addr}: {text}")
        # The server refused our certificate: its alert is the reason ("tlsv1 alert unknown ca").
        raise PeerRejected(_failure_reason(why), f"{addr}: refused us: {_why(why)}")
    _nodelay(transport)
    return conn


def _addr(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _sock_addr(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        text = exc.reason.lower().replace("_", " ")
        if text == "wrong version number":
            text += " (not a TLS server?)"
        return text
    return str(exc) or type(exc).__name__
