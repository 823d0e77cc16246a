"""Log lines: the text format the lab parses, journald priorities, and `--log-format json`."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import pytest

from havip.cli import build_parser, main
from havip.lab.scenario import parse_log_line
from havip.shell.logs import LogFormat, event, priority, setup_logging, under_journald

REPO = Path(__file__).resolve().parent.parent


class _Color(StrEnum):
    RED = "red"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _journal_stream(f: io.TextIOBase) -> str:
    st = os.fstat(f.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def _log_all_levels() -> None:
    event("d", level=logging.DEBUG)
    event("i", "info line", n=1)
    event("w", level=logging.WARNING)
    event("e", level=logging.ERROR)
    event("c", level=logging.CRITICAL)


def test_text_lines_are_unchanged_outside_journald(tmp_path: Path, restore_logging: None) -> None:
    with (tmp_path / "log").open("w+") as f:
        setup_logging("n1", "debug", stream=f, environ={})
        event("transition", "n2 stopped answering", to="active", why=_Color.RED, vip=None)
        f.seek(0)
        line = f.read().rstrip("\n")
    assert line.split(" ", 3)[1:] == [
        "n1",
        "INFO",
        'event=transition to=active why=red msg="n2 stopped answering"',
    ]
    ev = parse_log_line(line)  # the lab's parser, unchanged, still reads it
    assert ev is not None and ev.name == "transition" and ev.fields["to"] == "active"
    assert "vip" not in ev.fields  # None fields are left out


@pytest.mark.parametrize(
    ("levelno", "prio"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (5, 7),
        (25, 4),  # between INFO and WARNING: the more severe
        (60, 2),
    ],
)
def test_priority(levelno: int, prio: int) -> None:
    assert priority(levelno) == prio


def test_journald_detection(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        assert under_journald(a, {"JOURNAL_STREAM": _journal_stream(a)})
        # stderr redirected elsewhere (e.g. a wrapper's file): not journald's stream any more
        assert not under_journald(a, {"JOURNAL_STREAM": _journal_stream(b)})
        assert not under_journald(a, {})
        assert not under_journald(a, {"JOURNAL_STREAM": "garbage"})
        assert not under_journald(a, {"JOURNAL_STREAM": "1:x"})
    assert not under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no fd behind it


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_journald_lines_carry_the_syslog_priority(
    fmt: LogFormat, tmp_path: Path, restore_logging: None
) -> None:
    with (tmp_path / "log").open("w+") as f:
        setup_logging(
            "n1", "debug", fmt=fmt, stream=f, environ={"JOURNAL_STREAM": _journal_stream(f)}
        )
        _log_all_levels()
        f.seek(0)
        lines = f.read().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    body = lines[1][3:]
    if fmt == "text":
        ev = parse_log_line(body)  # journald strips the prefix: the rest is the usual line
        assert ev is not None and ev.name == "i" and ev.fields == {"n": "1", "msg": "info line"}
    else:
        assert json.loads(body)["event"] == "i"


def test_json_lines_keep_types_and_every_field(tmp_path: Path, restore_logging: None) -> None:
    with (tmp_path / "log").open("w+") as f:
        setup_logging("n2", "info", fmt="json", stream=f, environ={})
        event(
            "takeover",
            'VIP "added"',
            level=logging.WARNING,
            epoch=7,
            after_s=0.25,
            isolated=False,
            why=_Color.RED,
            path=Path("/run/havip"),
            nan=float("nan"),
            skipped=None,
            ts="a field named like a key",
        )
        event("quiet", level=logging.DEBUG)  # below the level: not written
        logging.getLogger("asyncio").warning("from a library: %d", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("havip").exception("event=crash")
        f.seek(0)
        objs = [json.loads(line) for line in f.read().splitlines()]
    assert len(objs) == 3
    first = objs[0]
    assert list(first)[:4] == ["ts", "node", "level", "event"]
    assert list(first)[-1] == "msg"
    assert first == {
        "ts": first["ts"],
        "node": "n2",
        "level": "WARNING",
        "event": "takeover",
        "epoch": 7,
        "after_s": 0.25,
        "isolated": False,
        "why": "red",
        "path": "/run/havip",
        "nan": "nan",
        "ts_": "a field named like a key",
        "msg": 'VIP "added"',
    }
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert objs[1]["event"] == "log" and objs[1]["msg"] == "from a library: 3"
    assert objs[2]["level"] == "ERROR" and "RuntimeError: boom" in objs[2]["exc"]


def test_setup_logging_refuses_an_unknown_format(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        setup_logging("n1", fmt="xml")  # type: ignore[arg-type]


def test_run_takes_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["run"]).log_format == "text"
    assert build_parser().parse_args(["run", "--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--log-format", "xml"])
    assert exc.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _one_node(tmp_path: Path) -> Path:
    assert (
        main(["pki", "init", "--dir", str(tmp_path / "pki"), "--node", "n1", "--node", "n2"]) == 0
    )
    path = tmp_path / "n1.toml"
    path.write_text(
        f'node = "n1"\nprimary = "n1"\nlisten = "127.0.0.1:{_free_port()}"\nstate_dir = "state"\n'
        'control_socket = "n1.sock"\n'
        '[peer]\nname = "n2"\naddress = "127.0.0.1:9"\n'
        f'[tls]\nca = "{tmp_path}/pki/ca.crt"\ncert = "{tmp_path}/pki/n1.crt"\n'
        f'key = "{tmp_path}/pki/n1.key"\n'
        '[[vip]]\naddress = "198.18.0.100/24"\ninterface = "lo"\n'
        '[backend]\ntype = "dry-run"\n'
        '[metrics]\nlisten = "off"\n'
    )
    return path


@pytest.mark.parametrize("journald", [False, True])
def test_a_real_daemon_logs_json(tmp_path: Path, time_scale: float, journald: bool) -> None:
    """`havip run --log-format json`: every line the daemon writes, start to stop, is one
    JSON object (under journald after its `<N>` prefix)."""
    config = _one_node(tmp_path)
    log = tmp_path / "stderr"
    with log.open("w") as err:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("JOURNAL_STREAM", None)
        if journald:
            env["JOURNAL_STREAM"] = _journal_stream(err)
        proc = subprocess.Popen(
            [sys.executable, "-m", "havip", "run", "--log-format", "json", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env=env,
        )
    try:
        deadline = time.monotonic() + 15 * time_scale
        while '"event":"started"' not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10 * time_scale) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log.read_text().splitlines()
    if journald:
        assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines
        lines = [line[3:] for line in lines]
    objs = [json.loads(line) for line in lines]
    names = [o["event"] for o in objs]
    assert names[0] == "started" and names[-1] == "stopped", names
    started = objs[0]
    assert started["node"] == "n1" and started["pid"] == proc.pid  # a number, not "1234"
