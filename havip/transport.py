"""Mutual TLS 1.3 between the two nodes: contexts, dialing, accepting, framed messages.

Both sides trust only the private CA (never the system store) and require the peer's certificate
to name the configured peer node. TLS 1.3 reports a rejected client certificate to the client only
on its first read, so the server speaks first and the client reads before it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from havip.config import TlsFiles
from havip.wire import FrameDecoder, Message, encode

READ_CHUNK = 4096


class RejectReason(StrEnum):
    """Why an incoming or outgoing connection was refused; a metric label."""

    TLS_HANDSHAKE = "tls_handshake"  # wrong CA, expired certificate, plain TCP, garbage...
    WRONG_PEER_NAME = "wrong_peer_name"
    TIMEOUT = "timeout"


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


def peer_dns_names(writer: asyncio.StreamWriter) -> set[str]:
    """DNS names in the verified peer certificate's subjectAltName."""
    cert = writer.get_extra_info("peercert") or {}
    return {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(eq=False)
class Connection:
    """One authenticated connection; reads frames into messages, writes messages as frames."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_addr: str

    def __post_init__(self) -> None:
        self._decoder = FrameDecoder()
        self._ready: list[Message] = []
        self.closed = False

    async def read(self) -> Message | None:
        """The next message, or None at end of stream. Raises ProtocolError on bad bytes."""
        while not self._ready:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def send(self, msg: Message) -> None:
        if not self.closed:
            self.writer.write(encode(msg))

    async def drain(self, timeout: float) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.drain(), timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ctx: ssl.SSLContext,
    peer_name: str,
    timeout: float,
) -> Connection:
    """Upgrade an accepted TCP connection to TLS and authenticate the peer by name."""
    addr = _addr(writer)
    try:
        await writer.start_tls(ctx, ssl_handshake_timeout=timeout)
    except TimeoutError:
        writer.close()
        raise PeerRejected(
            RejectReason.TIMEOUT, f"{addr}: no TLS handshake within {timeout}s"
        ) from None
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        writer.close()
        raise PeerRejected(RejectReason.TLS_HANDSHAKE, f"{addr}: {_why(exc)}") from None
    names = peer_dns_names(writer)
    if peer_name not in names:
        writer.close()
        raise PeerRejected(
            RejectReason.WRONG_PEER_NAME,
            f"{addr}: certificate names {sorted(names)}, expected {peer_name!r}",
        )
    _nodelay(writer)
    return Connection(reader, writer, addr)


async def dial(
    host: str, port: int, ctx: ssl.SSLContext, peer_name: str, timeout: float
) -> Connection:
    """Connect to the peer and authenticate it; the server name must be `peer_name`."""
    addr = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=peer_name, ssl_handshake_timeout=timeout
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
    _nodelay(writer)
    return Connection(reader, writer, addr)


def _addr(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__
