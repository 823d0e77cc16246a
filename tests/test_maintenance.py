"""The maintenance switch survives restarts, and anything odd at its path means "on"."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from havip.shell.maintenance import MaintenanceSwitch


def test_off_until_set_and_on_across_a_new_instance(tmp_path: Path) -> None:
    switch = MaintenanceSwitch(tmp_path / "state", "n1")
    assert switch.load() == (False, None)
    since = switch.set(True, by="uid 0")
    assert since is not None
    # A restarted daemon builds a new switch from the same folder: still drained.
    again = MaintenanceSwitch(tmp_path / "state", "n1")
    assert again.load() == (True, since)
    assert stat.S_IMODE(os.stat(again.path).st_mode) == 0o600
    again.set(False)
    assert MaintenanceSwitch(tmp_path / "state", "n1").load() == (False, None)
    again.set(False)  # turning it off twice is fine


def test_junk_or_a_symlink_at_the_path_counts_as_on(tmp_path: Path) -> None:
    switch = MaintenanceSwitch(tmp_path, "n1")
    switch.path.write_bytes(b"\xff not json")
    assert switch.load() == (True, None)
    switch.path.unlink()
    switch.path.symlink_to(tmp_path / "nowhere")
    assert switch.load() == (True, None)
    switch.set(True)  # replaces the symlink rather than writing through it
    assert not switch.path.is_symlink() and not (tmp_path / "nowhere").exists()


def test_the_node_name_keeps_switches_apart(tmp_path: Path) -> None:
    MaintenanceSwitch(tmp_path, "n1").set(True)
    assert MaintenanceSwitch(tmp_path, "n2").load() == (False, None)
