"""The hardened unit's promise, proved in the namespace lab: both daemons run as a non-root
user (uid 65534) holding only CAP_NET_ADMIN and CAP_NET_RAW, with no-new-privs and with
write-xor-execute memory (what MemoryDenyWriteExecute= enforces), and still fail over when
the primary loses power.

How the daemons are started: `ip netns exec NODE unshare --mount sh -c SCRIPT`, where SCRIPT
(in a mount namespace of the daemon's own) makes the interpreter reachable for the
unprivileged user if it lives under a directory only root may enter (a pyenv under /root,
0700: a tmpfs over that directory with just the interpreter's tree bound back in; nothing
changes outside that namespace), then execs `setpriv` (uid/gid 65534, no groups, the two
capabilities as inheritable, ambient and bounding sets, no-new-privs), which execs a tiny
Python prelude that turns on PR_SET_MDWE and execs `python -m havip run`. Every step execs,
so the pid the lab holds is the daemon's, and so are its signals (SIGSTOP in power_off).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from havip.lab.scenario import Cluster, power_off, running_cluster

UID = GID = 65534  # nobody / nogroup
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
ONLY_TWO = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

# Runs as the unprivileged user, before the daemon: refuse W+X mappings from here on
# (inherited across exec), as systemd's MemoryDenyWriteExecute= does, then become the daemon.
_MDWE_PRELUDE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _hidden_by(path: Path) -> tuple[Path, Path] | None:
    """(the first ancestor of path that others may not enter, its child on the way), or None
    if every directory on the way is open to everyone."""
    parts = path.resolve().parents
    for parent in reversed(parts):
        if parent == Path("/"):
            continue
        if not parent.stat().st_mode & stat.S_IXOTH:
            child = path.resolve().relative_to(parent).parts[0]
            return parent, parent / child
    return None


def _interpreter_paths() -> list[Path]:
    return [Path(os.path.realpath(sys.executable)), Path(sys.base_prefix), Path(sys.prefix)]


def wrap_argv(stage: Path) -> list[str]:
    """The argv prefix described in the module docstring; `stage` is an empty directory the
    mount script uses as a temporary mount point."""
    mounts: list[str] = []
    hidden = {h for p in _interpreter_paths() if (h := _hidden_by(p)) is not None}
    if hidden:
        if len({closed for closed, _ in hidden}) != 1 or len(hidden) != 1:
            pytest.skip(f"the interpreter is behind several closed directories: {hidden}")
        ((closed, keep),) = hidden
        q = shlex.quote
        mounts = [
            f"mount --bind {q(str(keep))} {q(str(stage))}",
            f"mount -t tmpfs -o mode=0755,size=1m havip-e2e {q(str(closed))}",
            f"mkdir -p {q(str(keep))}",
            f"mount --move {q(str(stage))} {q(str(keep))}",
        ]
    caps = "-all,+net_admin,+net_raw"
    setpriv = (
        f"exec setpriv --reuid={UID} --regid={GID} --clear-groups --inh-caps={caps} "
        f'--ambient-caps={caps} --bounding-set={caps} --no-new-privs -- "$@"'
    )
    script = "; ".join(["set -e", *mounts, setpriv])
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        sys.executable,
        "-c",
        _MDWE_PRELUDE,
    ]


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _chown_tree(root: Path) -> None:
    os.chown(root, UID, GID)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(base, name), UID, GID, follow_symlinks=False)


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A work directory the unprivileged daemons can reach (pytest's tmp_path sits under a
    root-only directory), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="havip-svc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _start_unprivileged(cluster: Cluster) -> None:
    # The daemons write their state dirs and control sockets as uid 65534; the logs are
    # opened by this (root) process and handed over as stderr.
    _chown_tree(cluster.dir)
    _chown_tree(cluster.control_dir)
    for node in ("n1", "n2"):
        cluster.start(node)


@pytest.mark.netns
def test_failover_as_nobody_with_only_net_admin_and_net_raw(open_workdir: Path) -> None:
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.fail("setpriv and unshare (util-linux) are needed and missing")
    stage = Path(tempfile.mkdtemp(prefix="havip-stage-"))
    try:
        with running_cluster(open_workdir, start=False, wrap=wrap_argv(stage)) as cluster:
            _start_unprivileged(cluster)
            cluster.wait_event("n1", "transition", 0.0, current=True, to="active")
            cluster.wait_event("n2", "started", 0.0, current=True)
            for node in ("n1", "n2"):
                status = _status(cluster.pid(node))
                print(
                    f"{node} pid {cluster.pid(node)}: Uid {status['Uid']}, CapEff "
                    f"{status['CapEff']}, CapBnd {status['CapBnd']}, NoNewPrivs "
                    f"{status['NoNewPrivs']}"
                )
                assert status["Name"].startswith("python"), status["Name"]  # the daemon
                assert status["Uid"].split() == [str(UID)] * 4
                assert status["Gid"].split() == [str(GID)] * 4
                assert status["Groups"] == ""
                for capset in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
                    assert int(status[capset], 16) == ONLY_TWO, (node, capset, status[capset])
                assert status["NoNewPrivs"] == "1"
                # W^X: the prelude exits with an error unless PR_SET_MDWE took, and the
                # kernel keeps it across exec; the daemon running at all shows Python, its
                # ctypes BPF filter and the TLS stack live with it.
            result = power_off(cluster)
            print(result.render())
            assert cluster.owns("n2"), cluster.tail_logs()
            assert result.double_answers == 0
            # The unprivileged standby probed the LAN and sent gratuitous ARP (raw sockets,
            # CAP_NET_RAW) and added the VIP (netlink, CAP_NET_ADMIN) itself.
            assert cluster.current_events("n2", "vip_added", result.fault_at)
            cluster.wait_event("n2", "garp_sent", result.fault_at, current=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
