"""The namespace lab and the client probe: pure analysis tests, then the real lab (root)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from havip.backends.arp import (
    OP_REPLY,
    OP_REQUEST,
    ZERO_MAC,
    build_arp,
    gratuitous_frames,
    mac_bytes,
)
from havip.backends.nd import NA_OVERRIDE, NA_SOLICITED, announce_frame, build_na, build_ns
from havip.lab.client import (
    ArpMode,
    Sample,
    double_answer_ms,
    double_answers,
    first_answer_from,
    iface_ipv6,
    load_samples,
    max_outage_ms,
    outages,
    owner_moves,
    parse_arp_answer,
    parse_nd_answer,
    parse_sample,
)
from havip.lab.netns import (
    GATEWAY,
    GATEWAY6,
    VIP,
    VIP6,
    VIP6_CIDR,
    Lab,
    LabError,
    process_running,
)

MAC1 = "02:00:00:00:00:01"
MAC2 = "02:00:00:00:00:02"
LABCLIENT = [sys.executable, "-m", "havip.lab.client"]
FLOOD_ARGS = ["--conns", "4", "--duration", "0.5", "--gap", "0.02"]


def _samples(pattern: str, *, interval: float = 0.01, t0: float = 1000.0) -> list[Sample]:
    """One sample per character: '1'/'2' answered by n1/n2, '.' unanswered, 'd' double ARP."""
    out = []
    for seq, ch in enumerate(pattern):
        t = t0 + seq * interval
        answer = {"1": "n1", "2": "n2", "d": "n1"}.get(ch)
        macs = {"1": (MAC1,), "2": (MAC2,), "d": (MAC1, MAC2), ".": ()}[ch]
        out.append(
            Sample(
                seq=seq,
                t_send=t,
                answer=answer,
                t_answer=None if answer is None else t + 0.001,
                arp_macs=macs,
            )
        )
    return out


# ----------------------------------------------------------------------------- pure analysis


def test_outages_finds_runs_with_nodes_and_durations() -> None:
    found = outages(_samples("11...22.2"))
    assert [(o.lost, o.node_before, o.node_after, o.ended) for o in found] == [
        (3, "n1", "n2", True),
        (1, "n2", "n2", True),
    ]
    assert found[0].start == pytest.approx(1000.02)
    assert found[0].end == pytest.approx(1000.05)
    assert found[0].duration_ms == pytest.approx(30.0)
    assert found[1].duration_ms == pytest.approx(10.0)


def test_outages_at_the_edges() -> None:
    assert outages(_samples("1111")) == []
    assert outages([]) == []
    leading = outages(_samples("..1"))
    assert (leading[0].node_before, leading[0].node_after, leading[0].lost) == (None, "n1", 2)
    trailing = outages(_samples("1..."))
    assert len(trailing) == 1
    assert trailing[0].ended is False
    assert trailing[0].node_after is None
    assert trailing[0].duration_ms == pytest.approx(20.0)  # a lower bound


def test_outages_sort_by_seq() -> None:
    samples = _samples("1..2")
    assert outages(list(reversed(samples))) == outages(samples)


def test_max_outage_ms_with_and_without_window() -> None:
    samples = _samples("1.1....1..2")
    assert max_outage_ms(samples) == pytest.approx(40.0)
    # Only rounds sent from t=1000.07 on: the two-round outage.
    assert max_outage_ms(samples, start=1000.07) == pytest.approx(20.0)
    assert max_outage_ms(samples, end=1000.02) == pytest.approx(10.0)
    assert max_outage_ms(_samples("111")) == 0.0
    assert max_outage_ms([]) == 0.0


def test_double_answers_counts_rounds_with_two_macs() -> None:
    assert double_answers(_samples("11d2d.")) == 2
    repeated = [Sample(seq=0, t_send=1.0, answer="n1", t_answer=1.0, arp_macs=(MAC1, MAC1))]
    assert double_answers(repeated) == 0


def test_double_answer_ms_counts_the_time_of_double_rounds() -> None:
    assert double_answer_ms(_samples("11dd2d.")) == pytest.approx(30.0)
    assert double_answer_ms(_samples("1111")) == 0.0
    assert double_answer_ms(_samples("d")) == 0.0  # one round: no spacing to measure
    assert double_answer_ms(_samples("1d")) == pytest.approx(10.0)  # the last counts the spacing


def test_owner_moves_skips_outages_and_counts_each_change() -> None:
    moves = owner_moves(_samples("11..22..2211"))
    assert [(a, b) for _, a, b in moves] == [("n1", "n2"), ("n2", "n1")]
    assert moves[0][0] == pytest.approx(1000.041)  # the answer time of the first n2 round
    assert owner_moves(_samples("11...11")) == []
    assert owner_moves(_samples("...")) == []


def test_first_answer_from() -> None:
    samples = _samples("1..22")
    assert first_answer_from(samples, "n2", after=0.0) == pytest.approx(1000.031)
    assert first_answer_from(samples, "n2", after=1000.035) == pytest.approx(1000.041)
    assert first_answer_from(samples, "n1", after=1000.005) is None
    assert first_answer_from(samples, "n3", after=0.0) is None


def test_load_samples_round_trip_and_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    lines = [
        {"seq": 1, "t_send": 2.0, "answer": None, "t_answer": None, "arp_macs": []},
        {"seq": 0, "t_send": 1.0, "answer": "n1", "t_answer": 1.5, "arp_macs": [MAC1]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"seq": 2, "t_')
    samples = load_samples(path)
    assert [s.seq for s in samples] == [0, 1]
    assert samples[0] == Sample(seq=0, t_send=1.0, answer="n1", t_answer=1.5, arp_macs=(MAC1,))
    assert samples[1].answer is None


def test_load_samples_names_file_and_line_of_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"seq": 0, "t_send": 1.0, "answer": null, "t_answer": null, "arp_macs": []}\n')
    path.write_text(path.read_text() + '{"seq": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: bad sample line"):
        load_samples(path)
    with pytest.raises(ValueError, match="bad sample line"):
        parse_sample("not json")


# ----------------------------------------------------------------------------- ARP answers

# The frames themselves are havip.backends.arp's, pinned by tests/test_arp.py; here only the rule of
# what counts as an answer to the client's question.
ANSWER_VIP = IPv4Address(VIP)
ASKER_IP = IPv4Address("198.18.0.10")
ASKER_MAC = mac_bytes("02:00:00:00:00:0a")


def _reply(
    *,
    sender_ip: IPv4Address = ANSWER_VIP,
    target_mac: bytes = ASKER_MAC,
    target_ip: IPv4Address = ASKER_IP,
) -> bytes:
    return build_arp(
        op=OP_REPLY,
        sender_mac=mac_bytes(MAC1),
        sender_ip=sender_ip,
        target_mac=target_mac,
        target_ip=target_ip,
        dst_mac=target_mac,
    )


def _answer(frame: bytes) -> str | None:
    return parse_arp_answer(frame, vip=ANSWER_VIP, asker_ip=ASKER_IP, asker_mac=ASKER_MAC)


def test_parse_arp_answer_accepts_a_reply_to_us() -> None:
    assert _answer(_reply()) == MAC1
    assert _answer(_reply() + bytes(18)) == MAC1  # padded to the Ethernet minimum on the wire


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_reply()[:41], id="truncated"),
        pytest.param(_reply(sender_ip=IPv4Address("198.18.0.1")), id="not-about-the-vip"),
        pytest.param(_reply(target_ip=IPv4Address("198.18.0.2")), id="to-another-ip"),
        pytest.param(_reply(target_mac=mac_bytes(MAC2)), id="to-another-mac"),
        pytest.param(gratuitous_frames(mac_bytes(MAC2), ANSWER_VIP)[0], id="garp-request"),
        pytest.param(gratuitous_frames(mac_bytes(MAC2), ANSWER_VIP)[1], id="garp-reply"),
        pytest.param(
            build_arp(
                op=OP_REQUEST,
                sender_mac=mac_bytes(MAC1),
                sender_ip=ANSWER_VIP,
                target_mac=ZERO_MAC,
                target_ip=ASKER_IP,
            ),
            id="request-from-the-vip",
        ),
    ],
)
def test_parse_arp_answer_rejects_everything_else(frame: bytes) -> None:
    assert _answer(frame) is None


# ----------------------------------------------------------------------------- probe on loopback


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(step)


def _start_local_echo(port: int) -> subprocess.Popen[str]:
    echo = subprocess.Popen(
        [*LABCLIENT, "echo", "--name", "lo", "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert echo.stdout is not None
    assert echo.stdout.readline().strip() == "ready"
    return echo


def _loopback_client_argv(port: int, *, duration: float, out: Path) -> list[str]:
    args = ["client", "--vip", "127.0.0.1", "--port", str(port), "--arp-mode", "off"]
    return [*LABCLIENT, *args, "--duration", str(duration), "--out", str(out)]


def test_client_and_echo_on_loopback_without_root(tmp_path: Path, time_scale: float) -> None:
    port = _free_udp_port()
    echo = _start_local_echo(port)
    out = tmp_path / "probe.jsonl"
    try:
        done = subprocess.run(
            _loopback_client_argv(port, duration=0.3, out=out),
            capture_output=True,
            text=True,
            timeout=10 * time_scale,
            check=False,
        )
    finally:
        echo.kill()
        echo.wait()
    assert done.returncode == 0, done.stderr
    samples = load_samples(out)
    assert len(samples) >= 5
    assert [s.seq for s in samples] == list(range(len(samples)))
    assert {s.answer for s in samples} == {"lo"}
    assert all(s.t_answer is not None and s.t_answer >= s.t_send for s in samples)
    assert all(s.arp_macs == () for s in samples)


def test_client_stops_on_sigterm_and_writes_the_rest(tmp_path: Path, time_scale: float) -> None:
    port = _free_udp_port()
    echo = _start_local_echo(port)
    out = tmp_path / "probe.jsonl"
    client = subprocess.Popen(_loopback_client_argv(port, duration=60, out=out))
    try:
        # Lines appear while it runs (flushed about every 100 ms).
        _wait_for(
            "live output", lambda: out.exists() and len(load_samples(out)) >= 5, 10 * time_scale
        )
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=5 * time_scale)
    finally:
        client.kill()
        client.wait()
        echo.kill()
        echo.wait()
    assert client.returncode == 0
    samples = load_samples(out)
    assert out.read_text().endswith("\n")
    assert [s.seq for s in samples] == list(range(len(samples)))
    assert samples[-1].answer == "lo"  # in-flight rounds got their grace period


def test_client_rejects_bad_arguments(time_scale: float) -> None:
    done = subprocess.run(
        [*LABCLIENT, "client", "--vip", "127.0.0.1", "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=30 * time_scale,
        check=False,
    )
    assert done.returncode == 2
    assert "--interval: 0.0 is outside" in done.stderr


def test_flood_holds_connections_and_reconnects_when_dropped(
    tmp_path: Path, time_scale: float
) -> None:
    accepted: list[float] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        # Accepts and closes every connection at once: the flood must come straight back.
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(time.monotonic())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [*LABCLIENT, "flood", "--to", "127.0.0.1", "--port", str(port), *FLOOD_ARGS],
            capture_output=True,
            text=True,
            timeout=30 * time_scale,
            check=False,
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ready"
    stats = dict(
        kv.split("=") for kv in done.stderr.split("labclient flood:")[1].split() if "=" in kv
    )
    assert int(stats["closed_by_server"]) >= 4
    assert int(stats["attempts"]) > 4  # reconnected after being dropped
    assert len(accepted) >= int(stats["closed_by_server"])


def test_flood_rejects_too_many_connections(time_scale: float) -> None:
    done = subprocess.run(
        [*LABCLIENT, "flood", "--to", "127.0.0.1", "--port", "1", "--conns", "5000"],
        capture_output=True,
        text=True,
        timeout=30 * time_scale,
        check=False,
    )
    assert done.returncode == 2
    assert "--conns" in done.stderr


def test_lab_names_are_checked_and_short() -> None:
    lab = Lab()
    assert lab.ns_name("rogue").startswith(lab.prefix)
    assert all(len(lab.port_name(n)) <= 15 for n in ("rogue",))
    assert all(len(lab.hb_port_name(n)) <= 15 for n in ("n1", "n2"))
    with pytest.raises(ValueError, match="no heartbeat port for 'client'"):
        lab.hb_port_name("client")
    with pytest.raises(ValueError, match="'sideways' is not a valid Isolation"):
        lab.isolate("n2", "sideways")
    with pytest.raises(ValueError, match="src and dst are both"):
        lab.one_way_loss("n1", "n1")
    with pytest.raises(ValueError, match="times=0"):
        lab.blip("n1", 0.1, times=0)
    with pytest.raises(LabError, match="no rogue host"):
        lab.rogue_hold()
    assert lab.ns_name("n1").startswith(lab.prefix)
    assert len({lab.ns_name(n) for n in ("lan", "n1", "n2", "client")}) == 4
    assert all(len(lab.port_name(n)) <= 15 for n in ("n1", "n2", "client"))
    assert Lab().prefix != lab.prefix
    with pytest.raises(ValueError, match="unknown lab node 'n3'"):
        lab.ns_name("n3")
    with pytest.raises(ValueError, match="longer than 12"):
        Lab(prefix="x" * 13)
    lab.destroy()  # never created: a no-op


# ----------------------------------------------------------------------------- the real lab


def _reaches(lab: Lab, node: str, ip: str, timeout: float) -> bool:
    argv = lab.python_argv("havip.lab.client", "send", "--to", ip, "--timeout", str(timeout))
    return lab.exec(node, argv, timeout=timeout + 30, check=False).returncode == 0


def _probe(lab: Lab, out: Path, duration: float, time_scale: float) -> list[Sample]:
    client = lab.start_client(out, duration=duration)
    assert client.wait(timeout=duration + 10 * time_scale) == 0
    return load_samples(out)


@pytest.mark.netns
def test_client_sees_the_owner_then_follows_the_vip(
    lab: Lab, tmp_path: Path, time_scale: float
) -> None:
    mac1, mac2 = lab.mac("n1"), lab.mac("n2")
    assert mac1 != mac2
    lab.add_address("n1")
    lab.start_echo("n1")
    lab.start_echo("n2")

    steady = _probe(lab, tmp_path / "steady.jsonl", 1.0, time_scale)
    assert len(steady) >= 20
    assert all(s.answer == "n1" for s in steady)
    assert all(s.arp_macs in ((), (mac1,)) for s in steady)
    # A late ARP reply may land in the next round's window, but not often.
    assert sum(s.arp_macs == (mac1,) for s in steady) >= len(steady) // 2

    # The move, as a daemon would do it: old owner removes, new owner adds and announces.
    # Passive ARP mode, so only the gratuitous ARP can redirect the client's kernel.
    out = tmp_path / "move.jsonl"
    client = lab.start_client(out, duration=2.0, arp_mode=ArpMode.PASSIVE)
    _wait_for("n1 answers", lambda: out.exists() and len(load_samples(out)) >= 20, 10 * time_scale)
    lab.del_address("n1")
    lab.add_address("n2")
    lab.exec("n2", lab.python_argv("havip.lab.client", "garp", "--ip", VIP, "--count", "2"))
    assert client.wait(timeout=10 * time_scale) == 0
    moved = load_samples(out)
    first_n2 = next(i for i, s in enumerate(moved) if s.answer == "n2")
    assert moved[0].answer == "n1"
    assert all(s.answer in ("n1", None) for s in moved[:first_n2])
    assert all(s.answer in ("n2", None) for s in moved[first_n2:])
    assert moved[-1].answer == "n2"
    assert double_answers(moved) == 0
    assert {m for s in moved for m in s.arp_macs} == {mac1, mac2}
    assert lab.neigh("client", VIP) == mac2
    assert first_answer_from(moved, "n2", after=moved[0].t_send) is not None


@pytest.mark.netns
def test_loss_drops_everything_then_clears(lab: Lab, tmp_path: Path, time_scale: float) -> None:
    lab.add_address("n1")
    lab.start_echo("n1")
    assert all(s.answer == "n1" for s in _probe(lab, tmp_path / "a.jsonl", 0.3, time_scale))

    lab.set_loss(37)
    assert "numgen random mod 100 < 37 drop" in lab.ruleset()
    lab.set_loss(100)
    assert "numgen" not in lab.ruleset()
    lost = _probe(lab, tmp_path / "b.jsonl", 0.3, time_scale)
    assert lost
    assert all(s.answer is None and s.arp_macs == () for s in lost)

    lab.clear_loss()
    back = _probe(lab, tmp_path / "c.jsonl", 0.5, time_scale)
    assert back[-1].answer == "n1"
    assert sum(s.answer == "n1" for s in back) >= len(back) // 2
    assert "drop" not in lab.ruleset()
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        lab.set_loss(101)


@pytest.mark.netns
def test_cut_heartbeat_blocks_ip_between_servers_only(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    lab.start_echo("n2")
    n1, n2 = Lab.address("n1"), Lab.address("n2")
    ok, short = 5 * time_scale, 0.3
    assert _reaches(lab, "n1", n2, ok)

    lab.cut_heartbeat()
    lab.flush_neigh("n1")
    assert not _reaches(lab, "n1", n2, short)
    assert not _reaches(lab, "n2", n1, short)
    assert _reaches(lab, "client", n1, ok)
    assert _reaches(lab, "client", n2, ok)
    # ARP still passes: n1's failed send resolved n2's address.
    assert lab.neigh("n1", n2) == lab.mac("n2")

    lab.heal_heartbeat()
    assert _reaches(lab, "n1", n2, ok)
    assert _reaches(lab, "n2", n1, ok)


@pytest.mark.netns
def test_partition_l2_blocks_arp_too(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    lab.start_echo("n2")
    n1, n2 = Lab.address("n1"), Lab.address("n2")
    ok, short = 5 * time_scale, 0.3

    lab.partition_l2()
    lab.flush_neigh("n1")
    assert not _reaches(lab, "n1", n2, short)
    assert lab.neigh("n1", n2) is None
    assert _reaches(lab, "client", n1, ok)
    assert _reaches(lab, "client", n2, ok)

    lab.heal_l2()
    assert _reaches(lab, "n1", n2, ok)
    assert lab.neigh("n1", n2) == lab.mac("n2")


@pytest.mark.netns
def test_link_down_cuts_the_node_off(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    n1 = Lab.address("n1")
    lab.link_down("n1")
    assert not _reaches(lab, "client", n1, 0.3)
    lab.link_up("n1")
    _wait_for("n1 back", lambda: _reaches(lab, "client", n1, 1.0), 10 * time_scale, step=0.0)


@pytest.mark.netns
def test_destroy_removes_namespaces_and_processes(time_scale: float) -> None:
    lab = Lab().create()
    names = [lab.ns_name(n) for n in ("lan", "n1", "n2", "client")]
    echo = lab.start_echo("n1")
    # A grandchild in its own session escapes the process-group kill; the namespace sweep
    # must still get it.
    spawner = lab.run(
        "n2",
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], start_new_session=True); print(p.pid, flush=True);"
            " time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert spawner.stdout is not None
    grandchild = int(spawner.stdout.readline())
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert all(name in listed for name in names)

    lab.destroy()
    lab.destroy()  # idempotent
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert echo.returncode == -signal.SIGKILL
    assert spawner.returncode == -signal.SIGKILL
    _wait_for("the grandchild to die", lambda: not process_running(grandchild), 5 * time_scale)


_ORPHAN_SCRIPT = """
import time
from havip.lab.netns import Lab
lab = Lab().create()
echo = lab.start_echo("n1")
print(lab.prefix, echo.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.netns
def test_remove_stale_clears_labs_of_killed_owners_only(lab: Lab, time_scale: float) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert owner.stdout is not None
        prefix, echo_pid = owner.stdout.readline().split()
    finally:
        owner.kill()  # SIGKILL: no atexit, the lab is left behind
        owner.wait()
    assert process_running(int(echo_pid))

    removed = Lab.remove_stale()

    assert prefix in removed
    assert lab.prefix not in removed
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{prefix}-" not in listed
    assert lab.ns_name("lan") in listed
    _wait_for(
        "the orphaned echo to die", lambda: not process_running(int(echo_pid)), 5 * time_scale
    )


# ----------------------------------------------------------------------------- grown lab: faults


def _neigh_learned(lab: Lab, node: str, ip: str, mac: str, time_scale: float) -> None:
    _wait_for(f"{node} learns {ip} at {mac}", lambda: lab.neigh(node, ip) == mac, 5 * time_scale)


@pytest.mark.netns
def test_gateway_is_the_witness_and_survives_a_link_bounce(lab: Lab, time_scale: float) -> None:
    for node in ("n1", "n2"):
        assert lab.default_route(node) == GATEWAY
        # The gateway answers ARP: a datagram to it resolves its MAC (the client's).
        _reaches(lab, node, GATEWAY, 0.3)
        assert lab.neigh(node, GATEWAY) == lab.mac("client")
    lab.link_down("n1")
    assert lab.default_route("n1") is None  # going down flushed it ...
    lab.link_up("n1")
    assert lab.default_route("n1") == GATEWAY  # ... and link_up put it back


@pytest.mark.netns
def test_isolate_by_drop_keeps_carrier_and_cuts_every_frame(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    lab.start_echo("n2")
    n2, ok = Lab.address("n2"), 5 * time_scale
    assert _reaches(lab, "client", n2, ok)
    lab.isolate("n2", "drop")
    lab.flush_neigh("n2")
    assert lab.carrier("n2")
    assert not _reaches(lab, "client", n2, 0.3)
    assert not _reaches(lab, "n1", n2, 0.3)
    _reaches(lab, "n2", GATEWAY, 0.3)
    assert lab.neigh("n2", GATEWAY) is None  # not even ARP gets out: no witness answers
    assert _reaches(lab, "client", Lab.address("n1"), ok)  # n1 is not affected
    lab.unisolate("n2")
    assert _reaches(lab, "client", n2, ok)
    assert "drop" not in lab.ruleset()


@pytest.mark.netns
def test_isolate_by_carrier_leaves_the_interface_admin_up(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n2")
    n2 = Lab.address("n2")
    lab.isolate("n2", "carrier")
    assert not lab.carrier("n2")
    assert lab.admin_up("n2")
    assert not _reaches(lab, "client", n2, 0.3)
    lab.unisolate("n2")
    _wait_for("n2's carrier", lambda: lab.carrier("n2"), 5 * time_scale)
    _wait_for("n2 answers", lambda: _reaches(lab, "client", n2, 1.0), 10 * time_scale, step=0.0)


@pytest.mark.netns
def test_one_way_loss_drops_one_direction_only(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    n1, n2 = Lab.address("n1"), Lab.address("n2")
    lab.one_way_loss("n1", "n2")
    lab.flush_neigh("n1")
    lab.flush_neigh("n2")
    # n2's broadcast ARP request reaches n1 (n2 -> n1 passes), n1's reply does not come back.
    assert not _reaches(lab, "n2", n1, 0.3)
    _neigh_learned(lab, "n1", n2, lab.mac("n2"), time_scale)
    assert lab.neigh("n2", n1) is None
    assert _reaches(lab, "client", n1, 5 * time_scale)
    lab.clear_one_way_loss()
    assert _reaches(lab, "n2", n1, 5 * time_scale)


@pytest.mark.netns
def test_blip_drops_carrier_for_a_while_and_always_restores_it(lab: Lab, time_scale: float) -> None:
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(lab.carrier("n1"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        blips = lab.blip("n1", 0.3, times=2, gap=0.3)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert len(blips) == 2
    assert all(up - down >= 0.3 for down, up in blips)
    assert blips[1][0] - blips[0][1] >= 0.3
    assert False in seen  # the watcher saw the carrier gone ...
    _wait_for("n1's carrier", lambda: lab.carrier("n1"), 5 * time_scale)  # ... and it is back
    assert lab.admin_up("n1")


@pytest.mark.netns
def test_heartbeat_net_survives_vip_link_faults(time_scale: float) -> None:
    with Lab(heartbeat_net=True) as lab:
        lab.start_echo("n1")
        lab.start_echo("n2")
        hb1, hb2, ok = Lab.hb_address("n1"), Lab.hb_address("n2"), 5 * time_scale
        assert _reaches(lab, "n2", hb1, ok)
        lab.partition_l2()  # eth0 between n1 and n2 cut: eth1 is a separate bridge
        assert _reaches(lab, "n2", hb1, ok)
        assert not _reaches(lab, "n2", Lab.address("n1"), 0.3)
        lab.heal_l2()
        for how in ("admin", "carrier"):
            lab.vip_link_down("n1", how)
            assert not lab.carrier("n1")
            assert lab.admin_up("n1") == (how == "carrier")
            assert not _reaches(lab, "client", Lab.address("n1"), 0.3)
            assert _reaches(lab, "n1", hb2, ok)
            lab.vip_link_up("n1")
            _wait_for("n1's carrier", lambda: lab.carrier("n1"), 5 * time_scale)
            assert lab.default_route("n1") == GATEWAY
        with pytest.raises(ValueError, match="vip_link_down"):
            lab.vip_link_down("n1", "drop")


@pytest.mark.netns
def test_rogue_holds_the_vip_and_forges_gratuitous_arp(time_scale: float) -> None:
    with Lab(rogue=True) as lab:
        lab.start_echo("rogue")
        lab.rogue_hold()
        assert _reaches(lab, "client", VIP, 5 * time_scale)
        assert lab.neigh("client", VIP) == lab.mac("rogue")
        forged = "02:66:66:66:66:66"
        lab.rogue_garp(mac=forged, count=2, gap=0.01)
        _neigh_learned(lab, "client", VIP, forged, time_scale)
        lab.rogue_release()
        lab.flush_neigh("client")
        assert not _reaches(lab, "client", VIP, 0.3)


@pytest.mark.netns
def test_two_owners_are_seen_by_the_clients_detector(
    lab: Lab, tmp_path: Path, time_scale: float
) -> None:
    """Issue 9 part 2: the VIP on both nodes on purpose, and the detector counts it."""
    lab.start_echo("n1")
    lab.start_echo("n2")
    lab.add_address("n1")
    single = _probe_passive(lab, tmp_path / "single.jsonl", 0.5, time_scale)
    assert double_answers(single) == 0  # control: one owner, no double answers
    lab.add_address("n2")
    both = _probe_passive(lab, tmp_path / "both.jsonl", 0.5, time_scale)
    assert double_answers(both) >= len(both) // 2, both
    assert double_answer_ms(both) > 0
    assert {m for s in both for m in s.arp_macs} == {lab.mac("n1"), lab.mac("n2")}


def _probe_passive(lab: Lab, out: Path, duration: float, time_scale: float) -> list[Sample]:
    client = lab.start_client(out, duration=duration, arp_mode=ArpMode.PASSIVE)
    assert client.wait(timeout=duration + 10 * time_scale) == 0
    return load_samples(out)


@pytest.mark.netns
def test_remove_and_restore_the_vip_link(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n1")
    old_mac = lab.mac("n1")
    lab.remove_vip_link("n1")
    gone = subprocess.run(
        ["ip", "-n", lab.ns_name("n1"), "link", "show", "dev", "eth0"],
        capture_output=True,
        check=False,
    )
    assert gone.returncode != 0  # the interface is missing
    assert lab.mac("n1") == old_mac  # still known: clients may point at it
    assert not _reaches(lab, "client", Lab.address("n1"), 0.3)
    lab.restore_vip_link("n1")
    assert lab.carrier("n1")
    assert lab.default_route("n1") == GATEWAY
    assert lab.mac("n1") != old_mac  # a new interface, a new MAC
    assert _reaches(lab, "client", Lab.address("n1"), 5 * time_scale)


# ----------------------------------------------------------------------------- IPv6

ANSWER_VIP6 = IPv6Address(VIP6)
ASKER_IP6 = IPv6Address("2001:2:0:1::10")


def _na_answer(frame: bytes) -> str | None:
    return parse_nd_answer(frame, vip=ANSWER_VIP6, asker_ip=ASKER_IP6, asker_mac=ASKER_MAC)


def _solicited_na(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "mac": mac_bytes(MAC1),
        "src": ANSWER_VIP6,
        "target": ANSWER_VIP6,
        "flags": NA_SOLICITED | NA_OVERRIDE,
        "dst": ASKER_IP6,
        "dst_mac": ASKER_MAC,
    }
    fields.update(changes)
    return build_na(**fields)  # type: ignore[arg-type]


def test_parse_nd_answer_accepts_a_solicited_na_to_us() -> None:
    assert _na_answer(_solicited_na()) == MAC1
    assert _na_answer(_solicited_na(tlla=mac_bytes(MAC2))) == MAC2  # the option names the MAC


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_solicited_na()[:80], id="truncated"),
        pytest.param(_solicited_na(target=IPv6Address("2001:2:0:1::1")), id="not-the-vip"),
        pytest.param(_solicited_na(dst=IPv6Address("2001:2:0:1::2")), id="to-another-ip"),
        pytest.param(_solicited_na(dst_mac=mac_bytes(MAC2)), id="to-another-mac"),
        pytest.param(_solicited_na(flags=NA_OVERRIDE), id="not-solicited"),
        pytest.param(announce_frame(mac_bytes(MAC2), ANSWER_VIP6, None), id="announcement"),
        pytest.param(
            build_ns(mac=mac_bytes(MAC1), src=ANSWER_VIP6, target=ASKER_IP6), id="ns-from-the-vip"
        ),
    ],
)
def test_parse_nd_answer_rejects_everything_else(frame: bytes) -> None:
    assert _na_answer(frame) is None


def test_iface_ipv6_reads_the_first_global_address(tmp_path: Path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "fe800000000000000000000000000001 02 40 20 80     eth0\n"  # link-local: scope 20
        "20010002000000010000000000000010 02 40 00 80     eth0\n"
        "20010002000000010000000000000011 03 40 00 80     eth1\n"
    )
    assert iface_ipv6("eth0", table) == IPv6Address("2001:2:0:1::10")
    with pytest.raises(OSError, match="interface eth9: no global IPv6 address"):
        iface_ipv6("eth9", table)


@pytest.mark.netns
def test_lab_has_ipv6_and_its_gateway_is_the_default_witness(lab: Lab, time_scale: float) -> None:
    ok = 5 * time_scale
    for node in ("n1", "n2"):
        assert lab.default_route(node, 6) == GATEWAY6
        # The gateway answers ND: a datagram to it resolves its MAC (the client's).
        _reaches(lab, node, GATEWAY6, 0.3)
        assert lab.neigh(node, GATEWAY6) == lab.mac("client")
    lab.start_echo("n1")
    assert _reaches(lab, "client", Lab.address6("n1"), ok)
    lab.link_down("n1")
    assert lab.default_route("n1", 6) is None
    lab.link_up("n1")
    assert lab.default_route("n1", 6) == GATEWAY6
    assert _reaches(lab, "client", Lab.address6("n1"), ok)  # its address survived the bounce


@pytest.mark.netns
def test_client_probes_an_ipv6_vip_and_sees_two_owners(
    lab: Lab, tmp_path: Path, time_scale: float
) -> None:
    lab.start_echo("n1")
    lab.start_echo("n2")
    lab.add_address("n1", VIP6_CIDR)

    def probe(name: str, mode: ArpMode) -> list[Sample]:
        out = tmp_path / f"{name}.jsonl"
        client = lab.start_client(out, duration=0.5, vip=VIP6, arp_mode=mode)
        assert client.wait(timeout=0.5 + 10 * time_scale) == 0
        return load_samples(out)

    single = probe("single", ArpMode.SELF)
    assert len(single) >= 20
    assert all(s.answer == "n1" for s in single[5:])
    assert sum(s.arp_macs == (lab.mac("n1"),) for s in single) >= len(single) // 2
    assert double_answers(single) == 0
    assert lab.neigh("client", VIP6) == lab.mac("n1")
    lab.add_address("n2", VIP6_CIDR)
    both = probe("both", ArpMode.PASSIVE)
    assert double_answers(both) >= len(both) // 2, both
    assert {m for s in both for m in s.arp_macs} == {lab.mac("n1"), lab.mac("n2")}


@pytest.mark.netns
def test_cut_heartbeat_lets_neighbour_discovery_pass(lab: Lab, time_scale: float) -> None:
    lab.start_echo("n2")
    n2 = Lab.address6("n2")
    lab.cut_heartbeat()
    lab.flush_neigh("n1")
    assert not _reaches(lab, "n1", n2, 0.3)
    # ND (ICMPv6) still passes, as ARP does: n1's failed send resolved n2's address.
    assert lab.neigh("n1", n2) == lab.mac("n2")
    lab.heal_heartbeat()
    assert _reaches(lab, "n1", n2, 5 * time_scale)
