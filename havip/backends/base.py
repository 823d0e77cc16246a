"""Where a VIP actually lives: the Backend protocol, its LAN listener and its error.

`present/add/remove/announce` and `link_state` may block (netlink round
trips, a gratuitous-ARP burst); the asyncio daemon calls them through `asyncio.to_thread`,
never on the event loop. The LAN socket and the link monitor are non-blocking file
descriptors the daemon watches with `loop.add_reader` (see `havip.shell.lanwatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from havip.core.eligibility import LinkState

if TYPE_CHECKING:
    from havip.config import Vip

__all__ = [
    "Backend",
    "BackendError",
    "BackendOp",
    "Heard",
    "HeardKind",
    "LanSocket",
    "LinkMonitor",
    "LinkState",
]


class BackendOp(StrEnum):
    """Backend operations, as named in errors, logs and metric labels."""

    PRESENT = "present"
    ADD = "add"
    REMOVE = "remove"
    ANNOUNCE = "announce"
    PROBE = "probe"  # sending an RFC 5227 probe or a witness request
    LISTEN = "listen"  # opening or reading the LAN listener
    LINK = "link"  # link state: monitor or query
    ROUTE = "route"  # the routing table (default gateway)
    EPOCH = "epoch"  # saving the ownership epoch durably, before the VIP is added


class BackendError(Exception):
    """One backend operation failed: 'add 198.18.0.100/24 on eth0: <cause>', or for a whole
    interface 'listen on eth0: <cause>'."""

    def __init__(
        self, op: BackendOp, vip: Vip | None, cause: str, *, interface: str | None = None
    ) -> None:
        if vip is not None:
            interface = vip.interface
            super().__init__(f"{op} {vip} on {interface}: {cause}")
        elif interface is not None:
            super().__init__(f"{op} on {interface}: {cause}")
        else:
            super().__init__(f"{op}: {cause}")
        self.op = op
        self.vip = vip
        self.interface = interface
        self.cause = cause


class HeardKind(StrEnum):
    """What an ARP frame heard on the LAN says."""

    CLAIM = "claim"  # sender IP is one of our VIPs: that host uses it (answer or announcement)
    PROBE = "probe"  # sender IP 0.0.0.0, target one of our VIPs: another host wants it
    WITNESS = "witness"  # sender IP is a witness: we can hear the LAN


@dataclass(frozen=True, kw_only=True)
class Heard:
    """One ARP frame the kernel filter let through, from another MAC, not outgoing."""

    kind: HeardKind
    ip: IPv4Address  # the VIP (claim, probe) or the witness
    mac: str  # the ARP sender MAC, "aa:bb:cc:dd:ee:ff"


class LanSocket(Protocol):
    """ARP on one interface, non-blocking, for the event loop. It wakes its reader only for
    frames about its VIPs or witnesses (a kernel filter drops the rest)."""

    interface: str
    mac: bytes  # this interface's MAC

    def fileno(self) -> int:
        """The descriptor to watch for readability."""
        ...

    def read(self) -> list[Heard]:
        """Drain what is queued (bounded per call), never blocks. BackendError if the socket
        broke (the interface went away): close it and open a new one."""
        ...

    def send_probe(self, ip: IPv4Address) -> None:
        """Send one RFC 5227 probe for `ip` (sender IP 0.0.0.0); BackendError on failure."""
        ...

    def send_request(self, ip: IPv4Address) -> None:
        """Send an ARP request for witness `ip`; the sender IP is our address on its subnet if
        we have one (never a VIP), else 0.0.0.0. BackendError on failure."""
        ...

    def close(self) -> None:
        """Close the descriptor; harmless twice."""
        ...


class LinkMonitor(Protocol):
    """Link changes as the kernel announces them (no polling)."""

    def fileno(self) -> int:
        """The descriptor to watch for readability."""
        ...

    def read(self) -> list[tuple[str, LinkState]]:
        """Link changes since the last read, oldest first; never blocks."""
        ...

    def close(self) -> None:
        """Close the descriptor; harmless twice."""
        ...


class Backend(Protocol):
    """Puts a VIP on this node's interface, takes it off, and listens to the LAN."""

    name: str

    def present(self, vip: Vip) -> bool:
        """Whether the VIP is on our interface right now."""
        ...

    def add(self, vip: Vip) -> None:
        """Put the VIP on our interface, labelled as havip's; adding it twice is fine."""
        ...

    def remove(self, vip: Vip) -> None:
        """Take the VIP off our interface; removing an absent VIP is fine."""
        ...

    def announce(self, vip: Vip) -> int:
        """Send a gratuitous ARP burst for the VIP; returns how many frames went out."""
        ...

    def open_lan(
        self, interface: str, vips: Sequence[IPv4Address], witnesses: Sequence[IPv4Address]
    ) -> LanSocket:
        """A LAN listener on `interface` for these VIPs and witnesses; BackendError on failure.
        May block briefly (it looks up the interface): call it through to_thread."""
        ...

    def open_link_monitor(self) -> LinkMonitor:
        """A link-change monitor for every interface; BackendError on failure."""
        ...

    def link_state(self, interface: str) -> LinkState:
        """The link state now (blocking); a missing interface is exists=False."""
        ...

    def close(self) -> None:
        """Release sockets; the backend must not be used afterwards."""
        ...
