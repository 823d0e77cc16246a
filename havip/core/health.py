"""Rise/fall hysteresis for one health check (pure: results in, state out).

The first result decides at once (a node starts quickly and never waits `rise` intervals at
boot). After that, `fall` failures in a row take a passing check down and `rise` successes in
a row bring a failing one back up; the explicit FALLING and RISING states show a check on its
way, and one opposite result sends it back where it was. A single bad run therefore never
moves the VIP, and a flapping service never brings it back.
"""

from __future__ import annotations

from enum import StrEnum


class Health(StrEnum):
    """Where one check stands (status, logs)."""

    UNKNOWN = "unknown"  # no result yet: not passing
    UP = "up"
    FALLING = "falling"  # passing, but failed 1..fall-1 times in a row
    DOWN = "down"
    RISING = "rising"  # failing, but succeeded 1..rise-1 times in a row


PASSING = frozenset({Health.UP, Health.FALLING})


class CheckHealth:
    """The hysteresis of one check: feed it each result with `record`."""

    def __init__(self, *, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1 (got rise={rise}, fall={fall})")
        self.rise = rise
        self.fall = fall
        self.state = Health.UNKNOWN
        self.consecutive_failures = 0
        self.consecutive_successes = 0

    @property
    def passing(self) -> bool:
        return self.state in PASSING

    def record(self, ok: bool) -> bool:
        """Take one result; return whether `passing` changed."""
        before = self.passing
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
        self.state = self._next(ok)
        return self.passing != before

    def _next(self, ok: bool) -> Health:
        if self.state is Health.UNKNOWN:
            return Health.UP if ok else Health.DOWN
        if self.passing:
            if ok:
                return Health.UP
            return Health.DOWN if self.consecutive_failures >= self.fall else Health.FALLING
        if not ok:
            return Health.DOWN
        return Health.UP if self.consecutive_successes >= self.rise else Health.RISING
