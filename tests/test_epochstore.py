"""The epoch store: durable, atomic, bounded, and never fooled by what it finds on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from havip.core.wire import MAX_EPOCH
from havip.shell.epochstore import EpochCorrupt, EpochStore


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".n1.epoch."))


def test_missing_file_is_epoch_zero(tmp_path: Path) -> None:
    assert EpochStore(tmp_path / "absent", "n1").load() == 0


@pytest.mark.parametrize("epoch", [0, 1, 7, 2**32, MAX_EPOCH])
def test_save_then_load_round_trips(tmp_path: Path, epoch: int) -> None:
    EpochStore(tmp_path, "n1").save(epoch)
    # A fresh store, as after a restart: nothing cached.
    assert EpochStore(tmp_path, "n1").load() == epoch
    assert json.loads((tmp_path / "n1.epoch").read_text()) == {"epoch": epoch}


def test_save_creates_the_folder_owner_only_and_the_file_0600(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    EpochStore(state, "n1").save(3)
    assert stat.S_IMODE((state / "n1.epoch").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert _temps(state) == []


def test_saving_again_replaces_the_value(tmp_path: Path) -> None:
    store = EpochStore(tmp_path, "n1")
    store.save(4)
    store.save(9)
    assert EpochStore(tmp_path, "n1").load() == 9


@pytest.mark.parametrize("epoch", [-1, MAX_EPOCH + 1, 2**64])
def test_save_refuses_out_of_range(tmp_path: Path, epoch: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\."):
        EpochStore(tmp_path, "n1").save(epoch)
    assert not (tmp_path / "n1.epoch").exists()


def test_save_refuses_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer"):
        EpochStore(tmp_path, "n1").save(True)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", 'no integer "epoch"'),
        (b'{"epoch": "5"}', 'no integer "epoch"'),
        (b'{"epoch": 5.0}', 'no integer "epoch"'),
        (b'{"epoch": true}', 'no integer "epoch"'),
        (b'{"other": 5}', 'no integer "epoch"'),
        (b'{"epoch": -1}', "outside 0.."),
        (json.dumps({"epoch": MAX_EPOCH + 1}).encode(), "outside 0.."),
        (json.dumps({"epoch": 2**64}).encode(), "outside 0.."),
        (b" " * 5000 + b'{"epoch": 1}', "over 4096 bytes"),
    ],
    ids=[
        "empty",
        "blank",
        "truncated",
        "binary",
        "list",
        "string",
        "float",
        "bool",
        "no-key",
        "negative",
        "over-max",
        "2^64",
        "huge",
    ],
)
def test_corrupt_file_is_a_clear_error_naming_it(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "n1.epoch"
    path.write_bytes(content)
    with pytest.raises(EpochCorrupt, match=why) as exc:
        EpochStore(tmp_path, "n1").load()
    assert str(exc.value).startswith(f"{path}: ")
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)  # callers that catch ValueError still do


def test_a_folder_at_the_path_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "n1.epoch").mkdir()
    with pytest.raises(EpochCorrupt, match="not a regular file"):
        EpochStore(tmp_path, "n1").load()


def test_a_fifo_at_the_path_is_corrupt_and_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "n1.epoch")
    with pytest.raises(EpochCorrupt, match="not a regular file"):
        EpochStore(tmp_path, "n1").load()


def test_load_does_not_follow_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text('{"epoch": 42}')
    state = tmp_path / "state"
    state.mkdir()
    (state / "n1.epoch").symlink_to(elsewhere)
    with pytest.raises(EpochCorrupt, match="symlink"):
        EpochStore(state, "n1").load()


def test_save_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "n1.epoch").symlink_to(victim)
    EpochStore(state, "n1").save(5)
    assert victim.read_text() == "precious\n"
    assert not (state / "n1.epoch").is_symlink()
    assert EpochStore(state, "n1").load() == 5


def test_temp_names_are_unpredictable_and_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old name was `.n1.epoch.PID.tmp`: plant a symlink there and check it is unused."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / f".n1.epoch.{os.getpid()}.tmp").symlink_to(victim)
    names: list[str] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        names.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr("havip.shell.epochstore.os.replace", spy)
    store = EpochStore(state, "n1")
    store.save(1)
    store.save(2)
    assert victim.read_text() == "precious\n"
    assert len(names) == 2 and names[0] != names[1]
    assert all(n.startswith(".n1.epoch.") and n.endswith(".tmp") for n in names)
    assert f".n1.epoch.{os.getpid()}.tmp" not in names


def test_crash_between_write_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename that never happens leaves the old epoch readable; the next save cleans up."""
    store = EpochStore(tmp_path, "n1")
    store.save(3)

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("havip.shell.epochstore.os.replace", crash)
    with pytest.raises(OSError, match="Input/output"):
        store.save(4)
    monkeypatch.undo()
    # The failed save removed its own temp; simulate a hard crash leaving one behind.
    assert _temps(tmp_path) == []
    (tmp_path / ".n1.epoch.k3j9x_2a.tmp").write_text('{"epoch": 4}')
    assert EpochStore(tmp_path, "n1").load() == 3  # the leftover is ignored
    EpochStore(tmp_path, "n1").save(5)
    assert _temps(tmp_path) == []
    assert EpochStore(tmp_path, "n1").load() == 5


def test_failed_save_is_retried_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that failed must not be remembered as done."""
    store = EpochStore(tmp_path, "n1")

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("havip.shell.epochstore.os.fsync", crash)
    with pytest.raises(OSError, match="No space"):
        store.save(6)
    monkeypatch.undo()
    store.save(6)
    assert EpochStore(tmp_path, "n1").load() == 6


def test_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append(f"fsync-{kind}")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr("havip.shell.epochstore.os.fsync", fsync)
    monkeypatch.setattr("havip.shell.epochstore.os.replace", replace)
    EpochStore(tmp_path, "n1").save(1)
    assert calls == ["fsync-file", "rename", "fsync-dir"]


def test_a_file_where_the_state_folder_should_be_fails_save(tmp_path: Path) -> None:
    # We run as root, so an unwritable folder cannot be staged; a file in its place can.
    (tmp_path / "state").write_text("not a folder")
    with pytest.raises(OSError):
        EpochStore(tmp_path / "state", "n1").save(1)
    # ...and load does not mistake it for "nothing saved yet".
    with pytest.raises(EpochCorrupt, match="cannot open: Not a directory"):
        EpochStore(tmp_path / "state", "n1").load()
