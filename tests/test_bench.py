"""The benchmark's pure helpers: statistics, /proc parsing, CPU %, metrics, the table."""

from __future__ import annotations

import pytest

from bench.failover import (
    EXIT_MISSED,
    ISSUE5_SCENARIOS,
    SCENARIOS,
    SPECS,
    IdleNumbers,
    OutageTarget,
    Row,
    RunNumbers,
    SoakNumbers,
    cpu_percent,
    exit_code,
    format_profiles,
    format_soak,
    format_table,
    idle_rows,
    metric_total,
    outage_row,
    parser,
    soak_row,
    stat_ticks,
    summarize,
    timeline_medians,
    vmrss_bytes,
)
from havip.config import PROFILES

# /proc/PID/stat of a python process; comm with a space and a ')' to check the parsing.
STAT = (
    "4242 (py thon) x) S 1 4242 4242 0 -1 4194560 3000 0 0 0 "
    "123 45 6 7 20 0 3 0 100 200000000 5000 18446744073709551615"
)
STATUS = "Name:\tpython\nVmPeak:\t  40000 kB\nVmRSS:\t   31232 kB\nRssAnon:\t 20000 kB\n"


def _run(
    outage: float,
    double: int = 0,
    takeover: bool = False,
    *,
    two_owners: float = 0.0,
    moves: int = 0,
    owner: str = "n2",
    **measures: float,
) -> RunNumbers:
    return RunNumbers(
        outage_ms=outage,
        double_answers=double,
        rounds=100,
        owner=owner,
        takeover=takeover,
        timeline=[],
        notes=[],
        two_owners_ms=two_owners,
        moves=moves,
        measures=measures,
    )


# ---- statistics --------------------------------------------------------------------------------


def test_summarize_odd_count() -> None:
    s = summarize([300.0, 100.0, 200.0])
    assert s is not None
    assert (s.n, s.median, s.low, s.high) == (3, 200.0, 100.0, 300.0)


def test_summarize_even_count_takes_the_middle_mean() -> None:
    s = summarize([40.0, 10.0, 30.0, 20.0])
    assert s is not None
    assert (s.median, s.low, s.high) == (25.0, 10.0, 40.0)


def test_summarize_one_and_none() -> None:
    one = summarize(iter([7.5]))
    assert one is not None
    assert (one.n, one.median, one.low, one.high) == (1, 7.5, 7.5, 7.5)
    assert summarize([]) is None


def test_timeline_medians_first_occurrence_per_run_sorted_by_median() -> None:
    runs = [
        [(0.0, "fault"), (190.0, "detected"), (280.0, "added"), (300.0, "added")],
        [(0.0, "fault"), (210.0, "detected"), (260.0, "added")],
        [(0.0, "fault"), (200.0, "detected")],
    ]
    assert timeline_medians(runs) == [
        ("fault", 0.0, 3),
        ("detected", 200.0, 3),
        ("added", 270.0, 2),
    ]
    assert timeline_medians([]) == []


# ---- /proc and CPU -----------------------------------------------------------------------------


def test_stat_ticks_sums_utime_stime_and_children() -> None:
    assert stat_ticks(STAT) == 123 + 45 + 6 + 7


@pytest.mark.parametrize("text", ["", "4242 (python", "4242 (python) S 1 2 3", "garbage"])
def test_stat_ticks_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="/proc/PID/stat"):
        stat_ticks(text)


@pytest.mark.parametrize(
    ("ticks", "clk_tck", "seconds", "percent"),
    [
        (30, 100, 60.0, 0.5),  # exactly the target: 0.3 s of CPU in a minute
        (0, 100, 60.0, 0.0),
        (100, 100, 1.0, 100.0),  # one whole core
        (250, 100, 1.0, 250.0),  # several threads on several cores
        (6, 1000, 12.0, 0.05),
    ],
)
def test_cpu_percent(ticks: int, clk_tck: int, seconds: float, percent: float) -> None:
    assert cpu_percent(ticks=ticks, clk_tck=clk_tck, seconds=seconds) == pytest.approx(percent)


def test_cpu_percent_from_two_stat_samples() -> None:
    later = STAT.replace(" 123 45 6 7 ", " 140 58 6 7 ")
    ticks = stat_ticks(later) - stat_ticks(STAT)
    assert ticks == 30
    assert cpu_percent(ticks=ticks, clk_tck=100, seconds=60.0) == pytest.approx(0.5)


@pytest.mark.parametrize(("clk_tck", "seconds"), [(100, 0.0), (100, -1.0), (0, 60.0)])
def test_cpu_percent_rejects_nonsense(clk_tck: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="cpu_percent"):
        cpu_percent(ticks=1, clk_tck=clk_tck, seconds=seconds)


def test_vmrss_bytes() -> None:
    assert vmrss_bytes(STATUS) == 31232 * 1024


@pytest.mark.parametrize(
    ("text", "match"),
    [("Name:\tkthreadd\n", "no VmRSS"), ("VmRSS:\t 12 MB\n", "unexpected VmRSS")],
)
def test_vmrss_bytes_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vmrss_bytes(text)


# ---- metrics -----------------------------------------------------------------------------------

METRICS = """\
# HELP havip_takeovers_vetoed_total Takeovers not done because the VIP still answered on the LAN.
# TYPE havip_takeovers_vetoed_total counter
havip_takeovers_vetoed_total{vip="198.18.0.100/24"} 3.0
havip_takeovers_vetoed_total{vip="198.18.0.101/24"} 2.0
havip_takeovers_vetoed_created{vip="198.18.0.100/24"} 1.7640888e+09
# HELP havip_keepalives_missed_total Times the keepalive deadline passed.
# TYPE havip_keepalives_missed_total counter
havip_keepalives_missed_total 4.0
havip_keepalives_missed_created 1.7640888e+09
"""


def test_metric_total_sums_labelled_series_and_skips_created() -> None:
    assert metric_total(METRICS, "havip_takeovers_vetoed_total") == 5.0
    assert metric_total(METRICS, "havip_keepalives_missed_total") == 4.0
    assert metric_total(METRICS, "havip_keepalives_sent_total") == 0.0


# ---- rows and verdicts -------------------------------------------------------------------------

MEDIAN_300 = OutageTarget(text="median <= 300 ms", median_ms=300.0)
ZERO = OutageTarget(text="zero outage, zero double", zero=True)


def test_outage_row_meets_on_the_median_not_the_max() -> None:
    row = outage_row("power-off", 3, [_run(250.0), _run(290.0), _run(900.0)], 0, MEDIAN_300)
    assert (row.runs, row.median, row.low, row.high, row.double) == (
        "3",
        "290 ms",
        "250 ms",
        "900 ms",
        "0",
    )
    assert row.meets


def test_outage_row_misses_above_the_median_limit() -> None:
    row = outage_row("power-off", 2, [_run(310.0), _run(320.0)], 0, MEDIAN_300)
    assert not row.meets


def test_outage_row_failed_runs_miss_and_show() -> None:
    row = outage_row("power-off", 3, [_run(100.0), _run(100.0)], 1, MEDIAN_300)
    assert row.runs == "2/3 (1 failed)"
    assert not row.meets


def test_outage_row_without_runs() -> None:
    row = outage_row("sigkill", 2, [], 2, ZERO)
    assert (row.median, row.low, row.high) == ("-", "-", "-")
    assert not row.meets


@pytest.mark.parametrize(
    ("runs", "meets"),
    [
        ([_run(0.0), _run(0.0)], True),
        ([_run(0.0), _run(10.0)], False),
        ([_run(0.0), _run(0.0, double=1)], False),
        ([_run(0.0), _run(0.0, takeover=True)], False),
        ([_run(0.0), _run(0.0, moves=1)], False),
    ],
)
def test_outage_row_zero_target(runs: list[RunNumbers], meets: bool) -> None:
    row = outage_row("sigkill", 2, runs, 0, ZERO)
    assert row.meets is meets
    assert row.double == str(sum(r.double_answers for r in runs))


def _check(name: str, run: RunNumbers) -> bool:
    return outage_row(name, 1, [run], 0, SPECS[name].target).meets


@pytest.mark.parametrize(
    ("name", "run", "meets"),
    [
        ("heartbeat-blip", _run(300.0, two_owners=900.0, final_owner_after_s=0.5), True),
        ("heartbeat-blip", _run(300.0, two_owners=1100.0, final_owner_after_s=0.5), False),
        ("heartbeat-blip", _run(300.0, two_owners=0.0, final_owner_after_s=1.5), False),
        ("heartbeat-blip", _run(300.0, two_owners=0.0), False),  # nothing measured: a miss
        ("partition-heal", _run(900.0, outage_after_heal_ms=90.0), True),
        ("partition-heal", _run(0.0, outage_after_heal_ms=110.0), False),
        ("blips-250", _run(250.0, n2_became_active=0.0), True),
        ("blips-250", _run(250.0, moves=1, n2_became_active=0.0), False),
        ("blips-500", _run(500.0, moves=8, n2_became_active=4.0), True),
        ("blips-500", _run(500.0, moves=6, n2_became_active=5.0), False),
        ("blips-500", _run(500.0, moves=9, n2_became_active=4.0), False),
        ("blips-500", _run(500.0, moves=2), False),  # failovers not measured: no verdict
        ("no-interface", _run(100.0, moves=1), True),
        ("no-interface", _run(100.0, moves=3), False),
        ("third-host", _run(0.0, detected_after_s=0.4, n1_released=0.0), True),
        ("third-host", _run(0.0, detected_after_s=0.4, n1_released=1.0), False),
        ("third-host", _run(0.0, n1_released=0.0), False),
        ("frozen-owner", _run(200.0, late_garps_from_n1=0.0), True),
        ("frozen-owner", _run(200.0, owner="n1", late_garps_from_n1=0.0), False),
        ("frozen-owner", _run(200.0, late_garps_from_n1=1.0), False),
        ("vip-link-admin", _run(300.0), True),
        ("vip-link-admin", _run(300.0, two_owners=20.0), False),
        ("flood", _run(0.0, standby_in_after_s=0.8), True),
        ("flood", _run(0.0, standby_in_after_s=3.0), False),
        ("isolated-drop", _run(0.0), True),
        ("isolated-drop", _run(10.0), False),
        ("restart-secondary", _run(0.0), True),
        ("restart-secondary", _run(0.0, moves=1), False),
    ],
)
def test_issue5_targets(name: str, run: RunNumbers, meets: bool) -> None:
    assert _check(name, run) is meets


def test_rows_show_two_owners_and_moves() -> None:
    row = outage_row(
        "one-way-n2-n1",
        2,
        [_run(10.0, two_owners=300.0, moves=1), _run(20.0, two_owners=700.0, moves=2)],
        0,
        SPECS["one-way-n2-n1"].target,
    )
    assert (row.two_owners, row.moves) == ("700 ms", "2")


def test_exit_code_says_missed_targets() -> None:
    assert exit_code(broke=False, missed=False) == 0
    assert exit_code(broke=False, missed=True) == EXIT_MISSED
    assert exit_code(broke=True, missed=True) == 1
    assert EXIT_MISSED not in (0, 1, 2)


def test_idle_rows_cpu_and_rss_verdicts() -> None:
    rows = idle_rows(
        [
            IdleNumbers(node="n1", seconds=60.2, cpu_percent=0.31, rss_mb=[30.0, 31.0, 32.0]),
            IdleNumbers(node="n2", seconds=60.2, cpu_percent=0.62, rss_mb=[49.0, 51.0]),
        ]
    )
    assert [(r.scenario, r.median, r.meets) for r in rows] == [
        ("idle CPU n1", "0.31 %", True),
        ("idle RSS n1", "31.0 MB", True),
        ("idle CPU n2", "0.62 %", False),
        ("idle RSS n2", "50.0 MB", False),  # the peak (51 MB) decides
    ]
    assert rows[0].runs == "1 x 60 s"
    assert (rows[3].low, rows[3].high) == ("49.0 MB", "51.0 MB")


def _soak(takeovers: int = 0, *, owns: bool | None = None, max_outage: float = 20.0) -> SoakNumbers:
    counters = {
        "havip_keepalives_missed_total": 7.0,
        "havip_takeovers_vetoed_total": 2.0,
        "havip_keepalives_sent_total": 12000.0,
        "havip_keepalives_received_total": 11800.0,
        "havip_peer_connections_total": 0.0,
    }
    return SoakNumbers(
        seconds=600.4,
        loss_percent=2,
        takeovers=takeovers,
        n1_left_active=takeovers,
        peer_lost={"n1": 1, "n2": 2},
        vetoed_logged=1,
        counters={"n1": dict(counters), "n2": dict(counters)},
        rounds=60000,
        lost_rounds=2400,
        max_outage_ms=max_outage,
        double_answers=0,
        n1_owns_at_end=(not takeovers) if owns is None else owns,
        daemon_exits=[],
    )


def test_soak_row_and_details() -> None:
    row = soak_row(_soak())
    assert (row.runs, row.high, row.double, row.meets) == ("1 x 600 s", "20 ms", "0", True)
    assert not soak_row(_soak(takeovers=1)).meets
    assert not soak_row(_soak(owns=False)).meets  # the owner at the end is part of the verdict
    assert not soak_row(_soak(max_outage=900.0)).meets  # and so is the longest outage
    assert "n1 owns at end" in row.target
    text = format_soak(_soak())
    assert "takeovers (n2 -> active): 0" in text
    assert "failure signals (peer_lost): n1 1, n2 2" in text
    assert "2 on n2" in text
    assert "2400 unanswered (4.0 %)" in text


# ---- formatting --------------------------------------------------------------------------------


def test_format_table_aligns_columns() -> None:
    rows = [
        Row(scenario="power-off", runs="10", median="250 ms", target="t", meets=True),
        Row(scenario="soak 2% loss", runs="1 x 600 s", high="20 ms", target="tt", meets=False),
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 3
    header = [
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
    ]
    assert lines[0].split() == header
    assert lines[1].endswith("meets")
    assert lines[2].endswith("MISSES")
    # right-aligned numbers end in the same column as their header
    assert lines[1].index("250 ms") + len("250 ms") == lines[0].index("median") + len("median")
    assert len({line.index(" t") for line in lines[1:]}) == 1


def test_format_profiles_names_each_timing() -> None:
    text = format_profiles(PROFILES)
    lines = text.splitlines()
    assert len(lines) == len(PROFILES)
    for name, profile in PROFILES.items():
        line = next(line for line in lines if line.split()[0] == name)
        assert f"every {profile['keepalive_interval'] * 1000:.0f} ms" in line
        assert f"dead time {profile['dead_time'] * 1000:.0f} ms" in line
        assert f"within {profile['probe_window'] * 1000:.0f} ms" in line


# ---- options -----------------------------------------------------------------------------------


def test_every_outage_scenario_has_a_spec() -> None:
    assert set(SPECS) == set(SCENARIOS) - {"idle", "soak"}
    assert SPECS["power-off-fast"].fast and not SPECS["power-off"].fast
    assert set(ISSUE5_SCENARIOS) <= set(SPECS)
    assert SPECS["vip-link-admin"].heartbeat_net and SPECS["no-interface"].heartbeat_net
    assert SPECS["third-host"].rogue
    assert not SPECS["frozen-owner"].start and not SPECS["frozen-owner"].preempt
    # Every issue-5 fault has a target that can be missed.
    assert all(SPECS[n].target.check is not None or SPECS[n].target.zero for n in ISSUE5_SCENARIOS)


def test_parser_defaults_and_only() -> None:
    args = parser().parse_args([])
    assert (args.runs, args.soak, args.idle, args.only) == (None, 300.0, 60.0, None)
    args = parser().parse_args(["--only", "sigkill, soak", "--soak", "0", "--runs", "2"])
    assert (args.only, args.soak, args.runs) == (["sigkill", "soak"], 0.0, 2)


@pytest.mark.parametrize(
    "argv",
    [["--only", "power-of"], ["--only", ","], ["--runs", "0"], ["--soak", "-1"], ["--idle", "0"]],
)
def test_parser_rejects(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
