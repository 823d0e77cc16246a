"""A throwaway lab of Linux network namespaces: a bridge, two servers and a client.

    LAN namespace:  br0 ── <prefix>n1 ── eth0 in n1      198.18.0.1/24
                        ├─ <prefix>n2 ── eth0 in n2      198.18.0.2/24
                        └─ <prefix>cl ── eth0 in client  198.18.0.10/24

The VIP (198.18.0.100/24) is left to the daemons. Faults are nftables rules in the LAN
namespace's bridge (loss, a cut heartbeat, a layer-2 partition) and link changes. Nothing is
created in the root namespace: the veth pairs are created straight into the lab namespaces.
Everything the lab makes (namespaces, processes) is removed by `destroy()`, which also runs at
interpreter exit and on leaving the context manager.
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
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from havip.lab.client import ECHO_PORT, ArpMode

NODES = ("n1", "n2", "client")
LAN = "lan"
IFACE = "eth0"
BRIDGE = "br0"
PREFIXLEN = 24
ADDRESSES = {"n1": "198.18.0.1", "n2": "198.18.0.2", "client": "198.18.0.10"}
VIP = "198.18.0.100"
VIP_CIDR = f"{VIP}/{PREFIXLEN}"
CMD_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0

_PORT_SUFFIX = {"n1": "n1", "n2": "n2", "client": "cl"}
_TABLE = "havip_lab"
_MARK = "havip-lab"
_BASE_CHAIN = "havip_fwd"
_LOSS_CHAIN = "havip_loss"
_HB_CHAIN = "havip_hb"
_L2_CHAIN = "havip_l2"
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

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or _unique_prefix()
        if len(self.prefix) > 12:
            raise ValueError(f"lab prefix {self.prefix!r} is longer than 12 characters")
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
        for node in (LAN, *NODES):
            _run(["ip", "netns", "add", self.ns_name(node)])
            self._namespaces.append(self.ns_name(node))
        lan = self.ns_name(LAN)
        _run(["ip", "-n", lan, "link", "set", "lo", "up"])
        _run(["ip", "-n", lan, "link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0"])
        # Who owns this lab, so remove_stale() can clear it up if we die by SIGKILL.
        owner = f"{_MARK} prefix={self.prefix} pid={os.getpid()} start={_start_time(os.getpid())}"
        _run(["ip", "-n", lan, "link", "set", BRIDGE, "alias", owner])
        _run(["ip", "-n", lan, "link", "set", BRIDGE, "up"])
        for node in NODES:
            ns, port = self.ns_name(node), self.port_name(node)
            veth = ["ip", "link", "add", "name", port, "netns", lan, "type", "veth"]
            _run([*veth, "peer", "name", IFACE, "netns", ns])
            _run(["ip", "-n", lan, "link", "set", port, "master", BRIDGE, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ADDRESSES[node]}/{PREFIXLEN}", "dev", IFACE])
            _run(["ip", "-n", ns, "link", "set", IFACE, "up"])
        _run(["ip", "netns", "exec", lan, "nft", "-f", "-"], stdin=_nft_table_script())
        for node in NODES:
            self._wait_carrier(node)
            self._macs[node] = self._read_mac(node)

    def _wait_carrier(self, node: str) -> None:
        deadline = time.monotonic() + CMD_TIMEOUT_S
        while True:
            info = self._link_info(node)
            if "LOWER_UP" in info.get("flags", []):
                return
            if time.monotonic() >= deadline:
                raise LabError(f"lab: {self.ns_name(node)}/{IFACE} has no carrier after setup")
            time.sleep(0.01)

    def _link_info(self, node: str) -> dict[str, Any]:
        out = _run(["ip", "-n", self.ns_name(node), "-j", "link", "show", "dev", IFACE]).stdout
        links = json.loads(out)
        if not links:
            raise LabError(f"lab: no {IFACE} in {self.ns_name(node)}")
        info: dict[str, Any] = links[0]
        return info

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
                ns for ns in (stale.ns_name(n) for n in (LAN, *NODES)) if ns in names
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
        """The namespace of node ('lan', 'n1', 'n2' or 'client')."""
        if node != LAN and node not in NODES:
            raise ValueError(f"unknown lab node {node!r} (known: lan, {', '.join(NODES)})")
        return f"{self.prefix}-{node}"

    def port_name(self, node: str) -> str:
        """The bridge port (in the LAN namespace) that leads to node."""
        if node not in NODES:
            raise ValueError(f"unknown lab node {node!r} (known: {', '.join(NODES)})")
        return f"{self.prefix}{_PORT_SUFFIX[node]}"

    @staticmethod
    def address(node: str) -> str:
        """node's own IPv4 address on eth0."""
        return ADDRESSES[node]

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
        """Bring node's eth0 back up."""
        _run(["ip", "-n", self.ns_name(node), "link", "set", IFACE, "up"])

    def add_address(self, node: str, cidr: str = VIP_CIDR) -> None:
        """Add an address to node's eth0 (tests standing in for a daemon)."""
        _run(["ip", "-n", self.ns_name(node), "addr", "add", cidr, "dev", IFACE])

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
        """Drop IP (v4 and v6) between n1 and n2; ARP still passes, the client reaches both."""
        p1, p2 = self.port_name("n1"), self.port_name("n2")
        self._set_chain(
            _HB_CHAIN,
            [
                f'iifname "{p1}" oifname "{p2}" ether type {{ ip, ip6 }} drop',
                f'iifname "{p2}" oifname "{p1}" ether type {{ ip, ip6 }} drop',
            ],
        )

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
            f"  chain {_BASE_CHAIN} {{",
            "    type filter hook forward priority 0; policy accept;",
            f"    jump {_L2_CHAIN}",
            f"    jump {_HB_CHAIN}",
            f"    jump {_LOSS_CHAIN}",
            "  }",
            "}",
            "",
        ]
    )


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
