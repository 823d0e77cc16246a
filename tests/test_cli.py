"""The `havip` command line: exit codes, PKI commands, check-config, status and a real `run`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from havip import __version__
from havip.cli import format_status, main

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_config(d: Path, node: str, port: int, metrics: int, extra: str = "") -> Path:
    peer = "n2" if node == "n1" else "n1"
    text = (
        f'node = "{node}"\nprimary = "n1"\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\n'
        f'control_socket = "{node}.sock"\n{extra}'
        f'[peer]\nname = "{peer}"\naddress = "127.0.0.1:{port}"\n'
        f'[tls]\nca = "pki/ca.crt"\ncert = "pki/{node}.crt"\nkey = "pki/{node}.key"\n'
        '[[vip]]\naddress = "198.18.0.100/24"\ninterface = "lo"\n'
        '[backend]\ntype = "dry-run"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
    )
    path = d / f"{node}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    assert (
        main(["pki", "init", "--dir", str(tmp_path / "pki"), "--node", "n1", "--node", "n2"]) == 0
    )
    return tmp_path / "pki"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"havip {__version__}"


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_python_dash_m_havip_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "havip", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.strip() == f"havip {__version__}"


def test_pki_init_refuses_to_overwrite_without_force(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = pki_dir / "n1.key"
    before = key.read_bytes()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    assert main(["pki", "init", "--dir", str(pki_dir), "--node", "n1", "--node", "n2"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1
    assert key.read_bytes() == before
    assert main(["pki", "init", "--dir", str(pki_dir), "--node", "n1", "--force"]) == 0
    assert key.read_bytes() != before


def test_pki_issue_and_show(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "issue", "n3=198.18.0.3", "--dir", str(pki_dir)]) == 0
    assert (pki_dir / "n3.crt").exists()
    assert main(["pki", "issue", "n3", "--dir", str(pki_dir)]) == 2  # exists: needs --force
    capsys.readouterr()
    assert main(["pki", "show", "--dir", str(pki_dir)]) == 0
    out = capsys.readouterr().out
    assert "n3" in out and "198.18.0.3" in out


def test_pki_bad_node_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "init", "--dir", str(tmp_path), "--node", "n1=not-an-ip"]) == 2
    assert "not-an-ip" in capsys.readouterr().err


def test_check_config_ok_and_errors(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write_config(tmp_path, "n1", 7411, 9741)
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok: node n1 (primary)" in capsys.readouterr().out

    (pki_dir / "n1.key").chmod(0o644)
    assert main(["check-config", "--config", str(good)]) == 2
    assert "tls.key" in capsys.readouterr().err
    (pki_dir / "n1.key").chmod(0o600)

    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("primary =", "primray ="))
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: primray: unknown key" in err and f"{bad}: primary:" in err


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_format_status_human() -> None:
    text = format_status(
        {
            "node": "n1",
            "role": "primary",
            "version": "0",
            "state": "active",
            "since": 0.0,
            "reason": "probe_silent",
            "epoch": 3,
            "vips": [{"address": "198.18.0.100/24", "interface": "eth0", "present": True}],
            "peer": "n2",
            "peer_connected": True,
            "peer_state": "standby",
            "peer_owns_vip": False,
            "rtt_seconds": 0.0004,
        },
        now=300.0,
    )
    assert "state    ACTIVE since 1970-01-01T00:00:00+00:00 (5 min ago)" in text
    assert "reason probe_silent, epoch 3" in text
    assert "198.18.0.100/24 on eth0: held here" in text
    assert "peer     n2: connected, STANDBY: ready to take over" in text
    assert "link     rtt 0.40 ms" in text


def test_run_status_and_sigterm_exit_0(pki_dir: Path, tmp_path: Path) -> None:
    """A real `havip run` pair on loopback: status answers, SIGTERM hands over and exits 0."""
    port = _free_port()
    configs = {n: _write_config(tmp_path, n, port, _free_port()) for n in ("n1", "n2")}
    procs = {
        n: subprocess.Popen(
            [sys.executable, "-m", "havip", "run", "--config", str(c)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for n, c in configs.items()
    }
    try:
        deadline = time.monotonic() + 15 * SCALE
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "havip", "status", "--json", "--config", str(configs["n2"])],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            if out.returncode == 0:
                status = json.loads(out.stdout)
                if status.get("peer_owns_vip") is True:
                    break
            time.sleep(0.1)
        assert status.get("state") == "standby" and status.get("peer_state") == "active"
        human = subprocess.run(
            [sys.executable, "-m", "havip", "status", "--config", str(configs["n1"])],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert human.returncode == 0, human.stdout  # a settled pair is healthy
        assert human.stdout.startswith("n1: primary, ACTIVE: holds the VIP; healthy\n")
        procs["n1"].send_signal(signal.SIGTERM)
        assert procs["n1"].wait(timeout=10 * SCALE) == 0
        assert procs["n1"].stderr is not None
        log = procs["n1"].stderr.read()
        assert "event=resign_sent" in log and "event=stopped" in log
        assert "Traceback" not in log
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_status_without_daemon_exits_2_with_json_on_stdout(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write_config(tmp_path, "n1", 7411, _free_port())
    sock = tmp_path / "n1.sock"
    error = f"{sock}: no havip daemon is listening (is it running?)"
    assert main(["status", "--config", str(cfg)]) == 2
    out = capsys.readouterr()
    assert out.err == f"havip: {error}\n" and out.out == ""
    assert main(["status", "--json", "--config", str(cfg)]) == 2
    out = capsys.readouterr()
    assert out.err == f"havip: {error}\n"
    assert json.loads(out.out) == {
        "reachable": False,
        "error": error,
        "health": "unreachable",
        "problems": [],
        "node": "n1",
        "peer": "n2",
        "role": "primary",
        "control_socket": str(sock),
    }


def test_status_with_a_broken_config_exits_2_and_still_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "havip.toml"
    cfg.write_text('node = "n1"\n')
    assert main(["status", "--config", str(cfg)]) == 2
    human = capsys.readouterr()
    assert human.out == "" and "peer.name: required key missing" in human.err
    assert main(["status", "--json", "--config", str(cfg)]) == 2
    out = capsys.readouterr()
    assert out.err == human.err  # the same lines as without --json
    answer = json.loads(out.out)
    assert answer["reachable"] is False and answer["health"] == "unreachable"
    assert "peer.name: required key missing" in answer["error"]
    assert answer["node"] is None and answer["control_socket"] is None


STATUS = {
    "node": "n1",
    "role": "primary",
    "version": "0",
    "state": "active",
    "since": 0.0,
    "reason": "probe_silent",
    "epoch": 3,
    "vips": [],
    "peer": "n2",
    "peer_connected": False,
}


def test_status_asks_the_control_socket_not_the_metrics_port(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A squatter on the metrics port answers "healthy"; status must not even ask it."""
    from havip.shell.control import remove_control, start_control

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(8)
    cfg = _write_config(tmp_path, "n1", 7411, squatter.getsockname()[1])
    sock = tmp_path / "n1.sock"

    async def run() -> tuple[int, str, int, str]:
        server = await start_control(sock, {"status": lambda _req: STATUS})
        try:
            as_json = await asyncio.to_thread(main, ["status", "--json", "--config", str(cfg)])
            out_json = capsys.readouterr().out
            human = await asyncio.to_thread(main, ["status", "--config", str(cfg)])
            return as_json, out_json, human, capsys.readouterr().out
        finally:
            server.close()
            await server.wait_closed()
            remove_control(sock)

    try:
        as_json, out_json, human, out_human = asyncio.run(run())
        squatter.setblocking(False)
        with pytest.raises(BlockingIOError):
            squatter.accept()  # nobody knocked on the metrics port
    finally:
        squatter.close()
    # STATUS has no peer connected: degraded (exit 1), said in the JSON and on the screen.
    assert as_json == 1 and json.loads(out_json) == {
        **STATUS,
        "reachable": True,
        "error": None,
        "health": "degraded",
        "problems": [
            {
                "code": "peer_disconnected",
                "text": "the peer n2 is not connected: no failover partner",
            }
        ],
        "control_socket": str(sock),
    }
    assert human == 1
    # The same screen format_status draws (bar the "N days ago", which moves with the clock).
    expected = format_status(STATUS).splitlines()
    assert [line for line in out_human.splitlines() if not line.startswith("state ")] == [
        line for line in expected if not line.startswith("state ")
    ]


def _check_and_run(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["check-config", "--config", str(cfg)]) == 2
    checked = capsys.readouterr().err
    assert main(["run", "--config", str(cfg)]) == 2
    return checked, capsys.readouterr().err


@pytest.mark.parametrize("fault", ["loose-key", "missing-cert", "other-node-cert", "no-interface"])
def test_run_refuses_what_check_config_refuses(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    """Same lines, exit 2, and the daemon never starts (no state folder, no socket)."""
    extra = ""
    if fault == "loose-key":
        (pki_dir / "n1.key").chmod(0o644)
    elif fault == "missing-cert":
        (pki_dir / "n1.crt").unlink()
    elif fault == "other-node-cert":
        (pki_dir / "n1.crt").write_bytes((pki_dir / "n2.crt").read_bytes())
    cfg = _write_config(tmp_path, "n1", _free_port(), _free_port(), extra)
    if fault == "no-interface":
        text = cfg.read_text().replace('interface = "lo"', 'interface = "havipnone0"')
        cfg.write_text(text.replace('type = "dry-run"', 'type = "linux"'))
    checked, ran = _check_and_run(cfg, capsys)
    assert checked == ran and checked.startswith(f"havip: {cfg}: ")
    assert "Errno" not in ran
    assert not (tmp_path / "state").exists() and not (tmp_path / "n1.sock").exists()


def test_check_config_warns_when_there_is_no_witness(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write_config(tmp_path, "n1", 7411, 9741, "witnesses = []\n")
    assert main(["check-config", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"havip: warning: {cfg}: witnesses: no witness: a node cut off")
    assert "set witnesses = [...]" in err


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "from havip.cli import raise_fd_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "raise_fd_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard) or hard == -1, hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    lifted, hard = out.stdout.split()
    assert lifted == "True", f"soft limit not raised to {hard}"


def _status_json(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "havip", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30 * SCALE,
    )


def test_squatted_metrics_port_is_not_fatal_and_a_second_daemon_is_refused(
    pki_dir: Path, tmp_path: Path
) -> None:
    """Issue 5 part 13: another user holds the metrics port first. The daemon keeps running,
    `havip status` gets the daemon's answer over the control socket, and a second daemon on
    the same control socket exits with a clear error instead of replacing the first."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(8)
    config = _write_config(tmp_path, "n1", _free_port(), squatter.getsockname()[1])
    run = [sys.executable, "-m", "havip", "run", "--config", str(config)]
    first = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 15 * SCALE
        answer = _status_json(config)
        while answer.returncode == 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
            answer = _status_json(config)
        # Reachable; degraded (exit 1), as a node without its peer is.
        assert answer.returncode == 1, answer.stderr
        reply = json.loads(answer.stdout)
        assert reply["node"] == "n1" and reply["reachable"] is True
        assert [p["code"] for p in reply["problems"]] == ["peer_disconnected"]
        assert first.poll() is None  # the busy metrics port did not stop it

        second = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=30 * SCALE)
        assert second.returncode == 1
        assert f"another havip daemon is running on {tmp_path / 'n1.sock'}" in second.stderr
        assert _status_json(config).returncode == 1  # the first one still answers
    finally:
        squatter.close()
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        try:
            first.wait(timeout=10 * SCALE)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert first.returncode == 0
    assert not (tmp_path / "n1.sock").exists()  # removed at shutdown


def test_the_run_checks_leave_cryptography_out_of_the_daemon(pki_dir: Path, tmp_path: Path) -> None:
    """`run` checks certificates like check-config does, but in a forked child: the daemon
    never loads `cryptography` (about 8 MB of RSS for as long as it runs)."""
    cfg = _write_config(tmp_path, "n1", _free_port(), _free_port(), "")
    (pki_dir / "n1.key").chmod(0o644)  # one problem, so the check has something to say
    code = f"""
import sys
from pathlib import Path
from havip.cli import environment_problems
from havip.config import check_environment, load_config
cfg = load_config(Path({str(cfg)!r}))
got = environment_problems(cfg)
assert got and all("n1.key" in line or "key" in line for line in got[:1]), got
assert "cryptography" not in sys.modules, "the parent loaded cryptography"
assert got == check_environment(cfg)  # the same lines as check-config (this loads it here)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * SCALE
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "argv", [["handover"], ["maintenance", "on"], ["maintenance", "off"], ["reload"]]
)
def test_operator_commands_without_a_daemon_exit_1_with_one_line(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    cfg = _write_config(tmp_path, "n1", 7411, _free_port())
    assert main([*argv, "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err == f"havip: {tmp_path / 'n1.sock'}: no havip daemon is listening (is it running?)\n"


def test_reload_with_a_broken_config_is_not_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "havip.toml"
    cfg.write_text('node = "n1"\n')
    assert main(["reload", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "havip: reload not sent: fix the config first; the daemon keeps its running config"
    )
    assert any("peer.name: required key missing" in line for line in err)


def test_format_status_shows_eligibility_maintenance_checks_and_why_it_waits() -> None:
    text = format_status(
        {
            **STATUS,
            "state": "standby",
            "eligible": False,
            "ineligible_cause": "check_failed",
            "maintenance": True,
            "maintenance_since": 0.0,
            "checks": [
                {
                    "name": "web",
                    "kind": "tcp",
                    "target": "127.0.0.1:80",
                    "state": "down",
                    "last_outcome": "failed",
                    "last_duration_seconds": 0.0012,
                    "last_output": "Connection refused",
                }
            ],
            "waiting": "not eligible (check_failed: web): will not take the VIP",
            "peer_connected": True,
            "peer_state": "active",
            "peer_owns_vip": True,
            "peer_ineligible_cause": "maintenance",
        }
    )
    lines = text.splitlines()
    assert "eligible no (check_failed)" in lines
    assert "maint.   on since 1970-01-01T00:00:00+00:00: `havip maintenance off` to end it" in lines
    assert "check    web (tcp 127.0.0.1:80): down, last failed in 1 ms: Connection refused" in lines
    assert "waiting  not eligible (check_failed: web): will not take the VIP" in lines
    assert "peer     n2: connected, ACTIVE: holds the VIP (not eligible: maintenance)" in lines
    assert lines[0] == "n1: primary, STANDBY: not eligible, will not take over; DEGRADED (3)"
    assert lines[-4:-1] == [
        "problem  this node is not eligible (check_failed): a health check fails",
        "problem  the peer n2 is not eligible (maintenance): in maintenance "
        "(`havip maintenance off` ends it)",
        "problem  health check web is down",
    ]


# ---- havip status: the screen, the degraded rules, the exit codes, the schema -----------------

NOW = 1_800_000_000.0
DAY = 86400.0


def _healthy(**changes: object) -> dict[str, object]:
    """A healthy primary's status dict, as Daemon.status() builds it, with `changes` applied."""
    st: dict[str, object] = {
        "node": "n1",
        "peer": "n2",
        "role": "primary",
        "state": "active",
        "reason": "peer_up",
        "since": NOW - 3600,
        "epoch": 4,
        "owns_vip": True,
        "owner": "n1",
        "eligible": True,
        "ineligible_cause": None,
        "maintenance": False,
        "maintenance_since": None,
        "checks": [
            {
                "name": "web",
                "kind": "tcp",
                "target": "127.0.0.1:80",
                "state": "up",
                "passing": True,
                "last_outcome": "ok",
                "last_duration_seconds": 0.002,
                "consecutive_failures": 0,
                "last_output": None,
                "last_run": NOW - 1,
            }
        ],
        "fencing": False,
        "fence_failed": False,
        "isolated": False,
        "suspect": False,
        "waiting": None,
        "vetoed_by": None,
        "last_claim": None,
        "witnesses": ["198.18.0.1"],
        "witness_warnings": [],
        "vips": [
            {"address": "198.18.0.100/24", "interface": "eth0", "present": True, "link": "up"}
        ],
        "peer_connected": True,
        "peer_state": "standby",
        "peer_owns_vip": False,
        "peer_epoch": 4,
        "peer_eligible": True,
        "peer_ineligible_cause": None,
        "peer_mac": "02:00:00:00:00:02",
        "rtt_seconds": 0.00041,
        "last_keepalive_age_seconds": 0.12,
        "certificates": {
            "own": {"not_after": NOW + 300 * DAY, "subject_cn": "n1"},
            "peer": {"not_after": NOW + 301 * DAY, "subject_cn": "n2"},
            "ca": {"not_after": NOW + 3000 * DAY, "subject_cn": "havip CA"},
        },
        "backend": "linux",
        "version": "9.9",
    }
    st.update(changes)
    return st


def test_the_healthy_sample_has_every_documented_daemon_field() -> None:
    from havip.cli import STATUS_FIELDS

    assert set(_healthy()) == STATUS_FIELDS  # so the rule tests below start from the real shape


def test_a_healthy_node_has_no_problem_and_one_screen_says_everything() -> None:
    from havip.cli import assess

    st = _healthy()
    assert assess(st, NOW) == []
    assert format_status(st, NOW).splitlines() == [
        "n1: primary, ACTIVE: holds the VIP; healthy",
        "state    ACTIVE since 2027-01-15T07:00:00+00:00 (60 min ago), reason peer_up, epoch 4",
        "owner    this node (n1)",
        "vip      198.18.0.100/24 on eth0: held here (link up)",
        "eligible yes",
        "check    web (tcp 127.0.0.1:80): up, last ok in 2 ms",
        "peer     n2: connected, STANDBY: ready to take over",
        "link     last keepalive 0.1 s ago, rtt 0.41 ms",
        "cert     own n1: 300 days left (until 2027-11-11)",
        "cert     peer n2: 301 days left (until 2027-11-12)",
        "cert     CA havip CA: 3000 days left (until 2035-04-03)",
        "version  havip 9.9, backend linux",
    ]


@pytest.mark.parametrize(
    ("changes", "headline"),
    [
        ({"state": "init", "owns_vip": False, "owner": None}, "INIT: starting"),
        (
            {"state": "standby", "owns_vip": False, "owner": "n2", "peer_owns_vip": True},
            "STANDBY: ready to take over",
        ),
        (
            {"state": "standby", "owns_vip": False, "eligible": False},
            "STANDBY: not eligible, will not take over",
        ),
        (
            {"state": "probing", "owns_vip": False},
            "PROBING: checking that nobody answers for the VIP, then taking it",
        ),
        ({}, "ACTIVE: holds the VIP"),
        ({"eligible": False}, "ACTIVE: holds the VIP although not eligible"),
        ({"state": "fault", "owns_vip": False}, "FAULT: the VIP backend failed here"),
        ({"state": "stopped", "owns_vip": False}, "STOPPED: shut down"),
    ],
)
def test_each_state_has_its_own_words(changes: dict[str, object], headline: str) -> None:
    first = format_status(_healthy(**changes), NOW).splitlines()[0]
    assert first.startswith(f"n1: primary, {headline}")


@pytest.mark.parametrize(
    ("changes", "owner"),
    [
        ({}, "this node (n1)"),
        ({"owns_vip": False, "owner": "n2", "peer_owns_vip": True}, "the peer (n2)"),
        ({"owns_vip": False, "owner": None}, "nobody! neither node holds the VIP"),
        ({"owner": "n1", "peer_owns_vip": True}, "BOTH nodes (n1 and n2) hold the VIP!"),
        (
            {"owns_vip": False, "owner": None, "peer_connected": False},
            "unknown: not this node, and the peer is not connected",
        ),
    ],
)
def test_the_owner_line(changes: dict[str, object], owner: str) -> None:
    assert f"owner    {owner}" in format_status(_healthy(**changes), NOW).splitlines()


def test_the_owner_is_worked_out_from_the_flags_when_the_daemon_sends_no_owner() -> None:
    st = _healthy(owns_vip=False, peer_owns_vip=True)
    del st["owner"]
    assert "owner    the peer (n2)" in format_status(st, NOW).splitlines()


def _check(state: str, passing: bool) -> list[dict[str, object]]:
    return [{"name": "web", "kind": "tcp", "target": "x:1", "state": state, "passing": passing}]


@pytest.mark.parametrize(
    ("changes", "code", "text"),
    [
        ({"state": "fault", "owns_vip": False}, "fault", "state FAULT"),
        ({"state": "stopped", "owns_vip": False}, "stopping", "shutting down"),
        ({"peer_owns_vip": True}, "two_owners", "both n1 and n2 hold the VIP"),
        ({"state": "standby", "owns_vip": False, "owner": None}, "no_owner", "neither node"),
        (
            {"vips": [{"address": "198.18.0.100/24", "interface": "eth0", "present": False}]},
            "vip_missing",
            "ACTIVE, but 198.18.0.100/24 on eth0 is not there",
        ),
        (
            {"peer_connected": False, "peer_state": None, "peer_owns_vip": None},
            "peer_disconnected",
            "the peer n2 is not connected",
        ),
        (
            {"eligible": False, "ineligible_cause": "no_carrier"},
            "ineligible",
            "not eligible (no_carrier): the VIP interface has no carrier",
        ),
        (
            {"eligible": False, "ineligible_cause": "maintenance", "maintenance": True},
            "ineligible",
            "`havip maintenance off` ends it",
        ),
        (
            {"peer_eligible": False, "peer_ineligible_cause": "check_failed"},
            "peer_ineligible",
            "the peer n2 is not eligible (check_failed)",
        ),
        ({"checks": _check("down", False)}, "check_failing", "health check web is down"),
        ({"checks": _check("rising", False)}, "check_failing", "health check web is rising"),
        ({"checks": _check("unknown", False)}, "check_failing", "is unknown"),
        ({"isolated": True}, "isolated", "hear no witness"),
        ({"suspect": True}, "suspect", "not announcing it"),
        ({"fence_failed": True}, "fence_failed", "the fence hook failed"),
        (
            {
                "state": "probing",
                "owns_vip": False,
                "owner": None,
                "peer_connected": False,
                "since": NOW - 61,
                "vetoed_by": "02:00:00:00:00:66",
            },
            "stuck",
            "has wanted the VIP for 61 s without taking it: 02:00:00:00:00:66 still answers",
        ),
        (
            {
                "certificates": {
                    "own": {"not_after": NOW + 20 * DAY, "subject_cn": "n1"},
                    "peer": None,
                    "ca": {"not_after": NOW + 3000 * DAY, "subject_cn": "havip CA"},
                }
            },
            "cert_expiring",
            "this node's certificate (n1) ends within 21 days: 20 days left",
        ),
        (
            {
                "certificates": {
                    "own": {"not_after": NOW + 300 * DAY, "subject_cn": "n1"},
                    "peer": {"not_after": NOW - 2 * DAY, "subject_cn": "n2"},
                    "ca": {"not_after": NOW + 3000 * DAY, "subject_cn": "havip CA"},
                }
            },
            "cert_expiring",
            "the peer's certificate (n2) ends within 21 days: EXPIRED 2 days ago",
        ),
        (
            {
                "certificates": {
                    "own": {"not_after": NOW + 300 * DAY, "subject_cn": "n1"},
                    "peer": {"not_after": NOW + 300 * DAY, "subject_cn": "n2"},
                    "ca": {"not_after": NOW + 10 * DAY, "subject_cn": "havip CA"},
                }
            },
            "cert_expiring",
            "the CA certificate (havip CA) ends within 21 days: 10 days left",
        ),
    ],
)
def test_each_degraded_rule(changes: dict[str, object], code: str, text: str) -> None:
    from havip.cli import assess

    found = assess(_healthy(**changes), NOW)
    assert code in [f.code for f in found], found
    mine = [f.text for f in found if f.code == code]
    assert any(text in t for t in mine), mine
    screen = format_status(_healthy(**changes), NOW).splitlines()
    assert "; DEGRADED (" in screen[0]
    assert any(line.startswith("problem  ") and text in line for line in screen)


@pytest.mark.parametrize(
    "changes",
    [
        # Still inside the limits: a certificate 22 days from its end, a check on its way down
        # (passing until `fall`), a standby that the peer outranks, a node just started.
        {
            "certificates": {
                "own": {"not_after": NOW + 22 * DAY, "subject_cn": "n1"},
                "peer": {"not_after": NOW + 22 * DAY, "subject_cn": "n2"},
                "ca": {"not_after": NOW + 22 * DAY, "subject_cn": "havip CA"},
            }
        },
        {"checks": _check("falling", True)},
        {"state": "standby", "owns_vip": False, "owner": "n2", "peer_owns_vip": True},
        {"state": "init", "owns_vip": False, "owner": None},
    ],
)
def test_near_misses_are_healthy(changes: dict[str, object]) -> None:
    from havip.cli import assess

    assert assess(_healthy(**changes), NOW) == []


@pytest.mark.parametrize(("probing_for", "stuck"), [(59.0, False), (61.0, True)])
def test_probing_for_over_a_minute_is_stuck(probing_for: float, stuck: bool) -> None:
    from havip.cli import VETO_LONG, assess

    assert VETO_LONG == 60.0  # the README says "a minute"
    st = _healthy(
        state="probing",
        owns_vip=False,
        owner=None,
        peer_connected=False,  # a node probes after losing its peer: degraded on that account
        since=NOW - probing_for,
        vetoed_by="02:00:00:00:00:66",
    )
    codes = [f.code for f in assess(st, NOW)]
    assert codes == (["peer_disconnected", "stuck"] if stuck else ["peer_disconnected"])


def test_unknown_certificates_and_missing_new_fields_are_not_a_problem() -> None:
    from havip.cli import assess

    st = _healthy(certificates={"own": None, "peer": None, "ca": None})
    assert assess(st, NOW) == []
    assert "cert     peer: unknown" in format_status(st, NOW).splitlines()
    old = _healthy()
    for key in ("owner", "last_keepalive_age_seconds", "certificates"):
        del old[key]  # a daemon of the previous release
    assert assess(old, NOW) == []
    screen = format_status(old, NOW)
    assert "owner    this node (n1)" in screen and "cert " not in screen


def _serve_status(
    tmp_path: Path, reply: dict[str, object], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run `havip status ARGV` against a control socket that answers `reply`."""
    from havip.shell.control import remove_control, start_control

    cfg = _write_config(tmp_path, "n1", 7411, _free_port())
    sock = tmp_path / "n1.sock"

    async def run() -> int:
        server = await start_control(sock, {"status": lambda _req: reply})
        try:
            return await asyncio.to_thread(main, ["status", *argv, "--config", str(cfg)])
        finally:
            server.close()
            await server.wait_closed()
            remove_control(sock)

    code = asyncio.run(run())
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("changes", "exit_code", "health"),
    [
        ({}, 0, "healthy"),
        ({"peer_connected": False}, 1, "degraded"),
        (
            {"maintenance": True, "eligible": False, "ineligible_cause": "maintenance"},
            1,
            "degraded",
        ),
    ],
)
def test_exit_codes_and_json_health(
    pki_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object],
    exit_code: int,
    health: str,
) -> None:
    st = _healthy(**changes, since=time.time() - 60)
    code, out, err = _serve_status(tmp_path, st, ["--json"], capsys)
    assert (code, err) == (exit_code, "")
    answer = json.loads(out)
    assert answer["reachable"] is True and answer["error"] is None
    assert answer["health"] == health and bool(answer["problems"]) == (exit_code == 1)
    assert {k: answer[k] for k in st} == st  # the daemon's fields pass through unchanged
    code, out, err = _serve_status(tmp_path, st, [], capsys)
    assert (code, err) == (exit_code, "")
    assert out.splitlines()[0].endswith("; healthy" if exit_code == 0 else "; DEGRADED (1)")


def test_a_daemon_error_reply_is_unreachable(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon that answers but cannot give its status counts as unreachable (exit 2)."""

    def broken(_req: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("status exploded")

    from havip.shell.control import remove_control, start_control

    cfg = _write_config(tmp_path, "n1", 7411, _free_port())
    sock = tmp_path / "n1.sock"

    async def run() -> int:
        server = await start_control(sock, {"status": broken})
        try:
            return await asyncio.to_thread(main, ["status", "--json", "--config", str(cfg)])
        finally:
            server.close()
            await server.wait_closed()
            remove_control(sock)

    assert asyncio.run(run()) == 2
    out = capsys.readouterr()
    answer = json.loads(out.out)
    assert answer["reachable"] is False and "status exploded" in answer["error"]
    assert out.err.startswith(f"havip: {sock}: the daemon says: status failed")


README = REPO / "README.md"


def _documented_status_fields() -> set[str]:
    """Field names in the README's `status --json` table (under "### `havip status`")."""
    import re

    text = README.read_text()
    section = text[text.index("### `havip status`") :]
    table = section[section.index("| Field | Type | Meaning |") :].split("\n\n")[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))


def test_the_readme_documents_every_status_json_field() -> None:
    from havip.cli import (
        CERT_FIELDS,
        CERT_ROLES,
        CHECK_FIELDS,
        CLIENT_FIELDS,
        STATUS_FIELDS,
        VIP_FIELDS,
        Problem,
    )

    expected = (
        STATUS_FIELDS
        | CLIENT_FIELDS
        | {f"vips[].{k}" for k in VIP_FIELDS}
        | {f"checks[].{k}" for k in CHECK_FIELDS}
        | {f"certificates.{r}" for r in CERT_ROLES}
        | {f"certificates.*.{k}" for k in CERT_FIELDS}
        | {"problems[].code", "problems[].text"}
    )
    assert _documented_status_fields() == expected
    section = README.read_text().split("### `havip status`")[1].split("\n#")[0]
    for code in Problem:
        assert f"`{code.value}`" in section, f"README does not define the problem {code.value}"


def test_a_real_pair_reports_the_documented_fields_and_is_healthy(tmp_path: Path) -> None:
    """Two real daemons on loopback (mutual TLS, a health check, the control socket): the
    status dicts have exactly the documented fields, and a settled pair is healthy."""
    from test_loopback import _havip_certs, until
    from test_operate import check_section, pair

    from havip.cli import CERT_FIELDS, CHECK_FIELDS, STATUS_FIELDS, VIP_FIELDS, assess
    from havip.core.states import State
    from havip.shell.control import query

    certs = _havip_certs(tmp_path / "pki")
    flag = tmp_path / "up"
    flag.touch()

    async def body() -> None:
        async with pair(certs, tmp_path, preempt=True, sections=lambda n: check_section(flag)) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            await until(
                lambda: (
                    n1.state is State.ACTIVE
                    and n2.state is State.STANDBY
                    and n1.d.checks.passing() is True
                    and n2.d.checks.passing() is True
                    and n1.holds()
                    and n2.d.status()["peer_owns_vip"] is True
                    and n2.d.status()["last_keepalive_age_seconds"] is not None
                ),
                "settled, checks passing",
            )
            for name in ("n1", "n2"):
                st = await asyncio.to_thread(query, p.sock(name), "status", 10.0 * SCALE)
                assert set(st) == STATUS_FIELDS, set(st) ^ STATUS_FIELDS
                vips, checks, certificates = st["vips"], st["checks"], st["certificates"]
                assert isinstance(vips, list) and isinstance(checks, list)
                assert {k for v in vips for k in v} == VIP_FIELDS
                assert {k for c in checks for k in c} == CHECK_FIELDS
                assert isinstance(certificates, dict)
                assert set(certificates) == {"own", "peer", "ca"}
                for entry in certificates.values():
                    assert isinstance(entry, dict) and set(entry) == CERT_FIELDS
                assert assess(st, time.time()) == [], st

    asyncio.run(asyncio.wait_for(body(), 60 * SCALE))


def test_every_state_and_cause_has_words() -> None:
    """A state or cause added to the core cannot show as "unknown" on the status screen."""
    from havip.cli import _CAUSE_WORDS, state_words
    from havip.core.states import Cause, State

    for state in State:
        for eligible in (True, False):
            assert "unknown" not in state_words(state.value, eligible), state
    assert set(_CAUSE_WORDS) == {c.value for c in Cause if c is not Cause.OK}
