"""Where a VIP actually lives: the Backend protocol, its LAN listener and its error.

`present/add/remove/announce` and `link_state` may block (netlink round trips, a burst of
gratuitous ARP or neighbour advertisements); the asyncio daemon calls them through
`asyncio.to_thread`, never on the event loop. The LAN socket and the link monitor are
non-blocking file descriptors the daemon watches with `loop.add_reader` (see
`havip.shell.lanwatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Protocol, TypeAlias

from havip.core.eligibility import LinkState

if TYPE_CHECKING:
    from havip.config import Vip

__all__ = [
    "Backend",
    "BackendError",
    "BackendOp",
    "Heard",
    "HeardKind",
    "IPAddress",
    "LanSocket",
    "LinkMonitor",
    "LinkState",
]


IPAddress: TypeAlias = IPv4Address | IPv6Address  # a VIP or witness address, either family


class BackendOp(StrEnum):
    """Backend operations, as named in errors, logs and metric labels."""

    PRESENT = "present"
    ADD = "add"
    REMOVE = "remove"
    ANNOUNCE = "announce"
    PROBE = "probe"  # sending an RFC 5227 / RFC 4862 probe or a witness request
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
    """What an ARP or ND frame heard on the LAN says."""

    # ARP: the sender IP is one of our VIPs; ND: an NA whose target, or an NS whose source, is
    # one of our VIPs. Either way that host uses it (an answer or an announcement).
    CLAIM = "claim"
    # ARP: sender IP 0.0.0.0, target a VIP; ND: an NS from :: (DAD) for a VIP. Another host
    # wants it.
    PROBE = "probe"
    # ARP: the sender IP is a witness; ND: an NA whose target is a witness. We hear the LAN.
    WITNESS = "witness"


@dataclass(frozen=True, kw_only=True)
class Heard:
    """One ARP or ND frame the kernel filter let through, from another MAC, not outgoing."""

    kind: HeardKind
    ip: IPAddress  # the VIP (claim, probe) or the witness
    mac: str  # the ARP sender MAC, or the ND link-layer option (else the Ethernet source)


class LanSocket(Protocol):
    """ARP (IPv4) and Neighbour Discovery (IPv6) on one interface, non-blocking, for the event
    loop. One descriptor hears both; it wakes its reader only for frames about its VIPs or
    witnesses (a kernel filter drops the rest)."""

    interface: str
    mac: bytes  # this interface's MAC

    def fileno(self) -> int:
        """The descriptor to watch for readability."""
        ...

    def read(self) -> list[Heard]:
        """Drain what is queued (bounded per call), never blocks. BackendError if the socket
        broke (the interface went away): close it and open a new one."""
        ...

    def send_probe(self, ip: IPAddress) -> None:
        """Send one probe for `ip`: IPv4 an RFC 5227 ARP probe (sender IP 0.0.0.0), IPv6 an
        RFC 4862 DAD-style NS (source ::, to the solicited-node group); BackendError on
        failure."""
        ...

    def send_request(self, ip: IPAddress) -> None:
        """Ask witness `ip` for its MAC: an ARP request (sender IP our address on its subnet if
        we have one, never a VIP, else 0.0.0.0), or for IPv6 an NS from our own address there
        (link-local will do, else ::). BackendError on failure."""
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
        """Send a gratuitous ARP burst (IPv6: unsolicited neighbour advertisements) for the
        VIP; returns how many frames went out."""
        ...

    def open_lan(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
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
