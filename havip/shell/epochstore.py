"""The ownership epoch, kept on disk so a restarted daemon never reuses an old one.

`STATE_DIR/NODE.epoch` holds `{"epoch": N}`. Writes are atomic and durable: a temp file
with an unpredictable name (mkstemp: O_EXCL, never follows a symlink), fsync, rename over
the target, fsync the folder. Reads never follow a symlink and accept only a regular file
holding a number from 0 to MAX_EPOCH; anything else is `EpochCorrupt`, naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from havip.core.wire import MAX_EPOCH

MAX_FILE_BYTES = 4096  # a real epoch file is ~20 bytes; never read more than this


class EpochCorrupt(ValueError):
    """The epoch file exists but cannot be trusted; the message names it and why."""


class EpochStore:
    """`STATE_DIR/NODE.epoch`, a small JSON file written atomically."""

    def __init__(self, state_dir: Path, node: str) -> None:
        self.path = state_dir / f"{node}.epoch"
        self._saved: int | None = None

    def load(self) -> int:
        """The last saved epoch; 0 when the file does not exist.

        Raises `EpochCorrupt` when the file is empty, not JSON, out of 0..MAX_EPOCH, not a
        regular file or a symlink. A temp file left by a crash before its rename is ignored.
        """
        where = self.path
        # O_NONBLOCK: a FIFO planted at the path must not hang the daemon in open().
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(where, flags)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            if os.path.islink(where):
                raise EpochCorrupt(f"{where}: is a symlink; refusing to follow it") from None
            raise EpochCorrupt(f"{where}: cannot open: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise EpochCorrupt(f"{where}: is not a regular file")
            raw = os.read(fd, MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise EpochCorrupt(f"{where}: cannot read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        epoch = _parse(raw, where)
        self._saved = epoch
        return epoch

    def save(self, epoch: int) -> None:
        """Write `epoch` durably (no-op if it is what was last loaded or saved).

        ValueError for an epoch outside 0..MAX_EPOCH; OSError when it could not be made
        durable (the caller must then not claim anything with this epoch).
        """
        _check_range(epoch)
        if epoch == self._saved:
            return
        write_atomic(self.path, json.dumps({"epoch": epoch}).encode() + b"\n")
        self._saved = epoch


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (mode 0600); OSError on failure.

    A temp file with an unpredictable name (mkstemp: O_EXCL, never follows a symlink), fsync,
    rename over the target (which replaces a symlink rather than writing through it), fsync
    the folder. Temp files left by a crash between write and rename are removed first."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    prefix = f".{path.name}."
    _remove_stale_temps(folder, prefix)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:  # bounded: each write takes at least one byte or raises
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(folder)


def remove_durably(path: Path) -> None:
    """Remove `path` (never following a symlink) and make that durable; absent is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _remove_stale_temps(folder: Path, prefix: str) -> None:
    try:
        names = os.listdir(folder)
    except OSError:
        return  # the write that follows reports the real problem
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            # unlink never follows a symlink; a folder of that name is left alone.
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def _check_range(epoch: int) -> None:
    # bool is an int in Python; an epoch of True is a bug, not 1.
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"epoch must be an integer, got {type(epoch).__name__}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} is outside 0..{MAX_EPOCH}")


def _parse(raw: bytes, where: Path) -> int:
    if len(raw) > MAX_FILE_BYTES:
        raise EpochCorrupt(f"{where}: over {MAX_FILE_BYTES} bytes; not an epoch file")
    if not raw.strip():
        raise EpochCorrupt(f"{where}: is empty")
    try:
        data = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise EpochCorrupt(f'{where}: not JSON (expected {{"epoch": N}})') from None
    epoch = data.get("epoch") if isinstance(data, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise EpochCorrupt(f'{where}: no integer "epoch" (expected {{"epoch": N}})')
    if not 0 <= epoch <= MAX_EPOCH:
        raise EpochCorrupt(f"{where}: epoch {epoch} is outside 0..{MAX_EPOCH}")
    return epoch


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
