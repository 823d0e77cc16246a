"""End to end over IPv6: real `havip run` daemons in the namespace lab with an IPv6 VIP (and
one IPv4 plus one IPv6 VIP moving together), faults injected, the client probing over IPv6.

As in test_e2e: what a user on the LAN sees is checked (who answers, whose MAC the client's
neighbour entry names, that two MACs never answered a neighbour solicitation for the VIP in the
same round); outage numbers are printed, never asserted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_e2e import _became_active, _cluster, _show

from havip.lab.client import Sample, first_answer_from, load_samples
from havip.lab.netns import VIP6, VIP6_CIDR, VIP_CIDR
from havip.lab.scenario import (
    Cluster,
    Result,
    operator_handover,
    power_off,
    sigkill,
)

pytestmark = pytest.mark.netns

BOTH = (VIP_CIDR, VIP6_CIDR)


@contextmanager
def _v6_cluster(tmp_path: Path, vips: Sequence[str], *, preempt: bool = True) -> Iterator[Cluster]:
    """test_e2e's cluster (and its proof that nothing is left behind) with these VIPs."""
    with _cluster(tmp_path, vips=vips, preempt=preempt) as cluster:
        assert cluster.client_vip == VIP6  # the client probes over IPv6 in every test here
        yield cluster


def _nd_answers(cluster: Cluster, samples: list[Sample], node: str, *, since: float) -> int:
    """Rounds since `since` in which `node`'s MAC answered the client's IPv6 solicitation:
    proof the probe works, without which "never two MACs" would prove nothing."""
    mac = cluster.lab.mac(node)
    return sum(1 for s in samples if s.t_send >= since and mac in s.arp_macs)


def _assert_moved_to_n2(cluster: Cluster, res: Result, name: str) -> None:
    assert cluster.holds_vip("n2"), cluster.tail_logs()  # every VIP of the pair, together
    assert cluster.state("n2") == "active"
    assert res.owner == "n2", res.render()  # the client's IPv6 neighbour entry moved
    assert res.double_answers == 0, res.render()
    samples = load_samples(cluster.dir / f"client-{name}.jsonl")
    assert first_answer_from(samples, "n2", res.fault_at) is not None
    assert _nd_answers(cluster, samples, "n1", since=0.0) > 0, res.render()
    added = cluster.events("n2", "vip_added", res.fault_at)
    assert added, cluster.tail_logs()
    assert _nd_answers(cluster, samples, "n2", since=added[0].ts) > 0, res.render()
    # n1 was powered off: after n2's announcement only n2 answers.
    after = [s for s in samples if s.t_send >= added[-1].ts + 0.05]
    assert after and all(s.answer in ("n2", None) for s in after), res.render()
    assert not [s for s in after if cluster.lab.mac("n1") in s.arp_macs], res.render()


def _assert_nothing_moved(cluster: Cluster, res: Result) -> None:
    assert cluster.events("n2", "takeover_vetoed", res.fault_at), cluster.tail_logs()
    assert not _became_active(cluster, "n2", res.fault_at), res.render()
    assert not cluster.events("n2", "vip_added", res.fault_at), res.render()
    assert not cluster.holds_any_vip("n2")
    assert cluster.holds_vip("n1")
    assert res.double_answers == 0, res.render()
    assert res.outage_ms == 0, res.render()
    assert res.moves == 0, res.render()
    assert res.owner == "n1", res.render()
    samples = load_samples(cluster.dir / "client-SIGKILL.jsonl")
    assert _nd_answers(cluster, samples, "n1", since=res.fault_at) > 0, res.render()
    cluster.settle("n1")
    assert cluster.owns("n1")


def test_ipv6_power_off_moves_the_vip_to_n2(tmp_path: Path) -> None:
    with _v6_cluster(tmp_path, [VIP6_CIDR]) as cluster:
        res = power_off(cluster)
        _show(res)
        _assert_moved_to_n2(cluster, res, "power-off")


def test_ipv6_sigkill_of_the_active_daemon_moves_nothing(tmp_path: Path) -> None:
    # n2's takeover is vetoed by its DAD-style probe: n1's kernel still answers for the VIP.
    with _v6_cluster(tmp_path, [VIP6_CIDR]) as cluster:
        res = sigkill(cluster)
        _show(res)
        _assert_nothing_moved(cluster, res)


def test_ipv4_and_ipv6_vips_move_together_on_power_off(tmp_path: Path) -> None:
    with _v6_cluster(tmp_path, BOTH) as cluster:
        cluster.settle("n1")
        assert cluster.held_vips("n1") == [True, True]
        res = power_off(cluster)
        _show(res)
        _assert_moved_to_n2(cluster, res, "power-off")
        assert cluster.held_vips("n2") == [True, True]
        added = {ev.get("vip") for ev in cluster.events("n2", "vip_added", res.fault_at)}
        assert added == {VIP_CIDR, VIP6_CIDR}, cluster.tail_logs()  # one line per VIP


def test_ipv4_and_ipv6_vips_stay_together_on_sigkill(tmp_path: Path) -> None:
    with _v6_cluster(tmp_path, BOTH) as cluster:
        res = sigkill(cluster)
        _show(res)
        _assert_nothing_moved(cluster, res)
        assert cluster.held_vips("n1") == [True, True]
        assert cluster.held_vips("n2") == [False, False]


def test_havip_handover_moves_ipv4_and_ipv6_vips_together_with_no_double_answer(
    tmp_path: Path,
) -> None:
    """Issue 6: handover over IPv6 (with an IPv4 VIP in the same group): remove, RESIGN, the
    peer adds and announces; the client's IPv6 probe never sees two MACs."""
    with _v6_cluster(tmp_path, BOTH, preempt=False) as cluster:
        res = operator_handover(cluster)
        _show(res)
        assert not res.notes, res.render()  # `havip handover` exited 0
        assert cluster.held_vips("n2") == [True, True]
        assert cluster.held_vips("n1") == [False, False]
        assert res.owner == "n2" and res.double_answers == 0, res.render()
        assert res.moves == 1, res.render()
        samples = load_samples(cluster.dir / "client-handover.jsonl")
        added = cluster.events("n2", "vip_added", res.fault_at)
        assert {ev.get("vip") for ev in added} == {VIP_CIDR, VIP6_CIDR}, cluster.tail_logs()
        assert _nd_answers(cluster, samples, "n1", since=0.0) > 0, res.render()
        assert _nd_answers(cluster, samples, "n2", since=added[0].ts) > 0, res.render()
        assert [ev.get("reason") for ev in _became_active(cluster, "n2", res.fault_at)] == [
            "peer_resigned"
        ]
