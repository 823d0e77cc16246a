"""Reload (SIGHUP, `havip reload`): check a new config and work out what may change live.

`prepare_reload` does the checking and the reading, and changes nothing; the daemon applies
the `ReloadPlan` it returns. What a reload may change without a restart is `RELOADABLE`: the
certificates (the files' contents or their paths), the health checks and the hooks.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from dataclasses import dataclass, fields
from hashlib import sha256

from havip.config import Config, ConfigError, TlsFiles, load_config
from havip.shell.command import run_command
from havip.shell.transport import client_context, server_context

RELOADABLE = frozenset({"path", "tls", "checks", "hooks"})


class ReloadRefused(Exception):
    """The new config cannot be applied, in one line; the running one stays."""


@dataclass(frozen=True, kw_only=True)
class ReloadPlan:
    """What a reload will change."""

    config: Config
    tls: ssl.SSLContext | None  # a new context: the certificate files changed
    tls_digest: bytes
    checks_changed: bool
    hooks_changed: bool

    def changes(self) -> list[str]:
        """What changes, in words for the log and the reply."""
        return [
            *(["certificates"] if self.tls is not None else []),
            *(["checks"] if self.checks_changed else []),
            *(["hooks"] if self.hooks_changed else []),
        ]


def tls_context(cfg: Config) -> ssl.SSLContext:
    """The peer link's TLS context: the primary listens, the standby dials."""
    return server_context(cfg.tls) if cfg.is_primary else client_context(cfg.tls)


def tls_digest(tls: TlsFiles) -> bytes:
    """What the certificate files hold now (a reload rotates only when this changed)."""
    h = sha256()
    for file in (tls.ca, tls.cert, tls.key):
        h.update(str(file).encode() + b"\0")
        try:
            h.update(file.read_bytes())
        except OSError as exc:
            h.update(f"unreadable: {exc}".encode())
    return h.digest()


async def prepare_reload(current: Config, digest: bytes, *, timeout: float) -> ReloadPlan:
    """Check `current.path` as `havip check-config` does (in a child process: the checks load
    `cryptography`, which the daemon never does), read it, and plan the change; ReloadRefused
    with the first problem when it is invalid or changes what needs a restart."""
    path = current.path
    check = await run_command(
        [sys.executable, "-m", "havip", "check-config", "--config", str(path)], timeout=timeout
    )
    if not check.ok:
        lines = [
            line.removeprefix("havip: ")
            for line in check.output.splitlines()
            if line.strip() and not line.startswith("havip: warning:")
        ]
        first = lines[0] if lines else check.describe()
        more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
        raise ReloadRefused(first + more)
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:  # changed again since the check
        raise ReloadRefused(exc.errors[0]) from None
    fixed = [
        f.name
        for f in fields(new)
        if f.name not in RELOADABLE and getattr(new, f.name) != getattr(current, f.name)
    ]
    if fixed:
        raise ReloadRefused(f"{path}: {', '.join(fixed)} changed: restart havip to apply")
    new_digest = await asyncio.to_thread(tls_digest, new.tls)
    ctx = None
    if new_digest != digest:
        try:
            ctx = await asyncio.to_thread(tls_context, new)
        except (OSError, ssl.SSLError) as exc:
            raise ReloadRefused(f"{path}: tls: {exc}") from None
    return ReloadPlan(
        config=new,
        tls=ctx,
        tls_digest=new_digest,
        checks_changed=new.checks != current.checks,
        hooks_changed=new.hooks != current.hooks,
    )
