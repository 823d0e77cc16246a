"""Where a VIP actually lives: the Backend protocol, its error, the dry-run backend.

Backends are synchronous and may block for up to a probe window; the asyncio daemon calls
every method through `asyncio.to_thread`, never on the event loop.
"""

from __future__ import annotations

import os
import threading
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from havip.config import Config, Vip


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


class DryRunBackend:
    """Records ownership without touching the network.

    With `lan_dir` (a folder both nodes share, standing in for the LAN) a VIP we own is the
    file `lan_dir/<vip ip>/<node>`, so the other node's probe sees it. Without `lan_dir`
    ownership is kept in memory and probes never find anyone.
    """

    name = "dry-run"

    def __init__(self, node: str, lan_dir: Path | None = None) -> None:
        if not node or node in (".", "..") or "/" in node or node.startswith("."):
            raise ValueError(f"dry-run backend: node name {node!r} cannot be a file name")
        self.node = node
        self.lan_dir = lan_dir
        self._owned: set[IPv4Address] = set()
        self._lock = threading.Lock()

    def _file(self, vip: Vip) -> Path:
        assert self.lan_dir is not None
        return self.lan_dir / str(vip.ip) / self.node

    def present(self, vip: Vip) -> bool:
        if self.lan_dir is None:
            with self._lock:
                return vip.ip in self._owned
        return self._file(vip).exists()

    def add(self, vip: Vip) -> None:
        if self.lan_dir is None:
            with self._lock:
                self._owned.add(vip.ip)
            return
        path = self._file(vip)
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            # Written under a temporary name and renamed, so a reader never sees half a file.
            tmp = path.parent / f".{self.node}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(f"{vip} {vip.interface}\n")
            tmp.replace(path)
        except OSError as exc:
            raise BackendError(BackendOp.ADD, vip, f"cannot write {path}: {exc}") from exc

    def remove(self, vip: Vip) -> None:
        if self.lan_dir is None:
            with self._lock:
                self._owned.discard(vip.ip)
            return
        path = self._file(vip)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BackendError(BackendOp.REMOVE, vip, f"cannot remove {path}: {exc}") from exc

    def announce(self, vip: Vip) -> int:
        return 0

    def probe(self, vip: Vip, count: int, window: float) -> str | None:
        # No sleeping: the shared folder answers at once, and tests stay fast.
        if self.lan_dir is None:
            return None
        folder = self.lan_dir / str(vip.ip)
        try:
            others = sorted(
                p.name
                for p in folder.iterdir()
                if p.name != self.node and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(BackendOp.PROBE, vip, f"cannot list {folder}: {exc}") from exc
        return f"dry-run:{others[0]}" if others else None

    def close(self) -> None:
        pass


def make_backend(cfg: Config) -> Backend:
    """The backend `cfg.backend` names ("linux" or "dry-run")."""
    if cfg.backend == "dry-run":
        return DryRunBackend(cfg.node, cfg.lan_dir)
    if cfg.backend == "linux":
        # Imported here so that pyroute2 is needed only where the Linux backend runs.
        from havip.backend_linux import LinuxBackend

        return LinuxBackend()
    raise ValueError(f"{cfg.path}: backend: unknown backend {cfg.backend!r}")
