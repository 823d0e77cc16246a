"""A real Prometheus watches the pair through a power-off failover and a `havip handover`.

Debian's `prometheus` server runs in the lab's client namespace (its API on that namespace's
loopback), scrapes both daemons on their LAN addresses every 100 ms and evaluates the shipped
alerting rules (deploy/prometheus/havip.rules.yml). Everything asserted here is read back
through its HTTP query API, as a dashboard or an alert would see it.

The owner count is judged on the scraped samples themselves: the two nodes are scraped at
different moments, so an instant sum across them can read 2 for up to one scrape interval
around a handover without any overlap. Real double ownership shows as a sample of one node
at 1 taken between two consecutive samples of the other node both at 1.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import in_ci
from test_grafana import exprs as dashboard_exprs
from test_grafana import load as load_dashboard

from havip.lab.client import double_answers, load_samples, owner_moves
from havip.lab.scenario import (
    SCALE,
    Cluster,
    metrics_address,
    power_off,
    reboot_n1_after_power_off,
    running_cluster,
)

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "havip.rules.yml"
API = "127.0.0.1:9090"  # the client namespace's own loopback
SCRAPE_MS = 100
INSTANCE = {node: metrics_address(node, on_lan=True) for node in ("n1", "n2")}

Series = list[tuple[float, float]]


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus not found (Debian package prometheus; `make deps` installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def write_config(workdir: Path) -> Path:
    """A scrape config for both daemons (every 100 ms) plus the shipped rules."""
    shutil.copy(RULES, workdir / RULES.name)
    targets = ", ".join(f'"{INSTANCE[n]}"' for n in ("n1", "n2"))
    text = "\n".join(
        [
            "global:",
            f"  scrape_interval: {SCRAPE_MS}ms",
            f"  scrape_timeout: {SCRAPE_MS * 8 // 10}ms",
            f"  evaluation_interval: {SCRAPE_MS}ms",
            "rule_files:",
            f"  - {RULES.name}",
            "scrape_configs:",
            "  - job_name: havip",
            "    static_configs:",
            f"      - targets: [{targets}]",
            "",
        ]
    )
    path = workdir / "prometheus.yml"
    path.write_text(text)
    return path


class Prometheus:
    """The server's HTTP API, asked from inside the client namespace."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def get(self, path: str, **params: str) -> Any:
        code = (
            "import sys, urllib.parse, urllib.request;"
            "q = urllib.parse.urlencode(dict(zip(sys.argv[2::2], sys.argv[3::2])));"
            "r = urllib.request.urlopen(f'http://{sys.argv[1]}?{q}', timeout=5);"
            "sys.stdout.write(r.read().decode())"
        )
        argv = [sys.executable, "-c", code, f"{API}{path}"]
        for key, value in params.items():
            argv += [key, value]
        done = self.cluster.lab.exec("client", argv, check=False, timeout=15)
        if done.returncode != 0:
            raise AssertionError(f"GET {path} {params}: {done.stderr.strip()[-300:]}")
        return json.loads(done.stdout) if done.stdout.startswith("{") else done.stdout

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result list (vector or matrix), at `at` (default now)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self.get("/api/v1/query", **params)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, at: float | None = None) -> dict[str, float]:
        """An instant vector's values by instance (or "" for series without one)."""
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in self.query(expr, at)}

    def ready(self) -> bool:
        try:
            return "Ready" in str(self.get("/-/ready"))
        except AssertionError:
            return False


def poll(what: str, cond: Callable[[], bool], timeout: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{cluster.tail_logs()}")
        time.sleep(0.05)


@contextmanager
def prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    """Debian's Prometheus server in the client namespace, storage in the test's dir."""
    binary = prometheus_binary()
    workdir = cluster.dir / "prometheus"
    workdir.mkdir()
    config = write_config(workdir)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={API}",
        "--log.level=warn",
    ]
    with (workdir / "prometheus.log").open("w") as log:
        proc = cluster.lab.run("client", argv, cwd=workdir, stdout=log, stderr=log)
    api = Prometheus(cluster)
    try:
        deadline = time.monotonic() + 30 * SCALE
        while not api.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"prometheus did not get ready (exit {proc.poll()}):\n"
                    + (workdir / "prometheus.log").read_text()[-2000:]
                )
            time.sleep(0.1)
        yield api
    finally:
        # `ip netns exec` execs prometheus itself: this pid is the server.
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def raw_series(api: Prometheus, expr: str, seconds: float) -> dict[str, Series]:
    """Every scraped sample of `expr` over the last `seconds`, by instance, oldest first."""
    result = api.query(f"{expr}[{int(seconds) + 1}s]")
    return {r["metric"]["instance"]: [(float(t), float(v)) for t, v in r["values"]] for r in result}


def proven_overlaps(a: Series, b: Series) -> list[float]:
    """Times of b's samples at 1 taken between two consecutive samples of a, both at 1."""
    found = []
    for (t0, v0), (t1, v1) in itertools.pairwise(a):
        if v0 == 1 and v1 == 1:
            found += [t for t, v in b if v == 1 and t0 <= t <= t1]
    return found


def runs(series: Series) -> list[float]:
    """The values of a series with repeats collapsed: [0, 1, 1, 0] -> [0, 1, 0]."""
    out: list[float] = []
    for _, value in series:
        if not out or out[-1] != value:
            out.append(value)
    return out


def test_proven_overlaps_needs_a_sample_between_two_owned_ones() -> None:
    # A handover scraped out of phase: n2's sample at 1.05 s after n1's last 1 at 1.0 s and
    # before n1's 0 at 1.1 s: an instant sum reads 2, but nothing proves both held it.
    n1 = [(0.9, 1.0), (1.0, 1.0), (1.1, 0.0), (1.2, 0.0)]
    n2 = [(0.95, 0.0), (1.05, 1.0), (1.15, 1.0)]
    assert proven_overlaps(n1, n2) == [] and proven_overlaps(n2, n1) == []
    # n2 reports holding it while n1 reported holding it before and after: both held it.
    n2_early = [(0.95, 1.0), (1.05, 1.0)]
    assert proven_overlaps(n1, n2_early) == [0.95]
    assert runs(n1) == [1.0, 0.0] and runs(n2) == [0.0, 1.0]


@pytest.mark.netns
def test_prometheus_sees_one_owner_through_a_power_off_and_a_handover(tmp_path: Path) -> None:
    prometheus_binary()
    with (
        running_cluster(tmp_path, preempt=False, metrics_on_lan=True) as cluster,
        prometheus(cluster) as api,
    ):
        n1, n2 = INSTANCE["n1"], INSTANCE["n2"]
        began = time.time()
        cluster.settle("n1")
        poll(
            "Prometheus sees n1 owning and n2 not",
            lambda: api.values('havip_vip_owned{job="havip"}') == {n1: 1.0, n2: 0.0},
            15.0,
            cluster,
        )
        poll(
            "keepalives show in Prometheus",
            lambda: (
                api.values(f'havip_keepalives_received_total{{instance="{n2}"}}').get(n2, 0) > 0
            ),
            10.0,
            cluster,
        )

        # ---- power-off of the owner: n2 takes over ------------------------------------------
        res = power_off(cluster)
        print(res.render())
        assert res.owner == "n2" and res.double_answers == 0, res.render()
        fault = res.fault_at
        poll(
            "Prometheus sees n1 down and n2 the one owner",
            lambda: (
                api.values('up{job="havip"}') == {n1: 0.0, n2: 1.0}
                and api.values('sum by (vip) (havip_vip_owned{job="havip"})') == {"": 1.0}
                and api.values(f'havip_vip_owned{{instance="{n2}"}}') == {n2: 1.0}
            ),
            15.0,
            cluster,
        )
        took = time.time()

        def moved(expr: str, since: float) -> float:
            """How much a counter (summed) rose between `since` and now, as Prometheus saw it."""
            then = sum(api.values(f"sum({expr})", since).values())
            now = sum(api.values(f"sum({expr})").values())
            return now - then

        assert moved(f'havip_keepalives_missed_total{{instance="{n2}"}}', fault - 0.5) >= 1
        # n1 froze at `fault`: nothing arrives after it (a scrape later, to be sure).
        assert moved(f'havip_keepalives_received_total{{instance="{n2}"}}', fault + 0.3) == 0
        seen_before = api.values(f'havip_keepalives_received_total{{instance="{n2}"}}', fault)
        assert seen_before.get(n2, 0) > 0, "no keepalive counted before the fault"
        to_active = {
            (r["metric"]["from"], r["metric"]["reason"]): float(r["value"][1])
            for r in api.query(
                f'increase(havip_transitions_total{{instance="{n2}",to="active"}}'
                f"[{int(took - fault) + 2}s]) > 0"
            )
        }
        logged = cluster.events("n2", "transition", fault)
        last = [ev for ev in logged if ev.get("to") == "active"][-1]
        assert set(to_active) == {(str(last.get("from")), str(last.get("reason")))}, (
            to_active,
            logged,
        )
        durations = api.values(f'havip_takeover_duration_seconds_count{{instance="{n2}"}}')
        assert durations == {n2: 1.0}, durations

        # ---- n1 returns (preempt off: it stands by), then `havip handover` on n2 --------------
        reboot_n1_after_power_off(cluster)
        cluster.wait(
            "n1 is a connected standby",
            lambda: cluster.state("n1") == "standby" and cluster.connected("n1"),
            15.0,
        )
        poll("Prometheus scrapes n1 again", lambda: api.values("up").get(n1) == 1.0, 10.0, cluster)
        with cluster.client("handover") as out:
            asked = time.time()
            argv = cluster.lab.python_argv(
                "havip", "handover", "--config", str(cluster.config("n2"))
            )
            done = cluster.lab.exec("n2", argv, check=False, timeout=30)
            assert done.returncode == 0, done.stderr
            cluster.wait("n1 owns", lambda: cluster.owns("n1") and not cluster.holds_vip("n2"))
            poll(
                "Prometheus sees n1 the one owner",
                lambda: api.values('havip_vip_owned{job="havip"}') == {n1: 1.0, n2: 0.0},
                10.0,
                cluster,
            )
        samples = load_samples(out)
        assert [(a, b) for _, a, b in owner_moves(samples)] == [("n2", "n1")]
        assert double_answers(samples) == 0
        assert moved(f'havip_transitions_total{{instance="{n1}",to="active"}}', asked) == 1
        assert (
            moved(
                f'havip_transitions_total{{instance="{n1}",to="active",reason="peer_resigned"}}',
                asked,
            )
            == 1
        )
        assert (
            moved(
                f'havip_transitions_total{{instance="{n2}",from="active",to="standby",'
                f'reason="handover"}}',
                asked,
            )
            == 1
        )
        handovers = 'havip_operator_commands_total{command="handover",result="ok"}'
        assert api.values(handovers) == {n1: 0.0, n2: 1.0}
        assert moved(f'havip_keepalives_received_total{{instance="{n1}"}}', asked) > 0

        # ---- the owner count over the whole run --------------------------------------------
        window = time.time() - began
        owned = raw_series(api, 'havip_vip_owned{job="havip"}', window)
        assert set(owned) == {n1, n2}
        # The evidence covers both moves: n1 owned, lost it, owned again; n2 the other way.
        assert runs(owned[n1])[-3:] == [1.0, 0.0, 1.0], owned[n1]
        assert runs(owned[n2])[-3:] == [0.0, 1.0, 0.0], owned[n2]
        assert min(len(owned[n1]), len(owned[n2])) >= 20, owned
        assert proven_overlaps(owned[n1], owned[n2]) == []
        assert proven_overlaps(owned[n2], owned[n1]) == []
        span = f"[{int(window) + 1}s:20ms]"
        # PromQL's view, scrape skew tolerated: each node's lowest value in its last 250 ms.
        steady = 'sum by (vip) (min_over_time(havip_vip_owned{job="havip"}[250ms]))'
        assert api.values(f"max_over_time(({steady}){span})") == {"": 1.0}
        naive = api.values(f'max_over_time(sum(havip_vip_owned{{job="havip"}}){span})')
        print(f"max of the instant owner sum (scrape skew included): {naive}")
        # And after the takeover, at the end: one owner.
        assert api.values('sum by (vip) (havip_vip_owned{job="havip"})') == {"": 1.0}

        # ---- the shipped alerts, evaluated by this server ------------------------------------
        alerts = f"[{int(window) + 1}s]"
        fired = api.query(
            f'max_over_time(ALERTS{{alertname="HavipFailover",alertstate="firing"}}{alerts})'
        )
        got = {(r["metric"]["instance"], r["metric"]["reason"]) for r in fired}
        assert (n1, "peer_resigned") in got, got
        assert any(inst == n2 for inst, _ in got), got
        for name in ("HavipTwoOwners", "HavipVipConflict"):
            query = f'max_over_time(ALERTS{{alertname="{name}",alertstate="firing"}}{alerts})'
            assert api.query(query) == [], name

        # ---- the Grafana dashboard's queries, on this server ---------------------------------
        answered = {}
        for where, expr in dashboard_exprs(load_dashboard()):
            expr = expr.replace("$__rate_interval", "1s").replace("$vip", ".*")
            answered[where] = api.query(expr)  # a query Prometheus refuses fails here
        assert len(answered) >= 10

        # ---- the series the daemon feeds from its peer link and its certificates -------------
        age = "havip_peer_last_keepalive_age_seconds"
        silent = api.values(f'{age}{{instance="{n2}"}}', took).get(n2, math.nan)
        assert silent >= 0.3, f"{age} on n2 after the power-off: {silent}"  # n1 froze at fault
        fresh = api.values(f'{age}{{job="havip"}}')
        assert set(fresh) == {n1, n2} and max(fresh.values()) < 2.0, fresh
        cert_days = [r for k, r in answered.items() if "Certificate expiry" in k]
        assert cert_days and len(cert_days[0]) == 6, cert_days  # own, peer, CA on each node
        assert all(80 < float(r["value"][1]) < 10000 for r in cert_days[0]), cert_days
