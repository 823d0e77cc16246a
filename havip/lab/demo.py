"""`havip demo`: two real daemons, a real failover, and what a client saw.

As root on Linux it builds a lab of network namespaces (a bridge, n1, n2 and a client), mints a
PKI, starts `havip run` on n1 and n2, has the client send a datagram to the VIP every 10 ms, cuts
n1 off as a power failure would (link down, daemon frozen) and prints the timeline; then n1
reboots and takes the VIP back. Without root it says why and runs the same two daemons on
loopback with the dry-run backend instead. Everything is removed afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from havip import pki
from havip.lab.netns import Lab
from havip.lab.scenario import (
    LogEvent,
    Result,
    ScenarioError,
    failback,
    power_off,
    read_events,
    reboot_n1_after_power_off,
    running_cluster,
)


def say(text: str) -> None:
    print(text, flush=True)


def run_demo(*, fast: bool = False, loopback: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    Lab.install_signal_cleanup()
    why = "--loopback was given" if loopback else Lab.available()
    try:
        with tempfile.TemporaryDirectory(prefix="havip-demo-") as tmp:
            if why is None:
                # A demo killed with SIGKILL could not clean up; clear what it left first.
                stale = Lab.remove_stale()
                if stale:
                    say(f"havip demo: removed labs left by killed runs: {', '.join(stale)}.")
                return _namespace_demo(Path(tmp), fast=fast)
            say(f"havip demo: no network namespaces ({why}).")
            say("Running the same two daemons on loopback with the dry-run backend instead.\n")
            return _loopback_demo(Path(tmp), fast=fast)
    except KeyboardInterrupt:
        say("\ninterrupted: everything the demo created has been removed.")
        return 1
    except ScenarioError as exc:
        say(f"\nthe demo failed: {exc}")
        return 1


def _namespace_demo(tmp: Path, *, fast: bool) -> int:
    profile = "fast" if fast else "default"
    say(f"havip demo: two nodes in network namespaces, timing profile '{profile}'.")
    say("  lan: a bridge; n1 198.18.0.1 (primary), n2 198.18.0.2, client 198.18.0.10")
    say("  VIP 198.18.0.100/24; the client sends a datagram to it every 10 ms.\n")
    with running_cluster(tmp, fast=fast) as cluster:
        cluster.settle("n1")
        say("1. n1 holds the VIP, n2 is a connected standby (one mutual-TLS link).")
        say("2. Power failure on n1: its link goes down and its daemon freezes.\n")
        res = power_off(cluster)
        say(res.render() + "\n")
        say("3. Power returns: n1 reboots (no VIP), havip starts, and with preemption")
        say("   n2 removes the VIP, hands over (RESIGN) and n1 adds it.\n")
        back = failback(cluster, lambda: reboot_n1_after_power_off(cluster))
        say(back.render() + "\n")
        _summary(res, back)
        say(f"Logs were in {tmp} (removed now). The lab is being torn down.")
    return 0 if res.owner == "n2" and back.owner == "n1" else 1


def _summary(res: Result, back: Result) -> None:
    both = res.double_answers + back.double_answers
    say(
        f"Summary: failover outage {res.outage_ms:.0f} ms, failback gap {back.outage_ms:.0f} ms, "
        f"rounds with two owners answering: {both}."
    )


# ---- without root: loopback and the dry-run backend -----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _loopback_config(tmp: Path, node: str, port: int, metrics: int, fast: bool) -> Path:
    peer = "n2" if node == "n1" else "n1"
    path = tmp / f"{node}.toml"
    path.write_text(
        f'node = "{node}"\nprimary = "n1"\nlisten = "127.0.0.1:{port}"\n'
        f'state_dir = "state-{node}"\n\n[peer]\nname = "{peer}"\naddress = "127.0.0.1:{port}"\n\n'
        f'[tls]\nca = "pki/ca.crt"\ncert = "pki/{node}.crt"\nkey = "pki/{node}.key"\n\n'
        f'[timing]\nprofile = "{"fast" if fast else "default"}"\n\n'
        '[[vip]]\naddress = "198.18.0.100/24"\ninterface = "lo"\n\n'
        '[backend]\ntype = "dry-run"\nlan_dir = "lan"\n\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
    )
    return path


def _wait_event(log: Path, name: str, after: float, timeout: float = 15.0) -> LogEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read_events(log, name, after)
        if found:
            return found[0]
        time.sleep(0.02)
    raise ScenarioError(f"no event={name} in {log.name} within {timeout:.0f} s")


def _loopback_demo(tmp: Path, *, fast: bool) -> int:
    pki.init_pki(tmp / "pki", [pki.NodeSpec(name="n1"), pki.NodeSpec(name="n2")])
    port = _free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {n: tmp / f"{n}.log" for n in ("n1", "n2")}
    configs = {n: _loopback_config(tmp, n, port, _free_port(), fast) for n in ("n1", "n2")}

    def start(node: str) -> None:
        with open(logs[node], "a") as log:
            procs[node] = subprocess.Popen(
                [sys.executable, "-m", "havip", "run", "--config", str(configs[node])],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=tmp,
            )

    try:
        start("n1")
        start("n2")
        t0 = time.time()
        _wait_event(logs["n1"], "vip_added", 0)
        _wait_event(logs["n2"], "peer_up", 0)
        say("1. n1 holds the (pretend) VIP, n2 is a connected standby over mutual TLS.")
        say("2. 'Power failure' on n1: its daemon freezes and its host stops answering.\n")
        os.kill(procs["n1"].pid, signal.SIGSTOP)
        (tmp / "lan" / "198.18.0.100" / "n1").unlink(missing_ok=True)
        t0 = time.time()
        steps = [
            ("peer_lost", "failure detected by n2"),
            ("vip_added", "VIP added on n2 (dry-run: recorded, not configured)"),
        ]
        say("  +0.0 ms  fault injected")
        for name, text in steps:
            ev = _wait_event(logs["n2"], name, t0)
            say(f"  {(ev.ts - t0) * 1000:+.1f} ms  {text}")
        say("\n3. n1 comes back (restarted); with preemption n2 hands the VIP back.\n")
        os.kill(procs["n1"].pid, signal.SIGKILL)
        procs["n1"].wait()
        t1 = time.time()
        start("n1")
        resign = _wait_event(logs["n2"], "resign_sent", t1)
        added = _wait_event(logs["n1"], "vip_added", t1)
        say(f"  {(resign.ts - t1) * 1000:+.1f} ms  n2 removed the VIP and sent RESIGN")
        say(f"  {(added.ts - t1) * 1000:+.1f} ms  VIP added on n1")
        say("\nRun as root for the real thing: namespaces, ARP and a client measuring the outage.")
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()
