"""The illumos code path end to end, without illumos: two real `havip run` daemons in the
namespace lab, each with the illumos backend, whose tools act for real on the namespace they
run in.

Each daemon starts through tests/fakes/illumos/as_illumos.py, which makes the config believe
it runs on illumos (test-only: havip has no such switch), puts the fake ipadm, dladm and route
on PATH in real mode (`ipadm create-addr` runs `ip addr add`, `dladm show-link` reads `ip -j
link`, ...; see tests/fakes/illumos/fake.py) and gives the libdlpi binding a stand-in
libdlpi.so.1 over AF_PACKET, built here with gcc (tests/fakes/illumos/fakedlpi.c). So VIPs
come and go through `ipadm create-addr` / `delete-addr`, takeover probes and gratuitous ARP
go through libdlpi, link state comes from dladm, and the lab's client sees the result.
Every test also proves the fakes did the work (their calls.log), so that it cannot pass on
the Linux backend by accident. Outage numbers are printed, never asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import in_ci

from havip.backends.illumos import split_parsable
from havip.lab.client import double_answers, first_answer_from, load_samples
from havip.lab.netns import IFACE, VIP, VIP_CIDR
from havip.lab.scenario import (
    NODES,
    SCALE,
    Cluster,
    Result,
    failback,
    power_off,
    running_cluster,
    sigkill,
    vip_link_loss,
)

pytestmark = pytest.mark.netns

FAKES = Path(__file__).resolve().parent / "fakes" / "illumos"
OBJECT = f"{IFACE}/havip0"  # the address object of the pair's one VIP
CREATE = ["ipadm", "create-addr", "-T", "static", "-t", "-a", VIP_CIDR, OBJECT]
DELETE = ["ipadm", "delete-addr", OBJECT]
NO_PF_ROUTE = "no PF_ROUTE routing socket on this platform (linux)"


@pytest.fixture(scope="module")
def libdlpi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the stand-in libdlpi.so.1 (with that soname), built for this run."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if in_ci():
            pytest.fail("gcc is needed to build the stand-in libdlpi, and CI must run this")
        pytest.skip("gcc is not installed: cannot build the stand-in libdlpi")
    folder = tmp_path_factory.mktemp("libdlpi")
    argv = [gcc, "-Wall", "-Werror", "-shared", "-fPIC", "-Wl,-soname,libdlpi.so.1"]
    argv += ["-o", str(folder / "libdlpi.so.1"), str(FAKES / "fakedlpi.c")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120 * SCALE)
    assert proc.returncode == 0, proc.stderr
    return folder


class Illumos:
    """The fake illumos of each lab node: its tools' state folder and call log."""

    def __init__(self, root: Path, cluster: Cluster) -> None:
        self.root = root
        self.cluster = cluster

    def folder(self, node: str) -> Path:
        return self.root / node

    def calls(self, node: str) -> list[list[str]]:
        """Every fake tool call made in node, in order (["ipadm", "create-addr", ...])."""
        log = self.folder(node) / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def tool(self, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a fake tool in node's namespace, in real mode, on node's state (logged too)."""
        env = [f"HAVIP_FAKE_ILLUMOS={self.folder(node)}", "HAVIP_FAKE_ILLUMOS_REAL=1"]
        cmd = ["env", *env, str(FAKES / argv[0]), *argv[1:]]
        return self.cluster.lab.exec(node, cmd, check=False)

    def objects(self, node: str) -> dict[str, str]:
        """{address object: address} as node's `ipadm show-addr -p` prints them."""
        proc = self.tool(node, "ipadm", "show-addr", "-p", "-o", "addrobj,addr")
        assert proc.returncode == 0, proc.stderr
        rows = [split_parsable(line) for line in proc.stdout.splitlines()]
        return {obj: addr for obj, addr in rows}

    def boot(self, node: str) -> None:
        """node's host reboots: its temporary address objects are gone (fake.py boot)."""
        cmd = ["env", f"HAVIP_FAKE_ILLUMOS={self.folder(node)}", "HAVIP_FAKE_ILLUMOS_REAL=1"]
        cmd += [sys.executable, str(FAKES / "fake.py"), "boot"]
        self.cluster.lab.exec(node, cmd)


@contextmanager
def illumos_cluster(
    tmp_path: Path, libdlpi_dir: Path, *, heartbeat_net: bool = False
) -> Iterator[tuple[Cluster, Illumos]]:
    """Both daemons on the illumos backend (see the module docstring), settled on n1."""
    root = tmp_path / "illumos"
    wrap = [sys.executable, str(FAKES / "as_illumos.py"), "--libdir", str(libdlpi_dir)]
    wrap += ["--fake-root", str(root)]
    with running_cluster(
        tmp_path / "lab", wrap=wrap, backend="illumos", heartbeat_net=heartbeat_net
    ) as cluster:
        fake = Illumos(root, cluster)
        cluster.settle("n1", timeout=30.0)
        yield cluster, fake


def _show(res: Result) -> None:
    print("\n" + res.render())


def _assert_illumos_path(cluster: Cluster, fake: Illumos) -> None:
    """Each daemon ran on the illumos backend, through the fakes: it said so, it read link
    state from dladm and its default route (the witness) from route, and n1 added the VIP
    with ipadm. The PF_ROUTE link monitor cannot open on Linux: each daemon process said so
    once (LanWatch logs each distinct error once), not at every check."""
    for node in NODES:
        started = cluster.events(node, "started")
        assert started and all(ev.get("backend") == "illumos" for ev in started), node
        calls = fake.calls(node)
        assert ["dladm", "show-link", "-p", "-o", "link,state", IFACE] in calls, node
        assert ["route", "-n", "get", "default"] in calls, node
        monitor = [
            ev for ev in cluster.events(node, "lan_error") if ev.get("where") == "link-monitor"
        ]
        assert len(monitor) == len(started), cluster.tail_logs()
        assert all(NO_PF_ROUTE in (ev.get("msg") or "") for ev in monitor), monitor
    assert CREATE in fake.calls("n1")


def test_power_off_moves_the_vip_through_ipadm(tmp_path: Path, libdlpi_dir: Path) -> None:
    with illumos_cluster(tmp_path, libdlpi_dir) as (cluster, fake):
        assert fake.objects("n1").get(OBJECT) == VIP_CIDR
        assert OBJECT not in fake.objects("n2")
        before = len(fake.calls("n2"))
        res = power_off(cluster)
        _show(res)
        assert cluster.holds_vip("n2")
        assert cluster.state("n2") == "active"
        assert res.owner == "n2", res.render()
        assert CREATE in fake.calls("n2")[before:]  # the VIP came from ipadm create-addr
        assert fake.objects("n2").get(OBJECT) == VIP_CIDR
        samples = load_samples(cluster.dir / "client-power-off.jsonl")
        assert first_answer_from(samples, "n2", res.fault_at) is not None
        assert double_answers(samples) == 0, res.render()
        assert all(len(s.arp_macs) <= 1 for s in samples), res.render()
        assert cluster.lab.neigh("client", VIP) == cluster.lab.mac("n2")
        _assert_illumos_path(cluster, fake)

        def reboot() -> None:
            cluster.kill("n1")
            fake.boot("n1")
            assert OBJECT not in fake.objects("n1")  # -t: a VIP never comes back at boot
            assert not cluster.holds_any_vip("n1")
            cluster.lab.link_up("n1")
            cluster.start("n1")

        n2_before = len(fake.calls("n2"))
        back = failback(cluster, reboot)
        _show(back)
        cluster.settle("n1", timeout=30.0)
        assert back.double_answers == 0, back.render()
        assert back.owner == "n1", back.render()
        assert DELETE in fake.calls("n2")[n2_before:]
        assert OBJECT not in fake.objects("n2")
        assert fake.objects("n1").get(OBJECT) == VIP_CIDR


def test_sigkill_of_the_active_daemon_moves_nothing(tmp_path: Path, libdlpi_dir: Path) -> None:
    with illumos_cluster(tmp_path, libdlpi_dir) as (cluster, fake):
        before = len(fake.calls("n2"))
        res = sigkill(cluster)
        _show(res)
        # n2's takeover probe went out through libdlpi and n1's kernel answered it.
        vetoes = cluster.events("n2", "takeover_vetoed", res.fault_at)
        assert vetoes, cluster.tail_logs()
        assert vetoes[0].get("mac") == cluster.lab.mac("n1")
        assert not [c for c in fake.calls("n2")[before:] if c[:2] == ["ipadm", "create-addr"]]
        assert not cluster.holds_any_vip("n2")
        assert res.double_answers == 0 and res.outage_ms == 0 and res.moves == 0, res.render()
        assert res.owner == "n1", res.render()
        cluster.settle("n1", timeout=30.0)
        # The address object outlived the daemon; the restarted one carries on with it.
        assert fake.objects("n1").get(OBJECT) == VIP_CIDR
        assert cluster.owns("n1")
        _assert_illumos_path(cluster, fake)


def test_owner_link_loss_hands_over_through_ipadm(tmp_path: Path, libdlpi_dir: Path) -> None:
    """The active n1's VIP link loses carrier (heartbeat on the second network): n1 removes
    the VIP with ipadm delete-addr and n2 adds it with ipadm create-addr. Which signal made n1
    give up is printed: without the PF_ROUTE monitor it is the witness miss, not the link
    (see the next test)."""
    with illumos_cluster(tmp_path, libdlpi_dir, heartbeat_net=True) as (cluster, fake):
        before = {node: len(fake.calls(node)) for node in NODES}
        res = vip_link_loss(cluster, "carrier")
        gave_up = [
            ev.get("cause")
            for ev in cluster.events("n1", "eligibility", res.fault_at)
            if ev.get("eligible") == "false"
        ]
        res.notes.append(f"n1 became ineligible because: {', '.join(map(str, gave_up))}")
        _show(res)
        assert cluster.holds_vip("n2") and not cluster.holds_any_vip("n1")
        assert res.owner == "n2", res.render()
        assert res.double_answers == 0 and res.two_owners_ms == 0, res.render()
        assert DELETE in fake.calls("n1")[before["n1"] :]
        assert CREATE in fake.calls("n2")[before["n2"] :]
        assert OBJECT not in fake.objects("n1")
        assert fake.objects("n2").get(OBJECT) == VIP_CIDR


def test_link_loss_is_seen_through_dladm(tmp_path: Path, libdlpi_dir: Path) -> None:
    """No PF_ROUTE monitor: the daemon must carry on with dladm queries, so the owner learns
    of its link going down from `dladm show-link`, as it would from the monitor."""
    with illumos_cluster(tmp_path, libdlpi_dir, heartbeat_net=True) as (cluster, fake):
        fault_at = time.time()
        before = len(fake.calls("n1"))
        cluster.lab.vip_link_down("n1", "carrier")
        cluster.wait_event("n1", "link", fault_at, 5.0, carrier="false")
        asked = fake.calls("n1")[before:]
        assert ["dladm", "show-link", "-p", "-o", "link,state", IFACE] in asked
