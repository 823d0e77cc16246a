"""Whether this node may hold the VIP: its VIP links work, it can hear the LAN, its health
checks pass and the operator has not drained it.

Pure: no I/O and no clock. The shell feeds link states (from netlink events), the result of
each periodic witness check, the health checks' verdict (already rise/fall-filtered) and the
maintenance switch, with the time, and asks `evaluate(now)`; `next_change()` says when the answer
may change with no new input, so the shell arms one timer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from havip.core.states import Cause


class LinkState(NamedTuple):
    """One interface's link as the kernel reports it."""

    exists: bool
    up: bool  # IFF_UP: the administrator set it up
    carrier: bool  # IFF_LOWER_UP: the driver sees a working link

    @property
    def cause(self) -> Cause:
        """Why this link cannot carry the VIP, or OK."""
        if not self.exists:
            return Cause.NO_INTERFACE
        if not self.up:
            return Cause.LINK_DOWN
        if not self.carrier:
            return Cause.NO_CARRIER
        return Cause.OK


# Which cause to report when several hold at once: the one an operator must fix first.
# Maintenance comes last: the operator knows about it, a broken link may be news.
_PRIORITY = (
    Cause.NO_INTERFACE,
    Cause.LINK_DOWN,
    Cause.NO_CARRIER,
    Cause.NO_WITNESS,
    Cause.CHECK_FAILED,
    Cause.MAINTENANCE,
)


class Eligibility:
    """Whether this node may hold the VIP: every VIP interface exists, is up and has carrier,
    and (when witnesses are configured) a witness answered recently. Debounced so that a blip
    shorter than `debounce` changes nothing; recovery is immediate.

    An interface nobody has reported yet counts as missing, with no debounce: a node is never
    eligible before it knows its links. A link that was never good is bad at once when
    reported; only a good link that goes bad waits `debounce` seconds. The witness makes the
    node ineligible after `witness_misses` consecutive failed checks; one answer restores it.
    """

    def __init__(
        self,
        interfaces: Sequence[str],
        *,
        debounce: float,
        witness_misses: int = 2,
        witnesses: bool,
        now: float,
    ) -> None:
        if not interfaces:
            raise ValueError("eligibility: at least one VIP interface is needed")
        if not debounce >= 0 or math.isinf(debounce):
            raise ValueError(f"eligibility: debounce must be a finite number >= 0, got {debounce}")
        if witness_misses < 1:
            raise ValueError(
                f"eligibility: witness_misses must be at least 1, got {witness_misses}"
            )
        self.debounce = debounce
        self.witness_misses = witness_misses
        self.witnesses = witnesses
        self._state: dict[str, LinkState | None] = dict.fromkeys(interfaces)
        # When each interface went bad; -inf when it was never good (no debounce then).
        self._bad_since: dict[str, float | None] = dict.fromkeys(interfaces, -math.inf)
        self._misses = 0
        self._checks_ok = True
        self._maintenance = False
        self._now = now

    def _see(self, now: float) -> None:
        self._now = max(self._now, now)

    def link(self, interface: str, state: LinkState, now: float) -> None:
        """One link report (an event or a query result); repeats are harmless."""
        if interface not in self._state:
            raise ValueError(f"eligibility: {interface!r} is not a VIP interface")
        self._see(now)
        self._state[interface] = state
        if state.cause is Cause.OK:
            self._bad_since[interface] = None
        elif self._bad_since[interface] is None:
            self._bad_since[interface] = now

    def witness(self, heard: bool, now: float) -> None:
        """One periodic check's result: did a witness answer?"""
        self._see(now)
        self._misses = 0 if heard else self._misses + 1

    def checks(self, passing: bool) -> None:
        """The health checks' verdict: all pass (or none configured), or not."""
        self._checks_ok = passing

    def maintenance(self, on: bool) -> None:
        """The operator's switch: while on, this node must not hold the VIP."""
        self._maintenance = on

    def link_state(self, interface: str) -> LinkState | None:
        """The last state reported for `interface`, None if none yet."""
        return self._state[interface]

    def evaluate(self, now: float) -> tuple[bool, Cause]:
        """(eligible, cause): cause is OK when eligible, else the most urgent reason."""
        self._see(now)
        causes: set[Cause] = set()
        for interface, state in self._state.items():
            since = self._bad_since[interface]
            if since is None or now < since + self.debounce:  # as next_change() computes it
                continue
            causes.add(Cause.NO_INTERFACE if state is None else state.cause)
        if self.witnesses and self._misses >= self.witness_misses:
            causes.add(Cause.NO_WITNESS)
        if not self._checks_ok:
            causes.add(Cause.CHECK_FAILED)
        if self._maintenance:
            causes.add(Cause.MAINTENANCE)
        for cause in _PRIORITY:
            if cause in causes:
                return False, cause
        return True, Cause.OK

    def next_change(self) -> float | None:
        """When evaluate() may change by time alone: the earliest debounce that ends after the
        latest time given to this object; None when only new input can change it."""
        ends = [
            since + self.debounce
            for since in self._bad_since.values()
            if since is not None and since + self.debounce > self._now
        ]
        return min(ends, default=None)
