"""VIP backends: where an address actually lives (Linux netlink, illumos ipadm, dry-run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from havip.backends.base import Backend, BackendError, BackendOp

if TYPE_CHECKING:
    from havip.config import Config

__all__ = ["Backend", "BackendError", "BackendOp", "make_backend"]


def make_backend(cfg: Config) -> Backend:
    """The backend `cfg.backend` names ("linux", "illumos" or "dry-run")."""
    if cfg.backend == "dry-run":
        from havip.backends.dryrun import DryRunBackend

        return DryRunBackend(cfg.node, cfg.lan_dir)
    if cfg.backend == "linux":
        # Imported here so that pyroute2 is needed only where the Linux backend runs.
        from havip.backends.linux import LinuxBackend

        return LinuxBackend()
    if cfg.backend == "illumos":
        from havip.backends.illumos import IllumosBackend

        return IllumosBackend(vips=cfg.vips, address_tool=cfg.address_tool)
    raise ValueError(f"{cfg.path}: backend: unknown backend {cfg.backend!r}")
