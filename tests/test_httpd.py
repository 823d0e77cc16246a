"""The metrics endpoint: prometheus-client's handler, its limits, TLS and basic auth.

Everything runs on 127.0.0.1 in the test process: the server in its threads, the clients
on the test's event loop (which also builds /status, as the daemon's loop does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import gzip
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import bcrypt
import pytest
import trustme
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from havip.shell import httpd
from havip.shell.httpd import MAX_CONNECTIONS, MAX_HEAD, MetricsServer, serve_metrics, start_http
from havip.shell.webconfig import WebSecurity

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 5 * SCALE
STATUS = {"node": "n1", "state": "active", "epoch": 3, "vips": {"198.18.0.100/24": True}}


class _Metrics:
    """What the endpoint needs of `havip.shell.metrics.Metrics`: a registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.up = Gauge("havip_up", "Test gauge.", registry=self.registry)
        self.up.set(1)
        Counter("havip_things", "Test counter.", ["kind"], registry=self.registry).labels("a")


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("ascii").split("\r\n")
        self.status_line = lines[0]
        self.code = int(lines[0].split(" ")[1]) if lines[0] else 0
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}


async def exchange(
    port: int, data: bytes, *, eof: bool = False, tls: ssl.SSLContext | None = None
) -> Response:
    """Send raw bytes, then read until the server closes (bounded by WAIT)."""
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None
        )
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(WAIT):
            raw = await reader.read()  # to EOF: the server must close the connection
        return Response(raw)
    finally:
        writer.close()


async def get(
    port: int,
    path: str,
    method: str = "GET",
    *,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Response:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: x",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), tls=tls)


@contextlib.asynccontextmanager
async def running(
    *,
    status: Callable[[], Mapping[str, object]] = lambda: STATUS,
    timeout: float = 5.0,
    security: WebSecurity | None = None,
    on_refused: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[MetricsServer, _Metrics]]:
    m = _Metrics()
    server = await start_http(
        "127.0.0.1",
        0,
        metrics=m,
        status=status,
        timeout=timeout,
        security=security,
        on_refused=on_refused,
    )
    try:
        yield server, m
    finally:
        server.close()
        async with asyncio.timeout(WAIT):
            await server.wait_closed()


def run(body: Callable[[int, _Metrics], object], **kwargs: object) -> None:
    """Serve, run `body(port, metrics)`, check the server still serves, stop it."""

    async def main() -> None:
        async with running(**kwargs) as (server, m):  # type: ignore[arg-type]
            await body(server.port, m)  # type: ignore[misc]
            if "security" not in kwargs:
                still = await get(server.port, "/healthz")  # and it keeps serving afterwards
                assert (still.code, still.body) == (200, b"ok\n")

    asyncio.run(main())


# -- routes and the library's exposition ------------------------------------------------------


def test_routes() -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await get(port, "/healthz")
        assert (r.code, r.body) == (200, b"ok\n")
        assert r.status_line.startswith("HTTP/1.1 200")
        assert r.headers["connection"] == "close"
        assert r.headers["content-length"] == "3"

        r = await get(port, "/status")
        assert r.code == 200
        assert r.headers["content-type"] == "application/json"
        assert json.loads(r.body) == STATUS

        r = await get(port, "http://127.0.0.1/healthz")  # absolute-form
        assert (r.code, r.body) == (200, b"ok\n")

        r = await get(port, "/nope")
        assert r.code == 404

        r = await get(port, "/healthz", method="HEAD")
        assert (r.code, r.body, r.headers["content-length"]) == (200, b"", "3")

        r = await get(port, "/metrics", method="HEAD")
        assert r.code == 200 and r.body == b"" and int(r.headers["content-length"]) > 0

        for method in ("POST", "PUT", "DELETE"):
            r = await exchange(
                port, f"{method} /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".encode()
            )
            assert r.code == 405
            assert r.headers["allow"] == "GET, HEAD"

    run(body)


def test_metrics_in_the_text_format_by_default() -> None:
    async def body(port: int, m: _Metrics) -> None:
        m.up.set(7)
        r = await get(port, "/metrics")
        assert r.code == 200
        assert r.headers["content-type"].startswith("text/plain; version=")
        assert int(r.headers["content-length"]) == len(r.body)
        families = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
        assert families["havip_up"].samples[0].value == 7
        assert "havip_things" in families

    run(body)


def test_metrics_in_openmetrics_when_asked() -> None:
    async def body(port: int, m: _Metrics) -> None:
        accept = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
        r = await get(port, "/metrics", headers={"Accept": accept})
        assert r.code == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.body.endswith(b"# EOF\n")
        families = {f.name: f for f in openmetrics_families(r.body.decode())}  # type: ignore[no-untyped-call]
        assert families["havip_things"].type == "counter"  # "_total" stripped: OpenMetrics

    run(body)


def test_metrics_gzipped_when_accepted() -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await get(port, "/metrics", headers={"Accept-Encoding": "gzip"})
        assert r.code == 200
        assert r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) == len(r.body)
        assert b"havip_up 1.0" in gzip.decompress(r.body)
        plain = await get(port, "/metrics")
        assert "content-encoding" not in plain.headers
        assert gzip.decompress(r.body) == plain.body

    run(body)


def test_metrics_name_filter_is_the_librarys() -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await get(port, "/metrics?name[]=havip_up")
        assert r.code == 200
        assert b"havip_up 1.0" in r.body and b"havip_things" not in r.body

    run(body)


def test_status_that_raises_gives_500_and_metrics_still_work() -> None:
    def broken() -> Mapping[str, object]:
        raise RuntimeError("boom")

    async def body(port: int, m: _Metrics) -> None:
        r = await get(port, "/status")
        assert r.code == 500
        assert (await get(port, "/metrics")).code == 200

    run(body, status=broken)


def test_status_is_built_on_the_event_loop() -> None:
    import threading

    seen: list[int] = []

    def status() -> Mapping[str, object]:
        seen.append(threading.get_ident())
        return STATUS

    async def body(port: int, m: _Metrics) -> None:
        assert (await get(port, "/status")).code == 200
        assert seen == [threading.get_ident()]  # this (the loop's) thread, not a server one

    run(body, status=status)


def test_status_the_loop_cannot_build_in_time_gives_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpd, "STATUS_TIMEOUT", 0.05 * SCALE)

    def stuck() -> Mapping[str, object]:
        time.sleep(0.5 * SCALE)  # the loop is busy for ten times the limit
        return STATUS

    async def body(port: int, m: _Metrics) -> None:
        # A blocking client in a thread: this loop is the one that gets stuck.
        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return data

        r = Response(await asyncio.to_thread(fetch))
        assert r.code == 503

    run(body, status=stuck)


# -- malformed and hostile requests -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # a TLS ClientHello, roughly
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics\r\n\r\n",  # HTTP/0.9
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX-A: \xff\r\n\r\n",
        b"\r\n",
    ],
)
def test_malformed_request_gets_400(data: bytes) -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await exchange(port, data)
        assert r.code == 400
        assert r.headers["connection"] == "close"

    run(body)


def test_request_cut_short_gets_400_or_nothing() -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await exchange(port, b"GET /met", eof=True)
        assert r.code in (0, 400)

    run(body)


def test_bare_lf_line_endings_are_accepted() -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await exchange(port, b"GET /healthz HTTP/1.0\nHost: x\n\n")
        assert (r.code, r.body) == (200, b"ok\n")

    run(body)


@pytest.mark.parametrize(
    "data",
    [
        b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Small: 1\r\n" * (MAX_HEAD // 12 + 1) + b"\r\n",
        b"G" * (3 * MAX_HEAD),  # no newline at all
    ],
    ids=["one-long-line", "many-lines", "no-newline"],
)
def test_oversized_head_is_refused(data: bytes) -> None:
    async def body(port: int, m: _Metrics) -> None:
        r = await exchange(port, data)
        assert r.code in (400, 431)

    run(body)


def test_slow_client_times_out() -> None:
    timeout = 0.2 * SCALE

    async def body(port: int, m: _Metrics) -> None:
        r = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes
        assert r.code == 408
        r = await exchange(port, b"")  # says nothing at all
        assert r.code == 408

    run(body, timeout=timeout)


def test_a_client_dripping_bytes_cannot_stretch_the_deadline() -> None:
    timeout = 0.3 * SCALE

    async def body(port: int, m: _Metrics) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = b""
            # One byte every timeout/6, each well within it: 100 of them last 16 timeouts,
            # and the server must answer 408 before they are through.
            for _ in range(100):
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X")
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout / 6):
                        answer += await reader.read(4096)
                if answer or reader.at_eof():
                    break
            assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
        finally:
            writer.close()

    run(body, timeout=timeout)


def test_a_tls_client_dripping_its_hello_is_cut_off(
    tmp_path: Path, pki: tuple[trustme.CA, trustme.CA]
) -> None:
    """Each drip arrives within the timeout, yet the handshake as a whole is bounded (by
    the socket timeout over the whole handshake, and the connection's hard deadline)."""
    timeout = 0.3 * SCALE
    security = WebSecurity.load(_web_config(tmp_path, pki[0]))

    async def body(port: int, m: _Metrics) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # A record header (512 bytes to follow) and a well-formed ClientHello start.
            writer.write(b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03")
            closed = False
            for _ in range(100):  # 100 drips last 33 timeouts
                try:
                    writer.write(b"\x00")  # the hello's random, one byte at a time
                    await writer.drain()
                    async with asyncio.timeout(timeout / 3):
                        closed = await reader.read(4096) == b""
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
                if closed:
                    break
            assert closed, "the server kept a dripping handshake open"
        finally:
            writer.close()

    run(body, timeout=timeout, security=security)


def test_many_clients_at_once() -> None:
    async def body(port: int, m: _Metrics) -> None:
        results = await asyncio.gather(*(get(port, "/metrics") for _ in range(MAX_CONNECTIONS)))
        assert {r.code for r in results} == {200}

    run(body)


# -- limits: connections and a busy port ------------------------------------------------------


def test_connections_beyond_the_bound_are_closed_at_once_and_counted() -> None:
    refused: list[None] = []

    async def main() -> None:
        async with running(
            timeout=30 * SCALE,  # the silent holders keep their slots for the whole test
            on_refused=lambda: refused.append(None),
        ) as (server, _):
            port = server.port
            held = [
                await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)
            ]
            try:
                # The holders are admitted by the accept thread in order; wait until all are
                # (a 17th connection made before that could still be admitted).
                for _ in range(500):
                    if len(server._httpd.conns) == MAX_CONNECTIONS:
                        break
                    await asyncio.sleep(0.01)
                assert len(server._httpd.conns) == MAX_CONNECTIONS
                for _ in range(3):
                    # Closed at once with a reset, not after 30 s: on loopback the reset may
                    # even beat the end of connect().
                    async with asyncio.timeout(WAIT):
                        with contextlib.suppress(ConnectionResetError):
                            reader, writer = await asyncio.open_connection("127.0.0.1", port)
                            try:
                                assert await reader.read() == b""
                            finally:
                                writer.close()
                for _ in range(500):  # reported on the loop: give it its turn
                    if len(refused) == 3:
                        break
                    await asyncio.sleep(0.01)
                assert len(refused) == 3
            finally:
                for _, writer in held:
                    writer.close()
            # The holders are gone: served again (bounded wait for the server to see it).
            for _ in range(200):
                try:
                    answer = await get(port, "/healthz")
                except ConnectionResetError:
                    answer = Response(b"")
                if answer.code == 200:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the slots were never freed")

    asyncio.run(main())


def test_a_busy_port_is_reported_and_retried_until_free() -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    errors: list[OSError] = []

    def on_bind_error(exc: OSError) -> None:
        errors.append(exc)
        if len(errors) == 1:
            raise RuntimeError("a broken reporter must not stop the retries")

    async def main() -> None:
        listening = asyncio.Event()
        task = asyncio.create_task(
            serve_metrics(
                "127.0.0.1",
                port,
                metrics=_Metrics(),
                status=lambda: STATUS,
                on_bind_error=on_bind_error,
                on_listening=lambda server: listening.set(),
                retry=0.02 * SCALE,
            )
        )
        try:
            for _ in range(500):  # bounded: wait for at least two failed attempts
                if len(errors) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert len(errors) >= 2 and not task.done()
            assert all(e.errno == errno.EADDRINUSE for e in errors)
            assert not listening.is_set()
            squatter.close()
            async with asyncio.timeout(WAIT):
                await listening.wait()
            assert (await get(port, "/healthz")).code == 200
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        with pytest.raises(OSError):  # cancelled: the port is closed again
            await get(port, "/healthz")

    try:
        asyncio.run(main())
    finally:
        squatter.close()


# -- the secure endpoint: TLS, client certificates, basic auth --------------------------------


@pytest.fixture(scope="module")
def pki() -> tuple[trustme.CA, trustme.CA]:
    """The server's CA and the clients' CA (separate, as a Prometheus setup often has)."""
    return trustme.CA(), trustme.CA()


def _web_config(tmp_path: Path, ca: trustme.CA, extra: str = "") -> Path:
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    path = tmp_path / "web-config.yml"
    path.write_text(
        "tls_server_config:\n"
        "  cert_file: server.crt\n"  # relative to the web-config file
        "  key_file: server.key\n" + extra
    )
    return path


def _client(ca: trustme.CA, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client is not None:
        client.configure_cert(ctx)
    return ctx


def test_tls_serves_metrics_and_plain_http_gets_nothing(
    tmp_path: Path, pki: tuple[trustme.CA, trustme.CA]
) -> None:
    server_ca, _ = pki
    security = WebSecurity.load(_web_config(tmp_path, server_ca, "  min_version: TLS13\n"))

    async def body(port: int, m: _Metrics) -> None:
        tls = _client(server_ca)
        r = await get(port, "/metrics", tls=tls)
        assert r.code == 200 and b"havip_up 1.0" in r.body
        r = await get(port, "/healthz", tls=tls)
        assert (r.code, r.body) == (200, b"ok\n")
        # Plain HTTP to the TLS port: no HTTP answer at all.
        with contextlib.suppress(ConnectionError):
            r = await get(port, "/healthz")
            assert r.code == 0
        # A client that does not trust the server's CA refuses it.
        with pytest.raises(ssl.SSLCertVerificationError):
            await get(port, "/healthz", tls=_client(trustme.CA()))
        # TLS 1.2 only: below min_version.
        old = _client(server_ca)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            await get(port, "/healthz", tls=old)

    run(body, security=security)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, (ssl.SSLError, ConnectionError, EOFError, asyncio.IncompleteReadError))


def test_client_certificate_required(tmp_path: Path, pki: tuple[trustme.CA, trustme.CA]) -> None:
    server_ca, client_ca = pki
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.crt"))
    path = _web_config(
        tmp_path,
        server_ca,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n",
    )
    security = WebSecurity.load(path)

    async def body(port: int, m: _Metrics) -> None:
        good = _client(server_ca, client_ca.issue_cert("prometheus"))
        r = await get(port, "/metrics", tls=good)
        assert r.code == 200
        strangers = {
            "no certificate": _client(server_ca),
            "another CA's": _client(server_ca, trustme.CA().issue_cert("prometheus")),
        }
        for why, ctx in strangers.items():
            try:
                r = await get(port, "/metrics", tls=ctx)
            except Exception as exc:
                assert _refused(exc), (why, exc)
            else:  # TLS 1.3: the client may finish first; the server then closes unanswered
                assert r.code == 0, why

    run(body, security=security)


def test_client_certificate_if_given(tmp_path: Path, pki: tuple[trustme.CA, trustme.CA]) -> None:
    server_ca, client_ca = pki
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.crt"))
    path = _web_config(
        tmp_path,
        server_ca,
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: clients-ca.crt\n",
    )

    async def body(port: int, m: _Metrics) -> None:
        assert (await get(port, "/healthz", tls=_client(server_ca))).code == 200
        good = _client(server_ca, client_ca.issue_cert("prometheus"))
        assert (await get(port, "/healthz", tls=good)).code == 200
        bad = _client(server_ca, trustme.CA().issue_cert("prometheus"))
        try:
            r = await get(port, "/healthz", tls=bad)
        except Exception as exc:
            assert _refused(exc), exc
        else:
            assert r.code == 0

    run(body, security=WebSecurity.load(path))


def _users_config(tmp_path: Path, users: Mapping[str, str]) -> Path:
    path = tmp_path / "web-config.yml"
    lines = ["basic_auth_users:"]
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"  {user}: {hashed}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth(tmp_path: Path) -> None:
    path = _users_config(tmp_path, {"prometheus": "s3cret:with colon", "other": "x"})

    async def body(port: int, m: _Metrics) -> None:
        for _ in range(2):  # the second time from the cache of good credentials
            r = await get(port, "/metrics", headers=_basic("prometheus", "s3cret:with colon"))
            assert r.code == 200 and b"havip_up" in r.body
        assert (await get(port, "/healthz", headers=_basic("other", "x"))).code == 200
        refused = {
            "wrong password": _basic("prometheus", "s3cret"),
            "another user's password": _basic("other", "s3cret:with colon"),
            "unknown user": _basic("nobody", "x"),
            "missing": {},
            "not basic": {"Authorization": "Bearer abc"},
            "not base64": {"Authorization": "Basic !!!"},
            "no colon": {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()},
            "too long for bcrypt": _basic("prometheus", "x" * 100),
        }
        for why, headers in refused.items():
            for target in ("/metrics", "/status", "/healthz", "/nope"):
                r = await get(port, target, headers=headers)
                assert r.code == 401, (why, target)
                assert r.headers["www-authenticate"] == 'Basic realm="havip"'
                assert b"havip_up" not in r.body and b"n1" not in r.body

    run(body, security=WebSecurity.load(path))


def test_tls_and_basic_auth_together(tmp_path: Path, pki: tuple[trustme.CA, trustme.CA]) -> None:
    server_ca, _ = pki
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = _web_config(tmp_path, server_ca, f"basic_auth_users:\n  prom: {hashed}\n")

    async def body(port: int, m: _Metrics) -> None:
        tls = _client(server_ca)
        assert (await get(port, "/metrics", tls=tls)).code == 401
        assert (await get(port, "/metrics", tls=tls, headers=_basic("prom", "pw"))).code == 200

    run(body, security=WebSecurity.load(path))


def test_unusable_tls_files_keep_the_endpoint_closed_and_are_retried(tmp_path: Path) -> None:
    """A key that does not match its certificate: never served in plain HTTP instead."""
    ca = trustme.CA()
    path = _web_config(tmp_path, ca)
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "server.key"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors: list[OSError] = []

    async def main() -> None:
        task = asyncio.create_task(
            serve_metrics(
                "127.0.0.1",
                port,
                metrics=_Metrics(),
                status=lambda: STATUS,
                on_bind_error=errors.append,
                retry=0.02 * SCALE,
                web_config=path,
            )
        )
        try:
            for _ in range(500):
                if len(errors) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert len(errors) >= 2
            assert "cert_file" in str(errors[0]) and str(path) in str(errors[0])
            with pytest.raises(OSError):
                await get(port, "/healthz")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_serve_metrics_with_a_web_config(tmp_path: Path) -> None:
    path = _users_config(tmp_path, {"prom": "pw"})

    async def main() -> None:
        bound: list[MetricsServer] = []
        task = asyncio.create_task(
            serve_metrics(
                "127.0.0.1",
                0,
                metrics=_Metrics(),
                status=lambda: STATUS,
                on_bind_error=lambda exc: pytest.fail(f"bind error {exc}"),
                on_listening=bound.append,
                web_config=path,
            )
        )
        try:
            for _ in range(500):
                if bound:
                    break
                await asyncio.sleep(0.01)
            port = bound[0].port
            assert (await get(port, "/healthz")).code == 401
            assert (await get(port, "/healthz", headers=_basic("prom", "pw"))).code == 200
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_an_idle_endpoint_runs_no_thread_and_wakes_nothing() -> None:
    """Idle CPU is wake-ups: accepting is an event-loop reader (no polling accept thread), and
    each connection gets a thread only while it lives."""
    import threading

    async def main() -> None:
        before = threading.active_count()
        async with running() as (server, _m):
            await asyncio.sleep(0.05)
            assert threading.active_count() == before
            reply = await get(server.port, "/healthz")
            assert reply.code == 200
            await asyncio.sleep(0.05)
            assert threading.active_count() == before  # the connection's thread ended

    asyncio.run(main())
