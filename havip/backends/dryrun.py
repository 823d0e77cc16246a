"""The dry-run backend: ownership recorded in memory or in a shared folder, no network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from havip.backends.arp import mac_text
from havip.backends.base import BackendError, BackendOp, Heard, HeardKind, IPAddress, LinkState
from havip.config import Vip

WITNESS_FILE = ".witnesses"  # in lan_dir: when it exists, every witness answers
_MAX_DRAIN = 256  # Heard items handed out per read, as the Linux socket bounds its reads


def dry_run_mac(name: str) -> bytes:
    """The MAC a dry-run node (or witness) stands behind: locally administered, unicast, the
    same for the same name on every node, so HELLO-exchanged MACs match what is heard."""
    return b"\x02" + hashlib.sha256(name.encode()).digest()[:5]


class DryRunBackend:
    """Records ownership without touching the network.

    With `lan_dir` (a folder both nodes share, standing in for the LAN) a VIP we own is the
    file `lan_dir/<vip ip>/<node>`, so the other node's probe sees it. Without `lan_dir`
    ownership is kept in memory and probes never find anyone. `history` records every
    successful add, remove and announce in order, so tests can check the order of effects.
    """

    name = "dry-run"

    def __init__(self, node: str, lan_dir: Path | None = None) -> None:
        if not node or node in (".", "..") or "/" in node or node.startswith("."):
            raise ValueError(f"dry-run backend: node name {node!r} cannot be a file name")
        self.node = node
        self.lan_dir = lan_dir
        self._owned: set[IPAddress] = set()
        self._lock = threading.Lock()
        self.history: list[tuple[BackendOp, str]] = []

    def _done(self, op: BackendOp, vip: Vip) -> None:
        with self._lock:
            self.history.append((op, str(vip)))

    def _file(self, vip: Vip) -> Path:
        assert self.lan_dir is not None
        return _folder(self.lan_dir, vip.ip) / self.node

    def present(self, vip: Vip) -> bool:
        if self.lan_dir is None:
            with self._lock:
                return vip.ip in self._owned
        return self._file(vip).exists()

    def add(self, vip: Vip) -> None:
        if self.lan_dir is None:
            with self._lock:
                self._owned.add(vip.ip)
            self._done(BackendOp.ADD, vip)
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
        self._done(BackendOp.ADD, vip)

    def remove(self, vip: Vip) -> None:
        if self.lan_dir is None:
            with self._lock:
                self._owned.discard(vip.ip)
            self._done(BackendOp.REMOVE, vip)
            return
        path = self._file(vip)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BackendError(BackendOp.REMOVE, vip, f"cannot remove {path}: {exc}") from exc
        self._done(BackendOp.REMOVE, vip)

    def announce(self, vip: Vip) -> int:
        self._done(BackendOp.ANNOUNCE, vip)
        return 0

    def holders(self, ip: IPAddress, interface: str) -> list[str]:
        """The other nodes whose file says they hold `ip` (sorted), from the shared folder."""
        if self.lan_dir is None:
            return []
        folder = _folder(self.lan_dir, ip)
        try:
            return sorted(
                p.name
                for p in folder.iterdir()
                if p.name != self.node and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            cause = f"cannot list {folder}: {exc}"
            raise BackendError(BackendOp.PROBE, None, cause, interface=interface) from exc

    def witnesses_answer(self) -> bool:
        """Whether witnesses answer: the file `lan_dir/.witnesses` exists."""
        return self.lan_dir is not None and (self.lan_dir / WITNESS_FILE).exists()

    def open_lan(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
    ) -> DryRunLanSocket:
        return DryRunLanSocket(self, interface)

    def open_link_monitor(self) -> DryRunLinkMonitor:
        return DryRunLinkMonitor()

    def link_state(self, interface: str) -> LinkState:
        return LinkState(exists=True, up=True, carrier=True)

    def close(self) -> None:
        pass


def _folder(lan_dir: Path, ip: IPAddress) -> Path:
    """The folder standing for `ip` in the shared LAN folder: the address in its compressed
    text form (one spelling per address). For IPv6 the colons become dashes under a `v6-`
    prefix ("v6-2001-2--100"): a ':' reads as host:path to scp and rsync, and some shared
    file systems refuse it."""
    return lan_dir / (str(ip) if ip.version == 4 else "v6-" + str(ip).replace(":", "-"))


def _socketpair(op: BackendOp, interface: str) -> tuple[socket.socket, socket.socket]:
    try:
        pair = socket.socketpair()
    except OSError as exc:
        cause = f"cannot open a socket pair: {exc}"
        raise BackendError(op, None, cause, interface=interface) from exc
    for sock in pair:
        sock.setblocking(False)
    return pair


class DryRunLanSocket:
    """The shared folder seen as a LAN, with a real descriptor so that the daemon's event-loop
    code is the same as with Linux: a probe is answered (a CLAIM queued) by every other node
    whose file holds the VIP, a witness request when `lan_dir/.witnesses` exists."""

    def __init__(self, backend: DryRunBackend, interface: str) -> None:
        self._backend = backend
        self.interface = interface
        self.mac = dry_run_mac(backend.node)
        self._reader, self._writer = _socketpair(BackendOp.LISTEN, interface)
        self._queue: deque[Heard] = deque()

    def fileno(self) -> int:
        return self._reader.fileno()

    def _hear(self, heard: Heard) -> None:
        self._queue.append(heard)
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending anyway.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self._writer.send(b"!")

    def read(self) -> list[Heard]:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        count = min(len(self._queue), _MAX_DRAIN)
        heard = [self._queue.popleft() for _ in range(count)]
        if self._queue:
            self._wake()  # the rest on the next wake-up, as a flooded packet socket would
        return heard

    def send_probe(self, ip: IPAddress) -> None:
        for node in self._backend.holders(ip, self.interface):
            self._hear(Heard(kind=HeardKind.CLAIM, ip=ip, mac=mac_text(dry_run_mac(node))))

    def send_request(self, ip: IPAddress) -> None:
        if self._backend.witnesses_answer():
            mac = mac_text(dry_run_mac(f"witness:{ip}"))
            self._hear(Heard(kind=HeardKind.WITNESS, ip=ip, mac=mac))

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class DryRunLinkMonitor:
    """Links never change in a dry run; the descriptor never becomes readable."""

    def __init__(self) -> None:
        self._reader, self._writer = _socketpair(BackendOp.LINK, "all")

    def fileno(self) -> int:
        return self._reader.fileno()

    def read(self) -> list[tuple[str, LinkState]]:
        return []

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
