"""Eligibility: debounce, immediate recovery, cause priority, witness misses, next_change."""

from __future__ import annotations

import itertools

import pytest

from havip.core.eligibility import Eligibility, LinkState
from havip.core.states import Cause

GOOD = LinkState(exists=True, up=True, carrier=True)
NO_CARRIER = LinkState(exists=True, up=True, carrier=False)
DOWN = LinkState(exists=True, up=False, carrier=False)
GONE = LinkState(exists=False, up=False, carrier=False)


def _ready(*interfaces: str, debounce: float = 0.3, witnesses: bool = False) -> Eligibility:
    elig = Eligibility(interfaces or ("eth0",), debounce=debounce, witnesses=witnesses, now=0.0)
    for interface in interfaces or ("eth0",):
        elig.link(interface, GOOD, 0.0)
    return elig


def test_unknown_links_are_not_eligible_until_reported() -> None:
    elig = Eligibility(["eth0", "eth1"], debounce=0.3, witnesses=False, now=0.0)
    assert elig.evaluate(0.0) == (False, Cause.NO_INTERFACE)
    assert elig.next_change() is None  # only a report can change it
    elig.link("eth0", GOOD, 0.1)
    assert elig.evaluate(0.1) == (False, Cause.NO_INTERFACE)
    elig.link("eth1", GOOD, 0.2)
    assert elig.evaluate(0.2) == (True, Cause.OK)


@pytest.mark.parametrize(
    ("state", "cause"),
    [(NO_CARRIER, Cause.NO_CARRIER), (DOWN, Cause.LINK_DOWN), (GONE, Cause.NO_INTERFACE)],
)
def test_first_report_bad_counts_at_once(state: LinkState, cause: Cause) -> None:
    # A link that was never good has nothing to debounce.
    elig = Eligibility(["eth0"], debounce=0.3, witnesses=False, now=0.0)
    elig.link("eth0", state, 0.0)
    assert elig.evaluate(0.0) == (False, cause)


@pytest.mark.parametrize(
    ("state", "cause"),
    [(NO_CARRIER, Cause.NO_CARRIER), (DOWN, Cause.LINK_DOWN), (GONE, Cause.NO_INTERFACE)],
)
def test_debounce_then_ineligible(state: LinkState, cause: Cause) -> None:
    elig = _ready("eth0")
    elig.link("eth0", state, 1.0)
    assert elig.evaluate(1.0) == (True, Cause.OK)
    assert elig.next_change() == pytest.approx(1.3)
    assert elig.evaluate(1.2999) == (True, Cause.OK)
    assert elig.evaluate(1.3) == (False, cause)
    assert elig.next_change() is None
    assert elig.evaluate(50.0) == (False, cause)


def test_blip_shorter_than_debounce_changes_nothing() -> None:
    elig = _ready("eth0")
    for start in (1.0, 2.0, 3.0):
        elig.link("eth0", NO_CARRIER, start)
        assert elig.evaluate(start + 0.25) == (True, Cause.OK)
        elig.link("eth0", GOOD, start + 0.29)
        assert elig.next_change() is None
        assert elig.evaluate(start + 0.5) == (True, Cause.OK)


def test_recovery_is_immediate() -> None:
    elig = _ready("eth0")
    elig.link("eth0", DOWN, 1.0)
    assert elig.evaluate(5.0) == (False, Cause.LINK_DOWN)
    elig.link("eth0", GOOD, 5.0)
    assert elig.evaluate(5.0) == (True, Cause.OK)
    # A new failure waits a full debounce again, from its own start.
    elig.link("eth0", DOWN, 6.0)
    assert elig.evaluate(6.2) == (True, Cause.OK)
    assert elig.evaluate(6.3) == (False, Cause.LINK_DOWN)


def test_debounce_runs_from_first_bad_moment_across_causes() -> None:
    elig = _ready("eth0")
    elig.link("eth0", NO_CARRIER, 1.0)
    elig.link("eth0", DOWN, 1.2)  # worse, but the link has been bad since 1.0
    assert elig.next_change() == pytest.approx(1.3)
    assert elig.evaluate(1.3) == (False, Cause.LINK_DOWN)
    elig.link("eth0", NO_CARRIER, 1.4)  # admin up again, carrier still missing
    assert elig.evaluate(1.4) == (False, Cause.NO_CARRIER)


def test_repeated_bad_reports_do_not_restart_the_debounce() -> None:
    elig = _ready("eth0")
    elig.link("eth0", NO_CARRIER, 1.0)
    elig.link("eth0", NO_CARRIER, 1.2)
    assert elig.evaluate(1.3) == (False, Cause.NO_CARRIER)


def test_zero_debounce() -> None:
    elig = _ready("eth0", debounce=0.0)
    elig.link("eth0", NO_CARRIER, 1.0)
    assert elig.evaluate(1.0) == (False, Cause.NO_CARRIER)
    assert elig.next_change() is None


def test_witness_misses() -> None:
    elig = _ready("eth0", witnesses=True)
    assert elig.evaluate(0.0) == (True, Cause.OK)  # no check done yet: not held against us
    elig.witness(False, 1.0)
    assert elig.evaluate(1.0) == (True, Cause.OK)  # one miss is a lost frame
    elig.witness(True, 2.0)
    elig.witness(False, 3.0)
    assert elig.evaluate(3.0) == (True, Cause.OK)  # the answer in between reset the count
    elig.witness(False, 4.0)
    assert elig.evaluate(4.0) == (False, Cause.NO_WITNESS)
    assert elig.next_change() is None
    elig.witness(False, 5.0)
    assert elig.evaluate(5.0) == (False, Cause.NO_WITNESS)
    elig.witness(True, 6.0)
    assert elig.evaluate(6.0) == (True, Cause.OK)  # one answer restores at once


def test_witness_misses_configurable() -> None:
    elig = Eligibility(["eth0"], debounce=0.3, witness_misses=1, witnesses=True, now=0.0)
    elig.link("eth0", GOOD, 0.0)
    elig.witness(False, 1.0)
    assert elig.evaluate(1.0) == (False, Cause.NO_WITNESS)


def test_witness_results_ignored_without_witnesses() -> None:
    elig = _ready("eth0", witnesses=False)
    for t in range(5):
        elig.witness(False, float(t))
    assert elig.evaluate(5.0) == (True, Cause.OK)


ORDER = [Cause.NO_INTERFACE, Cause.LINK_DOWN, Cause.NO_CARRIER, Cause.NO_WITNESS]
STATE_FOR = {Cause.NO_INTERFACE: GONE, Cause.LINK_DOWN: DOWN, Cause.NO_CARRIER: NO_CARRIER}


@pytest.mark.parametrize(
    "causes", [c for n in (1, 2, 3, 4) for c in itertools.combinations(ORDER, n)]
)
def test_cause_priority(causes: tuple[Cause, ...]) -> None:
    # One interface per link cause, plus the witness: the most urgent cause is reported.
    links = [c for c in causes if c is not Cause.NO_WITNESS]
    names = [f"if{i}" for i in range(len(links))] + ["spare"]
    elig = _ready(*names, witnesses=True)
    for name, cause in zip(names, links, strict=False):
        elig.link(name, STATE_FOR[cause], 1.0)
    if Cause.NO_WITNESS in causes:
        elig.witness(False, 1.0)
        elig.witness(False, 1.1)
    want = min(causes, key=ORDER.index)
    assert elig.evaluate(2.0) == (False, want)
    # Before the links' debounce, only the witness can count.
    before = (False, Cause.NO_WITNESS) if Cause.NO_WITNESS in causes else (True, Cause.OK)
    assert elig.evaluate(1.2) == before


def test_next_change_is_earliest_pending_debounce() -> None:
    elig = _ready("a", "b", "c")
    elig.link("a", DOWN, 1.0)
    elig.link("b", NO_CARRIER, 1.1)
    assert elig.next_change() == pytest.approx(1.3)
    assert elig.evaluate(1.3) == (False, Cause.LINK_DOWN)
    assert elig.next_change() == pytest.approx(1.4)  # b's debounce still to end
    elig.link("b", GOOD, 1.35)
    assert elig.next_change() is None


def test_unknown_interface_and_bad_arguments() -> None:
    elig = _ready("eth0")
    with pytest.raises(ValueError, match="'eth9' is not a VIP interface"):
        elig.link("eth9", GOOD, 0.0)
    with pytest.raises(ValueError, match="at least one VIP interface"):
        Eligibility([], debounce=0.3, witnesses=False, now=0.0)
    with pytest.raises(ValueError, match="debounce"):
        Eligibility(["eth0"], debounce=-1.0, witnesses=False, now=0.0)
    with pytest.raises(ValueError, match="witness_misses"):
        Eligibility(["eth0"], debounce=0.3, witness_misses=0, witnesses=False, now=0.0)
    assert elig.link_state("eth0") == GOOD


def test_link_state_causes() -> None:
    assert GOOD.cause is Cause.OK
    assert NO_CARRIER.cause is Cause.NO_CARRIER
    assert DOWN.cause is Cause.LINK_DOWN
    assert GONE.cause is Cause.NO_INTERFACE
    # up without existing cannot be, but must not read as usable either
    assert LinkState(exists=False, up=True, carrier=True).cause is Cause.NO_INTERFACE


# ---- health checks and maintenance (issue 6) -----------------------------------------------------


def _healthy() -> Eligibility:
    e = Eligibility(["eth0"], debounce=0.3, witnesses=False, now=0.0)
    e.link("eth0", LinkState(exists=True, up=True, carrier=True), 0.0)
    return e


def test_failing_checks_and_maintenance_make_a_node_ineligible_at_once() -> None:
    e = _healthy()
    assert e.evaluate(1.0) == (True, Cause.OK)
    e.checks(False)
    assert e.evaluate(1.0) == (False, Cause.CHECK_FAILED)  # no debounce: rise/fall did that
    e.maintenance(True)
    assert e.evaluate(1.0) == (False, Cause.CHECK_FAILED)  # the problem to fix is named first
    e.checks(True)
    assert e.evaluate(1.0) == (False, Cause.MAINTENANCE)
    e.maintenance(False)
    assert e.evaluate(1.0) == (True, Cause.OK)
    assert e.next_change() is None


def test_a_broken_link_is_named_before_a_failing_check() -> None:
    e = _healthy()
    e.checks(False)
    e.link("eth0", LinkState(exists=True, up=True, carrier=False), 2.0)
    assert e.evaluate(2.5) == (False, Cause.NO_CARRIER)
