"""The TLS transport on its own: the standby's side of the handshake, the listener's admission
rules under a flood, and what each failure is called (no daemon involved).

Loopback only. Flooders bind 127.0.0.2 as their source, so the configured peer (127.0.0.1) is
told apart from them exactly as a standby's address is on a LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from flood import STRANGER, flood

from havip.config import Config, Timing, TlsFiles
from havip.core.events import (
    Event,
    PeerDown,
    PeerUp,
)
from havip.core.session import LocalStatus, PeerSession
from havip.core.states import State
from havip.core.wire import Close, ErrorKind, FrameDecoder, Hello, Message, Resign, encode
from havip.shell import peerlink, transport
from havip.shell.metrics import Metrics
from havip.shell.peerlink import PeerLink
from havip.shell.transport import (
    Connection,
    Listener,
    PeerRejected,
    RejectReason,
    client_context,
    dial,
    listen,
    server_context,
)

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
PEER = "127.0.0.1"  # the standby's address, as the primary is configured with it


@dataclass
class Pki:
    """Our CA's files plus leaves with problems, and a foreign CA's leaves."""

    dir: Path
    files: dict[str, TlsFiles] = field(default_factory=dict)

    def __getitem__(self, name: str) -> TlsFiles:
        return self.files[name]


def _write(d: Path, name: str, ca_path: Path, leaf: trustme.LeafCert) -> TlsFiles:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return TlsFiles(ca=ca_path, cert=cert, key=key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ours, foreign = trustme.CA(), trustme.CA()
    ca = d / "ca.crt"
    ours.cert_pem.write_to_path(str(ca))
    now = datetime.now(UTC)
    out = Pki(d)
    for n in ("n1", "n2", "n3"):
        out.files[n] = _write(d, n, ca, ours.issue_cert(n))
    day = timedelta(days=1)
    for name, node, start, end in (
        ("expired-n1", "n1", now - 30 * day, now - day),
        ("future-n1", "n1", now + day, now + 30 * day),
        ("expired-n2", "n2", now - 30 * day, now - day),
    ):
        leaf = ours.issue_cert(node, not_before=start, not_after=end)
        out.files[name] = _write(d, name, ca, leaf)
    # A foreign CA's leaves, but trusting our CA (so only their own certificate is wrong).
    out.files["foreign-n1"] = _write(d, "foreign-n1", ca, foreign.issue_cert("n1"))
    out.files["foreign-n2"] = _write(d, "foreign-n2", ca, foreign.issue_cert("n2"))
    return out


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60 * SCALE))


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


# ---- contexts ------------------------------------------------------------------------------


async def _client_got_ticket(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """One handshake and one byte from the server; did the client receive a session ticket?"""

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"x")
        await w.drain()
        await asyncio.sleep(1 * SCALE)
        w.close()

    srv = await asyncio.start_server(handler, PEER, 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(PEER, port, ssl=client, server_hostname="n1")
        assert await asyncio.wait_for(reader.readexactly(1), 5 * SCALE) == b"x"
        session = writer.get_extra_info("ssl_object").session
        writer.close()
        return bool(session is not None and session.has_ticket)
    finally:
        srv.close()


def test_server_context_sends_no_session_tickets(pki: Pki) -> None:
    """No TLS 1.3 tickets; the same handshake with tickets left on (positive control) gives the
    client one, so the check can see a ticket when there is one."""

    async def body() -> None:
        ctx = server_context(pki["n1"])
        assert ctx.options & ssl.OP_NO_TICKET and ctx.num_tickets == 0
        assert not await _client_got_ticket(ctx, client_context(pki["n2"]))
        control = server_context(pki["n1"])
        control.options &= ~ssl.OP_NO_TICKET
        control.num_tickets = 2
        assert await _client_got_ticket(control, client_context(pki["n2"]))

    run(body())


# ---- the standby's side: dial() with the real client context ---------------------------------

FIRST = Resign(seq=1, epoch=1)  # any message will do as the server's first words


@asynccontextmanager
async def _server(
    ssl_ctx: ssl.SSLContext | None, speak: bytes = encode(FIRST), *, close_at_once: bool = False
) -> AsyncIterator[int]:
    """A listener on loopback that says `speak` (or closes at once); yields its port."""

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not close_at_once:
            w.write(speak)
            await w.drain()
            await asyncio.sleep(10 * SCALE)  # then hold the connection; cancelled at the end
        w.close()

    srv = await asyncio.start_server(handler, PEER, 0, ssl=ssl_ctx)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


SERVER_CASES = {
    # case: (server cert, plain-TCP behaviour, expected reason, words expected in the detail)
    "good": ("n1", None, None, ()),
    "foreign_ca": ("foreign-n1", None, RejectReason.TLS_HANDSHAKE, ("unable to get local issuer",)),
    "expired": ("expired-n1", None, RejectReason.TLS_HANDSHAKE, ("certificate has expired",)),
    "not_yet_valid": ("future-n1", None, RejectReason.TLS_HANDSHAKE, ("not yet valid",)),
    "wrong_name": ("n3", None, RejectReason.WRONG_PEER_NAME, ("hostname mismatch", "'n1'")),
    "plain_silent": (None, "silent", RejectReason.TIMEOUT, ("no tls handshake",)),
    "plain_http": (None, "http", RejectReason.TLS_HANDSHAKE, ("not a tls server",)),
    "plain_closes": (None, "close", RejectReason.ABORTED, ()),
}


@pytest.mark.parametrize("case", sorted(SERVER_CASES))
def test_dial_names_what_is_wrong_with_the_server(pki: Pki, case: str) -> None:
    cert, plain, reason, words = SERVER_CASES[case]

    async def body() -> None:
        ctx = None if cert is None else server_context(pki[cert])
        speak = b"HTTP/1.0 400 Bad Request\r\n\r\n" if plain == "http" else encode(FIRST)
        if plain == "silent":
            speak = b""
        async with _server(ctx, speak, close_at_once=plain == "close") as port:
            timeout = 0.5 * SCALE
            if reason is None:
                conn = await dial(PEER, port, client_context(pki["n2"]), "n1", timeout)
                assert conn.early == (FIRST,)
                conn.close()
                return
            with pytest.raises(PeerRejected) as info:
                await dial(PEER, port, client_context(pki["n2"]), "n1", timeout)
            assert info.value.reason is reason, info.value
            assert f"{PEER}:{port}: " in info.value.detail
            for word in words:
                assert word in info.value.detail.lower(), info.value.detail

    run(body())


# ---- the primary's listener ------------------------------------------------------------------


@dataclass
class Served:
    """A running listener and what it reported."""

    listener: Listener
    port: int
    accepted: list[Connection] = field(default_factory=list)
    rejected: list[PeerRejected] = field(default_factory=list)

    def reasons(self) -> list[RejectReason]:
        return [r.reason for r in self.rejected]

    def count(self, reason: RejectReason) -> int:
        return self.reasons().count(reason)


@asynccontextmanager
async def _listen(
    pki: Pki, *, timeout: float = 2.0, hello_timeout: float = 0.5, peer_host: str | None = PEER
) -> AsyncIterator[Served]:
    box: list[Served] = []

    def on_connection(conn: Connection) -> None:
        conn.send(FIRST)  # the primary speaks first
        box[0].accepted.append(conn)

    listener = await listen(
        PEER,
        0,
        server_context(pki["n1"]),
        "n2",
        timeout * SCALE,
        on_connection,
        lambda exc: box[0].rejected.append(exc),
        peer_host=peer_host,
        hello_timeout=hello_timeout * SCALE,
    )
    box.append(Served(listener, listener.sockets[0].getsockname()[1]))
    try:
        yield box[0]
    finally:
        listener.close()
        await listener.wait_closed()
        for conn in box[0].accepted:
            conn.abort()


async def _raw(port: int, source: str) -> socket.socket:
    """A plain TCP connection to the listener from `source`."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    # Refused at once, before our connect() even returned: the caller checks for that.
    with contextlib.suppress(ConnectionResetError):
        await asyncio.get_running_loop().sock_connect(sock, (PEER, port))
    return sock


async def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed (EOF or reset) `sock` within `within` seconds."""
    try:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 100), within)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


CLIENT_CASES = {
    # client cert: (reason the client gets, words in its detail, reason the server counts)
    "n2": (None, (), None),
    "foreign-n2": (RejectReason.TLS_HANDSHAKE, ("alert unknown ca",), RejectReason.TLS_HANDSHAKE),
    "expired-n2": (RejectReason.TLS_HANDSHAKE, ("alert",), RejectReason.TLS_HANDSHAKE),
}


@pytest.mark.parametrize("client", sorted(CLIENT_CASES))
def test_a_refused_standby_learns_why_from_the_tls_alert(pki: Pki, client: str) -> None:
    """TLS 1.3 tells the client about its refused certificate only on its first read: dial()
    reads before returning, so the alert comes out of dial() as the reason."""
    reason, words, server_reason = CLIENT_CASES[client]

    async def body() -> None:
        async with _listen(pki) as srv:
            ctx = client_context(pki[client])
            if reason is None:
                conn = await dial(PEER, srv.port, ctx, "n1", 2 * SCALE)
                assert conn.early == (FIRST,)
                await until(lambda: len(srv.accepted) == 1, "the server took it")
                assert srv.rejected == []
                conn.close()
                return
            with pytest.raises(PeerRejected) as info:
                await dial(PEER, srv.port, ctx, "n1", 2 * SCALE)
            assert info.value.reason is reason
            assert "refused us" in info.value.detail
            for word in words:
                assert word in info.value.detail
            await until(lambda: len(srv.rejected) == 1, "the server counted it")
            assert srv.reasons() == [server_reason] and srv.accepted == []

    run(body())


def test_a_standby_with_the_wrong_name_is_told_why_in_a_close(pki: Pki) -> None:
    """Our CA signed it, so it is one of ours, misconfigured: the primary says CLOSE with the
    reason before hanging up, and counts `wrong_peer_name`."""

    async def body() -> None:
        async with _listen(pki) as srv:
            conn = await dial(PEER, srv.port, client_context(pki["n3"]), "n1", 2 * SCALE)
            (msg,) = conn.early
            assert isinstance(msg, Close) and msg.kind is ErrorKind.CONFIG_MISMATCH
            assert "['n3']" in msg.detail and "'n2'" in msg.detail
            await conn.done  # and then it hangs up
            assert srv.reasons() == [RejectReason.WRONG_PEER_NAME] and srv.accepted == []

    run(body())


# Each way a stranger can fail before authenticating, and the reason it is counted under.
STRANGERS = {
    "silent": (b"", False, RejectReason.TIMEOUT, "no ClientHello within"),
    "garbage": (b"GET / HTTP/1.0\r\n\r\n", False, RejectReason.TLS_HANDSHAKE, "not TLS"),
    "closes": (b"", True, RejectReason.ABORTED, "closed before the handshake"),
    # A TLS record header and no more: a peer's attempt abandoned after a freeze.
    "abandons_handshake": (b"\x16\x03\x01\x00\xff", True, RejectReason.ABORTED, "reset"),
    "stalls_in_handshake": (b"\x16\x03\x01\x00\xff", False, RejectReason.TIMEOUT, "no TLS hand"),
}


@pytest.mark.parametrize("case", sorted(STRANGERS))
def test_each_failure_before_authentication_has_its_own_reason(pki: Pki, case: str) -> None:
    data, then_close, reason, words = STRANGERS[case]

    async def body() -> None:
        # Handshake deadline 1 s, ClientHello deadline 0.2 s: which one fired tells them apart.
        async with _listen(pki, timeout=1.0, hello_timeout=0.2) as srv:
            sock = await _raw(srv.port, STRANGER)
            with sock:
                if data:
                    await asyncio.get_running_loop().sock_sendall(sock, data)
                if then_close:
                    sock.shutdown(socket.SHUT_WR)
                await until(lambda: len(srv.rejected) == 1, f"{case} rejected")
            (exc,) = srv.rejected
            assert exc.reason is reason, exc
            assert words in exc.detail and exc.detail.startswith(f"{STRANGER}:"), exc

    run(body())


def test_a_silent_stranger_is_dropped_at_the_clienthello_deadline(pki: Pki) -> None:
    """With a long handshake timeout, a silent stranger still goes at the short ClientHello
    deadline, while a silent connection from the peer's address is kept (its own slots)."""

    async def body() -> None:
        async with _listen(pki, timeout=30.0, hello_timeout=0.2) as srv:
            stranger, peer = await _raw(srv.port, STRANGER), await _raw(srv.port, PEER)
            with stranger, peer:
                assert await _closed_by_server(stranger, 5 * SCALE)
                assert srv.reasons() == [RejectReason.TIMEOUT]
                # The peer's silent connection outlives the stranger's deadline many times over.
                assert not await _closed_by_server(peer, 1.0 * SCALE)

    run(body())


def test_per_source_limit_pool_limit_and_the_peers_own_slots(pki: Pki) -> None:
    async def body() -> None:
        async with _listen(pki, timeout=30.0, hello_timeout=30.0) as srv:
            socks: list[socket.socket] = []
            try:
                # Two from one stranger are admitted, the third is refused at once.
                socks += [await _raw(srv.port, STRANGER) for _ in range(3)]
                await until(lambda: len(srv.rejected) == 1, "the third one refused")
                assert srv.rejected[0].reason is RejectReason.BUSY
                assert "from this address" in srv.rejected[0].detail
                assert not await _closed_by_server(socks[0], 0.05)
                assert not await _closed_by_server(socks[1], 0.05)
                assert await _closed_by_server(socks[2], 5 * SCALE)
                # Fill the strangers' pool from other sources: 2 already + 14 = 16.
                for i in range(14):
                    socks.append(await _raw(srv.port, f"127.0.1.{i + 1}"))
                socks.append(await _raw(srv.port, "127.0.2.1"))
                await until(lambda: len(srv.rejected) == 2, "the 17th stranger refused")
                assert "already 16 handshakes" in srv.rejected[1].detail
                # The peer is not a stranger: it gets in with the pool full.
                conn = await dial(PEER, srv.port, client_context(pki["n2"]), "n1", 2 * SCALE)
                await until(lambda: len(srv.accepted) == 1, "the peer accepted")
                conn.close()
                assert srv.count(RejectReason.BUSY) == 2
            finally:
                for sock in socks:
                    sock.close()

    run(body())


def test_the_peers_newest_attempt_replaces_its_oldest(pki: Pki) -> None:
    async def body() -> None:
        async with _listen(pki, timeout=30.0, hello_timeout=30.0) as srv:
            socks = [await _raw(srv.port, PEER) for _ in range(transport.PEER_HANDSHAKES)]
            try:
                await asyncio.sleep(0)
                assert srv.rejected == []
                socks.append(await _raw(srv.port, PEER))
                assert await _closed_by_server(socks[0], 5 * SCALE)  # the oldest went
                assert srv.reasons() == [RejectReason.BUSY]
                assert "replaced by a newer connection" in srv.rejected[0].detail
                assert not await _closed_by_server(socks[-1], 0.05)  # the newest stays
                # And a real handshake from the peer still gets in beside them.
                conn = await dial(PEER, srv.port, client_context(pki["n2"]), "n1", 2 * SCALE)
                conn.close()
                assert len(srv.accepted) == 1
            finally:
                for sock in socks:
                    sock.close()

    run(body())


# ---- part 11: the peer gets in under a flood -------------------------------------------------


async def _standby_gets_in(srv: Served, tls: TlsFiles, attempts: int, within: float) -> list[float]:
    """The standby (re)connects `attempts` times; each must get in within `within` seconds."""
    took = []
    for _ in range(attempts):
        start = time.monotonic()
        conn = await dial(PEER, srv.port, client_context(tls), "n1", within)
        took.append(time.monotonic() - start)
        conn.close()
        await asyncio.sleep(0.05)
    return took


def test_the_peer_gets_in_within_a_second_under_a_flood(pki: Pki) -> None:
    """64 silent flooders reconnecting at once while the standby connects five times: every
    attempt gets in within a second. The positive control shows the flood is a real one:
    without the peer's slots and the per-source limit (16 shared slots, as before) the same
    flood keeps the standby out."""

    async def body() -> None:
        async with _listen(pki) as srv, flood(srv.port):
            await until(lambda: len(srv.rejected) >= 64, "the flood under way")
            took = await _standby_gets_in(srv, pki["n2"], 5, 1.0 * SCALE)
            assert len(srv.accepted) == 5
            # The flood was refused all along (counted, and by the rules for strangers).
            assert set(srv.reasons()) <= {RejectReason.BUSY, RejectReason.TIMEOUT}
            print(f"standby connect times under the flood: {[round(t, 3) for t in took]} s")

    run(body())


def test_positive_control_the_old_rules_lock_the_peer_out(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "PER_SOURCE_HANDSHAKES", 10_000)

    async def body() -> None:
        # No peer address known and no per-source limit: 16 slots, held 2 s, shared by all.
        async with _listen(pki, peer_host=None, hello_timeout=2.0) as srv, flood(srv.port):
            await until(lambda: len(srv.rejected) >= 64, "the flood under way")
            with pytest.raises(PeerRejected):
                await _standby_gets_in(srv, pki["n2"], 5, 1.0 * SCALE)

    run(body())


# ---- the peer link (havip.shell.peerlink) over real TLS, without a daemon ----------------------

TIMING = Timing(
    keepalive_interval=0.05,
    dead_time=0.2,
    probe_count=1,
    probe_window=0.02,
    handshake_timeout=0.5 * SCALE,
    reconnect_max=0.1,
    preempt_delay=0.2,
)
STATUS = LocalStatus(state=State.STANDBY, owns=False, epoch=1, eligible=True)
MAC = b"\x02\x00\x00\x00\x00\x01"


def _config(node: str, tls: TlsFiles, port: int, tmp: Path, *, preempt: bool = True) -> Config:
    return Config(
        path=tmp / f"{node}.toml",
        node=node,
        primary="n1",
        preempt=preempt,
        listen=(PEER, port),
        peer_name="n2" if node == "n1" else "n1",
        peer_address=(PEER, port),
        tls=tls,
        timing=TIMING,
        vips=(),
        backend="dry-run",
        lan_dir=None,
        metrics_listen=None,
        state_dir=tmp,
    )


class LinkNode:
    """A PeerLink with the daemon's part played by this harness: one timer, a list of events."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.metrics = Metrics(
            node=cfg.node,
            peer=cfg.peer_name,
            vips=[],
            states=[s.value for s in State],
            reasons=[],
            version="test",
        )
        self.events: list[Event] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        tls = server_context(cfg.tls) if cfg.is_primary else client_context(cfg.tls)
        self.link = PeerLink(
            cfg,
            tls,
            self.metrics,
            boot_id=os.urandom(16),
            status=lambda: STATUS,
            mac=lambda: MAC,
            feed=self.events.append,
            rearm=self.arm,
            spawn=self.spawn,
        )
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self) -> LinkNode:
        self.servers = await self.link.start()
        return self

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        due = self.link.next_wakeup()
        if due is not None:
            self.timer = self.loop.call_at(due, self.fire)

    def fire(self) -> None:
        self.timer = None
        self.link.on_timer(self.loop.time())
        self.arm()

    async def stop(self) -> None:
        await self.link.close()
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.timer is not None:
            self.timer.cancel()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def ups(self) -> int:
        return sum(isinstance(e, PeerUp) for e in self.events)

    def downs(self) -> int:
        return sum(isinstance(e, PeerDown) for e in self.events)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((PEER, 0))
        port: int = s.getsockname()[1]
        return port


def _lines(caplog: pytest.LogCaptureFixture, name: str, node: str | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"event={name} ")
        and (node is None or getattr(r, "node", node) == node)
    ]


MISMATCH = ("havip_protocol_errors_total", {"kind": "config_mismatch"})


@pytest.mark.parametrize("control", [False, True], ids=["backoff", "positive_control"])
def test_config_mismatch_is_counted_and_logged_once_on_both_sides_and_backs_off(
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    control: bool,
) -> None:
    """preempt differs: the standby refuses the primary's HELLO, says so in a CLOSE, and both
    count config_mismatch; the standby backs off instead of redialling every ~160 ms. The
    positive control caps the backoff at reconnect_max (0.1 s): the bound must then fail."""
    caplog.set_level("INFO", logger="havip")
    if control:
        monkeypatch.setattr(peerlink, "REFUSED_BACKOFF_MAX", 0.0)

    async def body() -> None:
        port = _free_port()
        n1 = await LinkNode(_config("n1", pki["n1"], port, tmp_path, preempt=True)).start()
        n2 = await LinkNode(_config("n2", pki["n2"], port, tmp_path, preempt=False)).start()
        try:
            await until(lambda: n1.sample(*MISMATCH) >= 2, "a second refused attempt")
            window = 3.0 * SCALE
            before, start = n2.sample(*MISMATCH), time.monotonic()
            await asyncio.sleep(window)
            attempts = n2.sample(*MISMATCH) - before
            elapsed = time.monotonic() - start
        finally:
            await n2.stop()
            await n1.stop()
        assert n1.ups() == n2.ups() == 0 and not n1.link.up
        # Both sides counted each refusal (the primary learns it from the CLOSE).
        assert n1.sample(*MISMATCH) == n2.sample(*MISMATCH)
        # Without backoff (as before) that window held ~elapsed / 0.16 attempts; with it the
        # waits double from 50 ms to REFUSED_BACKOFF_MAX: a handful at most.
        print(f"{attempts:.0f} refused attempts in {elapsed:.1f}s")
        if control:
            assert attempts > 2 + elapsed / 0.5, attempts
            return
        assert attempts <= 2 + elapsed / 0.5, attempts
        refused = _lines(caplog, "peer_refused")
        ours = [line for line in refused if "side=ours" in line]
        theirs = [line for line in refused if "side=theirs" in line]
        # Once each side (the summary line would come only after QUIET_LOG_EVERY).
        assert len(ours) == 1 and len(theirs) == 1, refused
        assert "preempt" in ours[0] and "preempt" in theirs[0]
        assert "reason=config_mismatch" in theirs[0]

    run(body())


def test_a_standby_from_a_foreign_ca_learns_it_from_the_alert_and_backs_off(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="havip")
    tls_label = ("havip_peer_rejected_total", {"reason": "tls_handshake"})

    async def body() -> None:
        port = _free_port()
        n1 = await LinkNode(_config("n1", pki["n1"], port, tmp_path)).start()
        n2 = await LinkNode(_config("n2", pki["foreign-n2"], port, tmp_path)).start()
        try:
            await until(lambda: n2.sample(*tls_label) >= 3, "three refusals")
        finally:
            await n2.stop()
            await n1.stop()
        assert n2.sample(*tls_label) >= 3 and n1.sample(*tls_label) >= 3
        # The standby's own line names the alert, once.
        lines = [line for line in _lines(caplog, "peer_rejected") if "refused us" in line]
        assert len(lines) == 1 and "alert unknown ca" in lines[0], lines
        assert n1.ups() == n2.ups() == 0

    run(body())


def test_rejections_are_all_counted_but_summarised_in_the_log(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO", logger="havip")
    monkeypatch.setattr(peerlink, "QUIET_LOG_EVERY", 0.5 * SCALE)
    label = ("havip_peer_rejected_total", {"reason": "tls_handshake"})

    async def body() -> None:
        port = _free_port()
        n1 = await LinkNode(_config("n1", pki["n1"], port, tmp_path)).start()
        try:
            for i in range(30):
                sock = await _raw(port, f"127.0.3.{i + 1}")
                with sock:
                    await asyncio.get_running_loop().sock_sendall(sock, b"garbage\r\n")
                    await _closed_by_server(sock, 5 * SCALE)
            await until(lambda: n1.sample(*label) == 30, "all 30 counted")
            await until(lambda: bool(_lines(caplog, "peer_rejected_summary")), "the summary")
        finally:
            await n1.stop()
        assert len(_lines(caplog, "peer_rejected")) == 1
        (summary,) = _lines(caplog, "peer_rejected_summary")
        assert "tls_handshake=29" in summary and "29 more" in summary

    run(body())


class HandPeer:
    """A standby driven by hand over real TLS (n2's certificate), to say exactly what we want."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.session = PeerSession(
            me="n2",
            peer="n1",
            primary="n1",
            preempt=True,
            boot_id=os.urandom(16),
            interval=0.1,
            dead_time=10,
            now=0,
        )

    @classmethod
    async def connect(cls, port: int, tls: TlsFiles) -> HandPeer:
        reader, writer = await asyncio.open_connection(
            PEER, port, ssl=client_context(tls), server_hostname="n1"
        )
        return cls(reader, writer)

    async def read(self) -> list[Message]:
        """The next messages; [] on EOF."""
        while True:
            data = await asyncio.wait_for(self.reader.read(4096), 5 * SCALE)
            if not data:
                return []
            msgs = self.decoder.feed(data)
            if msgs:
                return msgs

    def send(self, msg: Message) -> None:
        self.writer.write(encode(msg))

    async def keepalives(self) -> None:
        for _ in range(1000):
            self.send(self.session.keepalive(STATUS, time.monotonic()))
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.writer.close()


def test_a_new_connection_replaces_the_live_link_only_after_its_hello_is_accepted(
    pki: Pki, tmp_path: Path
) -> None:
    async def body() -> None:
        port = _free_port()
        timing = replace(TIMING, dead_time=1.0 * SCALE, handshake_timeout=0.5 * SCALE)
        cfg = replace(_config("n1", pki["n1"], port, tmp_path), timing=timing)
        n1 = await LinkNode(cfg).start()
        peers: list[HandPeer] = []
        try:
            # A: the live link.
            a = await HandPeer.connect(port, pki["n2"])
            peers.append(a)
            (hello,) = await a.read()
            assert isinstance(hello, Hello) and hello.node == "n1"  # the primary speaks first
            a.send(a.session.hello(STATUS, MAC))
            await until(lambda: n1.link.up, "A is the live link")
            n1.spawn(a.keepalives())
            live = n1.link.current
            # B: authenticated, but its HELLO fails the checks. A stays, B is told why.
            b = await HandPeer.connect(port, pki["n2"])
            peers.append(b)
            await b.read()
            bad = replace(b.session.hello(STATUS, MAC), preempt=False)
            b.send(bad)
            (close,) = await b.read()
            assert isinstance(close, Close) and close.kind is ErrorKind.CONFIG_MISMATCH
            assert await b.read() == []  # and then hangs up
            assert n1.link.current is live and n1.link.up and n1.link.pending is None
            # C: says nothing; it waits as the pending link, and the timer knows its deadline.
            c = await HandPeer.connect(port, pki["n2"])
            peers.append(c)
            await c.read()
            await until(lambda: n1.link.pending is not None, "C pending")
            pending = n1.link.pending
            assert pending is not None
            due = n1.link.next_wakeup()
            assert due is not None and due <= pending.session.deadline
            assert await c.read() == []  # dropped at its HELLO deadline
            assert n1.link.current is live and n1.link.pending is None
            # D: a good HELLO: now, and only now, the live link is replaced.
            d = await HandPeer.connect(port, pki["n2"])
            peers.append(d)
            await d.read()
            d.send(d.session.hello(STATUS, MAC))
            await until(lambda: n1.link.current is not live, "D replaced A")
            assert n1.link.up and n1.ups() == 2 and n1.downs() == 0
            msgs = await a.read()
            while msgs:  # A gets its last keepalives, then the end
                msgs = await a.read()
            assert n1.sample(*MISMATCH) == 1
        finally:
            for p in peers:
                p.close()
            await n1.stop()

    run(body())
