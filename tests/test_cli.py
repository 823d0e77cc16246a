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
        }
    )
    assert "active since 1970-01-01T00:00:00+00:00 (probe_silent), epoch 3" in text
    assert "198.18.0.100/24 on eth0: held here" in text
    assert "n2: standby, does not hold the VIP, rtt 0.40 ms" in text


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
        assert human.returncode == 0 and "state    active" in human.stdout
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


def test_status_without_daemon_exits_1(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write_config(tmp_path, "n1", 7411, _free_port())
    assert main(["status", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err == f"havip: {tmp_path / 'n1.sock'}: no havip daemon is listening (is it running?)\n"


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
    assert as_json == 0 and json.loads(out_json) == STATUS
    assert human == 0 and out_human == format_status(STATUS) + "\n"


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
        while answer.returncode != 0 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
            answer = _status_json(config)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["node"] == "n1"
        assert first.poll() is None  # the busy metrics port did not stop it

        second = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=30 * SCALE)
        assert second.returncode == 1
        assert f"another havip daemon is running on {tmp_path / 'n1.sock'}" in second.stderr
        assert _status_json(config).returncode == 0  # the first one still answers
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
    assert "peer     n2: active (not eligible: maintenance), holds the VIP" in lines
