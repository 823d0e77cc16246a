"""The CI gate: under CI a namespace test that cannot run fails; elsewhere it skips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# A real @pytest.mark.netns test, cheap when it does run.
GATED = "tests/test_config.py::test_interface_lookups_in_a_namespace"


FORCE_NO_NETNS = "HAVIP_TEST_NO_NETNS"


@pytest.fixture
def conftest(request: pytest.FixtureRequest) -> Any:
    """tests/conftest.py as pytest loaded it (importing it again would make a second copy)."""
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == str(REPO / "tests" / "conftest.py"):
            return plugin
    pytest.fail("tests/conftest.py is not loaded")


def test_the_force_variable_is_the_one_conftest_reads(conftest: Any) -> None:
    assert conftest.FORCE_NO_NETNS == FORCE_NO_NETNS


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "yes", "Yes", "on", " ON "])
def test_truthy_spellings_mean_ci(conftest: Any, value: str) -> None:
    assert conftest.in_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "nope"])
def test_other_values_do_not(conftest: Any, value: str) -> None:
    assert not conftest.in_ci({"CI": value})


def test_unset_is_not_ci(conftest: Any) -> None:
    assert not conftest.in_ci({})


def _run_gated(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env[FORCE_NO_NETNS] = "lab made unavailable by test_ci_gate"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", GATED],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("ci", ["1", "True"])
def test_gated_test_fails_under_ci_when_the_lab_cannot_run(ci: str) -> None:
    out = _run_gated(ci)
    # The gate fails inside a fixture, which pytest reports as an error: red either way.
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"\b1 (failed|error)\b", out.stdout) and "skipped" not in out.stdout
    assert "network-namespace test cannot run: HAVIP_TEST_NO_NETNS=" in out.stdout


def test_gated_test_skips_outside_ci() -> None:
    out = _run_gated(None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "failed" not in out.stdout
