"""The maintenance switch: `STATE_DIR/NODE.maintenance`, so a drained node stays drained
across restarts and reboots until the operator turns it off.

The file's presence is the switch (whatever it holds, even a symlink or junk: when in doubt, a
node does not claim the VIP). Its content says when and by whom it was set, for `havip status`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from havip.shell.epochstore import remove_durably, write_atomic

MAX_NOTE_BYTES = 4096


class MaintenanceSwitch:
    """On while `STATE_DIR/NODE.maintenance` exists."""

    def __init__(self, state_dir: Path, node: str) -> None:
        self.path = state_dir / f"{node}.maintenance"

    def load(self) -> tuple[bool, float | None]:
        """(on, since): since is the wall-clock time it was set, None when unknown."""
        try:
            os.lstat(self.path)
        except FileNotFoundError:
            return False, None
        except OSError:
            return True, None  # cannot even look: assume drained
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                raw = os.read(fd, MAX_NOTE_BYTES)
            finally:
                os.close(fd)
            since = json.loads(raw).get("since")
        except (OSError, ValueError, AttributeError):
            return True, None
        return True, float(since) if isinstance(since, int | float) else None

    def set(self, on: bool, *, by: str | None = None) -> float | None:
        """Turn it on (durably, before it counts) or off; OSError when it could not be saved.
        Returns the time it was set (None when turned off)."""
        if not on:
            remove_durably(self.path)
            return None
        now = time.time()
        write_atomic(self.path, json.dumps({"since": now, "by": by}).encode() + b"\n")
        return now
