"""Config loading: every rule, with the exact file and key path in each message."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import socket
import sys
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from havip import config
from havip.config import (
    Config,
    ConfigError,
    Timing,
    TlsFiles,
    Vip,
    check_environment,
    format_duration,
    load_config,
    parse_duration,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "havip.example.toml"

BASE: dict[str, Any] = {
    "node": "n1",
    "primary": "n1",
    "listen": "198.18.0.1:7411",
    "peer": {"name": "n2", "address": "198.18.0.2:7411"},
    "tls": {"ca": "pki/ca.crt", "cert": "pki/n1.crt", "key": "pki/n1.key"},
    "vip": [{"address": "198.18.0.100/24", "interface": "eth0"}],
}

DELETE = object()


@pytest.fixture(autouse=True)
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend "auto" depends on the platform; pin it so results do not."""
    monkeypatch.setattr(config, "_current_platform", lambda: "linux")


def to_toml(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for these tests: scalars, tables, arrays of tables."""

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value)  # a JSON string is a valid TOML basic string
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return str(value)

    def is_tables(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    # Plain values first: after a [table] header they would land inside that table.
    lines = [f"{k} = {scalar(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [
        f"{k} = {scalar(v)}" for k, v in data.items() if isinstance(v, list) and not is_tables(v)
    ]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {scalar(v)}" for k, v in value.items()]
        elif is_tables(value):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {scalar(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def changed(changes: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of BASE with "a.b" / "vip[1].address" keys set, or removed with DELETE."""
    data = copy.deepcopy(BASE if base is None else base)
    for dotted, value in changes.items():
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            match = re.fullmatch(r"(\w+)\[(\d+)\]", part)
            if match:
                items = node.setdefault(match[1], [])
                while len(items) <= int(match[2]):
                    items.append({})
                node = items[int(match[2])]
            else:
                node = node.setdefault(part, {})
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return data


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "havip.toml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else to_toml(data))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def load(tmp_path: Path, changes: dict[str, Any]) -> Config:
    return load_config(write(tmp_path, changed(changes)))


# --- valid files ---------------------------------------------------------------------

FULL = """
node = "n1"
primary = "n2"
preempt = false
listen = "0.0.0.0"
state_dir = "/srv/havip/state"
control_socket = "run/n1.sock"
witnesses = ["198.18.0.254", "198.18.1.5"]

[peer]
name = "n2"
address = "198.18.0.2:7500"

[tls]
ca = "/etc/havip/pki/ca.crt"
cert = "certs/n1.crt"
key = "../keys/n1.key"

[timing]
profile = "fast"
keepalive_interval = "25ms"
dead_time = "0.1s"
probe_count = 4
probe_window = "40ms"
handshake_timeout = "3s"
reconnect_max = "750ms"
preempt_delay = "2m"

[[vip]]
address = "198.18.0.100/24"
interface = "eth0"

[[vip]]
address = "198.18.1.6/30"
interface = "bond0.42"

[backend]
type = "dry-run"
lan_dir = "/run/havip/lan"

[metrics]
listen = "198.18.0.1:9100"
"""


def test_full_file_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert load_config(path) == Config(
        path=path,
        node="n1",
        primary="n2",
        preempt=False,
        listen=("0.0.0.0", 7411),
        peer_name="n2",
        peer_address=("198.18.0.2", 7500),
        tls=TlsFiles(
            ca=Path("/etc/havip/pki/ca.crt"),
            cert=tmp_path / "certs/n1.crt",
            key=tmp_path / "../keys/n1.key",
        ),
        timing=Timing(
            keepalive_interval=0.025,
            dead_time=0.1,
            probe_count=4,
            probe_window=0.04,
            handshake_timeout=3.0,
            reconnect_max=0.75,
            preempt_delay=120.0,
        ),
        vips=(
            Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="eth0"),
            Vip(address=ipaddress.IPv4Interface("198.18.1.6/30"), interface="bond0.42"),
        ),
        backend="dry-run",
        lan_dir=Path("/run/havip/lan"),
        metrics_listen=("198.18.0.1", 9100),
        state_dir=Path("/srv/havip/state"),
        control_socket=tmp_path / "run/n1.sock",
        witnesses=(ipaddress.IPv4Address("198.18.0.254"), ipaddress.IPv4Address("198.18.1.5")),
    )


def test_minimal_file_takes_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.preempt is True
    assert cfg.is_primary
    assert cfg.state_dir == Path("/var/lib/havip")
    assert cfg.timing == Timing()
    assert cfg.backend == "linux"
    assert cfg.lan_dir is None
    assert cfg.metrics_listen == ("127.0.0.1", 9741)
    assert cfg.control_socket == Path("/run/havip/n1.sock")
    assert cfg.witnesses is None  # the default gateway, looked up at run time
    assert cfg.vips[0].allow_offlink is False
    assert str(cfg.vips[0]) == "198.18.0.100/24"
    assert cfg.vips[0].ip == ipaddress.IPv4Address("198.18.0.100")


def test_example_file_loads() -> None:
    """The sysadmin's starting point; its TLS files do not exist, which is fine here."""
    cfg = load_config(EXAMPLE)
    assert (cfg.node, cfg.peer_name, cfg.primary) == ("n1", "n2", "n1")
    assert cfg.tls.key == Path("/etc/havip/pki/n1.key")
    assert not cfg.tls.key.exists()
    assert cfg.timing == Timing()
    assert cfg.backend == "linux"
    assert len(cfg.vips) == 1


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, keys in config._KEYS.items():
        for key in keys:
            is_table = not section and key in config._KEYS
            pattern = rf"^#?\[\[?{key}\]" if is_table else rf"^#?{key} = "
            assert re.search(pattern, text, re.M), f"{section}.{key} is not in the example"


@pytest.mark.parametrize(
    ("changes", "attr", "expected"),
    [
        ({"listen": "198.18.0.1"}, "listen", ("198.18.0.1", 7411)),
        ({"listen": "0.0.0.0:8000"}, "listen", ("0.0.0.0", 8000)),
        ({"peer.address": "198.18.0.2"}, "peer_address", ("198.18.0.2", 7411)),
        ({"peer.address": "198.18.0.2:1"}, "peer_address", ("198.18.0.2", 1)),
        ({"peer.address": "198.18.0.2:65535"}, "peer_address", ("198.18.0.2", 65535)),
        ({"metrics.listen": ""}, "metrics_listen", ("127.0.0.1", 9741)),
        ({"metrics.listen": "off"}, "metrics_listen", None),
        ({"metrics.listen": "0.0.0.0"}, "metrics_listen", ("0.0.0.0", 9741)),
        ({"metrics.listen": "198.18.0.1:9100"}, "metrics_listen", ("198.18.0.1", 9100)),
        ({"metrics": {}}, "metrics_listen", ("127.0.0.1", 9741)),
        ({"backend.type": "linux"}, "backend", "linux"),
        ({"backend.type": "dry-run"}, "backend", "dry-run"),
        ({"backend.type": "dry-run", "backend.lan_dir": "/x"}, "lan_dir", Path("/x")),
        ({"primary": "n2"}, "is_primary", False),
        ({"node": "a" * 63, "primary": "n2"}, "node", "a" * 63),
        ({"node": "N1.example-lab", "primary": "n2"}, "node", "N1.example-lab"),
        (
            {"vip[0].address": "198.18.0.1/31"},
            "vips",
            (Vip(address=ipaddress.IPv4Interface("198.18.0.1/31"), interface="eth0"),),
        ),
        (
            {"vip[0].interface": "a" * 15},
            "vips",
            (Vip(address=ipaddress.IPv4Interface("198.18.0.100/24"), interface="a" * 15),),
        ),
        ({"preempt": False}, "preempt", False),
    ],
)
def test_valid_values(tmp_path: Path, changes: dict[str, Any], attr: str, expected: object) -> None:
    assert getattr(load(tmp_path, changes), attr) == expected


# --- one error each, with its key path --------------------------------------------------

ERROR_CASES: list[tuple[dict[str, Any], str, str]] = [
    # unknown keys, everywhere
    ({"nodes": "n1"}, "nodes", 'unknown key (typo?); did you mean "node"?'),
    ({"peer.nme": "n2"}, "peer.nme", "unknown key (typo?)"),
    ({"tls.crt": "x"}, "tls.crt", "unknown key (typo?)"),
    ({"timing.dead_tme": "1s"}, "timing.dead_tme", 'did you mean "dead_time"?'),
    ({"vip[0].iface": "eth0"}, "vip[0].iface", "unknown key (typo?)"),
    ({"backend.kind": "linux"}, "backend.kind", "unknown key (typo?)"),
    ({"metrics.port": 9100}, "metrics.port", "unknown key (typo?)"),
    ({"zzz": {"a": 1}}, "zzz", "unknown key (typo?)"),
    # wrong types
    ({"node": 5}, "node", "must be a string, got integer 5"),
    ({"node": {"a": 1}}, "node", "must be a string, got table"),
    ({"listen": ["198.18.0.1"]}, "listen", "must be a string, got array"),
    ({"timing.dead_time": 0.5}, "timing.dead_time", "(got 0.5)"),
    ({"preempt": "yes"}, "preempt", 'must be a boolean, got string "yes"'),
    ({"listen": 7411}, "listen", "must be a string, got integer 7411"),
    ({"timing.probe_count": "3"}, "timing.probe_count", 'must be an integer, got string "3"'),
    ({"timing.probe_count": True}, "timing.probe_count", "must be an integer, got boolean true"),
    ({"timing.profile": 1}, "timing.profile", "must be a string"),
    ({"timing.dead_time": 200}, "timing.dead_time", 'duration needs a unit, e.g. "200ms"'),
    ({"timing.dead_time": 0.2}, "timing.dead_time", 'duration needs a unit, e.g. "200ms"'),
    ({"timing.dead_time": True}, "timing.dead_time", "must be a duration string"),
    ({"peer": "n2"}, "peer", 'must be a table ([peer]), got string "n2"'),
    ({"tls": ["a"]}, "tls", "must be a table ([tls])"),
    ({"vip": {"address": "198.18.0.100/24"}}, "vip", "must be an array of [[vip]] tables"),
    ({"vip": ["198.18.0.100/24"]}, "vip", "must be an array of [[vip]] tables"),
    ({"tls.ca": ""}, "tls.ca", "must not be empty"),
    ({"state_dir": 1}, "state_dir", "must be a string"),
    # missing required keys
    ({"node": DELETE}, "node", "required key missing"),
    ({"primary": DELETE}, "primary", "required key missing"),
    ({"listen": DELETE}, "listen", "required key missing"),
    ({"peer.name": DELETE}, "peer.name", "required key missing"),
    ({"peer.address": DELETE}, "peer.address", "required key missing"),
    ({"tls.ca": DELETE}, "tls.ca", "required key missing"),
    ({"tls.cert": DELETE}, "tls.cert", "required key missing"),
    ({"tls.key": DELETE}, "tls.key", "required key missing"),
    ({"vip": DELETE}, "vip", "at least one [[vip]] table is required"),
    ({"vip": []}, "vip", "at least one [[vip]] table is required"),
    ({"vip[0].address": DELETE}, "vip[0].address", "required key missing"),
    ({"vip[0].interface": DELETE}, "vip[0].interface", "required key missing"),
    # names
    ({"peer.name": "n1"}, "peer.name", 'must differ from node (both are "n1")'),
    ({"primary": "n3"}, "primary", 'must be node ("n1") or peer.name ("n2"), got "n3"'),
    ({"node": "-n1", "primary": "n2"}, "node", "is not a valid node name"),
    ({"node": "n_1", "primary": "n2"}, "node", "is not a valid node name"),
    ({"node": "a" * 64, "primary": "n2"}, "node", "is not a valid node name"),
    ({"node": "", "primary": "n2"}, "node", "is not a valid node name"),
    ({"peer.name": "n 2"}, "peer.name", "is not a valid node name"),
    # addresses
    ({"listen": "198.18.0.1:0"}, "listen", "port 0"),
    ({"listen": "198.18.0.1:65536"}, "listen", "port 65536"),
    ({"listen": "198.18.0.1:http"}, "listen", 'port "http"'),
    ({"listen": "198.18.0.1:"}, "listen", 'port ""'),
    ({"listen": ""}, "listen", "empty address"),
    ({"peer.address": "n2.example:7411"}, "peer.address", "is not an IPv4 address"),
    ({"peer.address": "198.18.0.256"}, "peer.address", "is not an IPv4 address"),
    ({"peer.address": "[2001:db8::2]:7411"}, "peer.address", "IPv6"),
    ({"listen": "::"}, "listen", "the peer link is IPv4-only (VIPs may be IPv6)"),
    ({"peer.address": "0.0.0.0:7411"}, "peer.address", "0.0.0.0 is only allowed where"),
    ({"metrics.listen": "localhost:9741"}, "metrics.listen", '; or "off" to disable'),
    ({"metrics.listen": "198.18.0.1:7411"}, "metrics.listen", "clashes with listen"),
    ({"metrics.listen": False}, "metrics.listen", "must be a string"),
    # VIPs
    ({"vip[0].address": "198.18.0.100"}, "vip[0].address", "needs a prefix length"),
    ({"vip[0].address": "198.18.0.100/33"}, "vip[0].address", 'prefix length "/33"'),
    ({"vip[0].address": "198.18.0.100/x"}, "vip[0].address", 'prefix length "/x"'),
    ({"vip[0].address": "198.18.0/24"}, "vip[0].address", "is not an IPv4 address"),
    ({"vip[0].address": "fe80::100/64"}, "vip[0].address", "cannot be a VIP (link-local"),
    ({"vip[0].address": "198.18.0.0/24"}, "vip[0].address", "network address of"),
    ({"vip[0].address": "198.18.0.255/24"}, "vip[0].address", "broadcast address of"),
    ({"vip[0].address": "224.0.0.18/32"}, "vip[0].address", "not a unicast address"),
    ({"vip[0].interface": ""}, "vip[0].interface", "must not be empty"),
    ({"vip[0].interface": "a" * 16}, "vip[0].interface", "longer than 15 characters"),
    ({"vip[0].interface": "eth/0"}, "vip[0].interface", "not a valid interface name"),
    ({"vip[0].interface": "eth 0"}, "vip[0].interface", "not a valid interface name"),
    (
        {"vip[1].address": "198.18.0.100/25", "vip[1].interface": "eth1"},
        "vip[1].address",
        "198.18.0.100 is already vip[0].address",
    ),
    # timing
    ({"timing.profile": "slow"}, "timing.profile", 'unknown profile "slow"'),
    ({"timing.dead_time": "0ms"}, "timing.dead_time", "must be positive (got 0ms)"),
    ({"timing.handshake_timeout": "0s"}, "timing.handshake_timeout", "must be positive"),
    ({"timing.preempt_delay": "-1s"}, "timing.preempt_delay", ""),
    ({"timing.dead_time": "0s"}, "timing.dead_time", "must be positive"),
    ({"timing.keepalive_interval": "-5ms"}, "timing.keepalive_interval", "must not be negative"),
    ({"timing.probe_window": "80"}, "timing.probe_window", "duration needs a unit"),
    ({"timing.probe_window": "80us"}, "timing.probe_window", 'unknown unit "us"'),
    ({"timing.probe_count": 0}, "timing.probe_count", "must be from 1 to 10 (got 0)"),
    ({"timing.probe_count": 11}, "timing.probe_count", "must be from 1 to 10 (got 11)"),
    (
        {"timing.dead_time": "200ms", "timing.keepalive_interval": "100ms"},
        "timing.dead_time",
        "must be more than 2 x timing.keepalive_interval (got 200ms vs 100ms)",
    ),
    (
        {"timing.probe_window": "1.7s"},
        "timing.probe_window",
        "must be at most 5 x timing.dead_time (got 1.7s vs 320ms)",
    ),
    (
        {"timing.reconnect_max": "90ms", "timing.keepalive_interval": "100ms"},
        "timing.reconnect_max",
        "must be at least timing.keepalive_interval (got 90ms vs 100ms)",
    ),
    # backend
    ({"backend.type": "xen"}, "backend.type", 'unknown backend "xen"'),
    ({"backend.type": "linux", "backend.lan_dir": "/x"}, "backend.lan_dir", '"dry-run"'),
    ({"backend.lan_dir": "/x"}, "backend.lan_dir", 'only meaningful with type = "dry-run"'),
    ({"backend.type": "dry-run", "backend.lan_dir": ""}, "backend.lan_dir", "must not be empty"),
]


@pytest.mark.parametrize(
    ("changes", "key", "message"), ERROR_CASES, ids=[case[1] for case in ERROR_CASES]
)
def test_one_error(tmp_path: Path, changes: dict[str, Any], key: str, message: str) -> None:
    path = write(tmp_path, changed(changes))
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: {key}: "), errors[0]
    assert message in errors[0]


def test_error_line_has_the_documented_shape(tmp_path: Path) -> None:
    path = write(
        tmp_path, changed({"timing.dead_time": "80ms", "timing.keepalive_interval": "50ms"})
    )
    assert errors_of(path) == [
        f"{path}: timing.dead_time: must be more than 2 x timing.keepalive_interval "
        "(got 80ms vs 50ms)"
    ]


def test_all_errors_are_collected_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        changed(
            {
                "node": DELETE,
                "peer": DELETE,
                "preempt": "no",
                "colour": "blue",
                "timing.dead_time": "80ms",
                "timing.probe_count": 0,
                "vip[0].interface": "",
                "vip[1].address": "198.18.0.300/24",
                "vip[1].interface": "eth0",
                "backend.type": "bsd",
                "metrics.listen": "::1",
            }
        ),
    )
    keys = [error.removeprefix(f"{path}: ").split(": ")[0] for error in errors_of(path)]
    assert sorted(keys) == sorted(
        [
            "colour",
            "node",
            "preempt",
            "peer.name",
            "peer.address",
            "timing.probe_count",
            "vip[0].interface",
            "vip[1].address",
            "backend.type",
            "metrics.listen",
        ]
    )


def test_cross_rules_run_once_single_values_are_good(tmp_path: Path) -> None:
    """dead_time 80ms would break the 2x rule, but a broken interval is reported alone."""
    changes = {"timing.keepalive_interval": "5", "timing.dead_time": "80ms"}
    errors = errors_of(write(tmp_path, changed(changes)))
    assert len(errors) == 1
    assert "timing.keepalive_interval: duration needs a unit" in errors[0]


# --- whole-file failures -----------------------------------------------------------------


def test_toml_syntax_error_is_one_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'node = "n1"\nprimary = \n')
    errors = errors_of(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}: invalid TOML: ")
    assert "line 2" in errors[0]


def test_duplicate_toml_key_is_a_syntax_error(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, 'node = "n1"\nnode = "n2"\n'))
    assert len(errors) == 1 and "line 2" in errors[0]


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_unreadable_file_is_one_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "havip.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b'node = "n\xff"\n')
    errors = errors_of(path)
    assert len(errors) == 1
    expected = {"missing": "cannot read", "directory": "cannot read", "not-utf8": "not UTF-8"}
    assert errors[0].startswith(f"{path}: {expected[kind]}")


# --- paths -------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    data = changed(
        {
            "tls.ca": "/abs/ca.crt",
            "state_dir": "state",
            "backend.type": "dry-run",
            "backend.lan_dir": "../lan",
        }
    )
    write(etc, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the daemon's working folder must not matter
    cfg = load_config(Path("../etc/havip.toml"))
    assert cfg.path == Path("../etc/havip.toml")
    assert cfg.tls.ca == Path("/abs/ca.crt")
    assert cfg.tls.cert.is_absolute()
    assert cfg.tls.cert.resolve() == etc / "pki" / "n1.crt"
    assert cfg.tls.key.resolve() == etc / "pki" / "n1.key"
    assert cfg.state_dir.resolve() == etc / "state"
    assert cfg.lan_dir is not None and cfg.lan_dir.resolve() == tmp_path / "lan"


# --- timing profiles ------------------------------------------------------------------


def test_default_profile_matches_timing_defaults() -> None:
    assert Timing() == Timing(**config.PROFILES["default"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        ({}, Timing()),
        ({"profile": "default"}, Timing()),
        (
            {"profile": "fast"},
            Timing(keepalive_interval=0.015, dead_time=0.05, probe_count=3, probe_window=0.025),
        ),
        (
            {"profile": "fast", "dead_time": "100ms", "probe_count": 5},
            Timing(keepalive_interval=0.015, dead_time=0.1, probe_count=5, probe_window=0.025),
        ),
        (
            {"keepalive_interval": "100ms", "dead_time": "1s"},
            Timing(keepalive_interval=0.1, dead_time=1.0),
        ),
        (
            {"preempt_delay": "2m", "handshake_timeout": "500ms"},
            Timing(preempt_delay=120.0, handshake_timeout=0.5),
        ),
    ],
)
def test_profiles_and_overrides(tmp_path: Path, timing: dict[str, Any], expected: Timing) -> None:
    assert load_config(write(tmp_path, {**BASE, "timing": timing})).timing == expected


def test_cross_rules_see_the_profile_values(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "timing": {"profile": "fast", "dead_time": "30ms"}})
    assert errors_of(path) == [
        f"{path}: timing.dead_time: must be more than 2 x timing.keepalive_interval "
        "(got 30ms vs 15ms)"
    ]


# --- backend and platform ------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "backend", "expected"),
    [
        ("darwin", {}, 'backend.type: "auto" has no backend for this platform (darwin)'),
        ("darwin", {"type": "auto"}, '"illumos" (illumos only) and "dry-run"'),
        ("sunos5", {"type": "linux"}, 'backend.type: "linux" needs Linux (this is sunos5)'),
        ("linux", {"type": "illumos"}, 'backend.type: "illumos" needs illumos (this is linux)'),
    ],
)
def test_backend_on_another_platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    platform: str,
    backend: dict[str, Any],
    expected: str,
) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: platform)
    errors = errors_of(write(tmp_path, {**BASE, "backend": backend}))
    assert len(errors) == 1 and expected in errors[0], errors


def test_auto_is_illumos_on_sunos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: "sunos5")
    cfg = load(tmp_path, {})
    assert (cfg.backend, cfg.address_tool) == ("illumos", "ipadm")


def test_dry_run_works_on_any_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: "darwin")
    assert load(tmp_path, {"backend.type": "dry-run"}).backend == "dry-run"


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("50ms", 0.05),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("0.5ms", 0.0005),
        (".5s", 0.5),
        ("0ms", 0.0),
        (" 80ms ", 0.08),
        ("1 s", 1.0),
        ("007s", 7.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("200", 'duration needs a unit, e.g. "200ms"'),
        ("1.5", 'duration needs a unit, e.g. "200ms"'),
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-1s", "must not be negative"),
        ("1h", 'unknown unit "h"'),
        ("200us", 'unknown unit "us"'),
        ("5MS", 'unknown unit "MS"'),
        ("ms", "not a duration"),
        ("1.2.3s", "not a duration"),
        ("1e3ms", "not a duration"),
        ("1s2", "not a duration"),
        ("1m30s", "not a duration"),
        ("+1s", "not a duration"),
        ("inf s", "not a duration"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.05, "50ms"),
        (0.2, "200ms"),
        (0.0005, "0.5ms"),
        (0.0, "0ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (90.0, "90s"),
        (60.0, "1m"),
        (120.0, "2m"),
        (0.1 + 0.2, "300ms"),
        (-0.05, "-50ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m"]))
def test_format_reads_back(number: int, unit: str) -> None:
    seconds = parse_duration(f"{number / 10}{unit}")
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


# --- check_environment ------------------------------------------------------------------

PkiCalls = list[tuple[Path, Path, Path, str]]


@pytest.fixture
def fake_pki(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[list[str]], PkiCalls]]:
    """Stands in for havip.pki, so these tests do not depend on certificates."""

    def install(answer: list[str]) -> PkiCalls:
        calls: PkiCalls = []

        def verify_node_files(
            ca: Path, cert: Path, key: Path, node: str, now: datetime | None = None
        ) -> list[str]:
            calls.append((ca, cert, key, node))
            return answer

        module = types.ModuleType("havip.pki")
        setattr(module, "verify_node_files", verify_node_files)  # noqa: B010
        monkeypatch.setitem(sys.modules, "havip.pki", module)
        return calls

    yield install


def env_config(tmp_path: Path, changes: dict[str, Any]) -> Config:
    pki = tmp_path / "pki"
    pki.mkdir(exist_ok=True)
    for name in ("ca.crt", "n1.crt", "n1.key"):
        (pki / name).write_text("x")
    state = {"state_dir": str(tmp_path / "state"), "control_socket": str(tmp_path / "run/n1.sock")}
    return load_config(write(tmp_path, changed({"backend.type": "dry-run", **state, **changes})))


def test_environment_all_good(tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls]) -> None:
    calls = fake_pki([])
    cfg = env_config(tmp_path, {})
    assert check_environment(cfg) == []
    assert calls == [(cfg.tls.ca, cfg.tls.cert, cfg.tls.key, "n1")]
    assert not cfg.state_dir.exists()  # checking never creates anything


def test_environment_reports_pki_problems_under_their_key(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls]
) -> None:
    cert, key = tmp_path / "pki" / "n1.crt", tmp_path / "pki" / "n1.key"
    fake_pki([f"{cert}: does not name node n1", f"{key}: readable by others", "odd: thing"])
    cfg = env_config(tmp_path, {})
    assert check_environment(cfg) == [
        f"{cfg.path}: tls.cert: {cert}: does not name node n1",
        f"{cfg.path}: tls.key: {key}: readable by others",
        f"{cfg.path}: tls: odd: thing",
    ]


def test_environment_with_real_certificates(tmp_path: Path) -> None:
    """The real havip.pki: good files pass; a loose key and someone else's cert do not."""
    from havip import pki

    pki.init_pki(tmp_path / "pki", [pki.NodeSpec(name="n1"), pki.NodeSpec(name="n2")])
    cfg = load_config(
        write(tmp_path, changed({"backend.type": "dry-run", "state_dir": str(tmp_path)}))
    )
    assert check_environment(cfg) == []

    cfg.tls.key.chmod(0o644)
    problems = check_environment(cfg)
    assert len(problems) == 1
    assert problems[0].startswith(f"{cfg.path}: tls.key: {cfg.tls.key}: ")

    cfg.tls.key.chmod(0o600)
    wrong = load_config(
        write(
            tmp_path,
            changed(
                {"backend.type": "dry-run", "state_dir": str(tmp_path), "tls.cert": "pki/n2.crt"}
            ),
        )
    )
    keys = {line.removeprefix(f"{wrong.path}: ").split(":")[0] for line in check_environment(wrong)}
    assert keys == {"tls.cert", "tls.key"}  # names n2, and n1.key does not match it


def test_environment_unreadable_files_skip_the_certificate_check(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls]
) -> None:
    calls = fake_pki([])
    cfg = env_config(tmp_path, {"tls.ca": "nowhere/ca.crt", "tls.key": "pki"})
    problems = check_environment(cfg)
    assert len(problems) == 2
    assert problems[0].startswith(f"{cfg.path}: tls.ca: cannot read {tmp_path}/nowhere/ca.crt")
    assert problems[1].startswith(f"{cfg.path}: tls.key: cannot read {tmp_path}/pki")
    assert calls == []


def test_environment_interfaces_checked_for_linux_only(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_pki([])
    addresses_read: list[str] = []

    def addresses(name: str) -> list[ipaddress.IPv4Interface]:
        addresses_read.append(name)
        return [ipaddress.IPv4Interface("198.18.0.1/24")]

    monkeypatch.setattr(config, "interface_addresses", addresses)
    existing = socket.if_nameindex()[0][1]
    vips = {
        "vip[0].interface": existing,
        "vip[1].address": "198.18.0.101/24",
        "vip[1].interface": "havipnone0",
    }
    linux = env_config(tmp_path, {**vips, "backend.type": "linux"})
    assert check_environment(linux) == [
        f'{linux.path}: vip[1].interface: no interface "havipnone0" on this host'
    ]
    assert addresses_read == [existing]
    dry_run = env_config(tmp_path, vips)
    assert check_environment(dry_run) == []


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("file", "exists but is not a folder"),
        ("under-file", "is not a folder"),
        ("new", None),
        ("new-deep", None),
        ("exists", None),
    ],
)
def test_environment_state_dir(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls], layout: str, message: str | None
) -> None:
    fake_pki([])
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    state = {
        "file": blocker,
        "under-file": blocker / "state",
        "new": tmp_path / "state",
        "new-deep": tmp_path / "a" / "b" / "state",
        "exists": tmp_path,
    }[layout]
    cfg = env_config(tmp_path, {"state_dir": str(state)})
    problems = check_environment(cfg)
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith(f"{cfg.path}: state_dir: ")
        assert message in problems[0]


@pytest.mark.parametrize("exists", [True, False])
def test_environment_unwritable_folders(
    tmp_path: Path,
    fake_pki: Callable[[list[str]], PkiCalls],
    monkeypatch: pytest.MonkeyPatch,
    exists: bool,
) -> None:
    """Root may write anywhere, so pretend: os.access says no."""
    fake_pki([])
    folder = tmp_path / "state"
    if exists:
        folder.mkdir()
    cfg = env_config(tmp_path, {"state_dir": str(folder), "backend.lan_dir": str(folder)})
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    problems = check_environment(cfg)
    assert [p.removeprefix(f"{cfg.path}: ").split(":")[0] for p in problems] == [
        "state_dir",
        "backend.lan_dir",
        "control_socket",
    ]
    assert all("not writable" in p for p in problems)


def test_preempt_delay_may_be_zero(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    assert "\n[timing]\n" in text
    path = tmp_path / "havip.toml"
    path.write_text(text.replace("\n[timing]\n", '\n[timing]\npreempt_delay = "0s"\n', 1))
    assert load_config(path).timing.preempt_delay == 0.0


@pytest.mark.parametrize(
    ("line", "guard"), [("", 0.15), ('blip_guard = "0s"', 0.0), ('blip_guard = "80ms"', 0.08)]
)
def test_blip_guard_defaults_to_one_keepalive_interval(
    tmp_path: Path, line: str, guard: float
) -> None:
    path = tmp_path / "havip.toml"
    path.write_text(EXAMPLE.read_text().replace("\n[timing]\n", f"\n[timing]\n{line}\n", 1))
    assert load_config(path).timing.guard == pytest.approx(guard)


def test_blip_guard_must_not_be_negative(tmp_path: Path) -> None:
    path = tmp_path / "havip.toml"
    bad = 'blip_guard = "-5ms"'
    path.write_text(EXAMPLE.read_text().replace("\n[timing]\n", f"\n[timing]\n{bad}\n", 1))
    with pytest.raises(ConfigError, match=r"timing\.blip_guard"):
        load_config(path)


# --- control socket, witnesses, off-link VIPs -----------------------------------------------

IP = ipaddress.IPv4Address


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, Path("/run/havip/n1.sock")),
        ({"control_socket": "/run/x/h.sock"}, Path("/run/x/h.sock")),
    ],
)
def test_control_socket_values(tmp_path: Path, changes: dict[str, Any], expected: Path) -> None:
    assert load(tmp_path, changes).control_socket == expected


def test_control_socket_relative_to_the_config_file(tmp_path: Path) -> None:
    assert load(tmp_path, {"control_socket": "c.sock"}).control_socket == tmp_path / "c.sock"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], ()),
        (["198.18.0.254"], (IP("198.18.0.254"),)),
        (["198.18.0.254", "198.18.0.3"], (IP("198.18.0.254"), IP("198.18.0.3"))),
    ],
)
def test_witnesses_values(tmp_path: Path, value: list[str], expected: tuple[IP, ...]) -> None:
    assert load(tmp_path, {"witnesses": value}).witnesses == expected


def test_allow_offlink_admits_a_slash_32(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"vip[0].address": "203.0.113.9/32", "vip[0].allow_offlink": True})
    assert cfg.vips[0].allow_offlink is True
    assert cfg.vips[0].address == ipaddress.IPv4Interface("203.0.113.9/32")


NEW_ERROR_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"control_socket": 5}, "control_socket", "must be a string, got integer 5"),
    ({"control_socket": ""}, "control_socket", "must not be empty"),
    ({"control_socket": "/" + "s" * 120}, "control_socket", "longer than 107 bytes"),
    ({"witnesses": "198.18.0.254"}, "witnesses", "must be an array of IP addresses"),
    ({"witnesses": [5]}, "witnesses[0]", "must be an IP address string, got integer 5"),
    ({"witnesses": ["gw.example"]}, "witnesses[0]", "is not an IPv4 address"),
    ({"witnesses": ["198.18.0.254/24"]}, "witnesses[0]", "is not an IPv4 address"),
    ({"witnesses": ["224.0.0.1"]}, "witnesses[0]", "not a unicast address"),
    ({"witnesses": ["0.0.0.0"]}, "witnesses[0]", "not a unicast address"),
    ({"witnesses": ["255.255.255.255"]}, "witnesses[0]", "not a unicast address"),
    ({"witnesses": ["198.18.0.100"]}, "witnesses[0]", "is a VIP"),
    ({"witnesses": ["198.18.0.1"]}, "witnesses[0]", "this node's or the peer's address"),
    ({"witnesses": ["198.18.0.2"]}, "witnesses[0]", "this node's or the peer's address"),
    (
        {"witnesses": ["198.18.9.1"]},
        "witnesses[0]",
        "198.18.9.1 is in no VIP's subnet (198.18.0.0/24)",
    ),
    ({"witnesses": ["198.18.0.255"]}, "witnesses[0]", "network or broadcast address"),
    (
        {"witnesses": ["198.18.0.254", "198.18.0.254"]},
        "witnesses[1]",
        "198.18.0.254 is already witnesses[0]",
    ),
    ({"vip[0].address": "198.18.0.100/32"}, "vip[0].address", "/32 puts 198.18.0.100 in a"),
    ({"vip[0].allow_offlink": "yes"}, "vip[0].allow_offlink", "must be a boolean"),
]


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    NEW_ERROR_CASES,
    ids=[f"{case[1]}-{i}" for i, case in enumerate(NEW_ERROR_CASES)],
)
def test_new_keys_one_error(
    tmp_path: Path, changes: dict[str, Any], key: str, message: str
) -> None:
    path = write(tmp_path, changed(changes))
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: {key}: "), errors[0]
    assert message in errors[0]


def test_slash_32_error_explains_itself(tmp_path: Path) -> None:
    (error,) = errors_of(write(tmp_path, changed({"vip[0].address": "198.18.0.100/32"})))
    assert 'e.g. "198.18.0.100/24"' in error and "allow_offlink = true" in error


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[ipaddress.IPv4Interface]]:
    """What each interface has configured, as check_environment will read it."""
    table: dict[str, list[ipaddress.IPv4Interface]] = {}

    def read(name: str) -> list[ipaddress.IPv4Interface]:
        if name not in table:
            raise OSError(f"unexpected lookup of {name}")
        return table[name]

    monkeypatch.setattr(config, "interface_addresses", read)
    return table


@pytest.mark.parametrize(
    ("configured", "offlink", "problem"),
    [
        (["198.18.0.1/24"], False, None),
        (["198.19.9.1/24", "198.18.0.1/16"], False, None),
        ([], False, "(it has no IPv4 address)"),
        (["198.19.9.1/24"], False, "lies in no subnet configured on"),
        # the VIP itself on the interface (a running daemon holds it) proves nothing
        (["198.18.0.100/24"], False, "(it has no IPv4 address)"),
        ([], True, None),
    ],
    ids=["inside", "inside-wider", "no-address", "elsewhere", "only-the-vip", "allowed"],
)
def test_environment_vip_must_be_on_link(
    tmp_path: Path,
    fake_pki: Callable[[list[str]], PkiCalls],
    addresses: dict[str, list[ipaddress.IPv4Interface]],
    configured: list[str],
    offlink: bool,
    problem: str | None,
) -> None:
    fake_pki([])
    iface = socket.if_nameindex()[0][1]  # an interface that exists; its addresses are faked
    addresses[iface] = [ipaddress.IPv4Interface(a) for a in configured]
    cfg = env_config(
        tmp_path,
        {"backend.type": "linux", "vip[0].interface": iface, "vip[0].allow_offlink": offlink},
    )
    problems = check_environment(cfg)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith(f"{cfg.path}: vip[0].address: 198.18.0.100 lies in no")
        assert problem in problems[0] and "allow_offlink = true" in problems[0]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("group-writable", "writable by group or others (mode 770)"),
        ("other-owner", "owned by uid 65534"),
        ("file-at-path", "exists and is not a socket"),
        ("folder-is-file", "exists but is not a folder"),
        ("fine", None),
        ("missing-folder", None),
    ],
)
def test_environment_control_socket(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls], layout: str, message: str | None
) -> None:
    fake_pki([])
    run = tmp_path / "run"
    if layout != "missing-folder":
        if layout == "folder-is-file":
            run.write_text("")
        else:
            run.mkdir(mode=0o700)
    if layout == "group-writable":
        run.chmod(0o770)
    elif layout == "other-owner":
        os.chown(run, 65534, 65534)
    elif layout == "file-at-path":
        (run / "n1.sock").write_text("precious")
    cfg = env_config(tmp_path, {})
    assert cfg.control_socket == run / "n1.sock"
    problems = check_environment(cfg)
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith(f"{cfg.path}: control_socket: ") and message in problems[0]


# --- witness_plan ----------------------------------------------------------------------------


@pytest.fixture
def gateways(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[IP] | Exception]:
    table: dict[str, list[IP] | Exception] = {}

    def read(name: str) -> list[IP]:
        answer = table[name]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(config, "default_gateways", read)
    return table


TWO_LANS = {
    "backend.type": "linux",
    "vip[1].address": "198.18.4.10/24",
    "vip[1].interface": "eth1",
}


def test_witness_plan_splits_explicit_witnesses_by_interface(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    cfg = load(tmp_path, {**TWO_LANS, "witnesses": ["198.18.4.1", "198.18.0.254", "198.18.0.7"]})
    plan, warnings = config.witness_plan(cfg)
    assert plan == {"eth0": (IP("198.18.0.254"), IP("198.18.0.7")), "eth1": (IP("198.18.4.1"),)}
    assert warnings == []


def test_witness_plan_warns_per_interface_without_one(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    cfg = load(tmp_path, {**TWO_LANS, "witnesses": ["198.18.0.254"]})
    plan, warnings = config.witness_plan(cfg)
    assert plan == {"eth0": (IP("198.18.0.254"),), "eth1": ()}
    assert warnings == [
        f"{cfg.path}: witnesses: {config.NO_WITNESS} "
        "(eth1: no address in witnesses is on its VIP subnets)"
    ]
    assert "cannot tell silence from deafness" in warnings[0]


def test_witness_plan_empty_list_is_an_explicit_no(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    cfg = load(tmp_path, {"witnesses": []})
    plan, warnings = config.witness_plan(cfg)
    assert plan == {"eth0": ()}
    assert warnings == [
        f"{cfg.path}: witnesses: {config.NO_WITNESS} (eth0: witnesses = [] disables them)"
    ]
    assert gateways == {}  # an explicit list never looks at routes


def test_witness_plan_defaults_to_the_gateway_on_the_vip_lan(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    gateways["eth0"] = [IP("198.19.0.1"), IP("198.18.0.254")]
    gateways["eth1"] = [IP("198.19.0.1")]  # a default route, but not on the VIP's LAN
    cfg = load(tmp_path, TWO_LANS)
    plan, warnings = config.witness_plan(cfg)
    assert plan == {"eth0": (IP("198.18.0.254"),), "eth1": ()}
    assert warnings == [
        f"{cfg.path}: witnesses: {config.NO_WITNESS} "
        "(eth1: no default gateway through it on the VIP's subnet (198.18.4.0/24))"
    ]


def test_witness_plan_lookup_failure_is_a_warning(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    gateways["eth0"] = OSError("netlink said no")
    cfg = load(tmp_path, {"backend.type": "linux"})
    plan, warnings = config.witness_plan(cfg)
    assert plan == {"eth0": ()}
    assert (
        len(warnings) == 1 and "cannot look up its default gateway (netlink said no)" in warnings[0]
    )


def test_witness_plan_dry_run_has_no_lan_to_hear(
    tmp_path: Path, gateways: dict[str, list[IP] | Exception]
) -> None:
    cfg = load(tmp_path, {"backend.type": "dry-run"})
    assert config.witness_plan(cfg) == ({"eth0": ()}, [])
    assert gateways == {}


NS_PREFIX = "hvcfg"


@pytest.mark.netns
def test_interface_lookups_in_a_namespace(tmp_path: Path) -> None:
    """The real pyroute2 lookups, inside a namespace this test builds and removes."""
    import subprocess

    ns = f"{NS_PREFIX}{os.getpid() % 100000}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=30)

    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=30)
    try:
        ip("link", "add", "hv0", "type", "veth", "peer", "name", "hv1")  # no dummy module here
        ip("addr", "add", "198.18.7.1/24", "dev", "hv0")
        ip("addr", "add", "198.18.8.1/24", "dev", "hv1")
        ip("link", "set", "hv0", "up")
        ip("link", "set", "hv1", "up")
        ip("route", "add", "default", "via", "198.18.7.254", "dev", "hv0")
        script = (
            "import json, sys\n"
            "from havip import config\n"
            "print(json.dumps({n: [[str(a) for a in config.interface_addresses(n)],"
            " [str(g) for g in config.default_gateways(n)]] for n in sys.argv[1:]}))\n"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script, "hv0", "hv1", "nope0"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert json.loads(out.stdout) == {
            "hv0": [["198.18.7.1/24"], ["198.18.7.254"]],
            "hv1": [["198.18.8.1/24"], []],
            "nope0": [[], []],
        }
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


# --- IPv6 VIPs and witnesses -----------------------------------------------------------------

V6 = "2001:2:0:1::100/64"  # RFC 5180's benchmarking range, the IPv6 twin of 198.18.0.0/15
V6_IP = ipaddress.IPv6Address("2001:2:0:1::100")
MIXED = {"vip[1].address": V6, "vip[1].interface": "eth0"}


def test_ipv6_vip_loads_alone_and_mixed(tmp_path: Path) -> None:
    alone = load(tmp_path, {"vip[0].address": V6})
    assert alone.vips[0].address == ipaddress.IPv6Interface(V6)
    assert alone.vips[0].ip == V6_IP and str(alone.vips[0]) == V6
    mixed = load(tmp_path, MIXED)
    assert [v.ip.version for v in mixed.vips] == [4, 6]


def test_ipv6_vip_spelling_does_not_hide_a_duplicate(tmp_path: Path) -> None:
    (error,) = errors_of(
        write(
            tmp_path,
            changed(
                {**MIXED, "vip[2].address": "2001:2:0:1:0:0:0:100/64", "vip[2].interface": "eth0"}
            ),
        )
    )
    assert error.endswith(": vip[2].address: 2001:2:0:1::100 is already vip[1].address"), error


IPV6_VIP_ERRORS = [
    ("2001:2:0:1::100", 'needs a prefix length, e.g. "2001:2:0:1::100/64"'),
    ("2001:2:0:1::100/129", 'prefix length "/129"'),
    ("2001:2:0:1::zz/64", '"2001:2:0:1::zz" is not an IPv6 address'),
    ("fe80::100/64", "link-local"),
    ("ff02::1/64", "cannot be a VIP (multicast)"),
    ("::/64", "cannot be a VIP (the unspecified address)"),
    ("::1/64", "cannot be a VIP (the loopback address)"),
    ("::ffff:198.18.0.100/96", "IPv4-mapped: write the IPv4 address itself"),
    ("2001:2:0:1::100%eth0/64", "no %zone"),
    ("2001:2:0:1::100/128", "/128 puts 2001:2:0:1::100 in a subnet of its own"),
]


@pytest.mark.parametrize(("text", "message"), IPV6_VIP_ERRORS, ids=[t for t, _ in IPV6_VIP_ERRORS])
def test_ipv6_vip_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, changed({"vip[0].address": text}))
    (error,) = errors_of(path)
    assert error.startswith(f"{path}: vip[0].address: "), error
    assert message in error and "\n" not in error


def test_ipv6_slash_128_with_allow_offlink(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"vip[0].address": "2001:2:0:9::1/128", "vip[0].allow_offlink": True})
    assert cfg.vips[0].address == ipaddress.IPv6Interface("2001:2:0:9::1/128")


def test_ipv6_witnesses_parse(tmp_path: Path) -> None:
    cfg = load(tmp_path, {**MIXED, "witnesses": ["2001:2:0:1::fe", "fe80::1", "198.18.0.254"]})
    assert cfg.witnesses == (
        ipaddress.IPv6Address("2001:2:0:1::fe"),
        ipaddress.IPv6Address("fe80::1"),
        IP("198.18.0.254"),
    )


IPV6_WITNESS_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"witnesses": ["2001:2:0:1::fe"]}, "is IPv6 but every VIP is IPv4"),
    ({"vip[0].address": V6, "witnesses": ["198.18.0.254"]}, "is IPv4 but every VIP is IPv6"),
    ({**MIXED, "witnesses": ["2001:2:0:9::fe"]}, "in no IPv6 VIP's subnet (2001:2:0:1::/64)"),
    ({**MIXED, "witnesses": ["2001:2:0:1::100"]}, "is a VIP"),
    ({**MIXED, "witnesses": ["ff02::1"]}, "not a unicast address on the LAN (multicast)"),
    ({**MIXED, "witnesses": ["::"]}, "(the unspecified address)"),
    ({**MIXED, "witnesses": ["fe80::1%eth0"]}, "no %zone"),
    ({**MIXED, "witnesses": ["2001:2::zz"]}, '"2001:2::zz" is not an IPv6 address'),
    ({**MIXED, "witnesses": ["fe80::1", "fe80:0::1"]}, "fe80::1 is already witnesses[0]"),
]


@pytest.mark.parametrize(
    ("changes", "message"), IPV6_WITNESS_ERRORS, ids=[m for _, m in IPV6_WITNESS_ERRORS]
)
def test_ipv6_witness_errors(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = write(tmp_path, changed(changes))
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: witnesses[") and message in errors[0], errors[0]


def test_environment_ipv6_vip_looks_at_ipv6_addresses(
    tmp_path: Path, fake_pki: Callable[[list[str]], PkiCalls], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_pki([])
    iface = socket.if_nameindex()[0][1]
    have: list[ipaddress.IPv6Interface] = []
    monkeypatch.setattr(config, "interface_addresses", lambda name: [IP("198.18.0.1")])
    monkeypatch.setattr(config, "interface_addresses6", lambda name: list(have))
    changes = {"backend.type": "linux", "vip[0].address": V6, "vip[0].interface": iface}
    cfg = env_config(tmp_path, changes)
    # A link-local address and the VIP itself are no subnet a client could reach it in.
    have += [ipaddress.IPv6Interface("fe80::1/64"), ipaddress.IPv6Interface(V6)]
    (problem,) = check_environment(cfg)
    assert problem.startswith(f"{cfg.path}: vip[0].address: 2001:2:0:1::100 lies in no subnet")
    assert "(it has no IPv6 address)" in problem
    have.append(ipaddress.IPv6Interface("2001:2:0:1::1/64"))
    assert check_environment(cfg) == []


@pytest.fixture
def gateways6(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[ipaddress.IPv6Address]]:
    table: dict[str, list[ipaddress.IPv6Address]] = {}
    monkeypatch.setattr(config, "default_gateways6", lambda name: table[name])
    return table


def test_witness_plan_ipv6_default_gateway_link_local(
    tmp_path: Path,
    gateways: dict[str, list[IP] | Exception],
    gateways6: dict[str, list[ipaddress.IPv6Address]],
) -> None:
    gateways["eth0"] = [IP("198.18.0.254")]
    gateways6["eth0"] = [ipaddress.IPv6Address("fe80::fe")]
    gateways6["eth1"] = [ipaddress.IPv6Address("2001:2:0:9::1")]  # not on the VIP's LAN
    changes = {
        **MIXED,
        "backend.type": "linux",
        "vip[2].address": "2001:2:0:4::10/64",
        "vip[2].interface": "eth1",
    }
    cfg = load(tmp_path, changes)
    plan, warnings = config.witness_plan(cfg)
    assert plan == {
        "eth0": (IP("198.18.0.254"), ipaddress.IPv6Address("fe80::fe")),
        "eth1": (),
    }
    assert warnings == [
        f"{cfg.path}: witnesses: {config.NO_WITNESS} "
        "(eth1: no default gateway through it on the VIP's subnet (2001:2:0:4::/64))"
    ]
    assert "eth1" not in gateways  # no IPv4 VIP there: its IPv4 route is never asked


def test_witness_plan_splits_ipv6_witnesses(tmp_path: Path) -> None:
    changes = {
        **MIXED,
        "vip[2].address": "198.18.4.10/24",
        "vip[2].interface": "eth1",
        "witnesses": ["fe80::fe", "2001:2:0:1::fe", "198.18.4.1"],
    }
    plan, warnings = config.witness_plan(load(tmp_path, changes))
    six = (ipaddress.IPv6Address("fe80::fe"), ipaddress.IPv6Address("2001:2:0:1::fe"))
    assert plan == {"eth0": six, "eth1": (IP("198.18.4.1"),)}  # link-local: IPv6 links only
    assert warnings == []
