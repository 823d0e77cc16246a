"""The failover benchmark: what a client sees in each end-to-end scenario, and what idling costs.

    python -m bench.failover [--runs N] [--soak SECONDS] [--idle SECONDS] [--only NAME,...]
                             [--json FILE] [--keep-logs DIR] [--verbose]

Every run gets a fresh namespace lab and two real `havip run` daemons (`havip.lab.scenario`), so
runs never share state. It prints numbers next to the issue's targets with a verdict. Exit code:
0 when every printed target is met, 3 when some target is missed (a benchmark is not a test, but
its verdicts are not decoration), 1 if a run could not complete (the numbers would be
incomplete) or the lab cannot be built, 2 for usage errors.

Scenarios: power-off, power-off-noguard, power-off-fast, sigterm, failback, sigkill, sigstop,
cut-heartbeat, and issue 5's faults: isolated-drop, isolated-carrier, vip-link-admin,
vip-link-carrier, heartbeat-blip, one-way-n2-n1, one-way-n1-n2, partition-heal, frozen-owner,
restart-secondary, third-host, no-interface, blips-250, blips-500, flood (each N runs; outage =
the longest run of unanswered client rounds, 10 ms resolution; two owners = client rounds
answered by two MACs or both daemons logging ownership, whichever is longer; moves = changes of
the node answering the client), idle (CPU and RSS of each settled daemon over a window), soak (2
% random loss between all LAN ports for a while: takeovers, failure signals, vetoed takeovers,
missed keepalives, client outage, the owner at the end). The default run fits in about 15
minutes. Logs of any run that failed, took over when it must not, or saw two owners are copied
to --keep-logs (default: a fresh temporary directory, printed)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from havip.config import PROFILES
from havip.lab.client import double_answers, load_samples, outages
from havip.lab.netns import Lab, LabError
from havip.lab.scenario import (
    NODES,
    Cluster,
    Result,
    ScenarioError,
    blips,
    cut_heartbeat,
    cut_heartbeat_and_blip,
    failback,
    frozen_after_acquiring,
    handshake_flood,
    isolated_standby,
    one_way_loss,
    operator_handover,
    partition_heal,
    power_off,
    primary_loses_interface,
    reboot_n1_after_power_off,
    restart_active_secondary,
    running_cluster,
    sigkill,
    sigstop,
    sigterm_handover,
    third_host,
    vip_link_loss,
)

ISSUE5_SCENARIOS = (
    "isolated-drop",
    "isolated-carrier",
    "vip-link-admin",
    "vip-link-carrier",
    "heartbeat-blip",
    "one-way-n2-n1",
    "one-way-n1-n2",
    "partition-heal",
    "frozen-owner",
    "restart-secondary",
    "third-host",
    "no-interface",
    "blips-250",
    "blips-500",
    "flood",
)
SCENARIOS = (
    "power-off",
    "power-off-noguard",
    "power-off-fast",
    "sigterm",
    "handover",
    "failback",
    "sigkill",
    "sigstop",
    "cut-heartbeat",
    *ISSUE5_SCENARIOS,
    "idle",
    "soak",
)
DEFAULT_RUNS = {
    "power-off": 5,
    "power-off-noguard": 5,
    "power-off-fast": 5,
    **dict.fromkeys(ISSUE5_SCENARIOS, 1),
}
DEFAULT_OTHER_RUNS = 3
DEFAULT_SOAK_S = 300.0
SOAK_MAX_OUTAGE_MS = 500.0  # random 2 % loss loses single rounds, never a failover's worth
EXIT_MISSED = 3
DEFAULT_IDLE_S = 60.0
SOAK_LOSS_PERCENT = 2
# The client probe refuses durations over an hour; leave room for its start and the tail.
MAX_SOAK_S = 3300.0
MAX_IDLE_S = 3600.0
MAX_RUNS = 1000
# After settling, the new owner's second gratuitous-ARP burst and start-up work are still due.
IDLE_WARMUP_S = 3.0
RSS_SAMPLE_EVERY_S = 1.0
SOAK_PROGRESS_EVERY_S = 60.0

CPU_LIMIT_PERCENT = 0.5
RSS_LIMIT_MB = 50.0
MB = 1024 * 1024


class BenchError(RuntimeError):
    """The benchmark itself could not measure something (not a verdict on havip)."""


# ---- pure helpers (unit-tested without root) -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Median, minimum and maximum of some numbers."""

    n: int
    median: float
    low: float
    high: float


def summarize(values: Iterable[float]) -> Summary | None:
    """Median/min/max of values; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Summary(
        n=len(ordered), median=statistics.median(ordered), low=ordered[0], high=ordered[-1]
    )


def stat_ticks(text: str) -> int:
    """CPU clock ticks used by a process and its reaped children, from /proc/PID/stat text.

    utime + stime + cutime + cstime (fields 14-17). The command name (field 2) may contain
    spaces and parentheses, so fields are counted from its closing parenthesis.
    """
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or not head or len(fields) < 15:
        raise ValueError(f"not /proc/PID/stat text: {text[:60]!r}")
    # fields[0] is field 3 (state), so field k is fields[k - 3].
    return sum(int(f) for f in fields[11:15])


def cpu_percent(*, ticks: int, clk_tck: int, seconds: float) -> float:
    """CPU time `ticks` spent over `seconds` of wall time, as % of one core."""
    if seconds <= 0 or clk_tck <= 0:
        raise ValueError(
            f"cpu_percent needs seconds > 0 and clk_tck > 0 (got {seconds}, {clk_tck})"
        )
    return 100.0 * ticks / clk_tck / seconds


def vmrss_bytes(text: str) -> int:
    """Resident set size from /proc/PID/status text (the VmRSS line, in kB)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[1].isdigit():
                return int(parts[1]) * 1024
            raise ValueError(f"unexpected VmRSS line in /proc/PID/status: {line!r}")
    raise ValueError("no VmRSS line in /proc/PID/status (a kernel thread or a zombie?)")


def metric_total(text: str, sample: str) -> float:
    """Sum of every series named `sample` (e.g. 'havip_keepalives_missed_total') in text."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample
    )


def timeline_medians(
    timelines: Sequence[Sequence[tuple[float, str]]],
) -> list[tuple[str, float, int]]:
    """(label, median offset ms, runs that had it) per timeline label, in order of that median.

    Each timeline is a run's (offset ms from the fault, label) list; a label counts once per run
    (its first occurrence).
    """
    seen: dict[str, list[float]] = {}
    for timeline in timelines:
        firsts: dict[str, float] = {}
        for offset, label in timeline:
            firsts.setdefault(label, offset)
        for label, offset in firsts.items():
            seen.setdefault(label, []).append(offset)
    rows = [(label, statistics.median(v), len(v)) for label, v in seen.items()]
    return sorted(rows, key=lambda r: r[1])


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the result table; cells are already formatted."""

    scenario: str
    runs: str
    median: str = "-"
    low: str = "-"
    high: str = "-"
    double: str = "-"
    two_owners: str = "-"
    moves: str = "-"
    target: str
    meets: bool


HEADER = (
    "scenario",
    "runs",
    "median",
    "min",
    "max",
    "double",
    "2-owners",
    "moves",
    "target",
    "verdict",
)
_RIGHT = {1, 2, 3, 4, 5, 6, 7}


def verdict(meets: bool) -> str:
    """The verdict cell: printed, never asserted."""
    return "meets" if meets else "MISSES"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table with a header line."""
    cells = [HEADER] + [
        (
            r.scenario,
            r.runs,
            r.median,
            r.low,
            r.high,
            r.double,
            r.two_owners,
            r.moves,
            r.target,
            verdict(r.meets),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    out = []
    for line in cells:
        parts = [
            c.rjust(widths[i]) if i in _RIGHT else c.ljust(widths[i]) for i, c in enumerate(line)
        ]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def fmt_ms(value: float) -> str:
    return f"{value:.0f} ms"


@dataclass(frozen=True, kw_only=True)
class RunNumbers:
    """What one scenario run showed."""

    outage_ms: float
    double_answers: int
    rounds: int
    owner: str | None
    takeover: bool  # n2 became active after the fault
    timeline: list[tuple[float, str]]  # (ms from the fault, what)
    notes: list[str]
    two_owners_ms: float = 0.0
    moves: int = 0
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OutageTarget:
    """What an outage scenario should show: a median limit, nothing lost at all, and/or a
    per-run check returning why a run misses (None when it meets)."""

    text: str
    median_ms: float | None = None
    zero: bool = False
    check: Callable[[RunNumbers], str | None] | None = None


def outage_row(
    name: str, requested: int, runs: Sequence[RunNumbers], failed: int, target: OutageTarget
) -> Row:
    """The table row of an outage scenario, with its verdict."""
    summary = summarize(r.outage_ms for r in runs)
    double = sum(r.double_answers for r in runs)
    meets = failed == 0 and summary is not None
    if summary is not None and target.median_ms is not None:
        meets = meets and summary.median <= target.median_ms
    if target.zero:
        meets = meets and double == 0
        meets = meets and all(r.outage_ms == 0 and not r.takeover and r.moves == 0 for r in runs)
    if target.check is not None:
        meets = meets and all(target.check(r) is None for r in runs)
    done = f"{len(runs)}" if not failed else f"{len(runs)}/{requested} ({failed} failed)"
    return Row(
        scenario=name,
        runs=done,
        median=fmt_ms(summary.median) if summary else "-",
        low=fmt_ms(summary.low) if summary else "-",
        high=fmt_ms(summary.high) if summary else "-",
        double=str(double),
        two_owners=fmt_ms(max(r.two_owners_ms for r in runs)) if runs else "-",
        moves=str(max(r.moves for r in runs)) if runs else "-",
        target=target.text,
        meets=meets,
    )


def _within(key: str, limit: float, what: str) -> Callable[[RunNumbers], str | None]:
    def check(r: RunNumbers) -> str | None:
        value = r.measures.get(key)
        if value is None:
            return f"no {what} measured"
        return None if value <= limit else f"{what} {value:g} > {limit:g}"

    return check


def _all(*checks: Callable[[RunNumbers], str | None]) -> Callable[[RunNumbers], str | None]:
    def check(r: RunNumbers) -> str | None:
        return next((why for c in checks if (why := c(r)) is not None), None)

    return check


def _two_owners_at_most(ms: float) -> Callable[[RunNumbers], str | None]:
    return lambda r: None if r.two_owners_ms <= ms else f"two owners {r.two_owners_ms:.0f} ms"


def _moves_at_most(n: int) -> Callable[[RunNumbers], str | None]:
    return lambda r: None if r.moves <= n else f"{r.moves} moves"


def _owner_is(node: str) -> Callable[[RunNumbers], str | None]:
    return lambda r: None if r.owner == node else f"the client ends at {r.owner}"


def format_profiles(profiles: dict[str, dict[str, float]]) -> str:
    """One line per timing profile: keepalive interval, dead time, probe count and window."""
    lines = []
    for name, p in profiles.items():
        lines.append(
            f"  {name:<8} keepalive every {p['keepalive_interval'] * 1000:.0f} ms, "
            f"dead time {p['dead_time'] * 1000:.0f} ms, "
            f"ARP probe {int(p['probe_count'])} probes within {p['probe_window'] * 1000:.0f} ms"
        )
    return "\n".join(lines)


# ---- scenario runs (root, namespace lab) -----------------------------------------------------


def _fail_back(cluster: Cluster) -> Result:
    power_off(cluster)
    return failback(cluster, lambda: reboot_n1_after_power_off(cluster))


@dataclass(frozen=True, kw_only=True)
class Spec:
    """An outage scenario: how to run it, in which lab, and what it should show."""

    name: str
    fast: bool
    run: Callable[[Cluster], Result]
    target: OutageTarget
    moves: bool  # the VIP is meant to move to n2 (else a takeover is a failure)
    preempt: bool = True
    heartbeat_net: bool = False
    rogue: bool = False
    start: bool = True  # start both daemons before the scenario runs
    timing: tuple[tuple[str, str], ...] = ()  # [timing] keys to set, e.g. (("blip_guard", "0s"),)


_HANDOVER = OutageTarget(text="median <= 30 ms", median_ms=30.0)
_ZERO = OutageTarget(text="zero outage, zero double", zero=True)
_CONFLICT = OutageTarget(
    text="2 owners <= 1 s, final owner <= 1 s",
    check=lambda r: _all(
        _two_owners_at_most(1000.0), _within("final_owner_after_s", 1.0, "final owner (s)")
    )(r),
)
SPECS = {
    s.name: s
    for s in (
        Spec(
            name="power-off",
            fast=False,
            run=power_off,
            target=OutageTarget(text="median <= 300 ms", median_ms=300.0),
            moves=True,
        ),
        Spec(
            # The blip guard off: one keepalive interval faster, but owner blips shorter than
            # the dead time may then move the VIP (see timing.blip_guard in the README).
            name="power-off-noguard",
            fast=False,
            run=power_off,
            target=OutageTarget(text="median <= 300 ms", median_ms=300.0),
            moves=True,
            timing=(("blip_guard", "0s"),),
        ),
        Spec(
            name="power-off-fast",
            fast=True,
            run=power_off,
            target=OutageTarget(text="median <= 100 ms", median_ms=100.0),
            moves=True,
        ),
        Spec(name="sigterm", fast=False, run=sigterm_handover, target=_HANDOVER, moves=True),
        Spec(
            name="handover",
            fast=False,
            run=operator_handover,
            target=_HANDOVER,
            moves=True,
            preempt=False,  # with preempt on, the primary refuses: n2 would hand it back
        ),
        Spec(name="failback", fast=False, run=_fail_back, target=_HANDOVER, moves=True),
        Spec(name="sigkill", fast=False, run=sigkill, target=_ZERO, moves=False),
        Spec(name="sigstop", fast=False, run=sigstop, target=_ZERO, moves=False),
        Spec(name="cut-heartbeat", fast=False, run=cut_heartbeat, target=_ZERO, moves=False),
        *(
            Spec(
                name=f"isolated-{how}",
                fast=False,
                run=lambda c, how=how: isolated_standby(c, how, 1.0),  # type: ignore[misc]
                target=_ZERO,
                moves=False,
            )
            for how in ("drop", "carrier")
        ),
        *(
            Spec(
                name=f"vip-link-{how}",
                fast=False,
                run=lambda c, how=how: vip_link_loss(c, how),  # type: ignore[misc]
                target=OutageTarget(
                    text="moves to n2, no two owners",
                    check=_all(_owner_is("n2"), _two_owners_at_most(0.0)),
                ),
                moves=True,
                heartbeat_net=True,
            )
            for how in ("admin", "carrier")
        ),
        Spec(
            name="heartbeat-blip",
            fast=False,
            run=cut_heartbeat_and_blip,
            target=_CONFLICT,
            moves=True,
        ),
        *(
            Spec(
                name=f"one-way-{src}-{dst}",
                fast=False,
                run=lambda c, src=src, dst=dst: one_way_loss(c, src, dst),  # type: ignore[misc]
                target=_CONFLICT,
                moves=True,
                # With preempt on, the primary's planned failback after the heal would be a
                # second, deliberate move, not part of resolving the conflict.
                preempt=False,
            )
            for src, dst in (("n2", "n1"), ("n1", "n2"))
        ),
        Spec(
            name="partition-heal",
            fast=False,
            run=partition_heal,
            target=OutageTarget(
                text="outage after heal <= 100 ms",
                check=_within("outage_after_heal_ms", 100.0, "outage after the heal (ms)"),
            ),
            moves=True,
        ),
        Spec(
            name="frozen-owner",
            fast=False,
            run=frozen_after_acquiring,
            target=OutageTarget(
                text="no GARP after release, client on n2",
                check=_all(
                    _within("late_garps_from_n1", 0.0, "late GARPs from n1"), _owner_is("n2")
                ),
            ),
            moves=True,
            preempt=False,
            start=False,
        ),
        Spec(
            name="restart-secondary",
            fast=False,
            run=restart_active_secondary,
            target=OutageTarget(
                text="zero outage, no move", zero=True, check=_two_owners_at_most(0.0)
            ),
            moves=True,  # n2 is already the owner; the zero target forbids any move
            preempt=False,
        ),
        Spec(
            name="third-host",
            fast=False,
            run=third_host,
            target=OutageTarget(
                text="detected <= 1 s, never released",
                check=_all(
                    _within("detected_after_s", 1.0, "detection (s)"),
                    _within("n1_released", 0.0, "n1 released"),
                ),
            ),
            moves=False,
            rogue=True,
        ),
        Spec(
            name="no-interface",
            fast=False,
            run=primary_loses_interface,
            target=OutageTarget(text="<= 1 move in 20 s", check=_moves_at_most(1)),
            moves=True,
            heartbeat_net=True,
        ),
        Spec(
            name="blips-250",
            fast=False,
            run=lambda c: blips(c, 0.25, 8),
            target=OutageTarget(
                text="no move",
                check=_all(_moves_at_most(0), _within("n2_became_active", 0.0, "takeovers")),
            ),
            moves=False,
        ),
        Spec(
            name="blips-500",
            fast=False,
            run=lambda c: blips(c, 0.5, 4, gap=2.0),
            # One failover per blip at most; with preempt on, each may be followed by its
            # planned failback once the primary has been eligible for preempt_delay.
            target=OutageTarget(
                text="<= 1 failover per blip",
                check=_all(_within("n2_became_active", 4.0, "failovers"), _moves_at_most(8)),
            ),
            moves=True,
        ),
        Spec(
            name="flood",
            fast=False,
            run=handshake_flood,
            target=OutageTarget(
                text="standby in <= 1.5 s",
                check=_within("standby_in_after_s", 1.5, "standby rejoin (s)"),
            ),
            moves=False,
        ),
    )
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LogKeeper:
    """Copies the logs of runs worth a look; the directory is made on first use."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.kept: list[Path] = []

    def keep(self, workdir: Path, tag: str, why: str) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="havip-bench-logs-"))
        dest = self.root / f"{tag}-{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while dest.exists():
            n += 1
            dest = self.root / f"{tag}-{time.strftime('%Y%m%dT%H%M%S')}-{n}"
        dest.mkdir(parents=True)
        for pattern in ("*.log", "*.toml", "*.jsonl"):
            for path in workdir.glob(pattern):
                shutil.copy2(path, dest / path.name)
        (dest / "WHY.txt").write_text(why + "\n")
        self.kept.append(dest)
        _log(f"  logs kept in {dest} ({why})")
        return dest


@contextmanager
def fresh_cluster(
    tag: str, *, fast: bool, spec: Spec | None = None
) -> Iterator[tuple[Cluster, Path]]:
    """A running cluster in its own temporary directory, all removed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix=f"havip-bench-{tag}-") as tmp,
        running_cluster(
            Path(tmp),
            fast=fast,
            preempt=spec.preempt if spec else True,
            heartbeat_net=spec.heartbeat_net if spec else False,
            rogue=spec.rogue if spec else False,
            start=spec.start if spec else True,
            timing=dict(spec.timing) if spec else None,
        ) as cluster,
    ):
        yield cluster, Path(tmp)


def _numbers(cluster: Cluster, res: Result) -> RunNumbers:
    # A restarted daemon resuming the VIP its host still holds moved nothing: not a takeover.
    took = [
        ev
        for ev in cluster.events("n2", "transition", res.fault_at)
        if ev.get("to") == "active" and ev.get("reason") != "resumed"
    ]
    return RunNumbers(
        outage_ms=res.outage_ms,
        double_answers=res.double_answers,
        rounds=res.rounds,
        owner=res.owner,
        takeover=bool(took),
        timeline=[((t - res.fault_at) * 1000.0, what) for t, what in res.timeline],
        notes=list(res.notes),
        two_owners_ms=res.two_owners_ms,
        moves=res.moves,
        measures=dict(res.measures),
    )


def _suspicious(spec: Spec, nums: RunNumbers) -> str | None:
    if nums.double_answers:
        return f"{nums.double_answers} rounds answered by two MACs"
    if not spec.moves and nums.takeover:
        return "n2 took over although the VIP still had a live owner"
    if not spec.moves and nums.outage_ms > 0 and spec.target.zero:
        return f"client outage of {nums.outage_ms:.0f} ms where none was expected"
    if spec.target.check is not None:
        return spec.target.check(nums)
    return None


@dataclass(kw_only=True)
class Outcome:
    """All runs of one outage scenario."""

    runs: list[RunNumbers] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_spec(spec: Spec, count: int, keeper: LogKeeper, *, verbose: bool) -> Outcome:
    """Run one outage scenario `count` times, each in a fresh lab."""
    outcome = Outcome()
    for i in range(1, count + 1):
        tag = f"{spec.name}-{i}"
        try:
            with fresh_cluster(spec.name, fast=spec.fast, spec=spec) as (cluster, workdir):
                try:
                    res = spec.run(cluster)
                except ScenarioError as exc:
                    keeper.keep(workdir, tag, f"run failed: {str(exc).splitlines()[0]}")
                    raise
                nums = _numbers(cluster, res)
                why = _suspicious(spec, nums)
                if why:
                    keeper.keep(workdir, tag, why)
        except ScenarioError as exc:
            first = str(exc).splitlines()[0]
            outcome.errors.append(f"run {i}: {first}")
            _log(f"[{spec.name} {i}/{count}] FAILED: {first}")
            continue
        outcome.runs.append(nums)
        _log(
            f"[{spec.name} {i}/{count}] outage {nums.outage_ms:.0f} ms, "
            f"double answers {nums.double_answers}, two owners {nums.two_owners_ms:.0f} ms, "
            f"moves {nums.moves}, rounds {nums.rounds}, VIP at {nums.owner or 'nobody'}"
            + (", n2 took over" if nums.takeover else "")
            + "".join(f", {k} {v:.3g}" for k, v in sorted(nums.measures.items()))
        )
        if verbose:
            _log(res.render())
    return outcome


# ---- idle cost ---------------------------------------------------------------------------------


def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read /proc/{pid}/{name}: {exc}") from exc


def _daemon_pid(cluster: Cluster, node: str) -> int:
    # `ip netns exec` execs the daemon, so the Popen pid is the Python process itself.
    pid = cluster.pid(node)
    argv = _proc_text(pid, "cmdline").split("\0")
    if "havip" not in argv or "run" not in argv:
        raise BenchError(f"pid {pid} of {node} is not `havip run` but {' '.join(argv)!r}")
    return pid


@dataclass(frozen=True, kw_only=True)
class IdleNumbers:
    """One daemon's cost over the idle window."""

    node: str
    seconds: float
    cpu_percent: float
    rss_mb: list[float]


def measure_idle(seconds: float, keeper: LogKeeper) -> list[IdleNumbers]:
    """CPU % of one core and RSS of each settled daemon over `seconds` (default timings)."""
    clk_tck = os.sysconf("SC_CLK_TCK")
    with fresh_cluster("idle", fast=False) as (cluster, workdir):
        cluster.settle("n1")
        time.sleep(IDLE_WARMUP_S)
        pids = {node: _daemon_pid(cluster, node) for node in NODES}
        rss: dict[str, list[float]] = {node: [] for node in NODES}
        start = time.monotonic()
        ticks0 = {node: stat_ticks(_proc_text(pid, "stat")) for node, pid in pids.items()}
        end = start + seconds
        while (now := time.monotonic()) < end:
            for node, pid in pids.items():
                rss[node].append(vmrss_bytes(_proc_text(pid, "status")) / MB)
            time.sleep(min(RSS_SAMPLE_EVERY_S, max(0.0, end - now)))
        ticks1 = {node: stat_ticks(_proc_text(pid, "stat")) for node, pid in pids.items()}
        elapsed = time.monotonic() - start
        for node, pid in pids.items():
            rss[node].append(vmrss_bytes(_proc_text(pid, "status")) / MB)
        if cluster.state("n1") != "active" or cluster.state("n2") != "standby":
            keeper.keep(workdir, "idle", "the cluster did not stay settled while idle")
            raise BenchError("idle: the cluster did not stay settled (n1 active, n2 standby)")
    return [
        IdleNumbers(
            node=node,
            seconds=elapsed,
            cpu_percent=cpu_percent(
                ticks=ticks1[node] - ticks0[node], clk_tck=clk_tck, seconds=elapsed
            ),
            rss_mb=rss[node],
        )
        for node in NODES
    ]


def idle_rows(numbers: Sequence[IdleNumbers]) -> list[Row]:
    """Two rows per daemon: CPU (mean over the window) and RSS (median/min/max of samples)."""
    rows = []
    for n in numbers:
        rows.append(
            Row(
                scenario=f"idle CPU {n.node}",
                runs=f"1 x {n.seconds:.0f} s",
                median=f"{n.cpu_percent:.2f} %",
                target=f"<= {CPU_LIMIT_PERCENT} % of a core",
                meets=n.cpu_percent <= CPU_LIMIT_PERCENT,
            )
        )
        s = summarize(n.rss_mb)
        rows.append(
            Row(
                scenario=f"idle RSS {n.node}",
                runs=f"{s.n if s else 0} samples",
                median=f"{s.median:.1f} MB" if s else "-",
                low=f"{s.low:.1f} MB" if s else "-",
                high=f"{s.high:.1f} MB" if s else "-",
                target=f"<= {RSS_LIMIT_MB:.0f} MB",
                meets=s is not None and s.high <= RSS_LIMIT_MB,
            )
        )
    return rows


# ---- soak under packet loss ----------------------------------------------------------------------


_SOAK_COUNTERS = (
    "havip_keepalives_missed_total",
    "havip_takeovers_vetoed_total",
    "havip_keepalives_sent_total",
    "havip_keepalives_received_total",
    "havip_peer_connections_total",
)


@dataclass(frozen=True, kw_only=True)
class SoakNumbers:
    """What `seconds` of random loss between the LAN ports did."""

    seconds: float
    loss_percent: int
    takeovers: int  # n2 transitions to active
    n1_left_active: int  # n1 transitions away from active
    peer_lost: dict[str, int]  # failure signals logged by each node
    vetoed_logged: int  # n2's takeover_vetoed log lines (rate-limited)
    counters: dict[str, dict[str, float]]  # node -> counter -> increase during the soak
    rounds: int
    lost_rounds: int
    max_outage_ms: float
    double_answers: int
    n1_owns_at_end: bool
    daemon_exits: list[str]


def run_soak(seconds: float, keeper: LogKeeper) -> SoakNumbers:
    """Default timings, SOAK_LOSS_PERCENT % random loss on every LAN port for `seconds`."""
    with fresh_cluster("soak", fast=False) as (cluster, workdir):
        cluster.settle("n1")
        exits: list[str] = []
        with cluster.client("soak", duration=seconds + 60.0) as out:
            before = {node: cluster.metrics(node) for node in NODES}
            start = time.time()
            cluster.lab.set_loss(SOAK_LOSS_PERCENT)
            try:
                exits = _soak_wait(cluster, start, seconds)
            finally:
                cluster.lab.clear_loss()
            end = time.time()
            time.sleep(1.0)
            after = {node: cluster.metrics(node) for node in NODES}
        counters = {
            node: {
                name: metric_total(after[node], name) - metric_total(before[node], name)
                for name in _SOAK_COUNTERS
            }
            for node in NODES
        }
        transitions = {node: cluster.events(node, "transition", start) for node in NODES}
        takeovers = sum(1 for ev in transitions["n2"] if ev.get("to") == "active")
        window = [s for s in load_samples(out) if start <= s.t_send <= end]
        numbers = SoakNumbers(
            seconds=end - start,
            loss_percent=SOAK_LOSS_PERCENT,
            takeovers=takeovers,
            n1_left_active=sum(1 for ev in transitions["n1"] if ev.get("from") == "active"),
            peer_lost={node: len(cluster.events(node, "peer_lost", start)) for node in NODES},
            vetoed_logged=len(cluster.events("n2", "takeover_vetoed", start)),
            counters=counters,
            rounds=len(window),
            lost_rounds=sum(1 for s in window if s.answer is None),
            max_outage_ms=max((o.duration_ms for o in outages(window)), default=0.0),
            double_answers=double_answers(window),
            n1_owns_at_end=cluster.holds_vip("n1") and not cluster.holds_vip("n2"),
            daemon_exits=exits,
        )
        why = []
        if takeovers or numbers.n1_left_active:
            why.append(f"{takeovers} takeovers, n1 left active {numbers.n1_left_active} times")
        if numbers.double_answers:
            why.append(f"{numbers.double_answers} rounds answered by two MACs")
        if exits:
            why.append("; ".join(exits))
        if why:
            keeper.keep(workdir, "soak", "; ".join(why))
    return numbers


def _soak_wait(cluster: Cluster, start: float, seconds: float) -> list[str]:
    """Sleep through the soak (bounded), reporting progress; stop early if a daemon dies."""
    end = time.monotonic() + seconds
    next_report = time.monotonic() + SOAK_PROGRESS_EVERY_S
    while (now := time.monotonic()) < end:
        dead = [
            f"{node}'s daemon exited {cluster.procs[node].returncode}"
            for node in NODES
            if cluster.procs[node].poll() is not None
        ]
        if dead:
            _log(f"[soak] stopping early: {'; '.join(dead)}")
            return dead
        if now >= next_report:
            next_report += SOAK_PROGRESS_EVERY_S
            took = [
                ev for ev in cluster.events("n2", "transition", start) if ev.get("to") == "active"
            ]
            lost = {n: len(cluster.events(n, "peer_lost", start)) for n in NODES}
            _log(
                f"[soak] {time.time() - start:.0f} s: n2 takeovers {len(took)}, "
                f"peer_lost n1 {lost['n1']} n2 {lost['n2']}"
            )
        time.sleep(min(1.0, max(0.0, end - now)))
    return []


def soak_row(s: SoakNumbers) -> Row:
    """The table row of the soak, with its verdict (no takeover)."""
    return Row(
        scenario=f"soak {s.loss_percent}% loss",
        runs=f"1 x {s.seconds:.0f} s",
        high=fmt_ms(s.max_outage_ms),
        double=str(s.double_answers),
        target=f"no takeover, n1 owns at end, outage <= {SOAK_MAX_OUTAGE_MS:.0f} ms",
        meets=s.takeovers == 0
        and s.n1_left_active == 0
        and not s.daemon_exits
        and s.n1_owns_at_end
        and s.double_answers == 0
        and s.max_outage_ms <= SOAK_MAX_OUTAGE_MS,
    )


def format_soak(s: SoakNumbers) -> str:
    """The soak's details below the table."""
    c1, c2 = s.counters["n1"], s.counters["n2"]

    def both(name: str) -> str:
        return f"n1 {c1[name]:.0f}, n2 {c2[name]:.0f}"

    lost = 100.0 * s.lost_rounds / s.rounds if s.rounds else 0.0
    lines = [
        f"Soak: {s.loss_percent}% random loss on every LAN port for {s.seconds:.0f} s "
        "(default timings)",
        f"  takeovers (n2 -> active): {s.takeovers}; n1 left active: {s.n1_left_active}; "
        f"VIP on n1 only at the end: {'yes' if s.n1_owns_at_end else 'NO'}",
        f"  failure signals (peer_lost): n1 {s.peer_lost['n1']}, n2 {s.peer_lost['n2']}",
        f"  vetoed takeovers (havip_takeovers_vetoed_total): "
        f"{c2['havip_takeovers_vetoed_total']:.0f} on n2 "
        f"({s.vetoed_logged} takeover_vetoed log lines, rate-limited)",
        f"  keepalives missed: {both('havip_keepalives_missed_total')}; "
        f"sent: {both('havip_keepalives_sent_total')}; "
        f"received: {both('havip_keepalives_received_total')}",
        f"  peer (re)connections: {both('havip_peer_connections_total')}",
        f"  client: {s.rounds} rounds, {s.lost_rounds} unanswered ({lost:.1f} %), "
        f"longest outage {s.max_outage_ms:.0f} ms, rounds with two MACs {s.double_answers}",
    ]
    lines += [f"  daemon died: {d}" for d in s.daemon_exits]
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def _positive(kind: type[float] | type[int], high: float, allow_zero: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        low_ok = value >= 0 if allow_zero else value > 0
        if not low_ok or value > high:
            least = 0 if allow_zero else "above 0"
            raise argparse.ArgumentTypeError(f"{text} is out of range ({least} to {high:g})")
        return value

    return parse


def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none)'} "
            f"(choose from {', '.join(SCENARIOS)})"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description="Measure havip's failover in the namespace lab (root). Prints numbers, "
        f"targets and verdicts; exits {EXIT_MISSED} when a target is missed.",
    )
    p.add_argument(
        "--runs",
        type=_positive(int, MAX_RUNS, allow_zero=False),
        help="runs per outage scenario (default: 5 for power-off and power-off-fast, 1 for "
        f"issue 5's faults, {DEFAULT_OTHER_RUNS} for the others)",
    )
    p.add_argument(
        "--soak",
        type=_positive(float, MAX_SOAK_S, allow_zero=True),
        default=DEFAULT_SOAK_S,
        metavar="SECONDS",
        help=f"length of the {SOAK_LOSS_PERCENT}%% loss soak (default {DEFAULT_SOAK_S:g}; 0 skips)",
    )
    p.add_argument(
        "--idle",
        type=_positive(float, MAX_IDLE_S, allow_zero=False),
        default=DEFAULT_IDLE_S,
        metavar="SECONDS",
        help=f"window for idle CPU and RSS (default {DEFAULT_IDLE_S:g})",
    )
    p.add_argument(
        "--only",
        type=_only,
        metavar="NAME[,NAME]",
        help=f"scenarios to run, from: {', '.join(SCENARIOS)}",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the raw numbers here")
    p.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="where to copy logs of failed or suspicious runs (default: a new temp dir)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each run's timeline")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    chosen = [n for n in SCENARIOS if n in (args.only or SCENARIOS)]
    if args.soak == 0 and "soak" in chosen:
        chosen.remove("soak")
    reason = Lab.available()
    if reason is not None:
        print(f"bench.failover: cannot build the namespace lab: {reason}", file=sys.stderr)
        return 1
    Lab.install_signal_cleanup()
    keeper = LogKeeper(args.keep_logs)

    print(
        f"havip failover benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print("Timing profiles (havip.config.PROFILES):")
    print(format_profiles(PROFILES))
    print(flush=True)

    rows: list[Row] = []
    raw: dict[str, Any] = {"profiles": PROFILES, "scenarios": {}}
    timelines: dict[str, list[tuple[str, float, int]]] = {}
    soak: SoakNumbers | None = None
    broke: list[str] = []
    for name in chosen:
        started = time.monotonic()
        try:
            if name in SPECS:
                spec = SPECS[name]
                count = args.runs or DEFAULT_RUNS.get(name, DEFAULT_OTHER_RUNS)
                outcome = run_spec(spec, count, keeper, verbose=args.verbose)
                rows.append(outage_row(name, count, outcome.runs, len(outcome.errors), spec.target))
                timelines[name] = timeline_medians([r.timeline for r in outcome.runs])
                raw["scenarios"][name] = {
                    "runs": [asdict(r) for r in outcome.runs],
                    "errors": outcome.errors,
                }
                broke += [f"{name} {e}" for e in outcome.errors]
            elif name == "idle":
                idle = measure_idle(args.idle, keeper)
                rows += idle_rows(idle)
                raw["idle"] = [asdict(n) for n in idle]
            elif name == "soak":
                soak = run_soak(args.soak, keeper)
                rows.append(soak_row(soak))
                raw["soak"] = asdict(soak)
        except (BenchError, ScenarioError, LabError, subprocess.SubprocessError, OSError) as exc:
            first = str(exc).splitlines()[0]
            _log(f"[{name}] FAILED: {first}")
            broke.append(f"{name}: {first}")
            raw.setdefault("failed", {})[name] = str(exc)
        _log(f"[{name}] done in {time.monotonic() - started:.0f} s")

    print(format_table(rows))
    print(
        "\nOutage: longest run of unanswered client rounds (one every 10 ms; resolution 10 ms).\n"
        "double: client rounds in which two MACs answered ARP for the VIP, summed over runs.\n"
        "2-owners: longest time with two owners in a run (rounds answered by two MACs, or both\n"
        "daemons logging ownership at once); moves: most changes of the answering node in a run.\n"
        "idle CPU: (utime+stime, children included) / wall time, mean over the window, "
        "default timings;\nidle RSS: VmRSS sampled every second."
    )
    if any(timelines.values()):
        print("\nMedian timeline per scenario (ms after the fault):")
        for name, entries in timelines.items():
            print(f"  {name}:")
            for label, offset, n in entries:
                print(f"    {offset:+8.1f}  {label}  ({n} runs)")
    if soak is not None:
        print()
        print(format_soak(soak))
    if keeper.kept:
        print("\nLogs kept for a look:")
        for path in keeper.kept:
            print(f"  {path}")
    if broke:
        print("\nRuns that could not complete (their numbers are missing):")
        for line in broke:
            print(f"  {line}")
    if args.json is not None:
        raw["rows"] = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(raw, indent=2, default=str) + "\n")
    missed = [r.scenario for r in rows if not r.meets]
    if missed:
        print(f"\nTargets missed: {', '.join(missed)}")
    return exit_code(broke=bool(broke), missed=bool(missed))


def exit_code(*, broke: bool, missed: bool) -> int:
    """1 when runs broke (numbers incomplete), else EXIT_MISSED when a target was missed."""
    if broke:
        return 1
    return EXIT_MISSED if missed else 0


if __name__ == "__main__":
    sys.exit(main())
