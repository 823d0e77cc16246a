"""A throwaway lab of Linux network namespaces: a bridge, two servers and a client.

    LAN namespace:  br0 ── <prefix>n1 ── eth0 in n1      198.18.0.1/24   default via .254
                        │                                2001:2:0:1::1/64   default via ::fe
                        ├─ <prefix>n2 ── eth0 in n2      198.18.0.2/24   default via .254
                        │                                2001:2:0:1::2/64   default via ::fe
                        ├─ <prefix>cl ── eth0 in client  198.18.0.10/24 + 198.18.0.254/24
                        │                                2001:2:0:1::10/64 + 2001:2:0:1::fe/64
                        └─ <prefix>rg ── eth0 in rogue   198.18.0.66/24  (Lab(rogue=True))
                                                         2001:2:0:1::66/64
                    br1 ── <prefix>h1 ── eth1 in n1      198.19.0.1/24   (Lab(heartbeat_net=True))
                        └─ <prefix>h2 ── eth1 in n2      198.19.0.2/24

The VIPs (198.18.0.100/24, and 2001:2:0:1::100/64 for IPv6 scenarios) are left to the daemons.
The client namespace also holds the "gateway" 198.18.0.254 and 2001:2:0:1::fe, n1's and n2's
default routes, so the daemons' default witnesses exist and answer ARP and ND.

IPv6 uses only 2001:2::/48 (RFC 5180's benchmarking range, the twin of 198.18.0.0/15) and the
kernel's own fe80:: link-local addresses, inside the lab's namespaces. Addresses are added
`nodad` and the namespaces skip DAD for their link-local addresses too, so nothing waits a
second for the kernel's duplicate detection; and they keep IPv6 addresses on link down
(keep_addr_on_down), as IPv4 does, so a link fault changes the same things in both families.

The optional second network carries the heartbeat when a scenario wants the VIP's link
faults not to touch it. The optional "rogue" host can claim the VIP and forge gratuitous ARP.

Faults are nftables rules in the LAN namespace's bridge (loss, a cut heartbeat, a layer-2
partition, a node's port dropping everything, one-way loss) and link changes (admin down inside
a node, carrier loss by downing the bridge side of its veth, carrier blips). Nothing is created
in the root namespace: the veth pairs are created straight into the lab namespaces. Everything
the lab makes (namespaces, processes) is removed by `destroy()`, which also runs at interpreter
exit and on leaving the context manager.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from havip.lab.client import ECHO_PORT, ArpMode

NODES = ("n1", "n2", "client")
SERVERS = ("n1", "n2")
ROGUE = "rogue"
ALL_NODES = (*NODES, ROGUE)
LAN = "lan"
IFACE = "eth0"
HB_IFACE = "eth1"
BRIDGE = "br0"
HB_BRIDGE = "br1"
PREFIXLEN = 24
ADDRESSES = {"n1": "198.18.0.1", "n2": "198.18.0.2", "client": "198.18.0.10", ROGUE: "198.18.0.66"}
PREFIXLEN6 = 64
ADDRESSES6 = {
    "n1": "2001:2:0:1::1",
    "n2": "2001:2:0:1::2",
    "client": "2001:2:0:1::10",
    ROGUE: "2001:2:0:1::66",
}
GATEWAY6 = "2001:2:0:1::fe"  # held by the client namespace; n1's and n2's IPv6 default route
VIP6 = "2001:2:0:1::100"
VIP6_CIDR = f"{VIP6}/{PREFIXLEN6}"
HB_ADDRESSES = {"n1": "198.19.0.1", "n2": "198.19.0.2"}
GATEWAY = "198.18.0.254"  # held by the client namespace; n1's and n2's default route
VIP = "198.18.0.100"
VIP_CIDR = f"{VIP}/{PREFIXLEN}"
CMD_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
MAX_BLIPS = 1000
MAX_BLIP_S = 60.0


class Isolation(StrEnum):
    """How isolate() cuts a node off its switch port."""

    DROP = "drop"  # the port drops every frame both ways; the node keeps carrier
    CARRIER = "carrier"  # the bridge side of the node's veth goes down: the node sees NO-CARRIER


_PORT_SUFFIX = {"n1": "n1", "n2": "n2", "client": "cl", ROGUE: "rg"}
_HB_PORT_SUFFIX = {"n1": "h1", "n2": "h2"}
_TABLE = "havip_lab"
_MARK = "havip-lab"
_BASE_CHAIN = "havip_fwd"
_LOSS_CHAIN = "havip_loss"
_HB_CHAIN = "havip_hb"
_L2_CHAIN = "havip_l2"
_ISO_CHAIN = "havip_iso"
_ONEWAY_CHAIN = "havip_oneway"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class LabError(RuntimeError):
    """The lab could not be built or changed; the message names the command and its error."""


def _run(argv: Sequence[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"lab: `{' '.join(argv)}` failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace("\n", " | ")
        raise LabError(f"lab: `{' '.join(argv)}` exited {result.returncode}: {detail}")
    return result


def _unique_prefix(tag: str = "hv") -> str:
    # pid keeps concurrent test processes apart; the random part keeps labs in one process apart.
    return f"{tag}{os.getpid() % 100000}{secrets.token_hex(2)[:3]}"


class Lab:
    """The namespace lab. Use as a context manager, or call create() and destroy()."""

    def __init__(
        self, prefix: str | None = None, *, heartbeat_net: bool = False, rogue: bool = False
    ) -> None:
        self.prefix = prefix or _unique_prefix()
        if len(self.prefix) > 12:
            raise ValueError(f"lab prefix {self.prefix!r} is longer than 12 characters")
        self.heartbeat_net = heartbeat_net
        self.rogue = rogue
        self.nodes: tuple[str, ...] = (*NODES, ROGUE) if rogue else NODES
        self._drop_isolated: set[str] = set()
        self._one_way: set[tuple[str, str]] = set()
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._macs: dict[str, str] = {}
        self._created = False

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def available() -> str | None:
        """None if the lab can be built here, else the reason it cannot."""
        if not sys.platform.startswith("linux"):
            return f"network namespaces need Linux (this is {sys.platform})"
        if os.geteuid() != 0:
            return "not root (network namespaces need root)"
        for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
            if shutil.which(tool) is None:
                return f"`{tool}` not found on PATH (install {package})"
        name = _unique_prefix("hvchk")
        try:
            _run(["ip", "netns", "add", name])
        except LabError as exc:
            return f"`ip netns add` does not work: {exc}"
        try:
            _run(["ip", "-n", name, "link", "add", "name", BRIDGE, "type", "bridge"])
            veth = ["ip", "-n", name, "link", "add", "name", "hvchk0", "type", "veth"]
            _run([*veth, "peer", "name", "hvchk1"])
            _run(["ip", "netns", "exec", name, "nft", "-f", "-"], stdin=_nft_table_script())
        except LabError as exc:
            return str(exc)
        finally:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        return None

    @staticmethod
    def install_signal_cleanup() -> None:
        """Turn SIGTERM and SIGHUP into SystemExit so finally blocks and atexit clean up.

        Call from the main thread. SIGINT already raises KeyboardInterrupt.
        """

        def _exit(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit)

    def create(self) -> Lab:
        """Build the namespaces, bridge, links, addresses and the (empty) fault rules."""
        if self._created:
            return self
        self._created = True
        atexit.register(self.destroy)
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        for node in (LAN, *self.nodes):
            _run(["ip", "netns", "add", self.ns_name(node)])
            self._namespaces.append(self.ns_name(node))
        lan = self.ns_name(LAN)
        _run(["ip", "-n", lan, "link", "set", "lo", "up"])
        _run(["ip", "-n", lan, "link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0"])
        # Who owns this lab, so remove_stale() can clear it up if we die by SIGKILL.
        owner = f"{_MARK} prefix={self.prefix} pid={os.getpid()} start={_start_time(os.getpid())}"
        _run(["ip", "-n", lan, "link", "set", BRIDGE, "alias", owner])
        _run(["ip", "-n", lan, "link", "set", BRIDGE, "up"])
        for node in self.nodes:
            ns = self.ns_name(node)
            _ipv6_sysctls(ns)
            self._add_port(
                self.port_name(node), BRIDGE, ns, IFACE, ADDRESSES[node], ADDRESSES6[node]
            )
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # The witness: the gateway address lives in the client namespace and answers ARP / ND.
        client = self.ns_name("client")
        _run(["ip", "-n", client, "addr", "add", f"{GATEWAY}/{PREFIXLEN}", "dev", IFACE])
        _run(["ip", "-n", client, "addr", "add", f"{GATEWAY6}/{PREFIXLEN6}", "dev", IFACE, "nodad"])
        for node in SERVERS:
            _run(["ip", "-n", self.ns_name(node), "route", "add", "default", "via", GATEWAY])
            _run(["ip", "-n", self.ns_name(node), "-6", "route", "add", "default", "via", GATEWAY6])
        if self.heartbeat_net:
            bridge = ["ip", "-n", lan, "link", "add", "name", HB_BRIDGE, "type", "bridge"]
            _run([*bridge, "stp_state", "0"])
            _run(["ip", "-n", lan, "link", "set", HB_BRIDGE, "up"])
            for node in SERVERS:
                port = self.hb_port_name(node)
                self._add_port(port, HB_BRIDGE, self.ns_name(node), HB_IFACE, HB_ADDRESSES[node])
        _run(["ip", "netns", "exec", lan, "nft", "-f", "-"], stdin=_nft_table_script())
        for node in self.nodes:
            self._wait_carrier(node)
            self._macs[node] = self._read_mac(node)
        if self.heartbeat_net:
            for node in SERVERS:
                self._wait_carrier(node, HB_IFACE)

    def _add_port(
        self, port: str, bridge: str, ns: str, iface: str, address: str, address6: str | None = None
    ) -> None:
        lan = self.ns_name(LAN)
        veth = ["ip", "link", "add", "name", port, "netns", lan, "type", "veth"]
        _run([*veth, "peer", "name", iface, "netns", ns])
        _run(["ip", "-n", lan, "link", "set", port, "master", bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{PREFIXLEN}", "dev", iface])
        if address6 is not None:  # the LAN has IPv6 too, the heartbeat network not
            cidr = f"{address6}/{PREFIXLEN6}"
            _run(["ip", "-n", ns, "addr", "add", cidr, "dev", iface, "nodad"])
        _run(["ip", "-n", ns, "link", "set", iface, "up"])

    def _wait_carrier(self, node: str, iface: str = IFACE, *, up: bool = True) -> None:
        deadline = time.monotonic() + CMD_TIMEOUT_S
        while True:
            if self.carrier(node, iface) == up:
                return
            if time.monotonic() >= deadline:
                want = "carrier" if up else "carrier loss"
                raise LabError(
                    f"lab: {self.ns_name(node)}/{iface}: no {want} after {CMD_TIMEOUT_S} s"
                )
            time.sleep(0.01)

    def _link_info(self, node: str, iface: str = IFACE) -> dict[str, Any]:
        out = _run(["ip", "-n", self.ns_name(node), "-j", "link", "show", "dev", iface]).stdout
        links = json.loads(out)
        if not links:
            raise LabError(f"lab: no {iface} in {self.ns_name(node)}")
        info: dict[str, Any] = links[0]
        return info

    def carrier(self, node: str, iface: str = IFACE) -> bool:
        """Whether node's interface has carrier (LOWER_UP)."""
        return "LOWER_UP" in self._link_info(node, iface).get("flags", [])

    def admin_up(self, node: str, iface: str = IFACE) -> bool:
        """Whether node's interface is administratively up (IFF_UP)."""
        return "UP" in self._link_info(node, iface).get("flags", [])

    def _read_mac(self, node: str) -> str:
        return str(self._link_info(node)["address"]).lower()

    def destroy(self) -> None:
        """Kill every process started here and remove every namespace made here. Idempotent."""
        atexit.unregister(self.destroy)
        self._kill_started()
        for ns in self._namespaces:
            self._kill_namespace_leftovers(ns)
        for ns in reversed(self._namespaces):
            subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, check=False, timeout=CMD_TIMEOUT_S
            )
        self._namespaces.clear()
        self._created = False

    def _kill_started(self) -> None:
        for proc in self._procs:
            # Only while unreaped: after a reap the pid (and so the group id) may be reused.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self._procs:
            try:
                proc.wait(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                print(f"lab: pid {proc.pid} survived SIGKILL", file=sys.stderr)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()

    def _kill_namespace_leftovers(self, ns: str) -> None:
        # Children that made their own process group (e.g. daemon hooks) escape killpg; the
        # namespace is ours, so whatever still runs in it is the lab's too.
        found = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False, timeout=5
        )
        pids = [int(p) for p in found.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if process_running(pid)]
            time.sleep(0.01)

    @staticmethod
    def remove_stale() -> list[str]:
        """Remove labs whose creating process is gone (killed before it could clean up).

        Only namespaces marked by Lab.create() are considered; returns the removed prefixes.
        """
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=5
        ).stdout
        names = {line.split()[0] for line in listed.splitlines() if line.strip()}
        removed = []
        for name in sorted(n for n in names if n.endswith(f"-{LAN}")):
            found = subprocess.run(
                ["ip", "-n", name, "-j", "link", "show", "dev", BRIDGE],
                capture_output=True,
                text=True,
                check=False,
                timeout=5,
            )
            try:
                alias = str(json.loads(found.stdout)[0].get("ifalias", ""))
            except (ValueError, IndexError, AttributeError):
                continue
            words = alias.split()
            if not words or words[0] != _MARK:
                continue
            owner = dict(w.split("=", 1) for w in words[1:] if "=" in w)
            prefix, pid = owner.get("prefix", ""), owner.get("pid", "")
            if name != f"{prefix}-{LAN}" or not pid.isdigit():
                continue
            if _start_time(int(pid)) == owner.get("start"):
                continue  # the owner still runs
            stale = Lab(prefix)
            stale._namespaces = [
                ns for ns in (stale.ns_name(n) for n in (LAN, *ALL_NODES)) if ns in names
            ]
            stale.destroy()
            removed.append(prefix)
        return removed

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # ------------------------------------------------------------------ names

    def ns_name(self, node: str) -> str:
        """The namespace of node ('lan', 'n1', 'n2', 'client' or 'rogue')."""
        if node != LAN and node not in ALL_NODES:
            raise ValueError(f"unknown lab node {node!r} (known: lan, {', '.join(ALL_NODES)})")
        return f"{self.prefix}-{node}"

    def port_name(self, node: str) -> str:
        """The bridge port (in the LAN namespace) that leads to node's eth0."""
        if node not in ALL_NODES:
            raise ValueError(f"unknown lab node {node!r} (known: {', '.join(ALL_NODES)})")
        return f"{self.prefix}{_PORT_SUFFIX[node]}"

    def hb_port_name(self, node: str) -> str:
        """The heartbeat bridge's port (in the LAN namespace) that leads to node's eth1."""
        if node not in SERVERS:
            raise ValueError(f"no heartbeat port for {node!r} (only {', '.join(SERVERS)})")
        return f"{self.prefix}{_HB_PORT_SUFFIX[node]}"

    @staticmethod
    def address(node: str) -> str:
        """node's own IPv4 address on eth0."""
        return ADDRESSES[node]

    @staticmethod
    def address6(node: str) -> str:
        """node's own IPv6 address on eth0."""
        return ADDRESSES6[node]

    @staticmethod
    def hb_address(node: str) -> str:
        """node's IPv4 address on the heartbeat network (eth1; Lab(heartbeat_net=True))."""
        return HB_ADDRESSES[node]

    # ------------------------------------------------------------------ processes

    def run(self, node: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside node's namespace in its own process group; destroy() kills it."""
        cmd = ["ip", "netns", "exec", self.ns_name(node), *argv]
        popen_kwargs.setdefault("env", _child_env())
        proc: subprocess.Popen[Any] = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
        self._procs.append(proc)
        return proc

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float = CMD_TIMEOUT_S,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside node's namespace to completion, output captured as text.

        With check (the default) a non-zero exit raises subprocess.CalledProcessError.
        """
        return subprocess.run(
            ["ip", "netns", "exec", self.ns_name(node), *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=_child_env(),
        )

    @staticmethod
    def python_argv(module: str, *args: str) -> list[str]:
        """argv running `python -m module args` with this interpreter (the venv's)."""
        return [sys.executable, "-m", module, *args]

    def start_echo(
        self, node: str, *, port: int = ECHO_PORT, ready_timeout: float = CMD_TIMEOUT_S
    ) -> subprocess.Popen[Any]:
        """Start the echo responder in node and wait until it listens."""
        proc = self.run(
            node,
            self.python_argv("havip.lab.client", "echo", "--name", node, "--port", str(port)),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = _readline_within(proc, ready_timeout)
        proc.stdout.close()
        if line.strip() != "ready":
            raise LabError(f"lab: echo in {node} did not start (exit code {proc.poll()})")
        return proc

    def start_client(
        self,
        out: Path,
        *,
        duration: float,
        interval: float = 0.01,
        timeout: float = 0.5,
        vip: str = VIP,
        port: int = ECHO_PORT,
        arp_mode: ArpMode = ArpMode.SELF,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start the client probe in the client namespace, writing JSON lines to out."""
        args = ["client", "--vip", vip, "--port", str(port), "--out", str(out)]
        args += ["--interval", str(interval), "--duration", str(duration)]
        args += ["--timeout", str(timeout), "--arp-mode", arp_mode.value]
        return self.run("client", self.python_argv("havip.lab.client", *args), **popen_kwargs)

    # ------------------------------------------------------------------ links and addresses

    def link_down(self, node: str) -> None:
        """Take node's eth0 down (for a power-off, the caller also SIGSTOPs the daemon)."""
        _run(["ip", "-n", self.ns_name(node), "link", "set", IFACE, "down"])

    def link_up(self, node: str) -> None:
        """Bring node's eth0 back up (and its default routes, which going down removed)."""
        _run(["ip", "-n", self.ns_name(node), "link", "set", IFACE, "up"])
        if node in SERVERS:
            self._default_routes(node)

    def _default_routes(self, node: str) -> None:
        ns = self.ns_name(node)
        _run(["ip", "-n", ns, "route", "replace", "default", "via", GATEWAY])
        _run(["ip", "-n", ns, "-6", "route", "replace", "default", "via", GATEWAY6])

    def default_route(self, node: str, family: int = 4) -> str | None:
        """The gateway of node's default route (IPv4, or IPv6 with family=6), or None."""
        which = "-6" if family == 6 else "-4"
        out = _run(["ip", "-n", self.ns_name(node), which, "-j", "route", "show", "default"]).stdout
        routes = json.loads(out or "[]")
        return str(routes[0]["gateway"]) if routes and "gateway" in routes[0] else None

    def vip_link_down(self, node: str, how: Isolation | str = "admin") -> None:
        """Take node's VIP interface (eth0) away; the heartbeat network (eth1) is untouched.

        how="admin": `ip link set eth0 down` inside the node; how="carrier": the node keeps
        eth0 admin up but loses carrier (the bridge side of its veth goes down).
        """
        if how == "admin":
            self.link_down(node)
        elif how == Isolation.CARRIER:
            self._port_down(node)
        else:
            raise ValueError(f"vip_link_down: how={how!r} (choose 'admin' or 'carrier')")

    def vip_link_up(self, node: str) -> None:
        """Undo vip_link_down() of either kind."""
        self.link_up(node)
        self._port_up(node)

    def remove_vip_link(self, node: str) -> None:
        """Delete node's eth0 altogether (the VIP interface is missing); restore_vip_link()."""
        self.mac(node)  # keep knowing its MAC: clients may still point at it
        _run(["ip", "-n", self.ns_name(node), "link", "del", IFACE])

    def restore_vip_link(self, node: str) -> None:
        """Recreate node's eth0 after remove_vip_link() (a new MAC), with its default route."""
        ns = self.ns_name(node)
        self._add_port(self.port_name(node), BRIDGE, ns, IFACE, ADDRESSES[node], ADDRESSES6[node])
        if node in SERVERS:
            self._default_routes(node)
        self._wait_carrier(node)
        self._macs[node] = self._read_mac(node)

    def _port_down(self, node: str) -> None:
        _run(["ip", "-n", self.ns_name(LAN), "link", "set", self.port_name(node), "down"])
        self._wait_carrier(node, up=False)

    def _port_up(self, node: str) -> None:
        _run(["ip", "-n", self.ns_name(LAN), "link", "set", self.port_name(node), "up"])

    def add_address(self, node: str, cidr: str = VIP_CIDR) -> None:
        """Add an address to node's eth0 (tests standing in for a daemon); IPv6 nodad."""
        nodad = ["nodad"] if ":" in cidr else []
        _run(["ip", "-n", self.ns_name(node), "addr", "add", cidr, "dev", IFACE, *nodad])

    def del_address(self, node: str, cidr: str = VIP_CIDR) -> None:
        """Remove an address from node's eth0."""
        _run(["ip", "-n", self.ns_name(node), "addr", "del", cidr, "dev", IFACE])

    def flush_neigh(self, node: str) -> None:
        """Forget node's neighbour (ARP) entries."""
        _run(["ip", "-n", self.ns_name(node), "neigh", "flush", "dev", IFACE])

    def neigh(self, node: str, ip: str) -> str | None:
        """The MAC that node's neighbour table holds for ip, or None if unresolved."""
        out = _run(
            ["ip", "-n", self.ns_name(node), "-j", "neigh", "show", "to", ip, "dev", IFACE]
        ).stdout
        for entry in json.loads(out or "[]"):
            states = set(entry.get("state", []))
            if "lladdr" in entry and not states & {"FAILED", "INCOMPLETE"}:
                return str(entry["lladdr"]).lower()
        return None

    def mac(self, node: str) -> str:
        """node's eth0 MAC, lower-case."""
        if node not in self._macs:
            self._macs[node] = self._read_mac(node)
        return self._macs[node]

    # ------------------------------------------------------------------ faults (LAN bridge)

    def set_loss(self, percent: int) -> None:
        """Drop percent % of all frames the bridge forwards, chosen at random."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent {percent} is outside 0..100")
        # nft bounds the compared value to the numgen range (0..99), so 100 % is a plain drop.
        rules = {0: [], 100: ["drop"]}.get(percent, [f"numgen random mod 100 < {percent} drop"])
        self._set_chain(_LOSS_CHAIN, rules)

    def clear_loss(self) -> None:
        """Stop dropping frames at random."""
        self._set_chain(_LOSS_CHAIN, [])

    def cut_heartbeat(self) -> None:
        """Drop IP (v4 and v6) between n1 and n2; ARP and ICMPv6 (so Neighbour Discovery)
        still pass, as ARP is the IPv4 VIP's ND; the client reaches both."""
        p1, p2 = self.port_name("n1"), self.port_name("n2")
        rules = []
        for a, b in ((p1, p2), (p2, p1)):
            rules += [
                f'iifname "{a}" oifname "{b}" ether type ip drop',
                f'iifname "{a}" oifname "{b}" ether type ip6 ip6 nexthdr != ipv6-icmp drop',
            ]
        self._set_chain(_HB_CHAIN, rules)

    def heal_heartbeat(self) -> None:
        """Undo cut_heartbeat()."""
        self._set_chain(_HB_CHAIN, [])

    def partition_l2(self) -> None:
        """Drop every frame between n1 and n2, ARP included; the client still reaches both."""
        p1, p2 = self.port_name("n1"), self.port_name("n2")
        self._set_chain(
            _L2_CHAIN,
            [f'iifname "{p1}" oifname "{p2}" drop', f'iifname "{p2}" oifname "{p1}" drop'],
        )

    def heal_l2(self) -> None:
        """Undo partition_l2()."""
        self._set_chain(_L2_CHAIN, [])

    def isolate(self, node: str, how: Isolation | str = Isolation.DROP) -> None:
        """Cut node off the LAN: its switch port drops every frame both ways (how="drop", the
        node keeps carrier), or the node loses carrier (how="carrier"). Undo with unisolate()."""
        how = Isolation(how)
        self.port_name(node)  # validates the name
        if how is Isolation.DROP:
            self._drop_isolated.add(node)
            self._set_isolation_rules()
        else:
            self._port_down(node)

    def unisolate(self, node: str) -> None:
        """Undo isolate() of either kind (a no-op for a node that is not isolated)."""
        self._drop_isolated.discard(node)
        self._set_isolation_rules()
        self._port_up(node)

    def _set_isolation_rules(self) -> None:
        rules = []
        for node in sorted(self._drop_isolated):
            port = self.port_name(node)
            rules += [f'iifname "{port}" drop', f'oifname "{port}" drop']
        self._set_chain(_ISO_CHAIN, rules)

    def one_way_loss(self, src: str, dst: str) -> None:
        """Drop every frame from src's port to dst's port (one direction; adds to any others)."""
        if src == dst:
            raise ValueError(f"one_way_loss: src and dst are both {src!r}")
        self.port_name(src), self.port_name(dst)  # validates both names
        self._one_way.add((src, dst))
        self._set_one_way_rules()

    def clear_one_way_loss(self) -> None:
        """Undo every one_way_loss()."""
        self._one_way.clear()
        self._set_one_way_rules()

    def _set_one_way_rules(self) -> None:
        rules = [
            f'iifname "{self.port_name(src)}" oifname "{self.port_name(dst)}" drop'
            for src, dst in sorted(self._one_way)
        ]
        self._set_chain(_ONEWAY_CHAIN, rules)

    def blip(
        self, node: str, seconds: float, times: int = 1, gap: float = 1.0
    ) -> list[tuple[float, float]]:
        """`times` carrier blips on node's eth0, each `seconds` long, `gap` apart (blocking).

        Returns the (down, up) wall-clock times of each blip. Carrier always comes back, also
        when interrupted.
        """
        if not 1 <= times <= MAX_BLIPS:
            raise ValueError(f"blip: times={times} is outside 1..{MAX_BLIPS}")
        if not (0 < seconds <= MAX_BLIP_S and 0 <= gap <= MAX_BLIP_S):
            raise ValueError(f"blip: seconds={seconds}, gap={gap} outside (0, {MAX_BLIP_S}]")
        done: list[tuple[float, float]] = []
        for i in range(times):
            down = time.time()
            try:
                _run(["ip", "-n", self.ns_name(LAN), "link", "set", self.port_name(node), "down"])
                time.sleep(max(0.0, down + seconds - time.time()))
            finally:
                self._port_up(node)
            done.append((down, time.time()))
            if i + 1 < times:
                time.sleep(gap)
        return done

    # ------------------------------------------------------------------ the rogue host

    def rogue_hold(self, cidr: str = VIP_CIDR) -> None:
        """The rogue host adds an address (the VIP by default): its kernel answers ARP for it."""
        self._need_rogue()
        self.add_address(ROGUE, cidr)

    def rogue_release(self, cidr: str = VIP_CIDR) -> None:
        """The rogue host drops the address again."""
        self._need_rogue()
        self.del_address(ROGUE, cidr)

    def rogue_garp(
        self, ip: str = VIP, *, mac: str | None = None, count: int = 3, gap: float = 0.05
    ) -> None:
        """The rogue host sends gratuitous ARP for ip from `mac` (forged; its own by default)."""
        self._need_rogue()
        args = ["garp", "--ip", ip, "--count", str(count), "--gap", str(gap)]
        if mac is not None:
            args += ["--mac", mac]
        self.exec(ROGUE, self.python_argv("havip.lab.client", *args))

    def _need_rogue(self) -> None:
        if not self.rogue:
            raise LabError("lab: no rogue host in this lab (build it with Lab(rogue=True))")

    def _set_chain(self, chain: str, rules: Sequence[str]) -> None:
        # One nft transaction: the chain never passes through a half-written state.
        lines = [f"flush chain bridge {_TABLE} {chain}"]
        lines += [f"add rule bridge {_TABLE} {chain} {rule}" for rule in rules]
        _run(["ip", "netns", "exec", self.ns_name(LAN), "nft", "-f", "-"], stdin="\n".join(lines))

    def ruleset(self) -> str:
        """The LAN namespace's nftables ruleset, for debugging."""
        return _run(["ip", "netns", "exec", self.ns_name(LAN), "nft", "list", "ruleset"]).stdout


def _nft_table_script() -> str:
    # Separate chains per fault, so each can be set and cleared without touching the others.
    # One-line `{ ...; }` blocks trip nft 1.0.6's parser, hence the newlines.
    return "\n".join(
        [
            f"table bridge {_TABLE} {{",
            f"  chain {_LOSS_CHAIN} {{",
            "  }",
            f"  chain {_HB_CHAIN} {{",
            "  }",
            f"  chain {_L2_CHAIN} {{",
            "  }",
            f"  chain {_ISO_CHAIN} {{",
            "  }",
            f"  chain {_ONEWAY_CHAIN} {{",
            "  }",
            f"  chain {_BASE_CHAIN} {{",
            "    type filter hook forward priority 0; policy accept;",
            f"    jump {_ISO_CHAIN}",
            f"    jump {_ONEWAY_CHAIN}",
            f"    jump {_L2_CHAIN}",
            f"    jump {_HB_CHAIN}",
            f"    jump {_LOSS_CHAIN}",
            "  }",
            "}",
            "",
        ]
    )


def _ipv6_sysctls(ns: str) -> None:
    """Before a namespace gets its interfaces: no DAD for the kernel's own link-local
    addresses (usable at once, as `nodad` makes ours), IPv6 addresses kept on link down."""
    for key in ("accept_dad=0", "keep_addr_on_down=1"):
        for scope in ("all", "default"):
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{scope}.{key}"])


def _start_time(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: with the pid it identifies a process across pid reuse.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (killed, waiting to be reaped)."""
    # A killed process whose parent has not reaped it yet is done, for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] != "Z"


def _child_env() -> dict[str, str]:
    # Children import havip from this checkout even if the package is not installed.
    env = dict(os.environ)
    paths = [str(_PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _readline_within(proc: subprocess.Popen[Any], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    line: str = proc.stdout.readline()
    return line
