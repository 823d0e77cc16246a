"""Real daemons in the namespace lab, faults injected, and what the client saw.

Shared by `havip demo`, the end-to-end tests and the benchmark, so all three measure the same
way: a `Cluster` runs `havip run` for n1 and n2 inside `havip.lab.Lab`, reads their one-line log
events, and each scenario function injects one fault and returns a `Result` with the timeline,
the client-observed outage and the number of rounds in which two MACs answered for the VIP.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

from havip import pki
from havip.lab.client import ArpMode, Sample, double_answers, first_answer_from, load_samples
from havip.lab.client import outages as find_outages
from havip.lab.netns import ADDRESSES, IFACE, VIP, VIP_CIDR, Lab

NODES = ("n1", "n2")
PORT = 7411
METRICS = "127.0.0.1:9741"  # each namespace has its own loopback
SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
CLIENT_INTERVAL = 0.01


class ScenarioError(AssertionError):
    """The cluster did not reach an expected state in time; says which and shows the logs."""


@dataclass(frozen=True, kw_only=True)
class LogEvent:
    """One parsed daemon log line."""

    ts: float
    node: str
    level: str
    name: str
    fields: dict[str, str]

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


def parse_log_line(line: str) -> LogEvent | None:
    """`TIME NODE LEVEL event=NAME k=v ...` -> LogEvent; None for anything else."""
    parts = line.split(" ", 3)
    if len(parts) < 4 or not parts[3].startswith("event="):
        return None
    try:
        ts = datetime.fromisoformat(parts[0]).timestamp()
        tokens = shlex.split(parts[3])
    except ValueError:
        return None
    fields = dict(tok.split("=", 1) for tok in tokens if "=" in tok)
    return LogEvent(ts=ts, node=parts[1], level=parts[2], name=fields.pop("event"), fields=fields)


def read_events(path: Path, name: str | None = None, after: float = 0.0) -> list[LogEvent]:
    """The events in a daemon log file (all, or those named `name`) logged at or after `after`."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        ev = parse_log_line(line)
        if ev and ev.ts >= after and (name is None or ev.name == name):
            found.append(ev)
    return found


def _config_text(node: str, *, fast: bool, preempt: bool, workdir: Path) -> str:
    peer = "n2" if node == "n1" else "n1"
    return "\n".join(
        [
            f'node = "{node}"',
            'primary = "n1"',
            f"preempt = {'true' if preempt else 'false'}",
            f'listen = "{ADDRESSES[node]}:{PORT}"',
            f'state_dir = "{workdir / ("state-" + node)}"',
            "",
            "[peer]",
            f'name = "{peer}"',
            f'address = "{ADDRESSES[peer]}:{PORT}"',
            "",
            "[tls]",
            f'ca = "{workdir / "pki" / "ca.crt"}"',
            f'cert = "{workdir / "pki" / (node + ".crt")}"',
            f'key = "{workdir / "pki" / (node + ".key")}"',
            "",
            "[timing]",
            f'profile = "{"fast" if fast else "default"}"',
            "",
            "[[vip]]",
            f'address = "{VIP_CIDR}"',
            f'interface = "{IFACE}"',
            "",
            "[backend]",
            'type = "linux"',
            "",
            "[metrics]",
            f'listen = "{METRICS}"',
            "",
        ]
    )


class Cluster:
    """n1 and n2 running `havip run` in a lab, plus echo responders and the client probe."""

    def __init__(
        self, lab: Lab, workdir: Path, *, fast: bool = False, preempt: bool = True
    ) -> None:
        self.lab = lab
        self.dir = workdir
        self.fast = fast
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self._logs: dict[str, IO[str]] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "pki" / "ca.crt").exists():
            pki.init_pki(
                workdir / "pki",
                [pki.NodeSpec(name=n, address=IPv4Address(ADDRESSES[n])) for n in NODES],
            )
        for node in NODES:
            text = _config_text(node, fast=fast, preempt=preempt, workdir=workdir)
            self.config(node).write_text(text)

    def config(self, node: str) -> Path:
        return self.dir / f"{node}.toml"

    def log_path(self, node: str) -> Path:
        return self.dir / f"{node}.log"

    # ---- processes ----------------------------------------------------------------------------

    def start(self, node: str) -> subprocess.Popen[Any]:
        """Start (or restart) node's daemon; its log lines append to NODE.log."""
        if node in self._logs:
            self._logs[node].close()
        self._logs[node] = open(self.log_path(node), "a")  # noqa: SIM115 (closed in close())
        argv = self.lab.python_argv("havip", "run", "--config", str(self.config(node)))
        proc = self.lab.run(node, argv, stdout=subprocess.DEVNULL, stderr=self._logs[node])
        self.procs[node] = proc
        return proc

    def start_echoes(self) -> None:
        for node in NODES:
            self.lab.start_echo(node)

    def signal(self, node: str, sig: signal.Signals) -> None:
        proc = self.procs[node]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill(self, node: str) -> None:
        """SIGKILL the daemon and reap it."""
        self.signal(node, signal.SIGKILL)
        self.procs[node].wait(timeout=10)

    def stop(self, node: str, timeout: float = 10.0) -> int:
        """SIGTERM (planned handover) and wait for the exit code."""
        self.signal(node, signal.SIGTERM)
        return self.procs[node].wait(timeout=timeout * SCALE)

    def close(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                self.kill(node)
        for f in self._logs.values():
            f.close()

    def pid(self, node: str) -> int:
        return self.procs[node].pid

    # ---- observing ----------------------------------------------------------------------------

    def events(self, node: str, name: str | None = None, after: float = 0.0) -> list[LogEvent]:
        return read_events(self.log_path(node), name, after)

    def state(self, node: str) -> str | None:
        """The state of node's last transition (None before its first)."""
        last = self.events(node, "transition")
        return last[-1].get("to") if last else None

    def holds_vip(self, node: str) -> bool:
        out = self.lab.exec(node, ["ip", "-o", "-4", "addr", "show", "dev", IFACE]).stdout
        return f" {VIP_CIDR} " in out

    def wait(self, what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll cond (bounded) until it holds; ScenarioError with both logs otherwise."""
        deadline = time.monotonic() + timeout * SCALE
        while not cond():
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out waiting until {what}\n{self.tail_logs()}")
            for node, proc in self.procs.items():
                if proc.poll() not in (None, 0, -signal.SIGKILL):
                    raise ScenarioError(
                        f"{node}'s daemon exited {proc.returncode} while waiting until {what}\n"
                        f"{self.tail_logs()}"
                    )
            time.sleep(0.02)

    def wait_event(
        self, node: str, name: str, after: float, timeout: float = 10.0, **match: str
    ) -> LogEvent:
        found: list[LogEvent] = []

        def seen() -> bool:
            found[:] = [
                ev
                for ev in self.events(node, name, after)
                if all(ev.get(k) == v for k, v in match.items())
            ]
            return bool(found)

        self.wait(f"{node} logs event={name} {match}", seen, timeout)
        return found[0]

    def settle(self, owner: str = "n1", timeout: float = 15.0) -> None:
        """Wait until `owner` is active with the VIP and the other node is a connected standby."""
        other = "n2" if owner == "n1" else "n1"

        def settled() -> bool:
            if self.state(owner) != "active" or self.state(other) != "standby":
                return False
            ups = self.events(other, "peer_up")
            lost = self.events(other, "peer_lost")
            connected = bool(ups) and (not lost or ups[-1].ts > lost[-1].ts)
            return connected and self.holds_vip(owner) and not self.holds_vip(other)

        self.wait(f"{owner} is active and {other} a connected standby", settled, timeout)

    def tail_logs(self, lines: int = 25) -> str:
        out = []
        for node in NODES:
            path = self.log_path(node)
            text = path.read_text().splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {node}.log (last {lines} lines)\n" + "\n".join(text))
        return "\n".join(out)

    @contextmanager
    def client(self, name: str, duration: float = 60.0) -> Iterator[Path]:
        """Run the client probe while the block runs; yields its output file."""
        out = self.dir / f"client-{name}.jsonl"
        out.unlink(missing_ok=True)
        proc = self.lab.start_client(
            out,
            duration=duration * SCALE,
            interval=CLIENT_INTERVAL,
            arp_mode=ArpMode.PASSIVE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self.wait("the client probe answers", lambda: _answered(out) >= 20, 10.0)
            yield out
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answered(path: Path) -> int:
    try:
        return sum(1 for s in load_samples(path) if s.answer is not None)
    except (OSError, ValueError):
        return 0


# ---- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    """What one scenario run showed, from the daemons' logs and the client's samples."""

    name: str
    fault_at: float
    timeline: list[tuple[float, str]] = field(default_factory=list)
    outage_ms: float = 0.0
    double_answers: int = 0
    rounds: int = 0
    owner: str | None = None  # whose MAC the client's neighbour entry for the VIP names
    notes: list[str] = field(default_factory=list)

    def mark(self, when: float | None, what: str) -> None:
        if when is not None:
            self.timeline.append((when, what))
            self.timeline.sort()

    def render(self) -> str:
        lines = [f"{self.name}:"]
        for when, what in self.timeline:
            lines.append(f"  {(when - self.fault_at) * 1000:+9.1f} ms  {what}")
        lines.append(
            f"  client-observed outage {self.outage_ms:.0f} ms over {self.rounds} rounds; "
            f"rounds with two MACs answering for the VIP: {self.double_answers}; "
            f"client's ARP entry points at {self.owner or 'nobody'}"
        )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _analyse(cluster: Cluster, res: Result, samples: list[Sample], since: float) -> None:
    window = [s for s in samples if s.t_send >= since]
    res.rounds = len(window)
    res.outage_ms = max((o.duration_ms for o in find_outages(window)), default=0.0)
    res.double_answers = double_answers(window)
    mac = cluster.lab.neigh("client", VIP)
    res.owner = {cluster.lab.mac(n): n for n in NODES}.get(mac or "", mac)


def _owner_events(cluster: Cluster, node: str, res: Result, after: float) -> None:
    for name, text in (
        ("peer_lost", f"failure detected by {node}"),
        ("resign_received", f"{node} receives the handover"),
        ("vip_added", f"VIP added on {node}"),
        ("garp_sent", f"gratuitous ARP sent by {node}"),
    ):
        evs = cluster.events(node, name, after)
        if evs:
            res.mark(evs[0].ts, text)


# ---- scenarios ---------------------------------------------------------------------------------


def _before_fault() -> None:
    """Let the client settle, then wait a random extra moment: a fault must land anywhere in
    the keepalive cycle, as real ones do, not at a phase fixed by the script's own pacing."""
    time.sleep(0.3 + random.uniform(0.0, 0.5))


def power_off(cluster: Cluster) -> Result:
    """n1 loses power: its link goes down and its daemon freezes. n2 must take over."""
    cluster.settle("n1")
    with cluster.client("power-off") as out:
        _before_fault()
        res = Result(
            name="power-off of the active host (n1 link down + daemon frozen)", fault_at=time.time()
        )
        cluster.lab.link_down("n1")
        cluster.signal("n1", signal.SIGSTOP)
        res.mark(res.fault_at, "fault injected: n1 link down, daemon SIGSTOP")
        cluster.wait_event("n2", "vip_added", res.fault_at)
        cluster.wait(
            "the client gets answers from n2",
            lambda: first_answer_from(load_samples(out), "n2", res.fault_at) is not None,
        )
        time.sleep(0.3)
    samples = load_samples(out)
    _owner_events(cluster, "n2", res, res.fault_at)
    res.mark(first_answer_from(samples, "n2", res.fault_at), "first client answer from n2")
    _analyse(cluster, res, samples, res.fault_at - 0.2)
    return res


def reboot_n1_after_power_off(cluster: Cluster) -> None:
    """Power returns: the frozen daemon is gone, the host boots without the VIP, havip starts."""
    cluster.kill("n1")
    if cluster.holds_vip("n1"):
        cluster.lab.del_address("n1", VIP_CIDR)
    cluster.lab.link_up("n1")
    cluster.start("n1")


def failback(cluster: Cluster, returning: Callable[[], None]) -> Result:
    """n2 holds the VIP; `returning()` brings n1 back; with preemption n1 takes it back."""
    cluster.wait("n2 holds the VIP", lambda: cluster.state("n2") == "active")
    with cluster.client("failback") as out:
        _before_fault()
        res = Result(name="failback to the returning primary (preempt on)", fault_at=time.time())
        returning()
        res.mark(res.fault_at, "n1 is back")
        cluster.wait_event("n1", "vip_added", res.fault_at, timeout=15.0)
        cluster.wait(
            "the client gets answers from n1",
            lambda: first_answer_from(load_samples(out), "n1", res.fault_at) is not None,
        )
        time.sleep(0.3)
    samples = load_samples(out)
    for name, text in (("resign_sent", "n2 removed the VIP and sent RESIGN"),):
        evs = cluster.events("n2", name, res.fault_at)
        if evs:
            res.mark(evs[0].ts, text)
    _owner_events(cluster, "n1", res, res.fault_at)
    res.mark(first_answer_from(samples, "n1", res.fault_at), "first client answer from n1")
    _analyse(cluster, res, samples, res.fault_at)
    return res


def sigterm_handover(cluster: Cluster) -> Result:
    """Planned: SIGTERM on the active n1 hands the VIP to n2 at once."""
    cluster.settle("n1")
    with cluster.client("sigterm") as out:
        _before_fault()
        res = Result(name="SIGTERM handover n1 -> n2", fault_at=time.time())
        code = cluster.stop("n1")
        res.mark(res.fault_at, "SIGTERM sent to n1")
        if code != 0:
            res.notes.append(f"n1 exited {code}, expected 0")
        cluster.wait(
            "the client gets answers from n2",
            lambda: first_answer_from(load_samples(out), "n2", res.fault_at) is not None,
        )
        time.sleep(0.3)
    samples = load_samples(out)
    removed = cluster.events("n1", "vip_removed", res.fault_at)
    res.mark(removed[0].ts if removed else None, "VIP removed on n1")
    _owner_events(cluster, "n2", res, res.fault_at)
    res.mark(first_answer_from(samples, "n2", res.fault_at), "first client answer from n2")
    _analyse(cluster, res, samples, res.fault_at - 0.2)
    return res


def _no_takeover(
    cluster: Cluster,
    name: str,
    inject: Callable[[], None],
    heal: Callable[[], None],
    hold: float,
) -> Result:
    """Inject a fault that must NOT move the VIP, hold it, heal it; n1 must still own."""
    cluster.settle("n1")
    with cluster.client(name.split()[0]) as out:
        _before_fault()
        res = Result(name=name, fault_at=time.time())
        inject()
        res.mark(res.fault_at, "fault injected")
        cluster.wait_event("n2", "peer_lost", res.fault_at)
        time.sleep(hold * SCALE)
        healed = time.time()
        heal()
        res.mark(healed, "fault healed")
        time.sleep(0.5)
    samples = load_samples(out)
    for node in NODES:
        for ev in cluster.events(node, "peer_lost", res.fault_at)[:1]:
            res.mark(ev.ts, f"{node} lost its peer ({ev.get('reason')})")
    vetoes = cluster.events("n2", "takeover_vetoed", res.fault_at)
    res.mark(vetoes[0].ts if vetoes else None, "n2's takeover vetoed: the VIP still answers")
    took = [
        ev for ev in cluster.events("n2", "transition", res.fault_at) if ev.get("to") == "active"
    ]
    if took:
        res.notes.append(f"n2 became active at {took[0].ts - res.fault_at:+.3f} s")
    _analyse(cluster, res, samples, res.fault_at - 0.2)
    return res


def sigkill(cluster: Cluster, hold: float = 2.0) -> Result:
    """kill -9 of the active daemon: its host still serves the VIP, so nothing may move."""
    return _no_takeover(
        cluster,
        "SIGKILL of the active daemon (n1), then restart",
        lambda: cluster.kill("n1"),
        lambda: (cluster.start("n1"), None)[1],
        hold,
    )


def sigstop(cluster: Cluster, hold: float = 2.0) -> Result:
    """The active daemon freezes (SIGSTOP) on a live host, then resumes."""
    return _no_takeover(
        cluster,
        "SIGSTOP of the active daemon (n1), then SIGCONT",
        lambda: cluster.signal("n1", signal.SIGSTOP),
        lambda: cluster.signal("n1", signal.SIGCONT),
        hold,
    )


def cut_heartbeat(cluster: Cluster, hold: float = 2.0) -> Result:
    """IP between n1 and n2 dropped, ARP still passes: the VIP must stay on n1."""
    return _no_takeover(
        cluster,
        "heartbeat path cut between n1 and n2 (ARP still passes)",
        cluster.lab.cut_heartbeat,
        cluster.lab.heal_heartbeat,
        hold,
    )


@contextmanager
def running_cluster(
    workdir: Path, *, fast: bool = False, preempt: bool = True
) -> Iterator[Cluster]:
    """A fresh lab with both daemons and the echo responders; everything removed afterwards."""
    with Lab() as lab:
        cluster = Cluster(lab, workdir, fast=fast, preempt=preempt)
        try:
            cluster.start_echoes()
            cluster.start("n1")
            cluster.start("n2")
            yield cluster
        finally:
            cluster.close()
