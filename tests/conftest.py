"""Shared fixtures: the namespace-lab gate, the time scale and a ready-made lab."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest

from havip.lab.netns import Lab


@functools.cache
def _netns_unavailable() -> str | None:
    return Lab.available()


def require_netns() -> None:
    """Return if namespace tests can run here; else fail in CI (CI=true) and skip elsewhere."""
    reason = _netns_unavailable()
    if reason is None:
        return
    message = f"network-namespace test cannot run: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _gate_netns_tests(request: pytest.FixtureRequest) -> None:
    # Every @pytest.mark.netns test gets the gate, even if it forgets to call it.
    if request.node.get_closest_marker("netns") is not None:
        require_netns()


@pytest.fixture
def time_scale() -> float:
    """Multiplier for test timeouts (HAVIP_TEST_TIME_SCALE, default 1)."""
    return float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A freshly built namespace lab, destroyed afterwards (needs the netns gate)."""
    require_netns()
    with Lab() as built:
        yield built
