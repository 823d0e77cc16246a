"""Dependency floors: the pins match pyproject.toml; our calls work on the installed versions.

`make test-min` runs this file (with the rest) on the oldest allowed versions, so each
check here holds at both ends of every range.
"""

from __future__ import annotations

import asyncio
import random
import re
import tomllib
from pathlib import Path

import pytest
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from havip.shell.peerlink import backoff

REPO = Path(__file__).resolve().parent.parent
MINIMUM = REPO / "constraints" / "minimum.txt"


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    floors: dict[str, str] = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)(\s*;.*)?", spec)
        assert match, f"pyproject.toml: {spec!r} has no plain >= floor"
        floors[match[1].lower()] = match[2]
    return floors


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in MINIMUM.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{MINIMUM}: {line!r} is not NAME==VERSION"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_floor_is_pinned_in_the_minimum_constraints() -> None:
    assert _pins() == _floors()


@pytest.mark.parametrize("seed", range(20))
def test_reconnect_backoff_doubles_from_the_first_wait_up_to_the_cap(seed: int) -> None:
    """The standby's reconnect wait (havip.shell.peerlink.backoff), fed to tenacity as a plain
    callable: no tenacity wait helper whose parameter names differ between allowed versions."""
    random.seed(seed)
    keepalive, cap = 0.15, 0.5
    for n in range(6):
        wait = backoff(n + 1, first=keepalive, cap=cap, jitter=keepalive)
        base = keepalive * 2**n
        assert min(base, cap) <= wait <= min(base + keepalive, cap), (n, wait)


def test_tenacity_takes_the_wait_as_a_plain_callable() -> None:
    """The one tenacity API the dial loop relies on, on whatever version is installed."""
    waits: list[int] = []

    def wait(state: RetryCallState) -> float:
        waits.append(state.attempt_number)
        return 0.0

    async def go() -> None:
        async for attempt in AsyncRetrying(
            wait=wait,
            retry=retry_if_exception_type(OSError),
            stop=stop_after_attempt(3),
            reraise=True,
        ):
            with attempt:
                raise OSError("unreachable")

    with pytest.raises(OSError):
        asyncio.run(go())
    assert waits[:2] == [1, 2]  # (some versions also ask for the wait after the last try)
