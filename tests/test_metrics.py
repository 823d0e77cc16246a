"""Metrics (registry contents) and the small HTTP endpoint that serves them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trustme
from conftest import in_ci
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from havip.backends.base import BackendOp
from havip.core.failover import TRANSITIONS
from havip.core.states import Cause
from havip.core.wire import ErrorKind
from havip.shell.certinfo import CertInfo, read_pem_file
from havip.shell.metrics import (
    HOOKS,
    OPERATOR_COMMANDS,
    RTT_BUCKETS,
    RUN_OUTCOMES,
    Metrics,
    ProbeResult,
    vip_label,
)
from havip.shell.transport import RejectReason

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 10.0 * SCALE  # upper bound for any single network wait in these tests
README = Path(__file__).resolve().parent.parent / "README.md"

STATES = ("init", "standby", "active", "fault")
VIPS = (("198.18.0.100/24", "eth0"), ("198.18.0.101/24", "eth1"))
BARE = (("198.18.0.100", "eth0"), ("198.18.0.101", "eth1"))  # their labels
REASONS = ("startup", "peer_dead", "resigned")
CAUSES = tuple(c.value for c in Cause if c is not Cause.OK)

Sample = tuple[str, frozenset[tuple[str, str]]]


def make_metrics() -> Metrics:
    return Metrics(
        node="n1",
        peer="n2",
        vips=VIPS,
        states=STATES,
        reasons=REASONS,
        causes=CAUSES,
        version="0.1.0",
    )


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


def one_hot(m: Metrics, name: str, label: str = "state") -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples(m).items() if n == name}


def vip(address: str, interface: str) -> dict[str, str]:
    return {"vip": address, "interface": interface}


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
        ("havip_takeover_duration_seconds_count", frozenset()),
        ("havip_takeover_duration_seconds_sum", frozenset()),
        ("havip_last_transition_timestamp_seconds", frozenset()),
        ("havip_peer_connections_total", frozenset()),
        ("havip_gratuitous_arp_sent_total", frozenset()),
        ("havip_peer_eligible", frozenset()),
        ("havip_isolated", frozenset()),
        ("havip_http_connections_refused_total", frozenset()),
        ("havip_metrics_listen_errors_total", frozenset()),
    ]
    for state in STATES:
        expected_zero.append(("havip_state", frozenset({("state", state)})))
        expected_zero.append(("havip_peer_state", frozenset({("state", state)})))
    for cause in CAUSES:
        expected_zero.append(("havip_ineligible_cause", frozenset({("cause", cause)})))
    for address, interface in BARE:
        labels = frozenset(vip(address, interface).items())
        expected_zero.append(("havip_vip_owned", labels))
        expected_zero.append(("havip_takeovers_vetoed_total", labels))
    for reason in RejectReason:
        expected_zero.append(("havip_peer_rejected_total", frozenset({("reason", reason)})))
    for error in ErrorKind:
        expected_zero.append(("havip_protocol_errors_total", frozenset({("kind", error)})))
    for result in ProbeResult:
        expected_zero.append(("havip_arp_probes_total", frozenset({("result", result)})))
    for op in BackendOp:
        expected_zero.append(("havip_backend_errors_total", frozenset({("op", op)})))
    for kind in ("peer", "foreign"):
        for verdict in ("keep", "yield"):
            labels = frozenset({("kind", kind), ("verdict", verdict)})
            expected_zero.append(("havip_vip_conflicts_total", labels))
    for le in [*RTT_BUCKETS, float("inf")]:
        expected_zero.append(("havip_keepalive_rtt_seconds_bucket", frozenset({("le", _le(le))})))
    for key in expected_zero:
        assert got.get(key) == 0, key
    info = ("havip_build_info", frozenset({("version", "0.1.0"), ("node", "n1"), ("peer", "n2")}))
    assert got[info] == 1
    assert got[("havip_eligible", frozenset())] == 1  # eligible until told otherwise
    assert math.isnan(got[("havip_peer_last_keepalive_age_seconds", frozenset())])
    # No certificate series until the daemon tells which certificates it uses.
    assert not [k for k in got if k[0].startswith("havip_x509_")]


def test_every_allowed_transition_starts_at_zero() -> None:
    allowed = {
        (str(frm), str(to), str(reason))
        for (frm, to), reasons in TRANSITIONS.items()
        for reason in reasons
    }
    assert len(allowed) > 20  # the table, not an empty stand-in
    got = {
        (d["from"], d["to"], d["reason"]): v
        for (name, labels), v in samples(make_metrics()).items()
        if name == "havip_transitions_total"
        for d in [dict(labels)]
    }
    assert got == dict.fromkeys(allowed, 0.0)


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


def busy_metrics() -> Metrics:
    """Metrics with every kind of series touched: counters, histograms, labels, certs."""
    m = make_metrics()
    m.keepalive_sent()
    m.observe_rtt(0.001)
    m.observe_takeover(0.4)
    m.transition("standby", "probing", "peer_lost", now=1_700_000_000.0)
    m.takeover_vetoed(*VIPS[0])
    m.set_checks(["web"])
    m.check_run("web", outcome="ok", duration=0.1, passing=True, consecutive_failures=0)
    m.hook_run("fence", "ok", 1.0)
    m.peer_keepalive_source(lambda: 0.25)
    m.set_certificates("own", CERT)
    return m


def test_no_created_series_in_either_format() -> None:
    m = busy_metrics()
    text = m.exposition().decode()
    assert "havip_keepalives_sent_total 1.0" in text  # the counters are there...
    assert "_created" not in text  # ...without their creation stamps
    assert b"_created" not in openmetrics_latest(m.registry)  # type: ignore[no-untyped-call]
    # ?name[]=... in prometheus_client's handlers goes through restricted_registry.
    restricted = m.registry.restricted_registry(
        ["havip_keepalives_sent_total", "havip_keepalives_sent_created"]
    )
    names = [s.name for f in restricted.collect() for s in f.samples]
    assert names == ["havip_keepalives_sent_total"]


def test_created_stays_on_in_other_registries() -> None:
    # The filter belongs to our registry: prometheus_client's global switch is left alone.
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    other = CollectorRegistry()
    Counter("other_things", "Things.", registry=other).inc()
    make_metrics()
    assert b"other_things_created" in generate_latest(other)


def test_process_and_python_info() -> None:
    got = samples(make_metrics())
    start = got[("process_start_time_seconds", frozenset())]
    assert 0 < start <= time.time()
    assert got[("process_resident_memory_bytes", frozenset())] > 0
    assert ("process_cpu_seconds_total", frozenset()) in got
    assert got[("process_open_fds", frozenset())] > 0
    info = [labels for name, labels in got if name == "python_info"]
    assert len(info) == 1
    assert dict(info[0])["version"] == platform.python_version()


def test_names_follow_the_prometheus_conventions() -> None:
    families = list(text_string_to_metric_families(busy_metrics().exposition().decode()))
    assert len(families) > 40
    for family in families:
        assert family.name.startswith(("havip_", "process_", "python_")), family.name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            if family.type == "gauge" and "timestamp" in s.name:
                assert s.name.endswith("_timestamp_seconds"), s.name


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


def test_ineligible_cause_is_one_hot_and_cleared_when_eligible() -> None:
    m = make_metrics()
    m.set_eligible(False, "no_witness")
    assert value(m, "havip_eligible") == 0
    hot = one_hot(m, "havip_ineligible_cause", "cause")
    assert hot == {c: float(c == "no_witness") for c in CAUSES}
    m.set_eligible(True, "no_witness")  # the cause is ignored while eligible
    assert value(m, "havip_eligible") == 1
    assert set(one_hot(m, "havip_ineligible_cause", "cause").values()) == {0.0}


def test_one_hot_is_exact_at_every_scrape_while_it_changes() -> None:
    # Scrapes may run on another thread than the event loop: never two states at 1, or none.
    m = make_metrics()
    m.set_state("standby")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for state in ("probing", "active", "standby"):
                m.set_state(state)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(300):
            hot = one_hot(m, "havip_state")
            assert sum(hot.values()) == 1, hot
    finally:
        stop.set()
        flipper.join(timeout=WAIT)
    assert not flipper.is_alive()


def test_vip_labels_are_the_bare_address_and_the_interface() -> None:
    m = make_metrics()
    m.set_vip_owned("198.18.0.100/24", "eth0", True)
    assert value(m, "havip_vip_owned", **vip("198.18.0.100", "eth0")) == 1
    assert value(m, "havip_vip_owned", **vip("198.18.0.101", "eth1")) == 0
    # An address object works as well as text; it names the same series.
    m.set_vip_owned(ipaddress.ip_address("198.18.0.100"), "eth0", False)
    assert value(m, "havip_vip_owned", **vip("198.18.0.100", "eth0")) == 0
    m.takeover_vetoed(ipaddress.ip_interface("198.18.0.101/24"), "eth1")
    assert value(m, "havip_takeovers_vetoed_total", **vip("198.18.0.101", "eth1")) == 1
    assert not [k for k in samples(m) if any("/" in v for _, v in k[1] if _ == "vip")]


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("198.18.0.100/24", "198.18.0.100"),
        ("198.18.0.100", "198.18.0.100"),
        ("2001:DB8:0:0::100/64", "2001:db8::100"),
        (ipaddress.ip_interface("2001:db8::1/128"), "2001:db8::1"),
        ("not-an-address/8", "not-an-address"),
    ],
)
def test_vip_label(address: object, label: str) -> None:
    assert vip_label(address) == label


def test_gauges() -> None:
    m = make_metrics()
    m.set_peer_connected(True)
    m.set_epoch(7)
    m.set_isolated(True)
    m.set_peer_eligible(True)
    assert value(m, "havip_peer_connected") == 1
    assert value(m, "havip_epoch") == 7
    assert value(m, "havip_isolated") == 1
    assert value(m, "havip_peer_eligible") == 1
    m.set_peer_connected(False)
    m.set_peer_eligible(None)
    assert value(m, "havip_peer_connected") == 0
    assert value(m, "havip_peer_eligible") == 0


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
    m.takeover_vetoed(*VIPS[1])
    m.backend_error(BackendOp.ADD)
    m.garp_sent(6)
    m.garp_sent(0)
    m.http_refused()
    m.metrics_bind_error()
    m.metrics_bind_error()
    assert value(m, "havip_keepalives_sent_total") == 2
    assert value(m, "havip_keepalives_received_total") == 1
    assert value(m, "havip_keepalives_missed_total") == 1
    assert value(m, "havip_peer_connections_total") == 1
    assert value(m, "havip_peer_rejected_total", reason="wrong_peer_name") == 1
    assert value(m, "havip_peer_rejected_total", reason="timeout") == 0
    assert value(m, "havip_protocol_errors_total", kind="oversized") == 1
    assert value(m, "havip_arp_probes_total", result="answered") == 1
    assert value(m, "havip_arp_probes_total", result="silent") == 2
    assert value(m, "havip_takeovers_vetoed_total", **vip(*BARE[1])) == 1
    assert value(m, "havip_takeovers_vetoed_total", **vip(*BARE[0])) == 0
    assert value(m, "havip_backend_errors_total", op="add") == 1
    assert value(m, "havip_gratuitous_arp_sent_total") == 6
    assert value(m, "havip_http_connections_refused_total") == 1
    assert value(m, "havip_metrics_listen_errors_total") == 2


def test_unknown_label_values_do_not_crash() -> None:
    m = make_metrics()
    m.peer_rejected("cosmic_ray")
    m.protocol_error("new_kind")
    m.backend_error("teleport")
    m.takeover_vetoed("203.0.113.9/32", "eth9")
    m.set_vip_owned("203.0.113.9/32", "eth9", True)
    assert value(m, "havip_peer_rejected_total", reason="cosmic_ray") == 1
    assert value(m, "havip_protocol_errors_total", kind="new_kind") == 1
    assert value(m, "havip_backend_errors_total", op="teleport") == 1
    assert value(m, "havip_takeovers_vetoed_total", **vip("203.0.113.9", "eth9")) == 1
    assert value(m, "havip_vip_owned", **vip("203.0.113.9", "eth9")) == 1


def test_transition_counts_and_stamps_wall_clock() -> None:
    m = make_metrics()
    m.transition("probing", "active", "probe_silent", now=1_700_000_000.5)
    m.transition("probing", "active", "probe_silent", now=1_700_000_001.0)
    assert value(m, "havip_last_transition_timestamp_seconds") == 1_700_000_001.0
    before = time.time()
    m.transition("active", "standby", "handover")
    m.transition("active", "standby", "not_in_the_table")  # counted all the same
    name = "havip_transitions_total"
    up = {"from": "probing", "to": "active", "reason": "probe_silent"}
    down = {"from": "active", "to": "standby", "reason": "handover"}
    assert value(m, name, **up) == 2
    assert value(m, name, **down) == 1
    assert value(m, name, **{**down, "reason": "preempt"}) == 0
    assert value(m, name, **{**down, "reason": "not_in_the_table"}) == 1
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


def test_takeover_histogram_has_the_agreed_buckets() -> None:
    m = make_metrics()
    for seconds in (0.04, 0.31, 0.31, 12.0):
        m.observe_takeover(seconds)
    got = {
        dict(labels)["le"]: v
        for (name, labels), v in samples(m).items()
        if name == "havip_takeover_duration_seconds_bucket"
    }
    bounds = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)
    assert list(got) == [*(_le(b) for b in bounds), "+Inf"]
    assert got[_le(0.05)] == 1
    assert got[_le(0.3)] == 1
    assert got[_le(0.5)] == 3
    assert got[_le(10)] == 3
    assert got["+Inf"] == 4
    assert value(m, "havip_takeover_duration_seconds_sum") == pytest.approx(12.66)


def test_keepalive_age_is_read_at_every_scrape() -> None:
    m = make_metrics()
    name = "havip_peer_last_keepalive_age_seconds"
    assert math.isnan(value(m, name))  # no source yet
    ages: list[float | None] = [None, 0.5, 1.75]
    m.peer_keepalive_source(lambda: ages[0])
    assert math.isnan(value(m, name))  # none heard yet
    ages[0] = 0.5
    assert value(m, name) == 0.5
    ages[0] = 1.75
    assert value(m, name) == 1.75  # not cached: computed when scraped

    def broken() -> float | None:
        raise RuntimeError("boom")

    m.peer_keepalive_source(broken)
    assert math.isnan(value(m, name))  # a broken source costs the value, not the scrape


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
    """The check series of `name`."""
    return {
        (series, labels): v
        for (series, labels), v in samples(m).items()
        if series.startswith("havip_check_") and ("check", name) in labels
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


# -- certificates ----------------------------------------------------------------------------


def _cert(cn: str, serial: int, year: int) -> CertInfo:
    return CertInfo(
        subject_cn=cn,
        issuer_cn="havip CA",
        serial_number=serial,
        not_before=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(year, 1, 1, tzinfo=dt.UTC),
    )


CERT = _cert("n1", 12345678901234567890, 2027)


def certs(m: Metrics, name: str) -> dict[tuple[str, str, str, str], float]:
    out = {}
    for (series, labels), v in samples(m).items():
        if series == name:
            d = dict(labels)
            assert set(d) == {"role", "subject_CN", "issuer_CN", "serial_number"}
            out[(d["role"], d["subject_CN"], d["issuer_CN"], d["serial_number"])] = v
    return out


def test_certificate_series_follow_set_certificates() -> None:
    m = make_metrics()
    after, before = "havip_x509_cert_not_after", "havip_x509_cert_not_before"
    m.set_certificates("own", CERT)
    own = ("own", "n1", "havip CA", "12345678901234567890")
    assert certs(m, after) == {own: dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()}
    assert certs(m, before) == {own: dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()}
    ca_a, ca_b = _cert("havip CA", 1, 2035), _cert("old CA", 2, 2030)
    m.set_certificates("ca", [ca_a, ca_b, ca_a])  # a bundle, one of them twice
    m.set_certificates("peer", _cert("n2", 7, 2026))
    assert sorted(certs(m, after)) == sorted(
        [
            own,
            ("ca", "havip CA", "havip CA", "1"),
            ("ca", "old CA", "havip CA", "2"),
            ("peer", "n2", "havip CA", "7"),
        ]
    )
    # Rotation: the role's old series go, the new one appears; other roles stay.
    m.set_certificates("own", _cert("n1", 99, 2028))
    m.set_certificates("ca", [ca_a])
    got = certs(m, after)
    assert ("own", "n1", "havip CA", "99") in got and own not in got
    assert [k for k in got if k[0] == "ca"] == [("ca", "havip CA", "havip CA", "1")]
    m.set_certificates("peer", None)  # e.g. the peer link is gone for good: none known
    m.set_certificates("peer", None)  # twice is fine
    assert not [k for k in certs(m, after) if k[0] == "peer"]
    assert not [k for k in certs(m, before) if k[0] == "peer"]


def test_certificate_series_from_real_files(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("n1", common_name="n1", not_after=dt.datetime(2031, 5, 6, tzinfo=dt.UTC))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "n1.crt"))
    m = make_metrics()
    m.set_certificates("own", read_pem_file(tmp_path / "n1.crt"))
    ((role, subject, issuer, serial), not_after), *rest = certs(
        m, "havip_x509_cert_not_after"
    ).items()
    assert rest == []
    assert (role, subject, issuer) == ("own", "n1", "")  # trustme's CA has no CN
    assert int(serial) > 0
    assert not_after == dt.datetime(2031, 5, 6, tzinfo=dt.UTC).timestamp()


# -- the documented table and promtool --------------------------------------------------------


def readme_table() -> dict[str, tuple[str, set[str], str]]:
    """The README's "Metrics" table: metric name -> (type, label names, whole row)."""
    text = README.read_text()
    section = text[text.index("### Metrics") :]
    section = section[: section.index("\n## ")]
    rows: dict[str, tuple[str, set[str], str]] = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z0-9_*]+)` \| (\w+|—) \| ([^|]*) \|", line)
        if m:
            labels = set(re.findall(r"`(\w+)`", m[3]))
            assert m[1] not in rows, f"{m[1]} twice in the README"
            assert line.count(" | ") == 4, f"{m[1]}: a row has five columns"
            rows[m[1]] = (m[2], labels, line)
    return rows


def test_the_readme_table_documents_every_metric() -> None:
    table = readme_table()
    assert len(table) > 40
    exposed: dict[str, tuple[str, set[str]]] = {}
    processes = []
    for family in text_string_to_metric_families(busy_metrics().exposition().decode()):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.startswith("process_"):
            processes.append(name)
            continue
        typ = "info" if name.startswith("havip_") and name.endswith("_info") else family.type
        exposed[name] = (typ, labels)
    documented = {name: row[:2] for name, row in table.items() if name != "process_*"}
    assert sorted(documented) == sorted(exposed)
    for name, row in exposed.items():
        assert documented[name] == row, name
    assert "process_start_time_seconds" in processes
    for name in processes:  # the collector's families, named in one row
        assert f"`{name}`" in table["process_*"][2], name


def test_promtool_check_metrics_is_clean() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if in_ci():
            pytest.fail("promtool is missing (make deps installs it)")
        pytest.skip("promtool is not installed")
    m = busy_metrics()
    m.set_certificates("ca", CERT)
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=m.exposition(),
        capture_output=True,
        timeout=30 * SCALE,
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
