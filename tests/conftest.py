"""Shared fixtures: the namespace-lab gate, the time scale and a ready-made lab."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping

import pytest

from havip.lab.netns import Lab

# The spellings CI systems and people use for "yes"; anything else (unset, 0, false) is no.
TRUTHY = frozenset({"1", "true", "yes", "on"})
# Set to a reason to make the lab unavailable: lets a test prove the CI gate fails loudly.
FORCE_NO_NETNS = "HAVIP_TEST_NO_NETNS"


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the CI variable says yes (true, 1, yes, on, in any case)."""
    return environ.get("CI", "").strip().lower() in TRUTHY


@functools.cache
def _netns_unavailable() -> str | None:
    forced = os.environ.get(FORCE_NO_NETNS)
    if forced:
        return f"{FORCE_NO_NETNS}={forced}"
    return Lab.available()


def require_netns() -> None:
    """Return if namespace tests can run here; else fail under CI and skip elsewhere.

    CI must run the namespace tests: there a lab that cannot start is a failure, never a
    silent skip."""
    reason = _netns_unavailable()
    if reason is None:
        return
    message = f"network-namespace test cannot run: {reason}"
    if in_ci():
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
