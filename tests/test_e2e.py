"""End to end: real `havip run` daemons in the namespace lab, faults injected, a client watching.

Every test builds a fresh lab (`havip.scenario.running_cluster`) and checks what a user on the
LAN would see: who answers for the VIP, and that two MACs never answered at once. Outage numbers
are printed, never asserted (the benchmark measures them); "no round lost" is asserted only where
nothing may move. The conftest gate makes these tests fail under CI=true if the lab cannot run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from havip.lab.client import Sample, double_answers, first_answer_from, load_samples, outages
from havip.lab.netns import VIP, process_running
from havip.lab.scenario import (
    NODES,
    SCALE,
    Cluster,
    LogEvent,
    Result,
    blips,
    cut_heartbeat,
    cut_heartbeat_and_blip,
    failback,
    frozen_after_acquiring,
    handshake_flood,
    isolated_standby,
    one_way_loss,
    operator_removes_vip,
    partition_heal,
    power_off,
    primary_loses_interface,
    reboot_n1_after_power_off,
    restart_active_secondary,
    restart_with_dead_link,
    running_cluster,
    sigkill,
    sigstop,
    sigterm_handover,
    third_host,
    vip_link_loss,
)

pytestmark = pytest.mark.netns

LAB_NODES = ("lan", "n1", "n2", "client")
# Issue 5's targets (scaled by the test time factor where they are durations).
TWO_OWNERS_MAX_MS = 1000.0
FINAL_OWNER_WITHIN_S = 1.0
HEAL_OUTAGE_MAX_MS = 100.0
CONFLICT_DETECTED_WITHIN_S = 1.0
STANDBY_IN_WITHIN_S = 1.5  # "within about a second" of its daemon starting


# ---- helpers -----------------------------------------------------------------------------------


def _netns_pids(ns: str) -> set[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    return {int(p) for p in out.split() if p.isdigit()}


@contextmanager
def _cluster(
    tmp_path: Path,
    *,
    fast: bool = False,
    preempt: bool = True,
    heartbeat_net: bool = False,
    rogue: bool = False,
    start: bool = True,
    vips: Sequence[str] | None = None,
) -> Iterator[Cluster]:
    """running_cluster, then proof that it left no namespace and no process behind."""
    with running_cluster(
        tmp_path,
        fast=fast,
        preempt=preempt,
        heartbeat_net=heartbeat_net,
        rogue=rogue,
        start=start,
        vips=vips,
    ) as cluster:
        names = [cluster.lab.ns_name(n) for n in cluster.lab.nodes] + [cluster.lab.ns_name("lan")]
        yield cluster
        # Everything that runs in the lab now (daemons, echoes, hooks) must be gone afterwards.
        pids = set().union(*(_netns_pids(ns) for ns in names))
        pids |= {p.pid for p in cluster.procs.values() if p.poll() is None}
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    assert not [ns for ns in names if ns in listed], f"namespaces left behind: {listed}"
    assert all(p.poll() is not None for p in cluster.procs.values())
    deadline = time.monotonic() + 5 * SCALE
    while any(process_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in pids if process_running(pid)], "lab processes survived the lab"


def _show(res: Result) -> None:
    print("\n" + res.render())


def _became_active(cluster: Cluster, node: str, after: float) -> list[LogEvent]:
    return [ev for ev in cluster.events(node, "transition", after) if ev.get("to") == "active"]


def _transitions(cluster: Cluster, node: str, after: float, **match: str) -> list[LogEvent]:
    return [
        ev
        for ev in cluster.events(node, "transition", after)
        if all(ev.get(k) == v for k, v in match.items())
    ]


def _healed_at(res: Result) -> float:
    return next(when for when, what in res.timeline if what == "fault healed")


def _connected(cluster: Cluster, node: str) -> bool:
    """node's last peer event is a peer_up."""
    ups, lost = cluster.events(node, "peer_up"), cluster.events(node, "peer_lost")
    return bool(ups) and (not lost or ups[-1].ts > lost[-1].ts)


def _arp_owner(cluster: Cluster) -> str | None:
    """The node whose MAC the client's neighbour entry for the VIP names (else the raw MAC)."""
    mac = cluster.lab.neigh("client", VIP)
    return {cluster.lab.mac(n): n for n in NODES}.get(mac or "", mac)


def _settled_owner(cluster: Cluster) -> str | None:
    """The one node that holds the VIP as a connected pair's active node, else None."""
    holders = [n for n in NODES if cluster.holds_vip(n)]
    if len(holders) != 1:
        return None
    owner = holders[0]
    other = "n2" if owner == "n1" else "n1"
    if cluster.state(owner) != "active" or cluster.state(other) != "standby":
        return None
    return owner if _connected(cluster, other) and _connected(cluster, owner) else None


def _assert_n1_silent_after_announcement(
    cluster: Cluster, res: Result, samples: list[Sample]
) -> None:
    """Power-off (issue 9 part 2): n1 is off the LAN, so "no double answers" holds by
    construction; what means something is that the client's ARP entry moved to n2's MAC and
    n1's frozen address never answered after n2's announcement."""
    announced = cluster.events("n2", "garp_sent", res.fault_at) or cluster.events(
        "n2", "vip_added", res.fault_at
    )
    assert announced, cluster.tail_logs()
    after = [s for s in samples if s.t_send >= announced[0].ts]
    assert after, res.render()
    assert cluster.lab.neigh("client", VIP) == cluster.lab.mac("n2")
    assert all(s.answer in ("n2", None) for s in after), res.render()
    assert not [s for s in after if cluster.lab.mac("n1") in s.arp_macs], res.render()


def _assert_nothing_moved(cluster: Cluster, res: Result) -> None:
    """For faults that must not move the VIP: n2 never took it, n1 kept it, no round lost."""
    assert not _became_active(cluster, "n2", res.fault_at), res.render()
    assert not cluster.events("n2", "vip_added", res.fault_at), res.render()
    assert not cluster.holds_vip("n2")
    assert cluster.holds_vip("n1")
    assert res.double_answers == 0, res.render()
    assert res.outage_ms == 0, res.render()
    assert res.moves == 0, res.render()
    assert res.owner == "n1", res.render()


# ---- the scenarios -----------------------------------------------------------------------------


def test_power_off_moves_the_vip_to_n2_and_failback_returns_it(tmp_path: Path) -> None:
    with _cluster(tmp_path) as cluster:
        res = power_off(cluster)
        _show(res)
        assert cluster.holds_vip("n2")
        assert cluster.state("n2") == "active"
        assert res.owner == "n2", res.render()
        samples = load_samples(cluster.dir / "client-power-off.jsonl")
        assert first_answer_from(samples, "n2", res.fault_at) is not None
        assert res.double_answers == 0, res.render()
        _assert_n1_silent_after_announcement(cluster, res, samples)

        back = failback(cluster, lambda: reboot_n1_after_power_off(cluster))
        _show(back)
        cluster.settle("n1")
        assert cluster.holds_vip("n1")
        assert not cluster.holds_vip("n2")
        assert back.owner == "n1", back.render()
        assert back.double_answers == 0, back.render()
        assert _transitions(cluster, "n2", back.fault_at, to="standby", reason="preempt")
        assert _transitions(cluster, "n1", back.fault_at, to="active", reason="peer_resigned")


def test_sigkill_of_the_active_daemon_moves_nothing(tmp_path: Path) -> None:
    with _cluster(tmp_path) as cluster:
        res = sigkill(cluster)
        _show(res)
        assert cluster.events("n2", "takeover_vetoed", res.fault_at), cluster.tail_logs()
        _assert_nothing_moved(cluster, res)
        # The restarted daemon finds the VIP still on its interface and carries on owning it.
        # Issue 9 part 4: the evidence is the new process's own lines, not the killed one's.
        cluster.settle("n1")
        mine = cluster.current_events("n1")
        assert mine and mine[0].name == "started", cluster.tail_logs()
        assert mine[0].ts >= res.fault_at
        assert [ev for ev in mine if ev.name == "transition" and ev.get("to") == "active"]
        assert cluster.owns("n1")
        assert cluster.state("n1") == "active"
        assert cluster.holds_vip("n1")
        assert cluster.state("n2") == "standby"
        assert not _became_active(cluster, "n2", res.fault_at)


def test_sigstop_of_the_active_daemon_moves_nothing(tmp_path: Path) -> None:
    """Issue 9 part 3: frozen longer than the dead time, then SIGCONT: the owner notices the
    freeze at its first timer (not 5 s later at reconcile), re-checks the LAN, keeps the VIP."""
    with _cluster(tmp_path) as cluster:
        res = sigstop(cluster)
        _show(res)
        _assert_nothing_moved(cluster, res)
        cluster.settle("n1")
        assert not _became_active(cluster, "n2", res.fault_at)
        healed = next(when for when, what in res.timeline if what == "fault healed")
        resumed = cluster.events("n1", "resumed", healed)
        assert resumed, cluster.tail_logs()
        assert resumed[0].ts - healed <= FREEZE_NOTICED_WITHIN_S * SCALE, cluster.tail_logs()
        probes = [
            ev for ev in cluster.events("n1", "probe", healed) if ev.get("purpose") == "conflict"
        ]
        assert probes, "the resumed owner must look at the LAN again"


def test_cut_heartbeat_is_vetoed_and_the_pair_reconnects(tmp_path: Path) -> None:
    with _cluster(tmp_path) as cluster:
        res = cut_heartbeat(cluster)
        _show(res)
        assert cluster.events("n2", "takeover_vetoed", res.fault_at), cluster.tail_logs()
        _assert_nothing_moved(cluster, res)
        healed = _healed_at(res)
        cluster.wait_event("n2", "peer_up", healed)
        cluster.settle("n1")
        assert cluster.state("n2") == "standby"
        assert not _became_active(cluster, "n2", res.fault_at)


def _handover(cluster: Cluster) -> Result:
    """SIGTERM on n1 and the checks every handover must pass."""
    res = sigterm_handover(cluster)
    _show(res)
    assert cluster.procs["n1"].returncode == 0, res.render()
    assert cluster.holds_vip("n2")
    assert not cluster.holds_vip("n1")
    took = _became_active(cluster, "n2", res.fault_at)
    assert [ev.get("reason") for ev in took] == ["peer_resigned"], cluster.tail_logs()
    assert res.double_answers == 0, res.render()
    return res


def test_sigterm_hands_the_vip_over(tmp_path: Path) -> None:
    with _cluster(tmp_path) as cluster:
        res = _handover(cluster)
        assert res.owner == "n2", res.render()
        print(f"SIGTERM handover: client-observed gap {res.outage_ms:.0f} ms")


def test_restarted_primary_preempts_after_handover(tmp_path: Path) -> None:
    with _cluster(tmp_path) as cluster:
        _handover(cluster)
        back = failback(cluster, lambda: (cluster.start("n1"), None)[1])
        _show(back)
        cluster.settle("n1")
        assert cluster.holds_vip("n1")
        assert not cluster.holds_vip("n2")
        assert _transitions(cluster, "n2", back.fault_at, to="standby", reason="preempt")
        assert _transitions(cluster, "n1", back.fault_at, to="active", reason="peer_resigned")
        assert back.double_answers == 0, back.render()


def test_restarted_primary_stays_standby_without_preempt(tmp_path: Path) -> None:
    with _cluster(tmp_path, preempt=False) as cluster:
        _handover(cluster)
        with cluster.client("no-preempt") as out:
            restarted = time.time()
            cluster.start("n1")
            cluster.settle("n2")
            # Long enough for a preemption (preempt_delay 1 s) to have happened if it would.
            time.sleep(3.0 * SCALE)
        samples = [s for s in load_samples(out) if s.t_send >= restarted]
        print(
            f"\nrestart of n1 without preempt: {len(samples)} client rounds, "
            f"max gap {max((o.duration_ms for o in outages(samples)), default=0.0):.0f} ms, "
            f"{double_answers(samples)} rounds with two MACs"
        )
        assert cluster.state("n1") == "standby"
        assert not _became_active(cluster, "n1", restarted)
        assert cluster.holds_vip("n2")
        assert not cluster.holds_vip("n1")
        assert cluster.state("n2") == "active"
        assert {s.answer for s in samples} <= {"n2", None}
        assert double_answers(samples) == 0


def test_l2_partition_gives_two_owners_until_healed(tmp_path: Path) -> None:
    """The documented limit: a partition looks like a power-off to each side.

    Two nodes cannot tell "the peer is dead" from "the peer is cut off", so both hold the VIP
    while the partition lasts. After the heal the first announcement that crosses settles it
    while the link is still down (the secondary yields to the primary's claim), or the higher
    epoch wins once the link is back; either way exactly one owner remains.
    """
    with _cluster(tmp_path) as cluster:
        cluster.settle("n1")
        with cluster.client("partition") as out:
            time.sleep(0.3)
            res = Result(
                name="layer-2 partition between n1 and n2, then heal", fault_at=time.time()
            )
            cluster.lab.partition_l2()
            res.mark(res.fault_at, "partition: n1 and n2 cannot see each other")
            cluster.wait_event("n2", "vip_added", res.fault_at)
            cluster.wait(
                "both n1 and n2 hold the VIP",
                lambda: cluster.holds_vip("n1") and cluster.holds_vip("n2"),
            )
            res.mark(time.time(), "both n1 and n2 hold the VIP")
            assert cluster.holds_vip("n1") and cluster.holds_vip("n2")
            time.sleep(0.5 * SCALE)
            healed = time.time()
            cluster.lab.heal_l2()
            res.mark(healed, "partition healed")
            owner: list[str] = []

            def one_owner() -> bool:
                found = _settled_owner(cluster)
                owner[:] = [found] if found else []
                return found is not None

            cluster.wait("exactly one node holds the VIP after the heal", one_owner, 15.0)
            res.mark(time.time(), f"one owner again: {owner[0]}")
            # Observe at least 2 s past the heal plus one more second of the settled pair.
            time.sleep(max(healed + 2.0 * SCALE - time.time(), 0.0) + 1.0)
            final = _settled_owner(cluster)

        samples = load_samples(out)
        for node in NODES:
            for ev in cluster.events(node, "peer_lost", res.fault_at)[:1]:
                res.mark(ev.ts, f"{node} lost its peer ({ev.get('reason')})")
            for ev in cluster.events(node, "vip_added", res.fault_at):
                res.mark(ev.ts, f"VIP added on {node} (epoch {ev.get('epoch')})")
            for ev in cluster.events(node, "vip_removed", res.fault_at):
                res.mark(ev.ts, f"VIP removed on {node} ({ev.get('reason')})")
        during = [s for s in samples if res.fault_at <= s.t_send < healed]
        after = [s for s in samples if s.t_send >= healed + 2.0 * SCALE]
        res.rounds = len(samples)
        res.double_answers = double_answers(after)
        res.owner = _arp_owner(cluster)
        res.notes.append(f"rounds with two MACs during the partition: {double_answers(during)}")
        res.notes.append(f"rounds checked from 2 s after the heal: {len(after)}")
        _show(res)

        took = _became_active(cluster, "n2", res.fault_at)
        assert took and took[0].get("reason") == "probe_silent", cluster.tail_logs()
        # Issue 9 part 2: while both held the VIP the client's detector saw two MACs.
        assert double_answers(during) > 0, res.render()
        assert int(took[0].get("epoch") or 0) > 0
        # One of them gave way once they saw each other again: to a claim (link still down) or to
        # the higher epoch (link back).
        gave_way = [
            tr
            for node in NODES
            for reason in ("conflict", "higher_epoch")
            for tr in _transitions(cluster, node, healed, to="standby", reason=reason)
        ]
        assert gave_way, cluster.tail_logs()
        assert final in NODES, res.render()
        assert res.owner == final, res.render()
        assert [cluster.holds_vip(n) for n in NODES].count(True) == 1
        assert after, res.render()
        assert res.double_answers == 0, res.render()


# A frozen daemon notices at its first timer after SIGCONT (a keepalive interval at most).
FREEZE_NOTICED_WITHIN_S = 0.5

# The default profile's dead time alone (320 ms) is beyond these; the fast one's is 50 ms.
FAST_DETECT_MAX_S = 0.2
FAST_TAKEOVER_MAX_S = 0.25


def test_fast_profile_power_off_moves_the_vip(tmp_path: Path) -> None:
    with _cluster(tmp_path, fast=True) as cluster:
        res = power_off(cluster)
        _show(res)
        assert cluster.holds_vip("n2")
        assert res.owner == "n2", res.render()
        assert res.double_answers == 0, res.render()
        # Issue 9 part 6: bounds only the fast profile can meet (scaled by the time factor).
        lost = cluster.events("n2", "peer_lost", res.fault_at)
        added = cluster.events("n2", "vip_added", res.fault_at)
        assert lost and lost[0].ts - res.fault_at <= FAST_DETECT_MAX_S * SCALE, res.render()
        assert added and added[0].ts - res.fault_at <= FAST_TAKEOVER_MAX_S * SCALE, res.render()


def test_two_percent_loss_moves_nothing(tmp_path: Path) -> None:
    hold = 10.0 * SCALE
    with _cluster(tmp_path) as cluster:
        cluster.settle("n1")
        with cluster.client("loss", duration=hold + 30.0) as out:
            res = Result(name="2 % frame loss on the LAN for 10 s", fault_at=time.time())
            cluster.lab.set_loss(2)
            res.mark(res.fault_at, "2 % loss on")
            time.sleep(hold)
            cluster.lab.clear_loss()
            res.mark(time.time(), "loss off")
            time.sleep(0.5)
        samples = [s for s in load_samples(out) if s.t_send >= res.fault_at]
        lost = {n: cluster.events(n, "peer_lost", res.fault_at) for n in NODES}
        for node in NODES:
            for ev in lost[node]:
                res.mark(ev.ts, f"{node} lost its peer ({ev.get('reason')})")
        res.rounds = len(samples)
        res.outage_ms = max((o.duration_ms for o in outages(samples)), default=0.0)
        res.double_answers = double_answers(samples)
        res.owner = _arp_owner(cluster)
        res.notes.append(f"rounds unanswered: {sum(s.answer is None for s in samples)}")
        res.notes.append(
            f"n2 takeover vetoes logged: {len(cluster.events('n2', 'takeover_vetoed'))}"
        )
        _show(res)
        assert not _became_active(cluster, "n2", res.fault_at), cluster.tail_logs()
        assert not cluster.events("n2", "vip_added", res.fault_at)
        assert cluster.holds_vip("n1")
        assert not cluster.holds_vip("n2")
        assert res.double_answers == 0, res.render()
        assert res.owner == "n1", res.render()
        cluster.settle("n1")


# ---- issue 5: every fault where the promise broke (required outcomes) --------------------------


def _holders(cluster: Cluster) -> list[str]:
    return [n for n in NODES if cluster.holds_vip(n)]


@pytest.mark.parametrize("hold", [1.0, 3.0], ids=["1s", "3s"])
@pytest.mark.parametrize("how", ["drop", "carrier"])
def test_isolated_standby_takes_nothing(tmp_path: Path, how: str, hold: float) -> None:
    """Case 1: a standby cut off the LAN hears no witness; it must not take the VIP."""
    with _cluster(tmp_path) as cluster:
        res = isolated_standby(cluster, how, hold)
        _show(res)
        _assert_nothing_moved(cluster, res)
        if how == "drop":
            assert cluster.events("n2", "isolated", res.fault_at), cluster.tail_logs()
        else:
            assert [
                ev
                for ev in cluster.events("n2", "eligibility", res.fault_at)
                if ev.get("eligible") == "false"
            ] or cluster.events("n2", "isolated", res.fault_at), cluster.tail_logs()
        # While it lasted, `havip status` and /metrics said why n2 would not take the VIP.
        assert res.measures["status_says_so"] == 1.0, res.render()
        assert res.measures["metrics_say_so"] == 1.0, res.render()
        cluster.settle("n1")


def _ineligible_in(status: object) -> bool:
    """Somewhere in status JSON: "eligible": false."""
    if isinstance(status, dict):
        return status.get("eligible") is False or any(_ineligible_in(v) for v in status.values())
    if isinstance(status, list):
        return any(_ineligible_in(v) for v in status)
    return False


def _metrics_say_ineligible(text: str) -> bool:
    from prometheus_client.parser import text_string_to_metric_families

    # havip_eligible is 1 while eligible (havip_ineligible_cause is a one-hot of the cause).
    return any(
        sample.name == "havip_eligible" and sample.value == 0
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


@pytest.mark.parametrize(("how", "cause"), [("admin", "link_down"), ("carrier", "no_carrier")])
def test_vip_link_loss_hands_over_and_dead_primary_is_not_preempted_back(
    tmp_path: Path, how: str, cause: str
) -> None:
    """Case 2: the active node's VIP link dies (heartbeat on eth1): it hands over; status and
    metrics say ineligible; a restart with the link still dead is not handed the VIP back."""
    with _cluster(tmp_path, heartbeat_net=True) as cluster:
        res = vip_link_loss(cluster, how)
        _show(res)
        assert cluster.owns("n2"), cluster.tail_logs()
        assert not cluster.holds_vip("n1") or not cluster.lab.carrier("n1")
        assert _transitions(cluster, "n1", res.fault_at, to="standby", reason="ineligible")
        assert [
            ev
            for ev in cluster.events("n1", "eligibility", res.fault_at)
            if ev.get("eligible") == "false" and ev.get("cause") == cause
        ], cluster.tail_logs()
        assert _ineligible_in(cluster.status("n1")), cluster.status("n1")
        assert _metrics_say_ineligible(cluster.metrics("n1"))
        assert res.two_owners_ms == 0, res.render()

        again = restart_with_dead_link(cluster)
        _show(again)
        assert again.measures["n1_active_while_dead"] == 0, again.render()
        restored = again.measures["link_restored_at"]
        assert not [ev for ev in _became_active(cluster, "n1", again.fault_at) if ev.ts < restored]
        assert again.outage_ms == 0, again.render()
        # Eligible again, the primary takes its VIP back (preempt on).
        cluster.settle("n1", timeout=20.0)


def _assert_conflict_resolved(cluster: Cluster, res: Result) -> None:
    assert res.two_owners_ms <= TWO_OWNERS_MAX_MS * SCALE, res.render()
    assert res.measures.get("final_owner_after_s", 99.0) <= FINAL_OWNER_WITHIN_S * SCALE, (
        res.render()
    )
    holders = _holders(cluster)
    assert len(holders) == 1, res.render()
    assert res.owner == holders[0], res.render()
    assert cluster.state(holders[0]) == "active"


def test_cut_heartbeat_plus_l2_blip_leaves_one_owner(tmp_path: Path) -> None:
    """Case 3a, with the operator part: a standby-turned-loser's VIP removed by hand stays gone."""
    with _cluster(tmp_path) as cluster:
        res = cut_heartbeat_and_blip(cluster)
        _show(res)
        _assert_conflict_resolved(cluster, res)
        owner = _holders(cluster)[0]
        loser = "n2" if owner == "n1" else "n1"
        # The daemon on the loser is entitled to nothing: remove the address by hand there
        # (put it there first, as a stale leftover would be) and it must not come back.
        cluster.lab.add_address(loser)
        manual = operator_removes_vip(cluster, loser)
        _show(manual)
        assert manual.measures["re_added"] == 0, manual.render()
        assert not cluster.holds_vip(loser)


@pytest.mark.parametrize(("src", "dst"), [("n2", "n1"), ("n1", "n2")])
def test_one_way_loss_leaves_one_owner_quickly(tmp_path: Path, src: str, dst: str) -> None:
    """Case 3b: 5 s of one-way loss each way: two owners at most 1 s, final owner at once.

    Preempt is off: with it on, the primary takes the VIP back by a planned handover a
    preempt_delay after the link returns, which is a second, deliberate move, not part of
    resolving the conflict (tests/test_failover_sim.py covers the preempt case).
    """
    with _cluster(tmp_path, preempt=False) as cluster:
        res = one_way_loss(cluster, src, dst)
        _show(res)
        _assert_conflict_resolved(cluster, res)


def test_partition_heal_announces_at_once(tmp_path: Path) -> None:
    """Case 4: after a layer-2 partition heals, the winner announces: outage <= 100 ms."""
    with _cluster(tmp_path) as cluster:
        res = partition_heal(cluster)
        _show(res)
        assert res.measures["outage_after_heal_ms"] <= HEAL_OUTAGE_MAX_MS * SCALE, res.render()
        assert len(_holders(cluster)) == 1, res.render()
        assert res.owner == _holders(cluster)[0], res.render()


def test_cold_start_during_partition_announces_at_heal(tmp_path: Path) -> None:
    """Case 4, cold start: both start while partitioned, both take; the heal leaves one owner
    that the client reaches within 100 ms."""
    with _cluster(tmp_path, start=False) as cluster:
        res = partition_heal(cluster, cold_start=True)
        _show(res)
        assert res.measures["outage_after_heal_ms"] <= HEAL_OUTAGE_MAX_MS * SCALE, res.render()
        assert len(_holders(cluster)) == 1, res.render()
        assert res.owner == _holders(cluster)[0], res.render()


def test_no_late_announcement_after_a_frozen_owner_releases(tmp_path: Path) -> None:
    """Case 5: n1 frozen 1.2 s after acquiring, n2 takes over, n1 resumes: n1 releases and
    sends nothing after; the client stays on n2 (preempt off)."""
    with _cluster(tmp_path, preempt=False, start=False) as cluster:
        res = frozen_after_acquiring(cluster)
        _show(res)
        assert res.measures["late_garps_from_n1"] == 0, res.render()
        assert cluster.owns("n2"), cluster.tail_logs()
        assert not cluster.holds_vip("n1")
        assert res.owner == "n2", res.render()
        samples = load_samples(cluster.dir / "client-frozen-after-acquiring.jsonl")
        late = [s for s in samples if s.t_send >= res.measures["resumed_at"] + 1.0]
        assert late and all(s.answer in ("n2", None) for s in late), res.render()
        assert late[-1].answer == "n2", res.render()


def test_restarted_active_secondary_keeps_the_vip(tmp_path: Path) -> None:
    """Case 6: preempt off, n2 active, its daemon SIGKILLed and restarted: no move."""
    with _cluster(tmp_path, preempt=False) as cluster:
        res = restart_active_secondary(cluster)
        _show(res)
        assert not _became_active(cluster, "n1", res.fault_at), cluster.tail_logs()
        assert not cluster.events("n2", "vip_removed", res.fault_at), cluster.tail_logs()
        # The restarted daemon itself reached "active" (its own lines, issue 9 part 4).
        assert cluster.owns("n2")
        assert res.moves == 0, res.render()
        assert res.outage_ms == 0, res.render()
        assert res.two_owners_ms == 0, res.render()
        assert res.owner == "n2", res.render()


def test_third_host_is_detected_and_never_released_to(tmp_path: Path) -> None:
    """Case 7: a rogue host answering for the VIP (and forging ARP) is detected within a
    second; n1 never releases to it, not even when the standby restarts."""
    with _cluster(tmp_path, rogue=True) as cluster:
        res = third_host(cluster)
        _show(res)
        assert res.measures.get("detected_after_s", 99.0) <= CONFLICT_DETECTED_WITHIN_S * SCALE, (
            res.render()
        )
        assert res.measures["forged_conflicts"] >= 1, res.render()
        assert res.measures["n1_released"] == 0, res.render()
        assert not _became_active(cluster, "n2", res.fault_at)
        cluster.settle("n1")
        assert cluster.owns("n1")


def test_primary_without_its_interface_does_not_loop(tmp_path: Path) -> None:
    """Case 8: the primary's VIP interface disappears: at most one move in 20 s, no preemption."""
    with _cluster(tmp_path, heartbeat_net=True) as cluster:
        res = primary_loses_interface(cluster)
        _show(res)
        assert res.moves <= 1, res.render()
        assert res.measures["n1_became_active"] == 0, res.render()
        assert res.measures["n2_became_active"] <= 1, res.render()
        assert cluster.owns("n2"), cluster.tail_logs()


def test_short_blips_move_nothing(tmp_path: Path) -> None:
    """Case 9: 8 carrier blips of 250 ms (shorter than the dead time) on n1: no move."""
    with _cluster(tmp_path) as cluster:
        res = blips(cluster, 0.25, 8)
        _show(res)
        assert res.measures["n2_became_active"] == 0, res.render()
        assert res.moves == 0, res.render()
        assert res.two_owners_ms == 0, res.render()
        cluster.settle("n1")


def test_longer_blips_move_at_most_once_each(tmp_path: Path) -> None:
    """Case 9: 500 ms blips (longer than the dead time): at most one failover each.

    Preemption (on here) then hands the VIP back to the primary once it has been eligible for
    preempt_delay: that planned handover is the failover's failback, so the client sees at most
    two owner changes per blip, never a flap within one.
    """
    times = 4
    with _cluster(tmp_path) as cluster:
        res = blips(cluster, 0.5, times, gap=2.0)
        _show(res)
        assert res.measures["n2_became_active"] <= times, res.render()
        assert res.moves <= 2 * times, res.render()
        assert len(_holders(cluster)) == 1, res.render()


def test_handshake_flood_does_not_lock_the_standby_out(tmp_path: Path) -> None:
    """Case 11: 64 silent TCP clients reconnecting on n1's port while n2 restarts: the
    configured peer gets in within about a second."""
    with _cluster(tmp_path) as cluster:
        res = handshake_flood(cluster)
        _show(res)
        took = res.measures.get("standby_in_after_s")
        assert took is not None, res.render()
        assert took <= STANDBY_IN_WITHIN_S * SCALE, res.render()
        assert cluster.owns("n1")
