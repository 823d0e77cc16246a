"""Run `havip` as if on illumos, for the end-to-end tests in the Linux namespace lab.

    as_illumos.py --libdir DIR --fake-root DIR PYTHON -m havip ARGS...

The tail is the argv the lab would run (`Cluster(wrap=...)` puts this script in front of
it); the daemon then runs in this process, so its pid and signals stay the lab's. Test-only;
nothing in havip knows about it:
- `havip.config._current_platform` answers "sunos5", so the config accepts (and "auto"
  picks) the illumos backend; `sys.platform` stays "linux", so what asks it (the PF_ROUTE
  link monitor) sees the truth;
- the fake ipadm, dladm, route (this folder) come first on PATH, in real mode
  (HAVIP_FAKE_ILLUMOS_REAL=1: they act on this namespace), with their state in
  FAKE_ROOT/NODE (NODE: the config's `node`), so each node's calls.log is its own;
- the stand-in libdlpi, DIR/libdlpi.so.1, is found the way the binding looks for the real
  one: by the name "libdlpi.so.1" (`ctypes.util.find_library("dlpi")` finds nothing here,
  as there is no libdlpi.so to link against), through LD_LIBRARY_PATH, which the dynamic
  loader reads only at process start: so this script sets it and execs itself once;
- the interpreter's own folder comes next on PATH, so the fakes' `#!/usr/bin/env python3`
  starts this interpreter directly rather than through a version-manager shim (a real ipadm
  answers in milliseconds; a slow fake would inflate the measured outage).
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
USAGE = "usage: as_illumos.py --libdir DIR --fake-root DIR PYTHON -m havip ARGS..."


def _config_node(args: list[str]) -> str:
    """The `node` of the config named by --config in havip's arguments."""
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        sys.exit(f"as_illumos.py: no --config in {args}")
    path = Path(args[args.index("--config") + 1])
    try:
        node = tomllib.loads(path.read_text())["node"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"as_illumos.py: cannot read node from {path}: {exc}")
    return str(node)


def main(argv: list[str]) -> int:
    flags_ok = argv[0:1] == ["--libdir"] and argv[2:3] == ["--fake-root"]
    if len(argv) < 7 or not flags_ok or argv[5:7] != ["-m", "havip"]:
        sys.exit(f"{USAGE}\ngot: {argv}")
    libdir, root, havip_args = argv[1], Path(argv[3]), argv[7:]
    if os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)[0] != libdir:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
        os.execve(sys.executable, [sys.executable, __file__, *argv], env)
    state = root / _config_node(havip_args)
    state.mkdir(parents=True, exist_ok=True)
    os.environ["HAVIP_FAKE_ILLUMOS"] = str(state)
    os.environ["HAVIP_FAKE_ILLUMOS_REAL"] = "1"
    os.environ["PATH"] = os.pathsep.join(
        [str(HERE), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    )

    from havip import cli, config

    config._current_platform = lambda: "sunos5"
    sys.argv = ["havip", *havip_args]
    return cli.main(havip_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
