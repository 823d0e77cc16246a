"""Config for issue 6: [[check]] and [hooks], every rule with its file and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_config import changed, errors_of, load, write

from havip import config
from havip.config import Check, Hooks, check_environment, load_config


@pytest.fixture(autouse=True)
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_current_platform", lambda: "linux")


def test_no_checks_and_no_hooks_by_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, {})
    assert cfg.checks == () and cfg.hooks == Hooks()
    assert cfg.hooks.for_state("active") == ()


def test_checks_and_hooks_are_read_with_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "check": [
                {"name": "web", "tcp": "127.0.0.1:80"},
                {
                    "name": "app.health",
                    "command": ["/usr/bin/curl", "-fsS", "http://127.0.0.1/health"],
                    "interval": "5s",
                    "timeout": "1500ms",
                    "rise": 3,
                    "fall": 1,
                },
            ],
            "hooks": {
                "notify_active": ["/usr/local/bin/vip-up", "--now"],
                "notify": ["/usr/local/bin/log-state"],
                "fence": ["/usr/local/sbin/fence-peer", "n2"],
                "fence_required": True,
                "fence_timeout": "20s",
                "timeout": "3s",
            },
        },
    )
    assert cfg.checks == (
        Check(name="web", tcp=("127.0.0.1", 80), interval=2.0, timeout=1.0, rise=2, fall=2),
        Check(
            name="app.health",
            command=("/usr/bin/curl", "-fsS", "http://127.0.0.1/health"),
            interval=5.0,
            timeout=1.5,
            rise=3,
            fall=1,
        ),
    )
    hooks = cfg.hooks
    assert hooks.fence == ("/usr/local/sbin/fence-peer", "n2") and hooks.fence_required
    assert (hooks.timeout, hooks.fence_timeout) == (3.0, 20.0)
    # Entering ACTIVE runs the specific hook, then the generic one; STANDBY only the generic.
    assert hooks.for_state("active") == (
        ("/usr/local/bin/vip-up", "--now"),
        ("/usr/local/bin/log-state",),
    )
    assert hooks.for_state("standby") == (("/usr/local/bin/log-state",),)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"check": [{"name": "web", "command": "curl -f http://x"}]},
            "check[0].command: must be an argument list",
            id="shell-string",
        ),
        pytest.param(
            {"check": [{"name": "web", "command": ["curl", "-f"]}]},
            'check[0].command: the program must be an absolute path (no $PATH lookup), got "curl"',
            id="relative-program",
        ),
        pytest.param(
            {"check": [{"name": "web", "command": []}]},
            "check[0].command: must be a non-empty array of strings",
            id="empty-argv",
        ),
        pytest.param(
            {"check": [{"name": "web"}]},
            "check[0]: needs exactly one of command",
            id="neither",
        ),
        pytest.param(
            {"check": [{"name": "web", "tcp": "127.0.0.1:80", "command": ["/bin/true"]}]},
            "check[0]: needs exactly one of command",
            id="both",
        ),
        pytest.param(
            {"check": [{"name": "web", "tcp": "127.0.0.1"}]},
            'check[0].tcp: needs a port: "HOST:PORT"',
            id="tcp-without-port",
        ),
        pytest.param(
            {"check": [{"name": "web", "tcp": "localhost:80"}]},
            "check[0].tcp:",
            id="tcp-host-name",
        ),
        pytest.param(
            {"check": [{"tcp": "127.0.0.1:80"}]},
            "check[0].name: required key missing",
            id="no-name",
        ),
        pytest.param(
            {"check": [{"name": "web site", "tcp": "127.0.0.1:80"}]},
            "check[0].name:",
            id="bad-name",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80"}, {"name": "a", "tcp": "127.0.0.1:81"}]},
            'check[1].name: "a" is used by an earlier check',
            id="duplicate-name",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80", "timeout": "3s"}]},
            "check[0].timeout: 3s is longer than interval (2s)",
            id="timeout-over-interval",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80", "interval": 2}]},
            'check[0].interval: duration needs a unit, e.g. "200ms"',
            id="interval-without-unit",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80", "rise": 0}]},
            "check[0].rise: must be between 1 and 100, got 0",
            id="rise-zero",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80", "fall": "3"}]},
            "check[0].fall: must be an integer",
            id="fall-string",
        ),
        pytest.param(
            {"check": [{"name": "a", "tcp": "127.0.0.1:80", "retries": 3}]},
            "check[0].retries: unknown key",
            id="unknown-key",
        ),
        pytest.param({"check": {"name": "a"}}, "check: must be an array", id="not-an-array"),
        pytest.param(
            {"hooks": {"notify_master": ["/bin/true"]}},
            'hooks.notify_master: unknown key (typo?); did you mean "notify_active"?',
            id="keepalived-name",
        ),
        pytest.param(
            {"hooks": {"fence_required": True}},
            "hooks.fence_required: is true but no hooks.fence command is set",
            id="required-without-fence",
        ),
        pytest.param(
            {"hooks": {"notify": "/usr/bin/logger failover"}},
            "hooks.notify: must be an argument list",
            id="hook-shell-string",
        ),
        pytest.param(
            {"hooks": {"timeout": "0s"}}, "hooks.timeout: must be positive", id="zero-timeout"
        ),
    ],
)
def test_bad_checks_and_hooks_are_refused_by_key(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    errors = errors_of(write(tmp_path, changed(changes)))
    assert any(expected in line for line in errors), errors
    assert all(line.startswith(str(tmp_path / "havip.toml") + ": ") for line in errors)


def test_check_environment_names_missing_and_unexecutable_programs(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    data = changed(
        {
            "check": [
                {"name": "a", "command": [str(tmp_path / "missing")]},
                {"name": "b", "command": [str(script)]},
                {"name": "c", "command": ["/bin/true"]},
            ],
            "hooks": {"fence": [str(tmp_path)]},
            "backend": {"type": "dry-run"},
            "state_dir": str(tmp_path / "state"),
        }
    )
    cfg = load_config(write(tmp_path, data))
    problems = [p for p in check_environment(cfg) if "check[" in p or "hooks." in p]
    assert problems == [
        f"{cfg.path}: check[0].command: {tmp_path / 'missing'} does not exist",
        f"{cfg.path}: check[1].command: {script} is not executable",
        f"{cfg.path}: hooks.fence: {tmp_path} is not a file",
    ]
