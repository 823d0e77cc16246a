"""Where a VIP actually lives: the Backend protocol and its error.

Backends are synchronous and may block for up to a probe window; the asyncio daemon calls
every method through `asyncio.to_thread`, never on the event loop.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from havip.config import Vip


class BackendOp(StrEnum):
    """Backend operations, as named in errors, logs and metric labels."""

    PRESENT = "present"
    ADD = "add"
    REMOVE = "remove"
    ANNOUNCE = "announce"
    PROBE = "probe"


class BackendError(Exception):
    """One backend operation failed: 'add 198.18.0.100/24 on eth0: <cause>'."""

    def __init__(self, op: BackendOp, vip: Vip, cause: str) -> None:
        super().__init__(f"{op} {vip} on {vip.interface}: {cause}")
        self.op = op
        self.vip = vip
        self.cause = cause


class Backend(Protocol):
    """Puts a VIP on this node's interface, takes it off, and asks the LAN about it."""

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

    def probe(self, vip: Vip, count: int, window: float) -> str | None:
        """Ask the LAN whether another host answers for the VIP: `count` probes over the first
        ~2/3 of `window` seconds, listening until `window` ends or the first answer. Returns
        the answering host's MAC ("aa:bb:cc:dd:ee:ff", or a backend-specific token), else None.
        """
        ...

    def close(self) -> None:
        """Release sockets; the backend must not be used afterwards."""
        ...
