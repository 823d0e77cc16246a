"""Metrics (registry contents) and the small HTTP endpoint that serves them."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from havip.backends.base import BackendOp
from havip.core.wire import ErrorKind
from havip.shell.httpd import MAX_HEAD, start_http
from havip.shell.metrics import (
    CONTENT_TYPE,
    HOOKS,
    OPERATOR_COMMANDS,
    RTT_BUCKETS,
    RUN_OUTCOMES,
    Metrics,
    ProbeResult,
)
from havip.shell.transport import RejectReason

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 10.0 * SCALE  # upper bound for any single network wait in these tests

STATES = ("init", "standby", "active", "fault")
VIPS = ("198.18.0.100/24", "198.18.0.101/24")
REASONS = ("startup", "peer_dead", "resigned")

Sample = tuple[str, frozenset[tuple[str, str]]]


def make_metrics() -> Metrics:
    return Metrics(node="n1", peer="n2", vips=VIPS, states=STATES, reasons=REASONS, version="0.1.0")


def samples(m: Metrics) -> dict[Sample, float]:
    """Every sample of the exposition, keyed by (name, labels)."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m)[(name, frozenset(labels.items()))]


def one_hot(m: Metrics, name: str) -> dict[str, float]:
    return {dict(labels)["state"]: v for (n, labels), v in samples(m).items() if n == name}


# -- metrics ---------------------------------------------------------------------------------


def test_every_known_label_combination_starts_at_zero() -> None:
    got = samples(make_metrics())
    expected_zero: list[Sample] = [
        ("havip_peer_connected", frozenset()),
        ("havip_epoch", frozenset()),
        ("havip_keepalives_sent_total", frozenset()),
        ("havip_keepalives_received_total", frozenset()),
        ("havip_keepalives_missed_total", frozenset()),
        ("havip_keepalive_rtt_seconds_count", frozenset()),
        ("havip_keepalive_rtt_seconds_sum", frozenset()),
        ("havip_last_transition_timestamp_seconds", frozenset()),
        ("havip_peer_connections_total", frozenset()),
        ("havip_gratuitous_arp_sent_total", frozenset()),
    ]
    for state in STATES:
        expected_zero.append(("havip_state", frozenset({("state", state)})))
        expected_zero.append(("havip_peer_state", frozenset({("state", state)})))
    for vip in VIPS:
        expected_zero.append(("havip_vip_owned", frozenset({("vip", vip)})))
        expected_zero.append(("havip_takeovers_vetoed_total", frozenset({("vip", vip)})))
    for reason in RejectReason:
        expected_zero.append(("havip_peer_rejected_total", frozenset({("reason", reason)})))
    for kind in ErrorKind:
        expected_zero.append(("havip_protocol_errors_total", frozenset({("kind", kind)})))
    for result in ProbeResult:
        expected_zero.append(("havip_arp_probes_total", frozenset({("result", result)})))
    for op in BackendOp:
        expected_zero.append(("havip_backend_errors_total", frozenset({("op", op)})))
    for le in [*RTT_BUCKETS, float("inf")]:
        expected_zero.append(("havip_keepalive_rtt_seconds_bucket", frozenset({("le", _le(le))})))
    for key in expected_zero:
        assert got.get(key) == 0, key
    info = ("havip_build_info", frozenset({("version", "0.1.0"), ("node", "n1"), ("peer", "n2")}))
    assert got[info] == 1
    # Transitions are created as they happen.
    assert not [k for k in got if k[0] == "havip_transitions_total"]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def test_the_pre_created_sets_are_the_documented_ones() -> None:
    assert [str(r) for r in RejectReason] == [
        "tls_handshake",
        "wrong_peer_name",
        "timeout",
        "busy",
        "aborted",
    ]
    assert [str(k) for k in ErrorKind] == [
        "malformed",
        "oversized",
        "unknown_type",
        "out_of_order",
        "version",
        "config_mismatch",
    ]
    assert {str(o) for o in BackendOp} == {
        "add",
        "remove",
        "announce",
        "probe",
        "present",
        "listen",
        "link",
        "route",
        "epoch",
    }


def test_names_follow_the_prometheus_conventions() -> None:
    families = list(text_string_to_metric_families(make_metrics().exposition().decode()))
    assert families
    for family in families:
        assert family.name.startswith("havip_"), family.name
        for s in family.samples:
            if family.type == "counter" and not s.name.endswith("_created"):
                assert s.name.endswith("_total"), s.name


def test_state_is_one_hot_and_switches() -> None:
    m = make_metrics()
    for state in ("init", "standby", "active", "standby", "fault", "fault"):
        m.set_state(state)
        hot = one_hot(m, "havip_state")
        assert hot == {s: (1.0 if s == state else 0.0) for s in STATES}


def test_unknown_state_is_counted_under_its_own_label() -> None:
    m = make_metrics()
    m.set_state("active")
    m.set_state("mystery")
    hot = one_hot(m, "havip_state")
    assert hot["mystery"] == 1
    assert sum(hot.values()) == 1
    m.set_state("standby")  # and the new label is cleared again like the others
    assert one_hot(m, "havip_state")["mystery"] == 0


def test_peer_state_one_hot_and_cleared_when_unknown() -> None:
    m = make_metrics()
    m.set_peer_state("active")
    assert one_hot(m, "havip_peer_state") == {s: float(s == "active") for s in STATES}
    m.set_peer_state(None)
    assert set(one_hot(m, "havip_peer_state").values()) == {0.0}


def test_gauges() -> None:
    m = make_metrics()
    m.set_vip_owned(VIPS[0], True)
    m.set_peer_connected(True)
    m.set_epoch(7)
    assert value(m, "havip_vip_owned", vip=VIPS[0]) == 1
    assert value(m, "havip_vip_owned", vip=VIPS[1]) == 0
    assert value(m, "havip_peer_connected") == 1
    assert value(m, "havip_epoch") == 7
    m.set_vip_owned(VIPS[0], False)
    m.set_peer_connected(False)
    assert value(m, "havip_vip_owned", vip=VIPS[0]) == 0
    assert value(m, "havip_peer_connected") == 0


def test_counters_count_what_their_methods_say() -> None:
    m = make_metrics()
    m.keepalive_sent()
    m.keepalive_sent()
    m.keepalive_received()
    m.keepalive_missed()
    m.peer_connected_event()
    m.peer_rejected(RejectReason.WRONG_PEER_NAME)
    m.protocol_error("oversized")
    m.arp_probe(ProbeResult.ANSWERED)
    m.arp_probe(ProbeResult.SILENT)
    m.arp_probe(ProbeResult.SILENT)
    m.takeover_vetoed(VIPS[1])
    m.backend_error(BackendOp.ADD)
    m.garp_sent(6)
    m.garp_sent(0)
    assert value(m, "havip_keepalives_sent_total") == 2
    assert value(m, "havip_keepalives_received_total") == 1
    assert value(m, "havip_keepalives_missed_total") == 1
    assert value(m, "havip_peer_connections_total") == 1
    assert value(m, "havip_peer_rejected_total", reason="wrong_peer_name") == 1
    assert value(m, "havip_peer_rejected_total", reason="timeout") == 0
    assert value(m, "havip_protocol_errors_total", kind="oversized") == 1
    assert value(m, "havip_arp_probes_total", result="answered") == 1
    assert value(m, "havip_arp_probes_total", result="silent") == 2
    assert value(m, "havip_takeovers_vetoed_total", vip=VIPS[1]) == 1
    assert value(m, "havip_backend_errors_total", op="add") == 1
    assert value(m, "havip_gratuitous_arp_sent_total") == 6


def test_unknown_label_values_do_not_crash() -> None:
    m = make_metrics()
    m.peer_rejected("cosmic_ray")
    m.protocol_error("new_kind")
    m.backend_error("teleport")
    m.takeover_vetoed("203.0.113.9/32")
    m.set_vip_owned("203.0.113.9/32", True)
    assert value(m, "havip_peer_rejected_total", reason="cosmic_ray") == 1
    assert value(m, "havip_protocol_errors_total", kind="new_kind") == 1
    assert value(m, "havip_backend_errors_total", op="teleport") == 1
    assert value(m, "havip_takeovers_vetoed_total", vip="203.0.113.9/32") == 1
    assert value(m, "havip_vip_owned", vip="203.0.113.9/32") == 1


def test_transition_counts_and_stamps_wall_clock() -> None:
    m = make_metrics()
    m.transition("standby", "active", "peer_dead", now=1_700_000_000.5)
    m.transition("standby", "active", "peer_dead", now=1_700_000_001.0)
    assert value(m, "havip_last_transition_timestamp_seconds") == 1_700_000_001.0
    before = time.time()
    m.transition("active", "standby", "resigned")
    name = "havip_transitions_total"
    up = {"from": "standby", "to": "active", "reason": "peer_dead"}
    down = {"from": "active", "to": "standby", "reason": "resigned"}
    assert value(m, name, **up) == 2
    assert value(m, name, **down) == 1
    assert value(m, "havip_last_transition_timestamp_seconds") >= before


def test_rtt_histogram_observes_into_buckets() -> None:
    m = make_metrics()
    for rtt in (0.0003, 0.002, 0.002, 2.0):
        m.observe_rtt(rtt)
    bucket = "havip_keepalive_rtt_seconds_bucket"
    assert value(m, bucket, le=_le(0.0001)) == 0
    assert value(m, bucket, le=_le(0.0005)) == 1
    assert value(m, bucket, le=_le(0.0025)) == 3
    assert value(m, bucket, le=_le(1.0)) == 3
    assert value(m, bucket, le="+Inf") == 4
    assert value(m, "havip_keepalive_rtt_seconds_count") == 4
    assert value(m, "havip_keepalive_rtt_seconds_sum") == pytest.approx(2.0043)


def test_hook_and_operation_series_start_at_zero() -> None:
    got = samples(make_metrics())
    for hook in HOOKS:
        assert got[("havip_hook_duration_seconds", frozenset({("hook", hook)}))] == 0
        for outcome in RUN_OUTCOMES:
            key = ("havip_hook_runs_total", frozenset({("hook", hook), ("outcome", outcome)}))
            assert got[key] == 0, key
    for command in OPERATOR_COMMANDS:
        for result in ("ok", "refused", "failed"):
            labels = frozenset({("command", command), ("result", result)})
            assert got[("havip_operator_commands_total", labels)] == 0
    for result in ("ok", "refused"):
        assert got[("havip_config_reloads_total", frozenset({("result", result)}))] == 0
    assert got[("havip_hooks_dropped_total", frozenset())] == 0
    assert got[("havip_maintenance", frozenset())] == 0
    assert got[("havip_config_last_reload_success_timestamp_seconds", frozenset())] == 0
    # No check series until the config names the checks.
    assert not [k for k in got if k[0].startswith("havip_check_")]


CHECK_SERIES = (
    "havip_check_passing",
    "havip_check_last_ok",
    "havip_check_duration_seconds",
    "havip_check_consecutive_failures",
)


def check_keys(m: Metrics, name: str) -> dict[Sample, float]:
    """The check series of `name` (without the counters' `_created` stamps)."""
    return {
        (series, labels): v
        for (series, labels), v in samples(m).items()
        if series.startswith("havip_check_")
        and not series.endswith("_created")
        and ("check", name) in labels
    }


def test_set_checks_creates_and_removes_label_sets() -> None:
    m = make_metrics()
    m.set_checks(["web", "db"])
    for name in ("web", "db"):
        got = check_keys(m, name)
        assert len(got) == len(CHECK_SERIES) + len(RUN_OUTCOMES)
        assert set(got.values()) == {0.0}
        for series in CHECK_SERIES:
            assert (series, frozenset({("check", name)})) in got
        for outcome in RUN_OUTCOMES:
            labels = frozenset({("check", name), ("outcome", outcome)})
            assert ("havip_check_runs_total", labels) in got
    m.check_run("web", outcome="ok", duration=0.25, passing=True, consecutive_failures=0)
    m.set_checks(["web", "cache"])  # reload: db removed, cache added, web kept with its values
    assert check_keys(m, "db") == {}
    assert set(check_keys(m, "cache").values()) == {0.0}
    assert value(m, "havip_check_runs_total", check="web", outcome="ok") == 1
    assert value(m, "havip_check_duration_seconds", check="web") == 0.25
    m.set_checks([])
    assert not [k for k in samples(m) if k[0].startswith("havip_check_")]


def test_check_run_sets_every_check_series() -> None:
    m = make_metrics()
    m.set_checks(["web"])
    m.check_run("web", outcome="ok", duration=0.01, passing=True, consecutive_failures=0)
    m.check_run("web", outcome="timeout", duration=1.5, passing=True, consecutive_failures=1)
    assert value(m, "havip_check_passing", check="web") == 1  # still passing (falling)
    assert value(m, "havip_check_last_ok", check="web") == 0  # but the last run failed
    assert value(m, "havip_check_duration_seconds", check="web") == 1.5
    assert value(m, "havip_check_consecutive_failures", check="web") == 1
    m.check_run("web", outcome="failed", duration=0.02, passing=False, consecutive_failures=2)
    assert value(m, "havip_check_passing", check="web") == 0
    assert value(m, "havip_check_consecutive_failures", check="web") == 2
    for outcome, n in (("ok", 1), ("timeout", 1), ("failed", 1), ("error", 0)):
        assert value(m, "havip_check_runs_total", check="web", outcome=outcome) == n
    m.check_run("web", outcome="ok", duration=0.01, passing=True, consecutive_failures=0)
    assert value(m, "havip_check_last_ok", check="web") == 1


def test_hook_runs_and_drops_are_counted() -> None:
    m = make_metrics()
    m.hook_run("notify_active", "ok", 0.5)
    m.hook_run("fence", "timeout", 30.0)
    m.hook_run("fence", "ok", 2.0)
    m.hook_dropped()
    m.hook_dropped()
    assert value(m, "havip_hook_runs_total", hook="notify_active", outcome="ok") == 1
    assert value(m, "havip_hook_runs_total", hook="fence", outcome="timeout") == 1
    assert value(m, "havip_hook_runs_total", hook="fence", outcome="ok") == 1
    assert value(m, "havip_hook_runs_total", hook="notify", outcome="ok") == 0
    assert value(m, "havip_hook_duration_seconds", hook="fence") == 2.0  # the last run
    assert value(m, "havip_hook_duration_seconds", hook="notify_active") == 0.5
    assert value(m, "havip_hooks_dropped_total") == 2


def test_maintenance_operator_commands_and_reloads() -> None:
    m = make_metrics()
    m.set_maintenance(True)
    assert value(m, "havip_maintenance") == 1
    m.set_maintenance(False)
    assert value(m, "havip_maintenance") == 0
    m.operator_command("handover", "ok")
    m.operator_command("handover", "refused")
    m.operator_command("handover", "refused")
    m.operator_command("maintenance_on", "ok")
    assert value(m, "havip_operator_commands_total", command="handover", result="ok") == 1
    assert value(m, "havip_operator_commands_total", command="handover", result="refused") == 2
    assert value(m, "havip_operator_commands_total", command="maintenance_on", result="ok") == 1
    assert value(m, "havip_operator_commands_total", command="reload", result="ok") == 0
    m.config_reloaded(True, now=1_700_000_000.0)
    m.config_reloaded(False, now=1_700_000_999.0)  # a refused reload is not a success
    assert value(m, "havip_config_reloads_total", result="ok") == 1
    assert value(m, "havip_config_reloads_total", result="refused") == 1
    assert value(m, "havip_config_last_reload_success_timestamp_seconds") == 1_700_000_000.0
    before = time.time()
    m.config_reloaded(True)
    assert value(m, "havip_config_last_reload_success_timestamp_seconds") >= before


def test_two_instances_do_not_share_values() -> None:
    a, b = make_metrics(), make_metrics()
    a.keepalive_sent()
    a.set_state("active")
    a.observe_rtt(0.001)
    b.set_state("standby")
    assert value(a, "havip_keepalives_sent_total") == 1
    assert value(b, "havip_keepalives_sent_total") == 0
    assert value(b, "havip_keepalive_rtt_seconds_count") == 0
    assert one_hot(a, "havip_state")["active"] == 1
    assert one_hot(b, "havip_state")["active"] == 0


# -- HTTP ------------------------------------------------------------------------------------

STATUS = {"node": "n1", "state": "active", "epoch": 3, "vips": {"198.18.0.100/24": True}}


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("ascii").split("\r\n")
        self.code = int(lines[0].split(" ")[1]) if lines[0] else 0
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}


async def exchange(port: int, data: bytes, *, eof: bool = False) -> Response:
    """Send raw bytes, then read until the server closes (bounded by WAIT)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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


async def get(port: int, path: str, method: str = "GET") -> Response:
    return await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def run_server(
    body: Callable[[int, Metrics], Awaitable[None]],
    *,
    status: Callable[[], Mapping[str, object]] = lambda: STATUS,
    timeout: float = 5.0,
) -> None:
    async def main() -> None:
        m = make_metrics()
        server = await start_http("127.0.0.1", 0, metrics=m, status=status, timeout=timeout)
        port = server.sockets[0].getsockname()[1]
        try:
            await body(port, m)
            still = await get(port, "/healthz")  # and it keeps serving afterwards
            assert (still.code, still.body) == (200, b"ok\n")
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_http_routes() -> None:
    async def body(port: int, m: Metrics) -> None:
        m.set_state("active")
        r = await get(port, "/metrics")
        assert r.code == 200
        assert r.headers["content-type"] == CONTENT_TYPE
        assert r.headers["connection"] == "close"
        assert int(r.headers["content-length"]) == len(r.body)
        names = {f.name for f in text_string_to_metric_families(r.body.decode())}
        assert "havip_state" in names
        assert b'havip_state{state="active"} 1.0' in r.body

        r = await get(port, "/status")
        assert r.code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.body == (json.dumps(STATUS, sort_keys=True, indent=2) + "\n").encode()

        r = await get(port, "/healthz")
        assert (r.code, r.body) == (200, b"ok\n")

        r = await get(port, "/metrics?name=x")
        assert r.code == 200

        r = await get(port, "http://127.0.0.1/healthz")  # absolute-form
        assert (r.code, r.body) == (200, b"ok\n")

        r = await get(port, "/nope")
        assert r.code == 404
        assert r.headers["connection"] == "close"

        r = await get(port, "/healthz", method="HEAD")
        assert (r.code, r.body, r.headers["content-length"]) == (200, b"", "3")

        for method in ("POST", "PUT", "DELETE"):
            r = await exchange(
                port,
                f"{method} /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".encode(),
            )
            assert r.code == 405
            assert r.headers["allow"] == "GET, HEAD"

    run_server(body)


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # a TLS ClientHello, roughly
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics\r\n\r\n",
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
    async def body(port: int, m: Metrics) -> None:
        r = await exchange(port, data)
        assert r.code == 400
        assert r.headers["connection"] == "close"

    run_server(body)


def test_request_cut_short_gets_400_or_nothing() -> None:
    async def body(port: int, m: Metrics) -> None:
        r = await exchange(port, b"GET /met", eof=True)
        assert r.code in (0, 400)

    run_server(body)


def test_bare_lf_line_endings_are_accepted() -> None:
    async def body(port: int, m: Metrics) -> None:
        r = await exchange(port, b"GET /healthz HTTP/1.0\nHost: x\n\n")
        assert (r.code, r.body) == (200, b"ok\n")

    run_server(body)


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
    async def body(port: int, m: Metrics) -> None:
        r = await exchange(port, data)
        assert r.code in (400, 431)

    run_server(body)


def test_slow_client_times_out() -> None:
    timeout = 0.2 * SCALE

    async def body(port: int, m: Metrics) -> None:
        r = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes
        assert r.code == 408
        r = await exchange(port, b"")  # says nothing at all
        assert r.code == 408

    run_server(body, timeout=timeout)


def test_status_that_raises_gives_500() -> None:
    def broken() -> Mapping[str, object]:
        raise RuntimeError("boom")

    async def body(port: int, m: Metrics) -> None:
        r = await get(port, "/status")
        assert r.code == 500
        assert (await get(port, "/metrics")).code == 200

    run_server(body, status=broken)


def test_many_clients_at_once() -> None:
    # 16 is the connection limit (tests/test_httpd.py shows the 17th is refused).
    async def body(port: int, m: Metrics) -> None:
        results = await asyncio.gather(*(get(port, "/metrics") for _ in range(16)))
        assert {r.code for r in results} == {200}

    run_server(body)
