"""Operating the pair (issue 6), two real daemons over mutual TLS on loopback, dry-run LAN:
reload and certificate rotation, handover, maintenance, health checks, notify and fence hooks.

The nodes read real config files (reload re-reads them); the commands go through the real
control socket, as `havip handover` / `maintenance` / `reload` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from test_loopback import SCALE, TIMING, VIP, Certs, Node, _free_port, _havip_certs, run, until

from havip import cli
from havip.config import Config, format_duration, load_config
from havip.core.states import State
from havip.shell.control import CommandRefused, query

PY = sys.executable


def config_text(
    node: str, certs: Certs, tmp: Path, port: int, *, preempt: bool, sections: str = ""
) -> str:
    peer = "n2" if node == "n1" else "n1"
    tls = certs.tls(node)
    t = TIMING
    timing = {
        "keepalive_interval": t.keepalive_interval,
        "dead_time": t.dead_time,
        "probe_window": t.probe_window,
        "handshake_timeout": t.handshake_timeout,
        "reconnect_max": t.reconnect_max,
        "preempt_delay": t.preempt_delay,
    }
    return "\n".join(
        [
            f'node = "{node}"',
            'primary = "n1"',
            f"preempt = {str(preempt).lower()}",
            f'listen = "127.0.0.1:{port}"',
            f'state_dir = "{tmp / ("state-" + node)}"',
            f'control_socket = "{tmp / "run" / (node + ".sock")}"',
            "[peer]",
            f'name = "{peer}"',
            f'address = "127.0.0.1:{port}"',
            "[tls]",
            f'ca = "{tls.ca}"',
            f'cert = "{tls.cert}"',
            f'key = "{tls.key}"',
            "[timing]",
            f"probe_count = {t.probe_count}",
            *(f'{k} = "{format_duration(v)}"' for k, v in timing.items()),
            "[[vip]]",
            f'address = "{VIP}"',
            f'interface = "{VIP.interface}"',
            "[backend]",
            'type = "dry-run"',
            f'lan_dir = "{tmp / "lan"}"',
            "[metrics]",
            'listen = "off"',
            sections,
            "",
        ]
    )


class Pair:
    """Two daemons started from config files in `tmp`."""

    def __init__(
        self, certs: Certs, tmp: Path, *, preempt: bool, sections: Callable[[str], str]
    ) -> None:
        self.certs, self.tmp, self.preempt, self.sections = certs, tmp, preempt, sections
        self.port = _free_port()
        self.nodes: dict[str, Node] = {}

    def write(self, node: str, sections: str | None = None) -> Path:
        path = self.tmp / f"{node}.toml"
        text = config_text(
            node,
            self.certs,
            self.tmp,
            self.port,
            preempt=self.preempt,
            sections=self.sections(node) if sections is None else sections,
        )
        path.write_text(text)
        return path

    def config(self, node: str) -> Config:
        return load_config(self.write(node))

    async def start(self, node: str) -> Node:
        n = await Node(self.config(node)).start()
        self.nodes[node] = n
        return n

    def sock(self, node: str) -> Path:
        return self.tmp / "run" / f"{node}.sock"

    async def command(self, node: str, cmd: str, **args: object) -> dict[str, object]:
        return await asyncio.to_thread(query, self.sock(node), cmd, 10.0 * SCALE, args)

    async def crash_all(self) -> None:
        for n in self.nodes.values():
            if n.task is not None and not n.task.done():
                await n.crash()


@asynccontextmanager
async def pair(
    certs: Certs,
    tmp: Path,
    *,
    preempt: bool = False,
    sections: Callable[[str], str] = lambda _node: "",
    settle: bool = True,
) -> AsyncIterator[Pair]:
    p = Pair(certs, tmp, preempt=preempt, sections=sections)
    try:
        n1 = await p.start("n1")
        n2 = await p.start("n2")
        if settle:
            await until(lambda: n1.holds() and n2.state is State.STANDBY, "settled")
            await until(lambda: n2.d.link.up and n1.d.link.up, "linked")
        yield p
    finally:
        await p.crash_all()


def lan_holders(tmp: Path) -> set[str]:
    folder = tmp / "lan" / str(VIP.ip)
    return {f.name for f in folder.iterdir()} if folder.exists() else set()


class Watch:
    """Samples who holds the VIP every few milliseconds while a test acts (bounded)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.samples: list[set[str]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        for _ in range(100_000):
            self.samples.append(lan_holders(self.tmp))
            await asyncio.sleep(0.002)

    @property
    def both(self) -> int:
        return sum(1 for s in self.samples if len(s) > 1)

    @property
    def moves(self) -> int:
        owners = [frozenset(s) for s in self.samples if s]
        return sum(1 for a, b in itertools.pairwise(owners) if a != b)


def peer_cert(node: Node) -> bytes:
    link = node.d.link.current
    assert link is not None and link.conn.transport is not None
    tls = link.conn.transport.get_extra_info("ssl_object")
    assert tls is not None
    der: bytes = tls.getpeercert(binary_form=True)
    return der


def cert_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


# ---- reload ----------------------------------------------------------------------------------


def test_rotating_both_certificates_and_reloading_never_moves_the_vip(tmp_path: Path) -> None:
    """The issue's test: `havip pki issue --force` for both nodes, then reload each. The VIP
    never moves, the link never drops, and it comes back on the new certificates."""
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            old = {n: cert_der(certs.tls(n).cert) for n in ("n1", "n2")}
            assert peer_cert(n2) == old["n1"] and peer_cert(n1) == old["n2"]
            async with Watch(tmp_path) as watch:
                for node in ("n1", "n2"):
                    argv = ["pki", "issue", f"{node}=127.0.0.1", "--dir", str(tmp_path / "pki")]
                    assert await asyncio.to_thread(cli.main, [*argv, "--force"]) == 0
                new = {n: cert_der(certs.tls(n).cert) for n in ("n1", "n2")}
                assert new["n1"] != old["n1"] and new["n2"] != old["n2"]
                for node in ("n1", "n2"):
                    reply = await p.command(node, "reload")
                    assert "certificates" in str(reply["message"])
                await until(
                    lambda: peer_cert(n2) == new["n1"] and peer_cert(n1) == new["n2"],
                    "the link runs on the new certificates",
                )
                await asyncio.sleep(0.3 * SCALE)  # and stays so: the old link is gone
            assert watch.samples and all(s == {"n1"} for s in watch.samples), watch.samples[-3:]
            assert n1.state is State.ACTIVE and n2.state is State.STANDBY
            for n in (n1, n2):
                assert n.sample("havip_config_reloads_total", {"result": "ok"}) == 1
                # The old link was replaced, never lost: no failure signal at all.
                assert n.sample("havip_keepalives_missed_total") == 0
            assert n2.d.failover.reason is not None and n2.state is State.STANDBY
            assert n2.d.link.up and n1.d.link.up

    run(body())


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        pytest.param(lambda t: t + "\n[[[broken", "n1.toml", id="syntax"),
        pytest.param(
            lambda t: t.replace('address = "198.18.0.100/24"', 'address = "198.18.0.101/24"'),
            "vips changed: restart havip to apply",
            id="vip-changed",
        ),
        pytest.param(
            lambda t: t + '\n[[check]]\nname = "web"\ncommand = "curl http://x"\n',
            "check[0].command: must be an argument list",
            id="bad-check",
        ),
        pytest.param(
            lambda t: t.replace("/n1.crt", "/missing.crt"),
            "tls.cert: cannot read",
            id="missing-cert",
        ),
    ],
)
def test_an_invalid_new_config_is_refused_in_one_line_and_the_old_one_stays(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    edit: Callable[[str], str],
    words: str,
) -> None:
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1 = p.nodes["n1"]
            path = tmp_path / "n1.toml"
            path.write_text(edit(path.read_text()))
            caplog.clear()
            with pytest.raises(CommandRefused) as refused:
                await p.command("n1", "reload")
            assert words in str(refused.value)
            lines = [r.getMessage() for r in caplog.records if "reload_refused" in r.getMessage()]
            assert len(lines) == 1 and words in lines[0] and "the running config stays" in lines[0]
            assert n1.sample("havip_config_reloads_total", {"result": "refused"}) == 1
            assert n1.state is State.ACTIVE and n1.holds() and n1.d.link.up
            assert n1.d.cfg.vips == (VIP,) and n1.d.cfg.checks == ()

    with caplog.at_level(logging.INFO, logger="havip"):
        run(body())


def test_reload_adds_a_health_check_that_then_takes_effect(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")
    flag = tmp_path / "service-up"
    flag.touch()

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            p.write("n1", check_section(flag))
            async with Watch(tmp_path) as watch:
                reply = await p.command("n1", "reload")
                assert "checks" in str(reply["message"])
                await until(lambda: n1.d.checks.passing() is True, "the new check ran and passes")
                await asyncio.sleep(0.3 * SCALE)
            # A check the reload added counts as passing until its first result: no move.
            assert watch.moves == 0 and all(s == {"n1"} for s in watch.samples)
            flag.unlink()
            await until(lambda: n2.state is State.ACTIVE, "n1's failing check hands over")
            assert not n1.holds() and n2.holds()

    run(body())


# ---- handover --------------------------------------------------------------------------------


def test_handover_moves_the_vip_with_no_moment_of_two_owners(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            async with Watch(tmp_path) as watch:
                reply = await p.command("n1", "handover")
                await asyncio.sleep(0.5 * SCALE)  # and it stays there (no bounce back)
            assert reply["peer_owns"] is True and "n2" in str(reply["message"])
            assert n2.state is State.ACTIVE and n1.state is State.STANDBY
            assert n1.d.failover.reason == "handover" and n2.d.failover.reason == "peer_resigned"
            assert watch.both == 0 and watch.moves == 1
            assert (
                n1.sample("havip_operator_commands_total", {"command": "handover", "result": "ok"})
                == 1
            )
            # The new owner may hand it back the same way.
            reply = await p.command("n2", "handover")
            await until(lambda: n1.state is State.ACTIVE, "handed back")

    run(body())


@pytest.mark.parametrize(
    ("preempt", "node", "words"),
    [
        pytest.param(False, "n2", "does not hold the VIP", id="standby"),
        pytest.param(True, "n1", "preempt is on", id="primary-with-preempt"),
    ],
)
def test_a_handover_that_cannot_work_is_refused_with_the_reason(
    tmp_path: Path, preempt: bool, node: str, words: str
) -> None:
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path, preempt=preempt) as p:
            with pytest.raises(CommandRefused) as refused:
                await p.command(node, "handover")
            assert words in str(refused.value)
            n1 = p.nodes["n1"]
            assert n1.state is State.ACTIVE and n1.holds()
            count = n1.sample if node == "n1" else p.nodes[node].sample
            labels = {"command": "handover", "result": "refused"}
            assert count("havip_operator_commands_total", labels) == 1

    run(body())


# ---- maintenance -----------------------------------------------------------------------------


def test_maintenance_drains_the_owner_survives_a_restart_and_ends_with_off(
    tmp_path: Path,
) -> None:
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path, preempt=True) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            reply = await p.command("n1", "maintenance", on=True)
            assert "n2 holds the VIP" in str(reply["message"])
            assert n2.state is State.ACTIVE and not n1.holds()
            st = n1.d.status()
            assert st["maintenance"] is True and st["ineligible_cause"] == "maintenance"
            assert n2.d.status()["peer_ineligible_cause"] == "maintenance"
            assert n1.sample("havip_maintenance") == 1
            # A restart keeps it drained: with preempt on, the primary still does not take back.
            await n1.crash()
            n1 = await p.start("n1")
            await until(lambda: n1.d.link.up and n1.state is State.STANDBY, "restarted n1")
            assert n1.d.status()["maintenance"] is True
            await asyncio.sleep(3 * TIMING.preempt_delay * SCALE)
            assert n2.state is State.ACTIVE and not n1.holds()
            reply = await p.command("n1", "maintenance", on=False)
            assert "may hold the VIP again" in str(reply["message"])
            await until(lambda: n1.state is State.ACTIVE, "preempted back after maintenance off")
            assert n1.sample("havip_maintenance") == 0

    run(body())


def test_maintenance_on_both_nodes_leaves_the_vip_where_it_is(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1 = p.nodes["n1"]
            await p.command("n2", "maintenance", on=True)
            await until(
                lambda: n1.d.failover.peer is not None and not n1.d.failover.peer.eligible,
                "n1 knows",
            )
            reply = await p.command("n1", "maintenance", on=True)
            assert "still holds the VIP" in str(reply["message"])
            assert n1.state is State.ACTIVE and n1.holds()
            waiting = n1.d.status()["waiting"]
            assert isinstance(waiting, str) and "no eligible peer" in waiting

    run(body())


# ---- health checks ---------------------------------------------------------------------------


def check_section(flag: Path, *, rise: int = 2, fall: int = 2) -> str:
    script = f"import os,sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"
    argv = json.dumps([PY, "-c", script])
    return (
        f'\n[[check]]\nname = "service"\ncommand = {argv}\ninterval = "100ms"\n'
        f'timeout = "100ms"\nrise = {rise}\nfall = {fall}\n'
    )


def test_a_failing_check_hands_over_and_recovery_brings_it_back_with_preempt(
    tmp_path: Path,
) -> None:
    certs = _havip_certs(tmp_path / "pki")
    flags = {n: tmp_path / f"{n}-up" for n in ("n1", "n2")}
    for flag in flags.values():
        flag.touch()

    async def body() -> None:
        async with pair(
            certs, tmp_path, preempt=True, sections=lambda n: check_section(flags[n])
        ) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            await until(lambda: n1.d.checks.passing() is True, "n1's check passes")
            flags["n1"].unlink()
            await until(lambda: n2.state is State.ACTIVE, "handed over")
            assert n1.d.failover.reason == "ineligible"
            st = n1.d.status()
            assert st["ineligible_cause"] == "check_failed"
            checks = st["checks"]
            assert isinstance(checks, list) and checks[0]["state"] == "down"
            await until(
                lambda: n2.d.status()["peer_ineligible_cause"] == "check_failed",
                "the keepalives tell n2 why",
            )
            labels = {"check": "service"}
            assert n1.sample("havip_check_passing", labels) == 0
            assert n1.sample("havip_check_consecutive_failures", labels) >= 2
            flags["n1"].touch()
            await until(lambda: n1.state is State.ACTIVE, "preempted back once it rose")
            assert n1.sample("havip_check_passing", labels) == 1

    run(body())


def test_checks_failing_on_both_nodes_leave_the_vip_where_it_is(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")
    flags = {n: tmp_path / f"{n}-up" for n in ("n1", "n2")}
    for flag in flags.values():
        flag.touch()

    async def body() -> None:
        async with pair(certs, tmp_path, sections=lambda n: check_section(flags[n])) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            flags["n2"].unlink()
            await until(
                lambda: n1.d.failover.peer is not None and not n1.d.failover.peer.eligible,
                "n2 down",
            )
            flags["n1"].unlink()
            await until(lambda: n1.d.status()["eligible"] is False, "n1 down too")
            await asyncio.sleep(0.5 * SCALE)
            assert n1.state is State.ACTIVE and n1.holds() and not n2.holds()
            waiting = str(n1.d.status()["waiting"])
            assert "check_failed: service" in waiting and "no eligible peer" in waiting

    run(body())


def test_a_single_failure_below_fall_moves_nothing(tmp_path: Path) -> None:
    """Hysteresis: a check that fails less than `fall` times in a row changes nothing."""
    certs = _havip_certs(tmp_path / "pki")
    flag = tmp_path / "n1-up"
    flag.touch()
    other = tmp_path / "n2-up"
    other.touch()

    async def body() -> None:
        sections = {"n1": check_section(flag, fall=5), "n2": check_section(other)}
        async with pair(certs, tmp_path, sections=lambda n: sections[n]) as p:
            n1 = p.nodes["n1"]
            await until(lambda: n1.d.checks.passing() is True, "passing")
            async with Watch(tmp_path) as watch:
                for _ in range(3):  # down for about two runs, then back
                    flag.unlink()
                    await until(
                        lambda: (
                            n1.sample("havip_check_consecutive_failures", {"check": "service"}) >= 2
                        ),
                        "two failures",
                    )
                    flag.touch()
                    await until(
                        lambda: (
                            n1.sample("havip_check_consecutive_failures", {"check": "service"}) == 0
                        ),
                        "recovered",
                    )
            assert watch.moves == 0 and n1.state is State.ACTIVE
            assert n1.d.status()["eligible"] is True

    run(body())


# ---- hooks -----------------------------------------------------------------------------------

RECORDER = """
import json, os, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("HAVIP_")}) + "\\n")
"""


def hooks_section(log: Path, *, fence: list[str] | None = None, required: bool = False) -> str:
    text = f"\n[hooks]\nnotify = {json.dumps([PY, '-c', RECORDER, str(log)])}\n"
    if fence is not None:
        text += f"fence = {json.dumps(fence)}\nfence_required = {str(required).lower()}\n"
    return text


def recorded(log: Path) -> list[dict[str, str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_notify_hooks_get_the_environment_of_every_transition_of_a_failover(
    tmp_path: Path,
) -> None:
    certs = _havip_certs(tmp_path / "pki")
    logs = {n: tmp_path / f"{n}-hooks.jsonl" for n in ("n1", "n2")}

    async def body() -> None:
        async with pair(certs, tmp_path, sections=lambda n: hooks_section(logs[n])) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            await until(lambda: len(recorded(logs["n1"])) == 2, "n1: init>probing>active")
            await until(lambda: len(recorded(logs["n2"])) == 1, "n2: init>standby")
            # Power-off of n1: its host goes silent, n2 takes over.
            await n1.crash()
            assert n1.cfg.lan_dir is not None
            (n1.cfg.lan_dir / str(VIP.ip) / "n1").unlink()
            await until(lambda: n2.state is State.ACTIVE, "n2 took over")
            await until(lambda: len(recorded(logs["n2"])) == 3, "n2's hooks ran")

    run(body())
    seen = [
        (e["HAVIP_OLD_STATE"], e["HAVIP_STATE"], e["HAVIP_REASON"]) for e in recorded(logs["n2"])
    ]
    # n2 met n1 before or after n1 took the VIP: either way it stood by.
    assert seen[0] in (("init", "standby", "peer_owns"), ("init", "standby", "peer_candidate"))
    assert seen[1:] == [
        ("standby", "probing", "peer_lost"),
        ("probing", "active", "probe_silent"),
    ]
    last = recorded(logs["n2"])[-1]
    assert last["HAVIP_HOOK"] == "notify" and last["HAVIP_NODE"] == "n2"
    assert last["HAVIP_PEER"] == "n1" and last["HAVIP_VIPS"] == str(VIP)
    assert int(last["HAVIP_EPOCH"]) == 2 and last["HAVIP_SENTENCE"]
    first = recorded(logs["n1"])
    assert [(e["HAVIP_STATE"], e["HAVIP_EPOCH"]) for e in first] == [
        ("probing", "0"),
        ("active", "1"),
    ]


def test_notify_hooks_run_after_the_vip_is_added_and_a_failing_one_changes_nothing(
    tmp_path: Path,
) -> None:
    certs = _havip_certs(tmp_path / "pki")
    out = tmp_path / "seen.txt"
    lan = tmp_path / "lan" / str(VIP.ip)
    script = (
        "import os, sys; open(sys.argv[1], 'a').write("
        f"os.environ['HAVIP_STATE'] + ' ' + str(os.path.exists({str(lan / 'n1')!r})) + '\\n');"
        " sys.exit(3)"
    )

    def sections(node: str) -> str:
        if node != "n1":
            return ""
        return f"\n[hooks]\nnotify_active = {json.dumps([PY, '-c', script, str(out)])}\n"

    async def body() -> None:
        async with pair(certs, tmp_path, sections=sections) as p:
            n1 = p.nodes["n1"]
            await until(lambda: out.exists() and out.read_text().strip() != "", "hook ran")
            await until(
                lambda: (
                    n1.sample(
                        "havip_hook_runs_total", {"hook": "notify_active", "outcome": "failed"}
                    )
                    == 1
                ),
                "counted",
            )
            assert n1.state is State.ACTIVE and n1.holds()

    run(body())
    assert out.read_text() == "active True\n"  # it saw the VIP already in place


def test_a_required_fence_gates_the_takeover_and_a_handover_never_fences(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")
    fence_log = tmp_path / "fence.txt"
    fence_ok = tmp_path / "fence-ok"
    lan = tmp_path / "lan" / str(VIP.ip)
    fence = [
        PY,
        "-c",
        "import os, sys; open(sys.argv[1], 'a').write(os.environ['HAVIP_HOOK'] + ' '"
        " + str(os.path.exists(sys.argv[3])) + '\\n');"
        " sys.exit(0 if os.path.exists(sys.argv[2]) else 1)",
        str(fence_log),
        str(fence_ok),
        str(lan / "n2"),
    ]

    def sections(node: str) -> str:
        return hooks_section(tmp_path / f"{node}-hooks.jsonl", fence=fence, required=True)

    async def body() -> None:
        async with pair(certs, tmp_path, sections=sections) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            # A planned handover (SIGTERM of the owner) takes no fence.
            await n1.stop()
            await until(lambda: n2.state is State.ACTIVE, "n2 took the handover")
            assert not fence_log.exists()
            n1 = await p.start("n1")
            await until(lambda: n1.d.link.up and n1.state is State.STANDBY, "n1 back")
            await p.command("n2", "handover")  # nor does an operator's handover
            await until(lambda: n1.state is State.ACTIVE, "n1 holds the VIP again")
            assert not fence_log.exists()
            # n1's host dies; n2's fence fails: no takeover, and status says why.
            await n1.crash()
            (lan / "n1").unlink()
            await until(lambda: fence_log.exists(), "fenced once")
            await asyncio.sleep(0.3 * SCALE)
            assert n2.state is State.PROBING and not n2.holds()
            assert "fence" in str(n2.d.status()["waiting"])
            assert n2.sample("havip_hook_runs_total", {"hook": "fence", "outcome": "failed"}) >= 1
            # The fence works again (the failed one is retried after the backoff): n2 takes over.
            fence_ok.touch()
            await until(lambda: n2.state is State.ACTIVE, "takeover after a good fence", timeout=15)

    run(body())
    runs = fence_log.read_text().splitlines()
    # Every fence ran before n2 held the VIP.
    assert runs and all(line == "fence False" for line in runs)


def test_a_planned_stop_runs_notify_stopped_before_the_daemon_exits(tmp_path: Path) -> None:
    certs = _havip_certs(tmp_path / "pki")
    logs = {n: tmp_path / f"{n}-hooks.jsonl" for n in ("n1", "n2")}

    async def body() -> None:
        async with pair(certs, tmp_path, sections=lambda n: hooks_section(logs[n])) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            await until(lambda: len(recorded(logs["n1"])) == 2, "n1's start-up hooks ran")
            assert await n1.stop() == 0  # SIGTERM: hand over, run the hooks, exit
            # Its last hook ran before the daemon returned, not after.
            last = recorded(logs["n1"])[-1]
            assert (last["HAVIP_OLD_STATE"], last["HAVIP_STATE"]) == ("active", "stopped")
            assert last["HAVIP_REASON"] == "shutdown"
            await until(lambda: n2.state is State.ACTIVE, "n2 took the handover")
            await until(
                lambda: recorded(logs["n2"])[-1]["HAVIP_STATE"] == "active", "n2's hook ran"
            )
            assert recorded(logs["n2"])[-1]["HAVIP_REASON"] == "peer_resigned"

    run(body())


# ---- systemd's notify protocol (issue 7) -----------------------------------------------------


def test_systemd_hears_ready_status_watchdog_reload_and_stopping(tmp_path: Path) -> None:
    """Type=notify: READY once started, STATUS naming the state and the owner whenever it
    changes, WATCHDOG pings from the event loop, RELOADING around a reload, STOPPING on
    SIGTERM. A real datagram socket stands in for systemd."""
    import socket
    import tempfile

    from havip.backends.dryrun import DryRunBackend
    from havip.shell.daemon import Daemon
    from havip.shell.sdnotify import Notifier

    certs = _havip_certs(tmp_path / "pki")
    folder = Path(tempfile.mkdtemp(prefix="hvn", dir="/tmp"))  # a short socket path
    path = folder / "notify"
    heard: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.setblocking(False)

        def drain() -> list[str]:
            while True:
                try:
                    heard.append(systemd.recv(4096).decode())
                except BlockingIOError:
                    return heard

        async def body() -> None:
            p = Pair(certs, tmp_path, preempt=False, sections=lambda _n: "")
            cfg = p.config("n1")
            env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(int(0.2e6))}
            n1 = Node(cfg)
            n1.daemon = Daemon(cfg, DryRunBackend("n1", cfg.lan_dir), notifier=Notifier(env))
            n1.task = asyncio.ensure_future(n1.daemon.run())
            p.nodes["n1"] = n1
            try:
                await until(lambda: any("READY=1" in m for m in drain()), "READY")
                await until(
                    lambda: any("STATUS=active" in m and "owner n1" in m for m in drain()),
                    "STATUS says n1 owns the VIP",
                )
                await until(lambda: sum("WATCHDOG=1" in m for m in drain()) >= 3, "watchdog pings")
                with contextlib.suppress(CommandRefused):
                    await p.command("n1", "reload")
                await until(lambda: any("RELOADING=1" in m for m in drain()), "RELOADING")
                assert await n1.stop() == 0
                assert any("STOPPING=1" in m for m in drain())
            finally:
                await p.crash_all()

        run(body())
    reloading = next(i for i, m in enumerate(heard) if "RELOADING=1" in m)
    assert any("READY=1" in m for m in heard[reloading + 1 :]), "READY=1 after the reload"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_start_and_a_handover_log_info_and_a_failover_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 8: `journalctl -p warning` shows failovers, not routine starts or handovers."""
    certs = _havip_certs(tmp_path / "pki")

    def levels(to: str, reason: str) -> list[int]:
        return [
            r.levelno
            for r in caplog.records
            if "event=transition" in r.getMessage()
            and f"to={to} " in r.getMessage()
            and f"reason={reason} " in r.getMessage()
        ]

    async def body() -> None:
        async with pair(certs, tmp_path) as p:
            n1, n2 = p.nodes["n1"], p.nodes["n2"]
            await p.command("n1", "handover")
            await until(lambda: n2.state is State.ACTIVE, "handed over")
            await p.command("n2", "handover")
            await until(lambda: n1.state is State.ACTIVE, "handed back")
            await n1.crash()
            assert n1.cfg.lan_dir is not None
            (n1.cfg.lan_dir / str(VIP.ip) / "n1").unlink()
            await until(lambda: n2.state is State.ACTIVE, "failover")
            await until(lambda: n2.sample("havip_takeover_duration_seconds_count") == 1, "timed")

    with caplog.at_level(logging.INFO, logger="havip"):
        run(body())
    assert levels("active", "probe_silent")[0] == logging.INFO  # n1's cold start
    assert set(levels("active", "peer_resigned")) == {logging.INFO}
    assert set(levels("standby", "handover")) == {logging.INFO}
    assert levels("active", "probe_silent")[-1] == logging.WARNING  # n2's failover
