"""The dry-run backend: ownership recorded in memory or in a shared folder, no network."""

from __future__ import annotations

import os
import threading
from ipaddress import IPv4Address
from pathlib import Path

from havip.backends.base import BackendError, BackendOp
from havip.config import Vip


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
