"""The `havip` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from havip import __version__
from havip.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from havip.shell.logs import LogFormat

DEFAULT_CONFIG = Path("/etc/havip/havip.toml")
EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The `havip` command line (also read by havip.manpage and havip.completion)."""
    p = argparse.ArgumentParser(
        prog="havip", description="Keep a virtual IP alive on one of two servers."
    )
    p.add_argument("--version", action="version", version=f"havip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: one `event=NAME key=value` line per event (default); "
        "json: one object per line for log shippers",
    )

    check = sub.add_parser("check-config", help="validate a config file and the files it names")
    check.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    status = sub.add_parser(
        "status", help="ask the running daemon how it stands (over its control socket)"
    )
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    handover = sub.add_parser(
        "handover", help="planned switchover: the active node hands the VIP to its peer"
    )
    handover.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    maintenance = sub.add_parser(
        "maintenance",
        help="drain this node (never claim the VIP, hand it over) until turned off; "
        "survives restarts",
    )
    maintenance.add_argument("switch", choices=["on", "off"])
    maintenance.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    reload = sub.add_parser(
        "reload",
        help="re-read the config and certificates without moving the VIP (same as SIGHUP)",
    )
    reload.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    pki = sub.add_parser("pki", help="mint and inspect the private CA and node certificates")
    psub = pki.add_subparsers(dest="pki_command", required=True, metavar="PKI_COMMAND")
    init = psub.add_parser("init", help="create a CA and one certificate per node")
    init.add_argument("--dir", type=Path, default=Path("pki"), help="output folder (default: pki)")
    init.add_argument(
        "--node",
        action="append",
        required=True,
        metavar="NAME[=ADDRESS]",
        help="a node, e.g. n1=198.18.0.1 (repeat for each node)",
    )
    init.add_argument("--days", type=int, default=365, help="node certificate validity")
    init.add_argument("--ca-days", type=int, default=3650, help="CA certificate validity")
    init.add_argument("--force", action="store_true", help="overwrite existing keys")
    issue = psub.add_parser("issue", help="add or renew one node's certificate from the CA")
    issue.add_argument("node", metavar="NAME[=ADDRESS]")
    issue.add_argument("--dir", type=Path, default=Path("pki"))
    issue.add_argument("--days", type=int, default=365)
    issue.add_argument("--force", action="store_true", help="replace an existing key")
    show = psub.add_parser("show", help="subject, names, fingerprints and expiry of each cert")
    show.add_argument("--dir", type=Path, default=Path("pki"))

    demo = sub.add_parser("demo", help="two nodes, a real failover, in network namespaces")
    demo.add_argument(
        "--fast", action="store_true", help="use the fast timing profile (default: default)"
    )
    demo.add_argument(
        "--loopback",
        action="store_true",
        help="force the non-root loopback demo with the dry-run backend",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config, args.log_level, args.log_format)
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command == "status":
            return _status(args.config, args.json)
        if args.command in ("handover", "maintenance", "reload"):
            from havip.shell.control import HANDOVER_WAIT, RELOAD_WAIT
        if args.command == "handover":
            return _command(args.config, "handover", HANDOVER_WAIT + 2.0)
        if args.command == "maintenance":
            return _command(
                args.config, "maintenance", HANDOVER_WAIT + 2.0, {"on": args.switch == "on"}
            )
        if args.command == "reload":
            return _command(args.config, "reload", RELOAD_WAIT + 2.0)
        if args.command == "pki":
            return _pki(args)
        if args.command == "demo":
            from havip.lab.demo import run_demo

            return run_demo(fast=args.fast, loopback=args.loopback)
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    return EXIT_CONFIG


def _err(text: str) -> None:
    print(f"havip: {text}", file=sys.stderr)


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            _err(line)
        return None


def _run(path: Path, log_level: str, log_format: LogFormat = "text") -> int:
    import ssl

    from havip.backends import make_backend
    from havip.shell.control import ControlError
    from havip.shell.daemon import Daemon
    from havip.shell.logs import event, setup_logging
    from havip.shell.sdnotify import Notifier, unset_environ

    cfg = _load(path)
    if cfg is None:
        return EXIT_CONFIG
    # The same checks as check-config, with the same lines: never start on what it rejects.
    problems = environment_problems(cfg)
    for line in problems:
        _err(line)
    if problems:
        return EXIT_CONFIG
    setup_logging(cfg.node, log_level, fmt=log_format)
    raise_fd_limit()

    # Read systemd's notify variables once, then drop them: hooks and checks must not see them.
    notifier = Notifier()
    unset_environ()

    async def _main() -> int:
        daemon = Daemon(cfg, make_backend(cfg), notifier=notifier)
        return await daemon.run()

    try:
        return asyncio.run(_main())
    except (OSError, ssl.SSLError, ValueError, ControlError) as exc:
        event("fatal", str(exc), level=40)
        _err(str(exc))
        return EXIT_RUNTIME


def environment_problems(cfg: Config) -> list[str]:
    """check_environment(cfg), run in a forked child where the platform allows it.

    The certificate checks load `cryptography` (about 8 MB); the daemon itself never needs
    it, so it stays in the child and the daemon's memory stays small for as long as it runs.
    """
    from havip.config import check_environment

    if not hasattr(os, "fork"):
        return check_environment(cfg)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, report, exit without running the parent's cleanup
        code = 0
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                json.dump(check_environment(cfg), out)
        except BaseException:  # anything at all: the parent reports it
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as inp:
        text = inp.read()
    _, status = os.waitpid(pid, 0)
    try:
        problems = json.loads(text) if os.waitstatus_to_exitcode(status) == 0 else None
    except ValueError:
        problems = None
    if not isinstance(problems, list):
        return check_environment(cfg)  # the child failed: check here, whatever it costs
    return [str(line) for line in problems]


def raise_fd_limit() -> None:
    """Lift the soft descriptor limit to the hard one (best effort).

    The daemon's sockets (peer link, probes, metrics and control clients) must not run out
    at the default soft limit of 1024 while the hard limit allows far more.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
            # Some kernels refuse RLIM_INFINITY for NOFILE; nr_open is the real ceiling.
            target = hard if hard != resource.RLIM_INFINITY else 1 << 20
            if soft == resource.RLIM_INFINITY or soft < target:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        pass


def _check_config(path: Path) -> int:
    from havip.config import check_environment, witness_plan

    cfg = _load(path)
    if cfg is None:
        return EXIT_CONFIG
    problems = check_environment(cfg)
    for line in problems:
        _err(line)
    if problems:
        return EXIT_CONFIG
    plan, warnings = witness_plan(cfg)
    for line in warnings:
        _err(f"warning: {line}")
    role = "primary" if cfg.is_primary else "standby"
    vips = ", ".join(f"{v} on {v.interface}" for v in cfg.vips)
    print(f"{path}: ok: node {cfg.node} ({role}), peer {cfg.peer_name}, VIP {vips}")
    for iface, witnesses in plan.items():
        if witnesses:
            print(f"{path}: witnesses on {iface}: {', '.join(str(w) for w in witnesses)}")
    return EXIT_OK


def _status(path: Path, as_json: bool) -> int:
    from havip.shell.control import ControlError, query

    cfg = _load(path)
    if cfg is None:
        return EXIT_CONFIG
    if cfg.control_socket is None:  # only configs built in code have none
        _err(f"{path}: no control_socket to ask")
        return EXIT_CONFIG
    try:
        st = query(cfg.control_socket, "status")
    except ControlError as exc:
        _err(str(exc))
        return EXIT_RUNTIME
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return EXIT_OK
    print(format_status(st))
    return EXIT_OK


def _command(path: Path, cmd: str, timeout: float, args: dict[str, object] | None = None) -> int:
    """An operator command over the control socket: print the daemon's one-line answer."""
    from havip.shell.control import CommandRefused, ControlError, query

    cfg = _load(path)
    if cfg is None:
        if cmd == "reload":
            _err("reload not sent: fix the config first; the daemon keeps its running config")
        return EXIT_CONFIG
    if cfg.control_socket is None:  # only configs built in code have none
        _err(f"{path}: no control_socket to ask")
        return EXIT_CONFIG
    try:
        reply = query(cfg.control_socket, cmd, timeout=timeout, args=args)
    except CommandRefused as exc:
        _err(f"{cmd} refused: {exc}")
        return EXIT_RUNTIME
    except ControlError as exc:
        _err(str(exc))
        return EXIT_RUNTIME
    print(f"{cfg.node}: {reply.get('message', 'done')}")
    return EXIT_OK


def format_status(st: dict[str, object]) -> str:
    """Human lines for `havip status`."""
    since = st.get("since")
    when = (
        datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        if isinstance(since, int | float)
        else "?"
    )
    lines = [
        f"node     {st.get('node')} ({st.get('role')}), havip {st.get('version')}",
        f"state    {st.get('state')} since {when} ({st.get('reason')}), epoch {st.get('epoch')}",
    ]
    vips = st.get("vips")
    if isinstance(vips, list):
        for vip in vips:
            if isinstance(vip, dict):
                held = "held here" if vip.get("present") else "not here"
                lines.append(f"vip      {vip.get('address')} on {vip.get('interface')}: {held}")
    if st.get("eligible") is False:
        lines.append(f"eligible no ({st.get('ineligible_cause')})")
    if st.get("maintenance"):
        set_at = st.get("maintenance_since")
        at = (
            datetime.fromtimestamp(set_at, UTC).isoformat(timespec="seconds")
            if isinstance(set_at, int | float)
            else "an unknown time"
        )
        lines.append(f"maint.   on since {at}: `havip maintenance off` to end it")
    checks = st.get("checks")
    if isinstance(checks, list):
        for check in checks:
            if isinstance(check, dict):
                took = check.get("last_duration_seconds")
                took_text = f" in {took * 1000:.0f} ms" if isinstance(took, float) else ""
                out = check.get("last_output")
                lines.append(
                    f"check    {check.get('name')} ({check.get('kind')} {check.get('target')}): "
                    f"{check.get('state')}, last {check.get('last_outcome')}{took_text}"
                    + (f": {out}" if out else "")
                )
    if st.get("waiting"):
        lines.append(f"waiting  {st.get('waiting')}")
    if st.get("peer_connected"):
        rtt = st.get("rtt_seconds")
        rtt_text = f", rtt {rtt * 1000:.2f} ms" if isinstance(rtt, float) else ""
        owns = "holds the VIP" if st.get("peer_owns_vip") else "does not hold the VIP"
        cause = st.get("peer_ineligible_cause")
        why = f" (not eligible: {cause})" if cause else ""
        lines.append(f"peer     {st.get('peer')}: {st.get('peer_state')}{why}, {owns}{rtt_text}")
    else:
        lines.append(f"peer     {st.get('peer')}: not connected")
    return "\n".join(lines)


def _pki(args: argparse.Namespace) -> int:
    from havip import pki

    try:
        if args.pki_command == "init":
            nodes = [pki.parse_node_spec(text) for text in args.node]
            written = pki.init_pki(
                args.dir, nodes, days=args.days, ca_days=args.ca_days, force=args.force
            )
        elif args.pki_command == "issue":
            node = pki.parse_node_spec(args.node)
            written = pki.issue_node(args.dir, node, days=args.days, force=args.force)
        else:
            for info in pki.show(args.dir):
                print(pki.format_info(info))
                print()
            return EXIT_OK
    except pki.PkiError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK
