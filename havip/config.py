"""Configuration: the TOML file, validated once and fully before anything runs.

`load_config` only looks at the file itself (so a config can be checked anywhere);
`check_environment` looks at the machine it is meant for (files, certificates,
interfaces, folders) and backs `havip check-config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import socket
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from havip.backends.linux import LinuxBackend

_T = TypeVar("_T")

DEFAULT_PORT = 7411
DEFAULT_METRICS_PORT = 9741
DEFAULT_METRICS_LISTEN = ("127.0.0.1", DEFAULT_METRICS_PORT)
DEFAULT_STATE_DIR = Path("/var/lib/havip")
DEFAULT_CONTROL_DIR = Path("/run/havip")  # the socket is DEFAULT_CONTROL_DIR/NODE.sock
SUN_PATH_MAX = 107  # a Unix socket path: 108 bytes with the terminating NUL
NO_WITNESS = (
    "no witness: a node cut off from the LAN cannot tell silence from deafness and may take "
    "the VIP blind; set witnesses = [...]"
)
BACKENDS = ("auto", "linux", "illumos", "dry-run")
ADDRESS_TOOLS = ("ipadm", "ifconfig")  # illumos: how a VIP is added

# Timing presets in seconds, the one place to retune them. Keys a profile leaves out
# take the Timing defaults; explicit [timing] keys override the profile.
PROFILES: dict[str, dict[str, float]] = {
    "default": {
        "keepalive_interval": 0.15,
        "dead_time": 0.32,
        "probe_count": 3,
        "probe_window": 0.06,
    },
    "fast": {
        "keepalive_interval": 0.015,
        "dead_time": 0.05,
        "probe_count": 3,
        "probe_window": 0.025,
    },
}
PROBE_COUNT_RANGE = (1, 10)
# A probe window far beyond the dead time means a takeover waits mostly on probing:
# almost certainly a unit slip ("80s" for "80ms").
PROBE_WINDOW_MAX_DEAD_TIMES = 5

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_DURATION_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(?P<unit>[^\s0-9.]*)")
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60)}
_PORT_RE = re.compile(r"[0-9]{1,5}")
_IFNAMSIZ = 16  # Linux interface names: at most 15 bytes plus the terminating NUL


@dataclass(frozen=True, kw_only=True)
class Vip:
    """One virtual address and the interface it lives on."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    interface: str
    # The VIP need not lie in a subnet configured on its interface (routed setups, /32).
    allow_offlink: bool = False

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.address.ip

    def __str__(self) -> str:
        return str(self.address)


@dataclass(frozen=True, kw_only=True)
class Timing:
    """All durations in seconds."""

    keepalive_interval: float = 0.15
    dead_time: float = 0.32
    probe_count: int = 3
    probe_window: float = 0.06
    handshake_timeout: float = 2.0
    reconnect_max: float = 0.5
    preempt_delay: float = 1.0
    # How long past a missed deadline a takeover probe listens, so that a peer whose carrier
    # blipped for less than the dead time is back and answers. None: one keepalive interval.
    blip_guard: float | None = None

    @property
    def guard(self) -> float:
        """blip_guard, with its default (one keepalive interval) filled in."""
        return self.keepalive_interval if self.blip_guard is None else self.blip_guard


@dataclass(frozen=True, kw_only=True)
class Check:
    """One health check (keepalived's track_script): a command, or a TCP connect to `tcp`.

    The node is eligible only while every check passes; `rise` successes in a row make a
    failing check pass again, `fall` failures in a row make a passing one fail."""

    name: str
    command: tuple[str, ...] | None = None  # an argument list, never a shell string
    tcp: tuple[str, int] | None = None  # (IPv4 literal, port)
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Commands run on state changes (argument lists). Notify hooks never change a decision;
    the fence hook runs before a takeover that follows a failure signal."""

    notify: tuple[str, ...] | None = None  # every state change
    notify_active: tuple[str, ...] | None = None
    notify_standby: tuple[str, ...] | None = None
    notify_fault: tuple[str, ...] | None = None
    notify_stopped: tuple[str, ...] | None = None
    timeout: float = 10.0  # each notify hook
    fence: tuple[str, ...] | None = None
    fence_timeout: float = 30.0
    fence_required: bool = False  # no successful fence, no takeover (after a failure signal)

    def named_for_state(self, state: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(hook key, argv) of the notify commands to run on entering `state`, in order:
        the state's own `notify_<state>`, then the generic `notify`."""
        specific = {
            "active": self.notify_active,
            "standby": self.notify_standby,
            "fault": self.notify_fault,
            "stopped": self.notify_stopped,
        }.get(state)
        named = ((f"notify_{state}", specific), ("notify", self.notify))
        return tuple((key, argv) for key, argv in named if argv)

    def for_state(self, state: str) -> tuple[tuple[str, ...], ...]:
        """The notify commands to run on entering `state`, in order (specific, then generic)."""
        return tuple(argv for _, argv in self.named_for_state(state))


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class Config:
    path: Path
    node: str
    primary: str
    preempt: bool
    listen: tuple[str, int]
    peer_name: str
    peer_address: tuple[str, int]
    tls: TlsFiles
    timing: Timing
    vips: tuple[Vip, ...]
    backend: str  # "linux" or "dry-run" ("auto" is resolved when loading)
    lan_dir: Path | None  # dry-run only: a folder shared by both nodes, standing in for the LAN
    metrics_listen: tuple[str, int] | None
    state_dir: Path
    # None only for configs built in code (tests): load_config always sets a path.
    control_socket: Path | None = None
    # None: use each VIP interface's default gateway when it is on the VIP's LAN.
    witnesses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None = None
    checks: tuple[Check, ...] = ()
    hooks: Hooks = Hooks()
    address_tool: str = "ipadm"  # illumos only: "ipadm", or "ifconfig" (addif/removeif)
    # An exporter-toolkit web-config file (TLS, client certs, basic auth) for the metrics
    # endpoint; checked at load (havip.shell.webconfig). None: plain HTTP.
    metrics_web_config: Path | None = None

    @property
    def is_primary(self) -> bool:
        return self.node == self.primary


class ConfigError(Exception):
    """Every problem found in one config file, each as 'FILE: key.path: message'."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- durations and addresses -------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds from "200ms", "1.5s" or "2m"; ValueError with a one-line reason otherwise."""
    stripped = text.strip()
    if not stripped:
        raise ValueError('empty duration; use a number with a unit, e.g. "200ms"')
    if stripped.startswith("-"):
        raise ValueError(f'must not be negative (got "{text}")')
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        raise ValueError(f'not a duration: "{text}" (use e.g. "200ms", "1.5s" or "2m")')
    unit = match["unit"]
    if not unit:
        raise ValueError('duration needs a unit, e.g. "200ms"')
    if unit not in _DURATION_UNITS:
        raise ValueError(f'unknown unit "{unit}" in "{text}" (use ms, s or m)')
    # Decimal first, so "1.5ms" is the float nearest 0.0015, not 1.5 * 0.001.
    return float(Decimal(match["number"]) * _DURATION_UNITS[unit])


def format_duration(seconds: float) -> str:
    """The shortest form parse_duration reads back: 0.05 -> "50ms", 1.5 -> "1.5s", 120 -> "2m"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return _trim(seconds * 1000) + "ms"
    if seconds >= 60 and seconds % 60 == 0:
        return _trim(seconds / 60) + "m"
    return _trim(seconds) + "s"


def _trim(value: float) -> str:
    # Six decimals absorbs float noise (0.05 * 1000 = 50.00000000000001).
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def parse_address(text: str, *, default_port: int, allow_any: bool = False) -> tuple[str, int]:
    """("198.18.0.1", 7411) from "198.18.0.1:7411" or "198.18.0.1"; ValueError otherwise.

    The host must be an IPv4 literal: resolving names would make failover depend on DNS.
    `allow_any` accepts 0.0.0.0 (for listen addresses).
    """
    if not text:
        raise ValueError('empty address; use "HOST:PORT" or "HOST", e.g. "198.18.0.1:7411"')
    if text.startswith("[") or text.count(":") > 1:
        raise ValueError(
            f'"{text}" looks like IPv6: the peer link is IPv4-only (VIPs may be IPv6); '
            "use an IPv4 address"
        )
    host, colon, port_text = text.partition(":")
    port = default_port
    if colon:
        if not _PORT_RE.fullmatch(port_text):
            raise ValueError(f'port "{port_text}" in "{text}" is not a number from 1 to 65535')
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f'port {port} in "{text}" is not in 1-65535')
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(
            f'"{host}" is not an IPv4 address (host names are not accepted, '
            "so failover never waits on DNS)"
        ) from None
    if ip.is_unspecified and not allow_any:
        raise ValueError("0.0.0.0 is only allowed where havip listens; give the peer's address")
    return str(ip), port


def _parse_vip_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if ":" in text:
        return _parse_vip6(text)
    ip_text, slash, prefix = text.partition("/")
    if not slash:
        raise ValueError(f'needs a prefix length, e.g. "{text}/24" (the VIP\'s subnet on the LAN)')
    try:
        ipaddress.IPv4Address(ip_text)
    except ValueError:
        raise ValueError(f'"{ip_text}" is not an IPv4 address') from None
    try:
        vip = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError(f'prefix length "/{prefix}" in "{text}" is not 0-32') from None
    ip, net = vip.ip, vip.network
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{ip} cannot be a VIP (not a unicast address)")
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        which = "network" if ip == net.network_address else "broadcast"
        raise ValueError(f"{ip} is the {which} address of {net}")
    return vip


def _parse_vip6(text: str) -> ipaddress.IPv6Interface:
    if "%" in text:
        raise ValueError(f'"{text}": a VIP takes no %zone (it names its interface itself)')
    ip_text, slash, prefix = text.partition("/")
    if not slash:
        raise ValueError(f'needs a prefix length, e.g. "{text}/64" (the VIP\'s subnet on the LAN)')
    try:
        ip = ipaddress.IPv6Address(ip_text)
    except ValueError:
        raise ValueError(f'"{ip_text}" is not an IPv6 address') from None
    try:
        vip = ipaddress.IPv6Interface(text)
    except ValueError:
        raise ValueError(f'prefix length "/{prefix}" in "{text}" is not 0-128') from None
    why = _not_unicast6(ip)
    if why is not None:
        raise ValueError(f"{ip} cannot be a VIP ({why})")
    if ip.is_link_local:
        raise ValueError(
            f"{ip} cannot be a VIP (link-local: every interface has its own fe80::/10, so "
            "clients cannot follow it from one node to the other; use a global or ULA address)"
        )
    return vip


def _not_unicast6(ip: ipaddress.IPv6Address) -> str | None:
    """Why `ip` is no unicast address of a host on a LAN, or None."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "the loopback address"
    if ip.is_multicast:
        return "multicast"
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped: write the IPv4 address itself"
    return None


def _witness_problem(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, vips: tuple[Vip, ...], nodes: set[str]
) -> str | None:
    """Why `ip` cannot prove that this node hears the VIPs' LAN, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        return _witness6_problem(ip, vips)
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == ip.__class__(2**32 - 1):
        return f"{ip} is not a unicast address on the LAN"
    if any(ip == vip.ip for vip in vips):
        return f"{ip} is a VIP: whoever holds it answers, so it proves nothing"
    if str(ip) in nodes:
        return f"{ip} is this node's or the peer's address: it must be a third host on the LAN"
    nets = [vip.address.network for vip in vips if vip.address.version == 4]
    if vips and not nets:
        return f"{ip} is IPv4 but every VIP is IPv6: a witness is asked in its VIPs' family"
    inside = [net for net in nets if ip in net]
    if nets and not inside:
        subnets = ", ".join(sorted({str(net) for net in nets}))
        return f"{ip} is in no VIP's subnet ({subnets}): a witness must be on the VIPs' LAN"
    if inside and all(
        net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address) for net in inside
    ):
        return f"{ip} is a network or broadcast address, not a host"
    return None


def _witness6_problem(ip: ipaddress.IPv6Address, vips: tuple[Vip, ...]) -> str | None:
    why = _not_unicast6(ip)
    if why is not None:
        return f"{ip} is not a unicast address on the LAN ({why})"
    if any(ip == vip.ip for vip in vips):
        return f"{ip} is a VIP: whoever holds it answers, so it proves nothing"
    nets = [vip.address.network for vip in vips if vip.address.version == 6]
    if vips and not nets:
        return f"{ip} is IPv6 but every VIP is IPv4: a witness is asked in its VIPs' family"
    # A link-local witness (a router's fe80:: address, as IPv6 default routes use) is on the
    # link by definition: it is asked on each interface that carries an IPv6 VIP.
    if nets and not ip.is_link_local and not any(ip in net for net in nets):
        subnets = ", ".join(sorted({str(net) for net in nets}))
        return (
            f"{ip} is in no IPv6 VIP's subnet ({subnets}) and not link-local: a witness must "
            "be on the VIPs' LAN"
        )
    return None


def _interface_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if len(name.encode()) >= _IFNAMSIZ:
        return f'"{name}" is longer than {_IFNAMSIZ - 1} characters'
    if "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        return f'"{name}" is not a valid interface name (no "/" or spaces)'
    return None


# --- the loader ----------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate one config file; ConfigError lists every problem found.

    Only the file itself is checked here: referenced files, interfaces and folders are
    checked by `check_environment`, so a config can be validated on any machine.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line N, column M)".
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return _Loader(path, data).load()


def _current_platform() -> str:
    return sys.platform


def _describe(value: object) -> str:
    """'integer 5', 'string "yes"', 'table': what the file actually holds."""
    if isinstance(value, dict | list):
        return _kind(value)
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    return f"{_kind(value)} {value}"


def _kind(value: object) -> str:
    kinds = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "float"))
    for cls, name in kinds:
        if isinstance(value, cls):
            return name
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return "date/time"


_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "a boolean"}

_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "node",
        "primary",
        "preempt",
        "listen",
        "state_dir",
        "peer",
        "tls",
        "timing",
        "vip",
        "backend",
        "metrics",
        "control_socket",
        "witnesses",
        "check",
        "hooks",
    ),
    "peer": ("name", "address"),
    "tls": ("ca", "cert", "key"),
    "timing": ("profile", *(name for name in Timing.__dataclass_fields__)),
    "vip": ("address", "interface", "allow_offlink"),
    "backend": ("type", "lan_dir", "address_tool"),
    "metrics": ("listen", "web_config"),
    "check": ("name", "command", "tcp", "interval", "timeout", "rise", "fall"),
    "hooks": tuple(Hooks.__dataclass_fields__),
}
_CHECK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
RISE_FALL_MAX = 100
HOOK_COMMANDS: tuple[str, ...] = ("notify", "notify_active", "notify_standby", "notify_fault")
HOOK_COMMANDS += ("notify_stopped", "fence")
_DURATION_KEYS = tuple(k for k in Timing.__dataclass_fields__ if k != "probe_count")


class _WrongType(dict[str, Any]):
    """Stands in for a section that was not a table: already reported, so its keys are
    not reported missing too."""


class _Loader:
    """One pass over the parsed TOML, collecting every error instead of stopping."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.base = path.absolute().parent
        self.data = data
        self.errors: list[str] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.path}: {key}: {message}")

    # generic readers: each returns None after recording an error (or when absent)

    def check_keys(self, table: dict[str, Any], section: str, prefix: str) -> None:
        allowed = _KEYS[section]
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                more = f'; did you mean "{hint[0]}"?' if hint else ""
                self.error(f"{prefix}{key}", f"unknown key (typo?){more}")

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.error(name, f"must be a table ([{name}]), got {_describe(value)}")
            return _WrongType()
        self.check_keys(value, name, f"{name}.")
        return value

    def value(
        self, table: dict[str, Any], key: str, dotted: str, kind: type, *, required: bool
    ) -> Any:
        if key not in table:
            if required and not isinstance(table, _WrongType):
                self.error(dotted, "required key missing")
            return None
        value = table[key]
        # bool is an int in Python, never in TOML.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            wanted = _KIND_NAMES[kind]
            self.error(dotted, f"must be {wanted}, got {_describe(value)}")
            return None
        return value

    def string(self, table: dict[str, Any], key: str, dotted: str, *, required: bool) -> str | None:
        value: str | None = self.value(table, key, dotted, str, required=required)
        return value

    def name(self, table: dict[str, Any], key: str, dotted: str) -> str | None:
        value = self.string(table, key, dotted, required=True)
        if value is not None and not _NAME_RE.fullmatch(value):
            self.error(
                dotted,
                f"{json.dumps(value)} is not a valid node name (letters, digits, '.' and '-', "
                "starting with a letter or digit, at most 63 characters)",
            )
            return None
        return value

    def address(
        self,
        table: dict[str, Any],
        key: str,
        dotted: str,
        *,
        default_port: int = DEFAULT_PORT,
        allow_any: bool = False,
    ) -> tuple[str, int] | None:
        text = self.string(table, key, dotted, required=True)
        if text is None:
            return None
        try:
            return parse_address(text, default_port=default_port, allow_any=allow_any)
        except ValueError as exc:
            self.error(dotted, str(exc))
            return None

    def path_value(
        self, table: dict[str, Any], key: str, dotted: str, *, required: bool
    ) -> Path | None:
        text = self.string(table, key, dotted, required=required)
        if text is None:
            return None
        if not text:
            self.error(dotted, "must not be empty")
            return None
        # Relative to the config file, not to wherever the daemon was started from.
        return self.base / text

    def duration(self, table: dict[str, Any], key: str, dotted: str) -> float | None:
        value = table[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.error(dotted, f'duration needs a unit, e.g. "200ms" (got {value})')
            return None
        if not isinstance(value, str):
            self.error(dotted, f'must be a duration string such as "200ms", got {_kind(value)}')
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(dotted, str(exc))
            return None
        # Failback may be immediate and the blip guard off; every other duration is positive.
        if seconds < 0 or (seconds == 0 and key not in ("preempt_delay", "blip_guard")):
            self.error(dotted, f"must be positive (got {value})")
            return None
        return seconds

    # sections

    def load(self) -> Config:
        data = self.data
        self.check_keys(data, "", "")
        node = self.name(data, "node", "node")
        primary = self.name(data, "primary", "primary")
        preempt = self.value(data, "preempt", "preempt", bool, required=False)
        listen = self.address(data, "listen", "listen", allow_any=True)
        state_dir = self.path_value(data, "state_dir", "state_dir", required=False)
        control_socket = self.path_value(data, "control_socket", "control_socket", required=False)
        if control_socket is None and node is not None:
            control_socket = DEFAULT_CONTROL_DIR / f"{node}.sock"
        if control_socket is not None and len(os.fsencode(control_socket)) > SUN_PATH_MAX:
            self.error(
                "control_socket",
                f"{control_socket} is longer than {SUN_PATH_MAX} bytes (a Unix socket path "
                "limit); use a shorter path",
            )

        peer = self.section("peer")
        peer_name = self.name(peer, "name", "peer.name")
        peer_address = self.address(peer, "address", "peer.address")
        if node is not None and node == peer_name:
            self.error("peer.name", f'must differ from node (both are "{node}")')
        known = (node, peer_name)
        if primary is not None and None not in known and primary not in known:
            self.error(
                "primary", f'must be node ("{node}") or peer.name ("{peer_name}"), got "{primary}"'
            )

        tls_table = self.section("tls")
        ca, cert, key = (
            self.path_value(tls_table, k, f"tls.{k}", required=True) for k in _KEYS["tls"]
        )
        timing = self.timing()
        vips = self.vips()
        witnesses = self.witnesses(vips, listen, peer_address)
        backend, lan_dir, address_tool = self.backend(vips)
        metrics_listen = self.metrics()
        metrics_web_config = self.metrics_web_config()
        checks = self.checks()
        hooks = self.hooks()
        if metrics_listen is not None and listen is not None and metrics_listen[1] == listen[1]:
            hosts = {metrics_listen[0], listen[0]}
            if len(hosts) == 1 or "0.0.0.0" in hosts:
                self.error("metrics.listen", f"clashes with listen (both use port {listen[1]})")

        if self.errors:
            raise ConfigError(self.errors)
        # No errors means every required value was read; these asserts narrow for mypy.
        assert node is not None and primary is not None and listen is not None
        assert peer_name is not None and peer_address is not None
        assert ca is not None and cert is not None and key is not None
        assert timing is not None and backend is not None and control_socket is not None
        return Config(
            path=self.path,
            node=node,
            primary=primary,
            preempt=True if preempt is None else preempt,
            listen=listen,
            peer_name=peer_name,
            peer_address=peer_address,
            tls=TlsFiles(ca=ca, cert=cert, key=key),
            timing=timing,
            vips=vips,
            backend=backend,
            lan_dir=lan_dir,
            address_tool=address_tool,
            metrics_listen=metrics_listen,
            metrics_web_config=metrics_web_config,
            state_dir=DEFAULT_STATE_DIR if state_dir is None else state_dir,
            control_socket=control_socket,
            witnesses=witnesses,
            checks=checks,
            hooks=hooks,
        )

    def argv(self, table: dict[str, Any], key: str, dotted: str) -> tuple[str, ...] | None:
        """A command as an argument list whose program is an absolute path."""
        if key not in table:
            return None
        value = table[key]
        example = '["/usr/local/bin/check-web", "--quiet"]'
        if isinstance(value, str):
            self.error(
                dotted,
                f"must be an argument list such as {example}, not a shell string "
                "(nothing runs through a shell)",
            )
            return None
        if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
            self.error(dotted, f"must be a non-empty array of strings such as {example}")
            return None
        if not value[0].startswith("/"):
            self.error(
                dotted,
                f'the program must be an absolute path (no $PATH lookup), got "{value[0]}"',
            )
            return None
        if any("\0" in a for a in value):
            self.error(dotted, "arguments must not contain NUL characters")
            return None
        return tuple(value)

    def optional_duration(
        self, table: dict[str, Any], key: str, dotted: str, default: float
    ) -> float | None:
        """None when given but invalid (already reported)."""
        if key not in table:
            return default
        return self.duration(table, key, dotted)

    def count(
        self, table: dict[str, Any], key: str, dotted: str, default: int, top: int
    ) -> int | None:
        value = self.value(table, key, dotted, int, required=False)
        if value is None:
            return None if key in table else default
        if not 1 <= value <= top:
            self.error(dotted, f"must be between 1 and {top}, got {value}")
            return None
        return int(value)

    def checks(self) -> tuple[Check, ...]:
        raw = self.data.get("check", [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.error("check", f"must be an array of [[check]] tables, got {_kind(raw)}")
            return ()
        checks: list[Check] = []
        names: set[str] = set()
        for index, item in enumerate(raw):
            prefix = f"check[{index}]"
            self.check_keys(item, "check", f"{prefix}.")
            name = self.string(item, "name", f"{prefix}.name", required=True)
            if name is not None and not _CHECK_NAME_RE.fullmatch(name):
                self.error(
                    f"{prefix}.name",
                    f"{json.dumps(name)} is not a valid check name (letters, digits, '_', '.' "
                    "and '-', at most 63 characters): it becomes a metric label",
                )
                name = None
            elif name is not None and name in names:
                self.error(f"{prefix}.name", f'"{name}" is used by an earlier check')
            if name is not None:
                names.add(name)
            command = self.argv(item, "command", f"{prefix}.command")
            tcp = None
            if "tcp" in item:
                tcp = self.address(item, "tcp", f"{prefix}.tcp", default_port=0)
                if tcp is not None and tcp[1] == 0:
                    self.error(f"{prefix}.tcp", 'needs a port: "HOST:PORT", e.g. "127.0.0.1:80"')
                    tcp = None
            if ("command" in item) == ("tcp" in item):
                self.error(
                    prefix,
                    "needs exactly one of command = [...] (a program to run) or "
                    'tcp = "HOST:PORT" (a TCP connect)',
                )
            interval = self.optional_duration(item, "interval", f"{prefix}.interval", 2.0)
            timeout = self.optional_duration(item, "timeout", f"{prefix}.timeout", 1.0)
            if interval is not None and timeout is not None and timeout > interval:
                self.error(
                    f"{prefix}.timeout",
                    f"{format_duration(timeout)} is longer than interval "
                    f"({format_duration(interval)}): runs would pile up",
                )
            rise = self.count(item, "rise", f"{prefix}.rise", 2, RISE_FALL_MAX)
            fall = self.count(item, "fall", f"{prefix}.fall", 2, RISE_FALL_MAX)
            if (
                name is None
                or (command is None and tcp is None)
                or None in (interval, timeout, rise, fall)
            ):
                continue
            assert interval is not None and timeout is not None
            assert rise is not None and fall is not None
            checks.append(
                Check(
                    name=name,
                    command=command,
                    tcp=tcp,
                    interval=interval,
                    timeout=timeout,
                    rise=rise,
                    fall=fall,
                )
            )
        return tuple(checks)

    def hooks(self) -> Hooks:
        table = self.section("hooks")
        commands = {key: self.argv(table, key, f"hooks.{key}") for key in HOOK_COMMANDS}
        timeout = self.optional_duration(table, "timeout", "hooks.timeout", 10.0)
        fence_timeout = self.optional_duration(table, "fence_timeout", "hooks.fence_timeout", 30.0)
        required = self.value(table, "fence_required", "hooks.fence_required", bool, required=False)
        if required and "fence" not in table:
            self.error(
                "hooks.fence_required",
                "is true but no hooks.fence command is set: no takeover could ever happen",
            )
        return Hooks(
            **commands,
            timeout=timeout or 10.0,
            fence_timeout=fence_timeout or 30.0,
            fence_required=bool(required),
        )

    def timing(self) -> Timing | None:
        table = self.section("timing")
        profile = self.string(table, "profile", "timing.profile", required=False) or "default"
        if profile not in PROFILES:
            choices = ", ".join(f'"{p}"' for p in PROFILES)
            self.error("timing.profile", f'unknown profile "{profile}" (choose {choices})')
            profile = "default"
        values: dict[str, Any] = {**asdict(Timing()), **PROFILES[profile]}
        ok = True
        for key in _DURATION_KEYS:
            if key in table:
                seconds = self.duration(table, key, f"timing.{key}")
                if seconds is None:
                    ok = False
                else:
                    values[key] = seconds
        count = self.value(table, "probe_count", "timing.probe_count", int, required=False)
        if count is not None:
            low, high = PROBE_COUNT_RANGE
            if low <= count <= high:
                values["probe_count"] = count
            else:
                self.error("timing.probe_count", f"must be from {low} to {high} (got {count})")
                ok = False
        elif "probe_count" in table:
            ok = False
        if not ok:
            return None
        # The cross-key rules only make sense once every value is known to be good.
        t = Timing(**values)
        fmt = format_duration
        if not t.dead_time > 2 * t.keepalive_interval:
            self.error(
                "timing.dead_time",
                "must be more than 2 x timing.keepalive_interval "
                f"(got {fmt(t.dead_time)} vs {fmt(t.keepalive_interval)})",
            )
            ok = False
        if t.probe_window > PROBE_WINDOW_MAX_DEAD_TIMES * t.dead_time:
            self.error(
                "timing.probe_window",
                f"must be at most {PROBE_WINDOW_MAX_DEAD_TIMES} x timing.dead_time "
                f"(got {fmt(t.probe_window)} vs {fmt(t.dead_time)})",
            )
            ok = False
        if t.reconnect_max < t.keepalive_interval:
            self.error(
                "timing.reconnect_max",
                "must be at least timing.keepalive_interval "
                f"(got {fmt(t.reconnect_max)} vs {fmt(t.keepalive_interval)})",
            )
            ok = False
        return t if ok else None

    def vips(self) -> tuple[Vip, ...]:
        raw = self.data.get("vip")
        if raw is None or raw == []:
            self.error("vip", 'at least one [[vip]] table is required (address = "IP/PREFIX")')
            return ()
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.error("vip", f"must be an array of [[vip]] tables, got {_kind(raw)}")
            return ()
        vips: list[Vip] = []
        seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        for index, item in enumerate(raw):
            prefix = f"vip[{index}]"
            self.check_keys(item, "vip", f"{prefix}.")
            address_text = self.string(item, "address", f"{prefix}.address", required=True)
            interface = self.string(item, "interface", f"{prefix}.interface", required=True)
            offlink = self.value(
                item, "allow_offlink", f"{prefix}.allow_offlink", bool, required=False
            )
            address = None
            if address_text is not None:
                try:
                    address = _parse_vip_address(address_text)
                except ValueError as exc:
                    self.error(f"{prefix}.address", str(exc))
            full = address is not None and address.network.prefixlen == address.max_prefixlen
            if address is not None and full and not offlink:
                usual = 24 if address.version == 4 else 64
                self.error(
                    f"{prefix}.address",
                    f"/{address.max_prefixlen} puts {address.ip} in a subnet of its own, so "
                    "clients on the LAN cannot reach it directly: give the prefix length of "
                    f'the LAN it lives on (e.g. "{address.ip}/{usual}"), or set '
                    "allow_offlink = true if the VIP is routed to this pair",
                )
                address = None
            if address is not None:
                if address.ip in seen:
                    self.error(
                        f"{prefix}.address",
                        f"{address.ip} is already vip[{seen[address.ip]}].address",
                    )
                else:
                    seen[address.ip] = index
            if interface is not None:
                problem = _interface_problem(interface)
                if problem is not None:
                    self.error(f"{prefix}.interface", problem)
                    interface = None
            if address is not None and interface is not None:
                vips.append(
                    Vip(address=address, interface=interface, allow_offlink=offlink is True)
                )
        return tuple(vips)

    def witnesses(
        self,
        vips: tuple[Vip, ...],
        listen: tuple[str, int] | None,
        peer_address: tuple[str, int] | None,
    ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None:
        if "witnesses" not in self.data:
            return None
        raw = self.data["witnesses"]
        if not isinstance(raw, list):
            self.error("witnesses", f"must be an array of IP addresses, got {_describe(raw)}")
            return None
        nodes = {a[0] for a in (listen, peer_address) if a is not None and a[0] != "0.0.0.0"}
        found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for index, item in enumerate(raw):
            key = f"witnesses[{index}]"
            if not isinstance(item, str):
                self.error(key, f"must be an IP address string, got {_describe(item)}")
                continue
            if "%" in item:
                self.error(key, f'"{item}": no %zone (a witness is asked on its VIPs\' interface)')
                continue
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address
            try:
                ip = ipaddress.ip_address(item)
            except ValueError:
                family = "IPv6" if ":" in item else "IPv4"
                self.error(key, f'"{item}" is not an {family} address (no host names, no prefix)')
                continue
            problem = _witness_problem(ip, vips, nodes)
            if problem is not None:
                self.error(key, problem)
            elif ip in found:
                self.error(key, f"{ip} is already witnesses[{found.index(ip)}]")
            else:
                found.append(ip)
        return tuple(found)

    def backend(self, vips: Sequence[Vip]) -> tuple[str | None, Path | None, str]:
        table = self.section("backend")
        kind = self.string(table, "type", "backend.type", required=False) or "auto"
        lan_dir = self.path_value(table, "lan_dir", "backend.lan_dir", required=False)
        tool = self.string(table, "address_tool", "backend.address_tool", required=False)
        platform = _current_platform()
        on_linux = platform.startswith("linux")
        on_illumos = platform.startswith("sunos")
        resolved: str | None = kind
        if kind not in BACKENDS:
            choices = ", ".join(f'"{b}"' for b in BACKENDS)
            self.error("backend.type", f'unknown backend "{kind}" (choose {choices})')
            resolved = None
        elif kind == "auto":
            if on_linux or on_illumos:
                resolved = "linux" if on_linux else "illumos"
            else:
                self.error(
                    "backend.type",
                    f'"auto" has no backend for this platform ({platform}); the backends are '
                    '"linux" (Linux only), "illumos" (illumos only) and "dry-run" (no network '
                    "changes)",
                )
                resolved = None
        elif kind == "linux" and not on_linux:
            self.error("backend.type", f'"linux" needs Linux (this is {platform}); try "dry-run"')
        elif kind == "illumos" and not on_illumos:
            self.error(
                "backend.type", f'"illumos" needs illumos (this is {platform}); try "dry-run"'
            )
        if lan_dir is not None and resolved in ("linux", "illumos"):
            self.error("backend.lan_dir", 'only meaningful with type = "dry-run"; remove it')
        if tool is not None and tool not in ADDRESS_TOOLS:
            self.error("backend.address_tool", f'must be "ipadm" or "ifconfig", got "{tool}"')
        elif tool is not None and resolved not in ("illumos", None):
            self.error("backend.address_tool", 'only meaningful with type = "illumos"; remove it')
        if resolved == "illumos":
            for index, vip in enumerate(vips):
                if vip.address.version == 6:
                    self.error(f"vip[{index}].address", "IPv6 VIPs need the Linux backend for now")
        return resolved, lan_dir, tool if tool in ADDRESS_TOOLS else "ipadm"

    def metrics(self) -> tuple[str, int] | None:
        table = self.section("metrics")
        text = self.string(table, "listen", "metrics.listen", required=False)
        if not text:
            return DEFAULT_METRICS_LISTEN
        if text == "off":
            return None
        try:
            return parse_address(text, default_port=DEFAULT_METRICS_PORT, allow_any=True)
        except ValueError as exc:
            self.error("metrics.listen", f'{exc}; or "off" to disable')
            return None

    def metrics_web_config(self) -> Path | None:
        table = self.data.get("metrics", {})  # its keys are checked by metrics()
        if not isinstance(table, dict):
            return None
        path = self.path_value(table, "web_config", "metrics.web_config", required=False)
        if path is None:
            return None
        from havip.shell.webconfig import WebConfigError, load_web_config

        try:
            load_web_config(path)
        except WebConfigError as exc:
            self.error("metrics.web_config", str(exc))
            return None
        return path


# --- the machine it runs on ------------------------------------------------------------


def check_environment(cfg: Config) -> list[str]:
    """What `havip check-config` adds to load_config: files, certificates, interfaces and
    folders on this machine. One line per problem, naming the config file and key."""
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{cfg.path}: {key}: {message}")

    tls = {"tls.ca": cfg.tls.ca, "tls.cert": cfg.tls.cert, "tls.key": cfg.tls.key}
    readable = True
    for key, file in tls.items():
        try:
            with file.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problem(key, f"cannot read {file}: {exc.strerror or exc}")
            readable = False
    if readable:
        # Imported here: pki pulls in cryptography, which loading a config does not need.
        from havip.pki import verify_node_files

        for line in verify_node_files(cfg.tls.ca, cfg.tls.cert, cfg.tls.key, cfg.node):
            # pki's lines start with the file they are about; name that file's key too.
            key = next((k for k, file in tls.items() if line.startswith(f"{file}: ")), "tls")
            problem(key, line)

    if cfg.backend == "linux":
        vip_ips = {vip.ip for vip in cfg.vips}
        for index, vip in enumerate(cfg.vips):
            try:
                socket.if_nametoindex(vip.interface)
            except OSError:
                problem(f"vip[{index}].interface", f'no interface "{vip.interface}" on this host')
                continue
            if vip.allow_offlink:
                continue
            addresses: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
            try:
                if vip.address.version == 4:
                    addresses = interface_addresses(vip.interface)
                else:
                    addresses = interface_addresses6(vip.interface)
            except (ImportError, OSError) as exc:
                problem(f"vip[{index}].interface", f"cannot read its addresses: {exc}")
                continue
            # The VIP itself may be on the interface already (a running daemon): not a subnet.
            # An IPv6 link-local address is no subnet a client could reach the VIP in.
            own = [a for a in addresses if a.ip not in vip_ips and not a.ip.is_link_local]
            if not any(vip.ip in a.network for a in own):
                have = ", ".join(str(a) for a in own) or f"no IPv{vip.address.version} address"
                problem(
                    f"vip[{index}].address",
                    f"{vip.ip} lies in no subnet configured on {vip.interface} (it has "
                    f"{have}), so clients there could not reach it; fix the VIP or the "
                    "interface, or set allow_offlink = true in this [[vip]] if it is routed",
                )

    if cfg.backend == "illumos":
        # Imported here: the illumos backend runs ipadm and dladm, which loading a config
        # does not need.
        from havip.backends.illumos import environment_problems

        for key, message in environment_problems(cfg):
            problem(key, message)

    folder = _folder_problem(cfg.state_dir)
    if folder is not None:
        problem("state_dir", folder)
    if cfg.lan_dir is not None:
        folder = _folder_problem(cfg.lan_dir)
        if folder is not None:
            problem("backend.lan_dir", folder)
    if cfg.control_socket is not None:
        control = _control_problem(cfg.control_socket)
        if control is not None:
            problem("control_socket", control)
    commands = [(f"check[{i}].command", c.command) for i, c in enumerate(cfg.checks)]
    commands += [(f"hooks.{key}", getattr(cfg.hooks, key)) for key in HOOK_COMMANDS]
    for key, argv in commands:
        why = _program_problem(argv[0]) if argv else None
        if why is not None:
            problem(key, why)
    return problems


def _program_problem(program: str) -> str | None:
    """Why `program` cannot be run, or None."""
    path = Path(program)
    if not path.exists():
        return f"{program} does not exist"
    if not path.is_file():
        return f"{program} is not a file"
    if not os.access(path, os.X_OK):
        return f"{program} is not executable"
    return None


def _folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be used (or created) and written to, or None."""
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} exists but is not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
        return None
    ancestor = folder.parent
    # Bounded: every step removes one path component.
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {folder}: {ancestor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {folder}: {ancestor} is not writable"
    return None


def _control_problem(path: Path) -> str | None:
    """Why the daemon could not safely create its control socket at `path`, or None.

    The same rules `havip.shell.control.start_control` enforces, minus the live-daemon
    probe (check-config may run while the daemon does).
    """
    folder = path.parent
    if folder.exists():
        info = folder.stat()
        if not folder.is_dir():
            return f"{folder} exists but is not a folder"
        if info.st_uid not in (0, os.geteuid()):
            return f"{folder} is owned by uid {info.st_uid}, not by root or the daemon's user"
        if info.st_mode & 0o022:
            return (
                f"{folder} is writable by group or others (mode {info.st_mode & 0o777:o}): "
                "anyone could replace the control socket"
            )
    else:
        creatable = _folder_problem(folder)
        if creatable is not None:
            return creatable
    if path.is_symlink() or (path.exists() and not path.is_socket()):
        return f"{path} exists and is not a socket (the daemon will not remove it)"
    return None


# --- what the interfaces say (Linux, pyroute2; imported lazily) -------------------------


def interface_addresses(name: str) -> list[ipaddress.IPv4Interface]:
    """IPv4 addresses with prefix configured on interface `name` (empty if it has none).

    Raises ImportError off Linux or without pyroute2, OSError if netlink fails.
    """
    return _ask_linux(lambda backend: backend.addresses(name))


def interface_addresses6(name: str) -> list[ipaddress.IPv6Interface]:
    """IPv6 addresses with prefix configured on interface `name`, link-local ones included.

    Raises ImportError off Linux or without pyroute2, OSError if netlink fails.
    """
    return _ask_linux(lambda backend: backend.addresses6(name))


def default_gateways6(name: str) -> list[ipaddress.IPv6Address]:
    """The gateway (usually link-local) of the main table's IPv6 default route through `name`.

    Raises ImportError off Linux or without pyroute2, OSError if netlink fails.
    """
    gateway = _ask_linux(lambda backend: backend.default_gateway6(name))
    return [] if gateway is None else [gateway]


def default_gateways(name: str) -> list[ipaddress.IPv4Address]:
    """The gateway of the main table's IPv4 default route that leaves through `name`.

    Raises ImportError off Linux or without pyroute2, OSError if netlink fails.
    """
    gateway = _ask_linux(lambda backend: backend.default_gateway(name))
    return [] if gateway is None else [gateway]


def illumos_default_gateways(name: str, address_tool: str = "ipadm") -> list[ipaddress.IPv4Address]:
    """The IPv4 default route's gateway when it leaves through `name` (illumos:
    `route -n get default`); OSError when it cannot be asked."""
    from havip.backends.base import BackendError
    from havip.backends.illumos import IllumosBackend

    try:
        gateway = IllumosBackend(address_tool=address_tool).default_gateway(name)
    except BackendError as exc:
        raise OSError(str(exc)) from exc
    return [gateway] if gateway is not None else []


def _ask_linux(question: Callable[[LinuxBackend], _T]) -> _T:
    """One netlink question through the Linux backend (the one place that reads interfaces)."""
    from havip.backends.base import BackendError
    from havip.backends.linux import LinuxBackend

    backend = LinuxBackend()
    try:
        return question(backend)
    except BackendError as exc:
        raise OSError(str(exc)) from exc
    finally:
        backend.close()


def _on_lan(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> bool:
    """Whether witness `ip` is on the LAN of these VIP subnets (one interface's). An IPv6
    link-local address is on every link with an IPv6 VIP."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        return any(net.version == 6 for net in nets)
    return any(ip in net for net in nets)


def witness_plan(
    cfg: Config,
) -> tuple[dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]], list[str]]:
    """The witnesses to ask (ARP or ND) on each VIP interface, and a warning line per
    interface with none.

    Explicit `witnesses` are split by interface (each goes to the interfaces whose VIP
    subnets contain it; an IPv6 link-local one to every interface with an IPv6 VIP). Without
    the key, each interface's default gateway is used when it lies in one of that interface's
    VIP subnets, and for IPv6 VIPs its IPv6 default gateway (usually link-local, which is on
    the link by definition; on illumos `route -n get default`); both are looked up now, so
    call it at start-up. The dry-run backend has no LAN to hear: without explicit witnesses
    it gets none and no warning.
    """
    plan: dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]] = {}
    warnings: list[str] = []
    for iface in dict.fromkeys(vip.interface for vip in cfg.vips):
        nets = [vip.address.network for vip in cfg.vips if vip.interface == iface]
        has_v4 = any(net.version == 4 for net in nets)
        has_v6 = any(net.version == 6 for net in nets)
        why: str | None = None
        chosen: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
        if cfg.witnesses is not None:
            chosen = tuple(w for w in cfg.witnesses if _on_lan(w, nets))
            if not cfg.witnesses:
                why = "witnesses = [] disables them"
            elif not chosen:
                why = "no address in witnesses is on its VIP subnets"
        elif cfg.backend not in ("linux", "illumos"):
            chosen = ()
        else:
            gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
            try:
                if cfg.backend == "illumos":
                    gateways += illumos_default_gateways(iface, cfg.address_tool)
                else:
                    if has_v4:
                        gateways += default_gateways(iface)
                    if has_v6:
                        gateways += default_gateways6(iface)
            except (ImportError, OSError) as exc:
                why = f"cannot look up its default gateway ({exc})"
            chosen = tuple(g for g in gateways if _on_lan(g, nets))
            if not chosen and why is None:
                subnets = ", ".join(str(net) for net in nets)
                why = f"no default gateway through it on the VIP's subnet ({subnets})"
        plan[iface] = chosen
        if why is not None:
            warnings.append(f"{cfg.path}: witnesses: {NO_WITNESS} ({iface}: {why})")
    return plan, warnings
