"""Rise/fall hysteresis of one health check: every transition, and the invariants as properties."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from havip.core import health
from havip.core.health import CheckHealth, Health

U, F, D, R, N = Health.UP, Health.FALLING, Health.DOWN, Health.RISING, Health.UNKNOWN


def feed(h: CheckHealth, results: str) -> list[Health]:
    """Feed "+" (ok) and "-" (failed) results; the state after each."""
    out = []
    for c in results:
        h.record(c == "+")
        out.append(h.state)
    return out


def test_starts_unknown_and_not_passing() -> None:
    h = CheckHealth(rise=2, fall=3)
    assert (h.state, h.passing) == (N, False)
    assert (h.consecutive_failures, h.consecutive_successes) == (0, 0)


@pytest.mark.parametrize(("first", "state"), [(True, U), (False, D)])
@pytest.mark.parametrize(("rise", "fall"), [(1, 1), (3, 3), (5, 2)])
def test_first_result_decides_at_once(first: bool, state: Health, rise: int, fall: int) -> None:
    h = CheckHealth(rise=rise, fall=fall)
    assert h.record(first) is first  # passing changed only if it now passes
    assert h.state is state
    assert h.passing is first


@pytest.mark.parametrize(
    ("rise", "fall", "results", "states"),
    [
        # fall=3: two failures keep it passing (FALLING), the third takes it down.
        (2, 3, "+---", [U, F, F, D]),
        # one success in FALLING goes straight back to UP, and the count starts again.
        (2, 3, "+--+--", [U, F, F, U, F, F]),
        # rise=2 from DOWN: RISING, then UP.
        (2, 3, "-++", [D, R, U]),
        # one failure in RISING goes back to DOWN, and the count starts again.
        (3, 2, "-++-++", [D, R, R, D, R, R]),
        (3, 2, "-+++", [D, R, R, U]),
        # rise=fall=1: every result decides, no intermediate states.
        (1, 1, "+-+-", [U, D, U, D]),
        (1, 2, "+--+", [U, F, D, U]),
        (2, 1, "-+-++-", [D, R, D, R, U, D]),
        # more failures after DOWN keep it DOWN; more successes after UP keep it UP.
        (2, 2, "+--------++++", [U, F, D, D, D, D, D, D, D, R, U, U, U]),
    ],
)
def test_transitions(rise: int, fall: int, results: str, states: list[Health]) -> None:
    assert feed(CheckHealth(rise=rise, fall=fall), results) == states


def test_record_returns_whether_passing_changed() -> None:
    h = CheckHealth(rise=2, fall=2)
    assert [h.record(c == "+") for c in "+--+-++"] == [
        True,  # unknown -> up
        False,  # falling
        True,  # down
        False,  # rising
        False,  # down again
        False,  # rising
        True,  # up
    ]


def test_counters_count_the_current_run() -> None:
    h = CheckHealth(rise=2, fall=5)
    feed(h, "++--")
    assert (h.consecutive_successes, h.consecutive_failures) == (0, 2)
    feed(h, "+")
    assert (h.consecutive_successes, h.consecutive_failures) == (1, 0)


@pytest.mark.parametrize(("rise", "fall"), [(0, 1), (1, 0), (-1, 2), (0, 0)])
def test_rise_and_fall_must_be_at_least_one(rise: int, fall: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CheckHealth(rise=rise, fall=fall)


@given(
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    results=st.lists(st.booleans(), min_size=1, max_size=60),
)
def test_passing_changes_only_after_rise_or_fall_in_a_row(
    rise: int, fall: int, results: list[bool]
) -> None:
    h = CheckHealth(rise=rise, fall=fall)
    h.record(results[0])
    assert h.passing is results[0]  # the first result decides
    for i in range(1, len(results)):
        before = h.passing
        changed = h.record(results[i])
        assert changed is (h.passing != before)
        window_fail = results[max(0, i - fall + 1) : i + 1]
        window_ok = results[max(0, i - rise + 1) : i + 1]
        if changed and before:
            # Down only after `fall` failures in a row (the first result counts as one).
            assert len(window_fail) == fall and not any(window_fail)
        if changed and not before:
            assert len(window_ok) == rise and all(window_ok)
        # And always once they happened: fall failures in a row mean not passing, etc.
        if len(window_fail) == fall and not any(window_fail):
            assert not h.passing
        if len(window_ok) == rise and all(window_ok):
            assert h.passing


@given(
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    results=st.lists(st.booleans(), min_size=1, max_size=60),
)
def test_state_agrees_with_passing_and_counters(rise: int, fall: int, results: list[bool]) -> None:
    h = CheckHealth(rise=rise, fall=fall)
    for ok in results:
        h.record(ok)
        assert h.state is not N
        assert h.passing is (h.state in (U, F))
        assert (h.consecutive_successes > 0) is ok
        assert (h.consecutive_failures > 0) is (not ok)
        if h.state is F:
            assert 1 <= h.consecutive_failures < fall
        if h.state is R:
            assert 1 <= h.consecutive_successes < rise


def test_the_module_is_pure() -> None:
    # No I/O and no clock: it imports nothing but the standard enum machinery.
    tree = ast.parse(Path(health.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "enum"}
