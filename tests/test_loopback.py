"""Integration: two real daemons in one event loop over loopback mutual TLS, dry-run backend.

The dry-run backend's shared `lan_dir` stands in for the LAN, so a daemon that "crashed" while
holding the VIP still answers the other's probe until its host "powers off" (its file goes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import trustme
from flood import STRANGER, flood

from havip import pki
from havip.backends.dryrun import DryRunBackend, dry_run_mac
from havip.config import Config, Timing, TlsFiles, Vip
from havip.core.session import LocalStatus, PeerSession, format_mac
from havip.core.states import State
from havip.core.wire import Close, ErrorKind, FrameDecoder, Hello, Keepalive, encode
from havip.shell.daemon import Daemon

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
TIMING = Timing(
    keepalive_interval=0.02,
    dead_time=0.1,
    probe_count=1,
    probe_window=0.02,
    handshake_timeout=2.0 * SCALE,
    reconnect_max=0.1,
    preempt_delay=0.2,
)
VIP = Vip(address=IPv4Interface("198.18.0.100/24"), interface="lo")
VIP_LABELS = {"vip": "198.18.0.100", "interface": "lo"}  # its metric labels
MAC = b"\x02\x00\x00\x00\x00\x02"
# Long enough for a failback after preempt_delay (test_sigterm_hands_over_then_primary_fails_back
# shows one happens within it: the positive control for the "nothing moved" window below).
FAILBACK_WINDOW = 10 * TIMING.preempt_delay * SCALE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Certs:
    """Paths of a CA and per-node cert/key files."""

    ca: Path
    files: dict[str, tuple[Path, Path]]  # node (plus "expired-n2") -> (cert, key)

    def tls(self, node: str) -> TlsFiles:
        cert, key = self.files[node]
        return TlsFiles(ca=self.ca, cert=cert, key=key)


def _trustme_certs(d: Path) -> Certs:
    ca = trustme.CA()
    d.mkdir()
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    files = {}
    now = datetime.now(UTC)
    leaves = {n: ca.issue_cert(n) for n in ("n1", "n2", "n3")}
    leaves["expired-n2"] = ca.issue_cert(
        "n2", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    for name, leaf in leaves.items():
        leaf.cert_chain_pems[0].write_to_path(str(d / f"{name}.crt"))
        leaf.private_key_pem.write_to_path(str(d / f"{name}.key"))
        files[name] = (d / f"{name}.crt", d / f"{name}.key")
    return Certs(d / "ca.crt", files)


def _havip_certs(d: Path) -> Certs:
    nodes = ("n1", "n2", "n3")
    pki.init_pki(d, [pki.NodeSpec(name=n, address=IPv4Address("127.0.0.1")) for n in nodes])
    files = {n: (d / f"{n}.crt", d / f"{n}.key") for n in nodes}
    now = datetime.now(UTC)
    cert_pem, key_pem = pki.issue_node_cert_pem(
        (d / "ca.crt").read_bytes(),
        (d / "ca.key").read_bytes(),
        pki.NodeSpec(name="n2", address=None),
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    (d / "expired-n2.crt").write_bytes(cert_pem)
    (d / "expired-n2.key").write_bytes(key_pem)
    files["expired-n2"] = (d / "expired-n2.crt", d / "expired-n2.key")
    return Certs(d / "ca.crt", files)


@pytest.fixture(params=["trustme", "havip-pki"])
def certs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Certs]:
    make = _trustme_certs if request.param == "trustme" else _havip_certs
    yield make(tmp_path / "pki")


def _config(
    node: str, certs: Certs, tmp: Path, port: int, *, preempt: bool = True, timing: Timing = TIMING
) -> Config:
    peer = "n2" if node == "n1" else "n1"
    return Config(
        path=tmp / f"{node}.toml",
        node=node,
        primary="n1",
        preempt=preempt,
        listen=("127.0.0.1", port),
        peer_name=peer,
        peer_address=("127.0.0.1", port),
        tls=certs.tls(node),
        timing=timing,
        vips=(VIP,),
        backend="dry-run",
        lan_dir=tmp / "lan",
        metrics_listen=None,
        state_dir=tmp / "state",
        control_socket=tmp / "run" / f"{node}.sock",
    )


class Node:
    """A daemon running as a task in the test's loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> Node:
        self.daemon = Daemon(self.cfg, DryRunBackend(self.cfg.node, self.cfg.lan_dir))
        self.task = asyncio.ensure_future(self.daemon.run())
        return self

    @property
    def d(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    @property
    def state(self) -> State:
        return self.d.failover.state

    def holds(self) -> bool:
        assert self.cfg.lan_dir is not None
        return (self.cfg.lan_dir / str(VIP.ip) / self.cfg.node).exists()

    async def stop(self) -> int:
        """SIGTERM: graceful handover."""
        self.d._request_stop()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 10 * SCALE)

    async def crash(self) -> None:
        """SIGKILL: the task vanishes; whatever it held stays on the 'interface'."""
        assert self.task is not None
        for server in self.d.servers:
            server.close()
        for task in list(self.d._tasks):
            task.cancel()
        self.d.link.abort()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.d.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until `cond()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout * SCALE
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def pair(
    certs: Certs, tmp: Path, *, preempt: bool = True
) -> AsyncIterator[tuple[Node, Node]]:
    port = _free_port()
    n1 = await Node(_config("n1", certs, tmp, port, preempt=preempt)).start()
    n2 = await Node(_config("n2", certs, tmp, port, preempt=preempt)).start()
    try:
        yield n1, n2
    finally:
        for n in (n1, n2):
            if n.task is not None and not n.task.done():
                await n.crash()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60 * SCALE))


def test_pair_settles_primary_active_keepalives_flow(certs: Certs, tmp_path: Path) -> None:
    async def body() -> None:
        async with pair(certs, tmp_path) as (n1, n2):
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            await until(lambda: n2.sample("havip_keepalives_received_total") >= 5, "keepalives")
            assert n1.holds() and not n2.holds()
            assert n1.sample("havip_peer_connected") == 1
            assert n2.sample("havip_keepalive_rtt_seconds_count") > 0
            assert n1.sample("havip_vip_owned", VIP_LABELS) == 1
            assert n1.sample("havip_state", {"state": "active"}) == 1
            assert n1.sample("havip_epoch") == 1
            status = n2.d.status()
            assert status["peer_connected"] is True and status["peer_owns_vip"] is True

    run(body())


def test_sigterm_hands_over_then_primary_fails_back(certs: Certs, tmp_path: Path) -> None:
    async def body() -> None:
        async with pair(certs, tmp_path) as (n1, n2):
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            assert await n1.stop() == 0
            assert not n1.holds()  # the old owner removed before the new one adds
            await until(lambda: n2.state is State.ACTIVE and n2.holds(), "n2 takes over on RESIGN")
            assert n2.d.failover.reason == "peer_resigned"
            assert n2.holds() and n2.d.failover.epoch == 2
            n1b = await Node(n1.cfg).start()
            try:
                await until(lambda: n1b.d.link.up, "n1 back and linked")
                start = asyncio.get_running_loop().time()
                await until(lambda: n1b.holds() and not n2.holds(), "failback to the primary")
                # Positive control for test_no_failback_without_preempt's quiet window.
                assert asyncio.get_running_loop().time() - start < FAILBACK_WINDOW
                assert n2.state is State.STANDBY and not n2.holds()
                assert n1b.d.failover.epoch == 3
            finally:
                await n1b.crash()

    run(body())


def test_no_failback_without_preempt(certs: Certs, tmp_path: Path) -> None:
    async def body() -> None:
        async with pair(certs, tmp_path, preempt=False) as (n1, n2):
            await until(lambda: n1.state is State.ACTIVE, "n1 active")
            await n1.stop()
            await until(lambda: n2.state is State.ACTIVE, "n2 takes over")
            n1b = await Node(n1.cfg).start()
            try:
                await until(lambda: n1b.state is State.STANDBY and n1b.d.link.up, "n1 back")
                # A window in which a preempting primary does fail back (see the test above),
                # scaled like every other wait; watched throughout, not only at its end.
                deadline = asyncio.get_running_loop().time() + FAILBACK_WINDOW
                while asyncio.get_running_loop().time() < deadline:
                    assert n2.state is State.ACTIVE and n1b.state is State.STANDBY
                    assert n2.holds() and not n1b.holds()
                    await asyncio.sleep(0.02)
            finally:
                await n1b.crash()

    run(body())


def test_crash_of_active_daemon_is_vetoed_until_host_goes_silent(
    certs: Certs, tmp_path: Path
) -> None:
    async def body() -> None:
        async with pair(certs, tmp_path) as (n1, n2):
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            await n1.crash()
            assert n1.holds()  # a crashed daemon's host still serves the VIP
            await until(
                lambda: n2.sample("havip_takeovers_vetoed_total", VIP_LABELS) >= 3,
                "vetoed probes",
            )
            assert n2.state is State.PROBING and not n2.holds()
            # The restarted daemon resumes ownership without a gap.
            n1b = await Node(n1.cfg).start()
            try:
                await until(lambda: n1b.state is State.ACTIVE, "restarted n1 resumes")
                assert n1b.holds() and not n2.holds()
                # Power-off: the host goes silent; now n2 takes over.
                await n1b.crash()
                assert n1.cfg.lan_dir is not None
                (n1.cfg.lan_dir / str(VIP.ip) / "n1").unlink()
                await until(lambda: n2.state is State.ACTIVE, "n2 takes over after power-off")
                assert n2.d.failover.reason == "probe_silent"
            finally:
                await n1b.crash()

    run(body())


# ---- bad input on the primary's listener ---------------------------------------------------


def _client_ctx(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _tls_client(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="n1")


async def _read_one(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(4096), 5 * SCALE)


async def _legit_hello(port: int, certs: Certs) -> bool:
    """A correct n2 client still gets a HELLO from n1 (the daemon is still serving)."""
    reader, writer = await _tls_client(port, _client_ctx(certs.ca, *certs.files["n2"]))
    try:
        msgs = FrameDecoder().feed(await _read_one(reader))
        return any(isinstance(m, Hello) and m.node == "n1" for m in msgs)
    finally:
        writer.close()


def _n2_session() -> PeerSession:
    """The protocol state of a hand-driven n2 client."""
    return PeerSession(
        me="n2",
        peer="n1",
        primary="n1",
        preempt=True,
        boot_id=b"x" * 16,
        interval=1,
        dead_time=1,
        now=0,
    )


BAD_CLIENTS = [
    "garbage",
    "other_ca",
    "wrong_name",
    "expired",
    "oversized",
    "unknown_type",
    "seq",
    "huge_epoch",
]


@pytest.mark.parametrize("kind", BAD_CLIENTS)
def test_bad_input_is_rejected_counted_and_daemon_keeps_serving(
    kind: str, certs: Certs, tmp_path: Path
) -> None:
    async def body() -> None:
        port = _free_port()
        n1 = await Node(_config("n1", certs, tmp_path, port)).start()
        try:
            await until(lambda: n1.state is not State.INIT, "n1 decided")
            if kind == "garbage":
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(300))
                await writer.drain()
                # Not TLS: dropped unanswered, with a reset (no TIME_WAIT left by a flood).
                with pytest.raises(ConnectionResetError):
                    await _read_one(reader)
                writer.close()
                label = ("havip_peer_rejected_total", {"reason": "tls_handshake"})
            elif kind == "wrong_name":
                # Our CA signed it, so n1 tells it why before it hangs up.
                ctx = _client_ctx(certs.ca, *certs.files["n3"])
                reader, writer = await _tls_client(port, ctx)
                (msg,) = FrameDecoder().feed(await _read_one(reader))
                assert isinstance(msg, Close) and msg.kind is ErrorKind.CONFIG_MISMATCH
                assert "['n3']" in msg.detail
                assert await _read_one(reader) == b""
                writer.close()
                label = ("havip_peer_rejected_total", {"reason": "wrong_peer_name"})
            elif kind in ("other_ca", "expired"):
                if kind == "other_ca":
                    foreign = _trustme_certs(tmp_path / "foreign")
                    ctx = _client_ctx(certs.ca, *foreign.files["n2"])
                    label = ("havip_peer_rejected_total", {"reason": "tls_handshake"})
                else:
                    ctx = _client_ctx(certs.ca, *certs.files["expired-n2"])
                    label = ("havip_peer_rejected_total", {"reason": "tls_handshake"})
                # TLS 1.3: the client learns of its rejection on its first read: the alert.
                reader, writer = await _tls_client(port, ctx)
                with pytest.raises(ssl.SSLError, match="alert"):
                    await _read_one(reader)
                writer.close()
            else:
                reader, writer = await _tls_client(port, _client_ctx(certs.ca, *certs.files["n2"]))
                await _read_one(reader)  # n1's HELLO
                if kind == "oversized":
                    writer.write(struct.pack("!I", 10_000_000) + b"\x02" * 1000)
                    label = ("havip_protocol_errors_total", {"kind": "oversized"})
                elif kind == "unknown_type":
                    writer.write(struct.pack("!I", 3) + b"\x63ab")
                    label = ("havip_protocol_errors_total", {"kind": "unknown_type"})
                elif kind == "huge_epoch":
                    st = LocalStatus(state=State.ACTIVE, owns=True, epoch=0, eligible=True)
                    # Past MAX_EPOCH: encode() refuses to send it, so patch it into the frame
                    # (after length, type, version, preempt, state, owns, eligible).
                    frame = bytearray(encode(_n2_session().hello(st, MAC)))
                    frame[11:19] = (2**64 - 1).to_bytes(8, "big")
                    writer.write(bytes(frame))
                    label = ("havip_protocol_errors_total", {"kind": "malformed"})
                else:
                    session = _n2_session()
                    st = LocalStatus(state=State.STANDBY, owns=False, epoch=0, eligible=True)
                    ka = session.keepalive(st, 0)
                    hello = session.hello(st, MAC)
                    writer.write(encode(hello) + encode(ka) + encode(replace(ka)))
                    label = ("havip_protocol_errors_total", {"kind": "out_of_order"})
                await writer.drain()
                await _read_one(reader)  # n1 closes on us (perhaps after one last keepalive)
                writer.close()
            await until(lambda: n1.sample(*label) >= 1, f"{label} counted")
            assert await _legit_hello(port, certs)
            assert n1.task is not None and not n1.task.done()
            # Bad input changes nothing: no fault, no stop (a lone primary's own state is the
            # failover machine's business, tested elsewhere).
            assert n1.state not in (State.FAULT, State.STOPPED)
        finally:
            await n1.crash()

    run(body())


def test_standby_refuses_a_server_with_the_wrong_name(certs: Certs, tmp_path: Path) -> None:
    """n2 dials a listener that presents n3's certificate: refused, counted, no peer."""

    async def body() -> None:
        port = _free_port()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*map(str, certs.files["n3"]))
        ctx.load_verify_locations(str(certs.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        server = await asyncio.start_server(handler, "127.0.0.1", port, ssl=ctx)
        n2 = await Node(_config("n2", certs, tmp_path, port)).start()
        try:
            await until(
                lambda: n2.sample("havip_peer_rejected_total", {"reason": "wrong_peer_name"}) >= 1,
                "wrong name counted",
            )
            assert not n2.d.link.up
        finally:
            await n2.crash()
            server.close()

    run(body())


def test_keepalive_decoder_accepts_what_daemon_sends() -> None:
    ka = Keepalive(seq=1, state=State.ACTIVE, owns=True, eligible=True, epoch=1, sent_us=5)
    assert FrameDecoder().feed(encode(ka)) == [ka]


def test_a_restarted_standby_gets_in_within_a_second_under_a_flood(
    certs: Certs, tmp_path: Path
) -> None:
    """64 silent clients from another address reconnect as soon as they are dropped, while the
    standby crashes and restarts: it relinks within about a second (issue 5, part 11). Every
    flooder is refused and counted; how many as `busy` and how many as `timeout` depends on the
    machine's speed (each refusal frees a slot for the next), so only their sum is bounded."""

    async def body() -> None:
        async with pair(certs, tmp_path) as (n1, n2):
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            busy = ("havip_peer_rejected_total", {"reason": "busy"})
            timeout = ("havip_peer_rejected_total", {"reason": "timeout"})

            def refused() -> float:
                return n1.sample(*busy) + n1.sample(*timeout)

            async with flood(n1.cfg.listen[1]):
                await until(lambda: refused() >= 64, "the flood under way")
                await n2.crash()
                await until(lambda: not n1.d.link.up, "n1 saw the standby go")
                n2b = await Node(n2.cfg).start()
                try:
                    start = asyncio.get_running_loop().time()
                    await until(lambda: n1.d.link.up and n2b.d.link.up, "relinked", 1.5)
                    took = asyncio.get_running_loop().time() - start
                    print(f"standby relinked {took:.3f}s after its restart, under the flood")
                    assert n1.holds() and not n2b.holds()
                    assert n1.sample("havip_peer_connections_total") >= 2
                finally:
                    await n2b.crash()
            # The flooders (from STRANGER, not the peer's address) were refused all along.
            assert n1.cfg.peer_address[0] != STRANGER and refused() >= 64

    run(body())


def test_sighup_with_an_unreadable_config_is_refused_and_changes_nothing(
    certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 5 part 17 / issue 6: SIGHUP used to kill the daemon (exit 129, VIP left behind).
    Now it reloads; a config that cannot be read is refused in one line naming the file, and
    nothing changes. Sent to this very process: if the daemon did not handle it, its default
    action would end the test run, which fails it."""

    async def body() -> None:
        async with pair(certs, tmp_path) as (n1, n2):
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            caplog.clear()
            os.kill(os.getpid(), signal.SIGHUP)
            # Both daemons share this process: the last to start (n2) owns the SIGHUP handler.
            await until(lambda: "event=reload_refused" in caplog.text, "reload refused")
            refused = [r for r in caplog.records if "event=reload_refused" in r.getMessage()]
            assert all(str(tmp_path) in r.getMessage() for r in refused)
            assert all(r.getMessage().count("\n") == 0 for r in refused)
            assert n1.task is not None and not n1.task.done()
            assert n1.state is State.ACTIVE and n1.holds()
            assert n2.state is State.STANDBY and n2.d.link.up
            assert n2.sample("havip_config_reloads_total", {"result": "refused"}) == 1

    with caplog.at_level(logging.INFO, logger="havip"):
        run(body())


def test_a_lasting_veto_shows_who_answers_and_why_the_node_waits(
    certs: Certs, tmp_path: Path
) -> None:
    """Issue 5 part 7: a host that is not the peer answers for the VIP (here a third node's
    file in the shared dry-run LAN). The standby, its primary gone, never takes the VIP and
    `havip status` names the answering MAC and why it waits; once it stops, it takes over."""

    async def body() -> None:
        rogue = tmp_path / "lan" / str(VIP.ip) / "rogue"
        rogue.parent.mkdir(parents=True)
        rogue.write_text("the VIP, held by somebody else\n")
        n2 = await Node(_config("n2", certs, tmp_path, _free_port())).start()
        try:
            await until(lambda: n2.d.failover.vetoed_by is not None, "n2 vetoed")
            status = n2.d.status()
            mac = format_mac(dry_run_mac("rogue"))
            assert status["state"] == "probing" and status["vetoed_by"] == mac
            assert mac is not None and mac in str(status["waiting"])
            assert not n2.holds()
            assert n2.sample("havip_takeovers_vetoed_total", VIP_LABELS) >= 1
            rogue.unlink()  # the other host lets go
            await until(lambda: n2.holds() and n2.state is State.ACTIVE, "n2 takes over")
            assert n2.d.status()["waiting"] is None
        finally:
            await n2.crash()

    run(body())
