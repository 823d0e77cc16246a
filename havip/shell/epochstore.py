"""The ownership epoch, kept on disk so a restarted daemon never reuses an old one."""

from __future__ import annotations

import json
import os
from pathlib import Path


class EpochStore:
    """`STATE_DIR/NODE.epoch`, a small JSON file written atomically."""

    def __init__(self, state_dir: Path, node: str) -> None:
        self.path = state_dir / f"{node}.epoch"
        self._saved: int | None = None

    def load(self) -> int:
        """The last saved epoch; 0 when there is none. Raises ValueError on a corrupt file."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: cannot read the saved epoch: {exc}") from None
        epoch = data.get("epoch") if isinstance(data, dict) else None
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"{self.path}: 'epoch' must be a non-negative integer")
        self._saved = epoch
        return epoch

    def save(self, epoch: int) -> None:
        """Write `epoch` durably unless it is already saved."""
        if epoch == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"epoch": epoch}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._saved = epoch
