"""What the failover machine hears (events) and what it decides (actions), and its timing.

Frozen keyword-only dataclasses, no behaviour: the shell builds events from the world and
carries out the actions in order; `havip.core.failover` holds the machine that maps one to the
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from havip.core.session import PeerStatus
from havip.core.states import Cause, LinkDown, Reason, State

# ---- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Start:
    """The daemon started; `present` says whether the VIP is already on our interface.

    `epoch_known` is False when the stored epoch was unreadable: then a present VIP is never
    resumed on its own say-so; the node learns the epoch from the peer and probes first.
    """

    present: bool
    epoch_known: bool = True


@dataclass(frozen=True, kw_only=True)
class PeerUp:
    """An authenticated connection to the peer and its HELLO (with its VIP MAC, if it knew it)."""

    status: PeerStatus
    mac: str | None


@dataclass(frozen=True, kw_only=True)
class PeerInfo:
    """A keepalive from the peer."""

    status: PeerStatus


@dataclass(frozen=True, kw_only=True)
class PeerDown:
    """The failure signal: the connection dropped or the keepalive deadline passed."""

    reason: LinkDown


@dataclass(frozen=True, kw_only=True)
class PeerResigned:
    """The peer removed the VIP and hands it over."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class LocalHealth:
    """This node's eligibility changed (already debounced by the shell). Eligible until told."""

    eligible: bool
    cause: Cause


@dataclass(frozen=True, kw_only=True)
class ProbeDone:
    """Result of a Probe action.

    `answered_by`: the MAC that answered for the VIP, or None for silence. `witness`: True when a
    witness answered in this same round, False when witnesses are configured and none answered,
    None when no witnesses are configured (silence alone decides). `error`: the probe could not
    be done at all (answered_by is then None); never a backend fault. `rival`: what answered was
    another host's probe for the VIP (RFC 5227 simultaneous probe), not a claim to hold it.
    """

    probe_id: int
    answered_by: str | None
    witness: bool | None
    error: str | None = None
    rival: bool = False


@dataclass(frozen=True, kw_only=True)
class Claimed:
    """A frame from another MAC claimed one of our VIPs on the LAN (gratuitous ARP, ARP reply, or
    a request whose sender IP is the VIP). The machine tells the peer's MAC from others."""

    mac: str


@dataclass(frozen=True, kw_only=True)
class Acquired:
    """The shell confirmed the VIP is up and announced for `epoch` (ends the fault backoff)."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class BackendFailed:
    op: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Shutdown:
    """SIGTERM/SIGINT: hand over deliberately and stop."""


@dataclass(frozen=True, kw_only=True)
class Resumed:
    """The shell noticed this process did not run for longer than the dead time (frozen,
    suspended): whatever happened meanwhile, an active node must look at the LAN again."""


@dataclass(frozen=True, kw_only=True)
class Handover:
    """The operator asked for a planned switchover (`havip handover`); see
    `Failover.handover_refusal` for when it is refused."""


@dataclass(frozen=True, kw_only=True)
class Fenced:
    """The fence hook asked for by Fence(fence_id) finished: ok True (exit 0) or False."""

    fence_id: int
    ok: bool


@dataclass(frozen=True, kw_only=True)
class Tick:
    """A timer the machine asked for (see `next_timer`) has come due."""


Event = (
    Start
    | PeerUp
    | PeerInfo
    | PeerDown
    | PeerResigned
    | LocalHealth
    | ProbeDone
    | Claimed
    | Acquired
    | BackendFailed
    | Shutdown
    | Resumed
    | Handover
    | Fenced
    | Tick
)

# ---- outputs -----------------------------------------------------------------------------------


class ProbePurpose(StrEnum):
    TAKEOVER = "takeover"  # we want the VIP: does anybody still answer for it?
    CONFLICT = "conflict"  # we hold it and lost the peer (or froze): did somebody take it?


class Verdict(StrEnum):
    """What we did about another MAC claiming our VIP."""

    KEEP = "keep"
    YIELD = "yield"


@dataclass(frozen=True, kw_only=True)
class Acquire:
    """Add the VIP, confirm it, announce it (gratuitous ARP). Record `epoch` durably."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class Release:
    """Remove the VIP from our interface."""

    reason: Reason


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Ask the LAN whether anybody answers for the VIP, listening `window` seconds from the first
    frame sent; answer with ProbeDone(probe_id)."""

    probe_id: int
    purpose: ProbePurpose
    window: float


@dataclass(frozen=True, kw_only=True)
class SendResign:
    """Tell the peer we removed the VIP and it should take it (only ever after Release)."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class Announce:
    """Send a gratuitous-ARP burst for the VIP now (only ever while ACTIVE)."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class Conflict:
    """Another MAC claimed our VIP (`peer`: it is the peer's MAC) and what we did about it."""

    mac: str
    peer: bool
    verdict: Verdict


@dataclass(frozen=True, kw_only=True)
class Isolated:
    """A probe found silence but heard no witness: silence cannot be told from deafness, so we do
    not take (or, when active, we stop announcing and re-check)."""

    sentence: str


@dataclass(frozen=True, kw_only=True)
class Transition:
    """The machine changed state; `sentence` is the one-line human reason to log."""

    frm: State
    to: State
    reason: Reason
    sentence: str
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Vetoed:
    """A takeover was refused because somebody on the LAN still answers for the VIP."""

    answered_by: str


@dataclass(frozen=True, kw_only=True)
class Fence:
    """Run the fence hook before taking the VIP while the peer link is down; answer with
    Fenced(fence_id). `reason`: why the peer counts as gone (a Reason value)."""

    fence_id: int
    reason: Reason
    epoch: int  # the epoch the takeover would use
    old_state: State  # where the node stood before it started probing (for the hook)


@dataclass(frozen=True, kw_only=True)
class Stop:
    """Shutdown finished deciding; the shell may exit once earlier actions are done."""


Action = (
    Acquire
    | Release
    | Probe
    | SendResign
    | Announce
    | Conflict
    | Isolated
    | Transition
    | Vetoed
    | Fence
    | Stop
)


@dataclass(frozen=True, kw_only=True)
class FailoverTiming:
    """The durations the machine itself uses (seconds)."""

    retry_interval: float  # re-probe this often while vetoed, isolated or suspect
    startup_wait: float  # INIT: how long to wait for the peer before deciding alone
    preempt_delay: float  # how long the returning primary must look healthy before failback
    fault_retry: float  # FAULT: how long before trying again (doubles per fault, see below)
    probe_window: float  # how long a probe listens
    blip_guard: float  # the keepalive interval: the least a takeover after a deadline listens
    dead_time: float  # the peer link's dead time: how long silence must last to mean "gone"
    fault_retry_max: float = 60.0  # the fault backoff stops doubling here
    announce_again: float = 2.0  # the second gratuitous-ARP burst after becoming ACTIVE
    announce_interval: float = 0.5  # ACTIVE with the peer link down: announce this often
    conflict_grace: float = 0.15  # the peer's frames already on the way when we announced
