"""End to end (issue 6): operating the pair as a keepalived user would, in the namespace lab.

Real `havip run` daemons, a real service behind the VIP, the real CLI commands run inside the
nodes' namespaces, and the client probe watching who answers. Outage numbers are printed, never
asserted; two MACs answering at once, and moves that must or must not happen, are.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from havip.lab.client import double_answers, load_samples, max_outage_ms, owner_moves
from havip.lab.netns import ADDRESSES
from havip.lab.scenario import NODES, SCALE, Cluster, running_cluster

pytestmark = pytest.mark.netns

SERVICE_PORT = 8080
# The service behind the VIP: a TCP listener on the node's own loopback (inside its namespace).
SERVICE = (
    "import socket\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('127.0.0.1', {SERVICE_PORT}))\n"
    "s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.close()\n"
)
CHECK_INTERVAL = 0.2


def check_section(*, rise: int = 3, fall: int = 2) -> str:
    return (
        f'\n[[check]]\nname = "web"\ntcp = "127.0.0.1:{SERVICE_PORT}"\n'
        f'interval = "{int(CHECK_INTERVAL * 1000)}ms"\ntimeout = "100ms"\n'
        f"rise = {rise}\nfall = {fall}\n"
    )


class Services:
    """The service in each node's namespace, killed and restarted by PID."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self, node: str) -> None:
        self.procs[node] = self.cluster.lab.run(node, [sys.executable, "-c", SERVICE])
        probe = (
            "import socket; "
            f"socket.create_connection(('127.0.0.1', {SERVICE_PORT}), timeout=0.5).close()"
        )
        self.cluster.wait(
            f"{node}'s service listens",
            lambda: (
                self.cluster.lab.exec(node, [sys.executable, "-c", probe], check=False).returncode
                == 0
            ),
            10.0,
        )

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def cluster_with_services(
    tmp_path: Path, *, preempt: bool = True, rise: int = 3, fall: int = 2
) -> Iterator[tuple[Cluster, Services]]:
    section = check_section(rise=rise, fall=fall)
    with running_cluster(
        tmp_path, preempt=preempt, start=False, sections=lambda _node: section
    ) as cluster:
        services = Services(cluster)
        for node in NODES:
            services.start(node)
        cluster.start("n1")
        cluster.start("n2")
        cluster.settle("n1")
        yield cluster, services


def havip(cluster: Cluster, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A `havip` CLI command run inside node's namespace, against its config."""
    argv = cluster.lab.python_argv("havip", *args, "--config", str(cluster.config(node)))
    return cluster.lab.exec(node, argv, check=False, timeout=60)


def events(cluster: Cluster, node: str, name: str, **fields: str) -> list[Any]:
    return [
        ev
        for ev in cluster.current_events(node, name)
        if all(ev.get(k) == v for k, v in fields.items())
    ]


def test_the_service_dying_on_the_owner_moves_the_vip_and_its_recovery_brings_it_back(
    tmp_path: Path,
) -> None:
    with cluster_with_services(tmp_path) as (cluster, services):
        with cluster.client("service") as out:
            died = time.time()
            services.kill("n1")
            cluster.wait("n2 owns the VIP", lambda: cluster.owns("n2"), 10.0)
            assert not cluster.holds_vip("n1")
            status = cluster.status("n1")
            assert status["ineligible_cause"] == "check_failed"
            assert status["checks"][0]["state"] == "down"
            assert cluster.status("n2")["peer_ineligible_cause"] == "check_failed"
            time.sleep(1.0 * SCALE)
            services.start("n1")
            cluster.wait("n1 took it back (preempt)", lambda: cluster.owns("n1"), 15.0)
            time.sleep(0.5 * SCALE)
        samples = load_samples(out)
        metrics = cluster.metrics("n1")
    moves = [(a, b) for _, a, b in owner_moves(samples)]
    print(f"service death: outage {max_outage_ms(samples, start=died):.0f} ms, moves {moves}")
    assert moves == [("n1", "n2"), ("n2", "n1")]
    assert double_answers(samples) == 0
    assert events(cluster, "n1", "transition", to="standby", reason="ineligible")
    assert events(cluster, "n2", "transition", to="standby", reason="preempt")
    assert 'havip_check_runs_total{check="web",outcome="failed"}' in metrics


def test_a_service_blip_shorter_than_fall_moves_nothing(tmp_path: Path) -> None:
    """Rise/fall hysteresis: the service is down for about one check interval, three times;
    with fall = 3 the VIP never moves, although the failures were seen."""
    with cluster_with_services(tmp_path, fall=3) as (cluster, services):
        with cluster.client("blips") as out:
            for _ in range(3):
                services.kill("n1")
                time.sleep(CHECK_INTERVAL * 1.2)
                services.start("n1")
                time.sleep(CHECK_INTERVAL * 4)
            assert cluster.owns("n1")
        samples = load_samples(out)
        metrics = cluster.metrics("n1")
    assert owner_moves(samples) == [] and double_answers(samples) == 0
    assert not events(cluster, "n1", "transition", to="standby")
    failed = [
        line
        for line in metrics.splitlines()
        if line.startswith('havip_check_runs_total{check="web",outcome="failed"}')
    ]
    assert failed and float(failed[0].split()[-1]) >= 1, "the blips were not even seen"


def test_havip_handover_moves_the_vip_with_a_near_zero_gap(tmp_path: Path) -> None:
    with running_cluster(tmp_path, preempt=False) as cluster:
        cluster.settle("n1")
        with cluster.client("handover") as out:
            asked = time.time()
            done = havip(cluster, "n1", "handover")
            assert done.returncode == 0, done.stderr
            assert "n2" in done.stdout and "holds it now" in done.stdout
            cluster.wait("n2 owns", lambda: cluster.owns("n2") and not cluster.holds_vip("n1"))
            time.sleep(1.0 * SCALE)  # and it stays there
            refused = havip(cluster, "n1", "handover")
            assert refused.returncode == 1
            assert "handover refused: this node does not hold the VIP" in refused.stderr
        samples = load_samples(out)
    gap = max_outage_ms(samples, start=asked)
    print(f"handover: client gap {gap:.0f} ms")
    assert [(a, b) for _, a, b in owner_moves(samples)] == [("n1", "n2")]
    assert double_answers(samples) == 0
    assert events(cluster, "n1", "transition", to="standby", reason="handover")
    assert events(cluster, "n2", "transition", to="active", reason="peer_resigned")


def test_maintenance_drains_a_node_across_a_restart(tmp_path: Path) -> None:
    with running_cluster(tmp_path, preempt=True) as cluster:
        cluster.settle("n1")
        done = havip(cluster, "n1", "maintenance", "on")
        assert done.returncode == 0, done.stderr
        assert "n2 holds the VIP" in done.stdout
        cluster.wait("n2 owns", lambda: cluster.owns("n2"))
        # Restart n1's daemon: still drained, so preempt does not bring the VIP back.
        assert cluster.stop("n1") == 0
        cluster.start("n1")
        cluster.wait("n1 is back, standing by", lambda: cluster.connected("n1"), 10.0)
        time.sleep(3.0 * SCALE)
        assert cluster.owns("n2") and not cluster.holds_vip("n1")
        text = havip(cluster, "n1", "status").stdout
        assert "maint.   on since" in text and "eligible no (maintenance)" in text
        done = havip(cluster, "n1", "maintenance", "off")
        assert done.returncode == 0, done.stderr
        cluster.wait("n1 took the VIP back", lambda: cluster.owns("n1"), 10.0)


def test_rotated_certificates_are_reloaded_with_havip_reload_and_nothing_moves(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        cluster.settle("n1")
        pki = cluster.dir / "pki"
        with cluster.client("reload") as out:
            for node in NODES:
                issue = cluster.lab.python_argv(
                    "havip", "pki", "issue", f"{node}={ADDRESSES[node]}", "--dir", str(pki)
                )
                subprocess.run([*issue, "--force"], check=True, capture_output=True, timeout=60)
            for node in NODES:
                done = havip(cluster, node, "reload")
                assert done.returncode == 0, done.stderr
                assert "certificates" in done.stdout
            cluster.wait(
                "the standby relinked on the new certificates",
                lambda: bool(events(cluster, "n2", "relink")) and cluster.connected("n2"),
            )
            time.sleep(1.0 * SCALE)
            # An invalid config is refused, in one line, and the daemon carries on.
            path = cluster.config("n1")
            path.write_text(path.read_text() + "\n[[check]]\nname = 'x'\n")
            bad = havip(cluster, "n1", "reload")
            assert bad.returncode == 2 and "reload not sent" in bad.stderr
            assert "check[0]" in bad.stderr
            # Straight to the daemon (SIGHUP, as `kill -HUP` would): refused in one log line.
            cluster.signal("n1", signal.SIGHUP)
            cluster.wait("n1 refused it", lambda: bool(events(cluster, "n1", "reload_refused")))
            time.sleep(0.5 * SCALE)
        samples = load_samples(out)
        # Read before the lab is torn down (which kills the daemons).
        assert not cluster.current_events("n2", "peer_lost")
        assert not events(cluster, "n1", "transition", to="standby")
        assert cluster.state("n1") == "active" and cluster.state("n2") == "standby"
    assert owner_moves(samples) == [] and double_answers(samples) == 0
    lost = sum(1 for s in samples if s.answer is None)
    print(f"reload with rotated certificates: {lost} lost rounds of {len(samples)}")
    assert lost == 0
