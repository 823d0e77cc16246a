"""The `havip` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error
(`havip status`: 0 healthy, 1 degraded, 2 unreachable or a config error)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from havip import __version__
from havip.config import Config, ConfigError, load_config
from havip.core.states import Cause, State

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
        "status",
        help="how this node stands, on one screen (asked over the control socket); "
        "exit 0 healthy, 1 degraded, 2 unreachable",
    )
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    status.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout (also when the daemon is unreachable)",
    )

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


# --- havip status ----------------------------------------------------------------------------

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_UNREACHABLE = 0, 1, 2  # `havip status` only
VETO_LONG = 60.0  # seconds a node may want the VIP without taking it before status complains
CERT_WARN_DAYS = 21  # a certificate expiring sooner makes status degraded
DAY = 86400.0

#: The keys of the daemon's status dict (Daemon.status(), also served on /status): the README's
#: `status --json` table documents exactly these plus CLIENT_FIELDS (tests keep all three equal).
STATUS_FIELDS = frozenset(
    {
        "node",
        "peer",
        "role",
        "state",
        "reason",
        "since",
        "epoch",
        "owns_vip",
        "owner",
        "eligible",
        "ineligible_cause",
        "maintenance",
        "maintenance_since",
        "checks",
        "fencing",
        "fence_failed",
        "isolated",
        "suspect",
        "waiting",
        "vetoed_by",
        "last_claim",
        "witnesses",
        "witness_warnings",
        "vips",
        "peer_connected",
        "peer_state",
        "peer_owns_vip",
        "peer_epoch",
        "peer_eligible",
        "peer_ineligible_cause",
        "peer_mac",
        "rtt_seconds",
        "last_keepalive_age_seconds",
        "certificates",
        "backend",
        "version",
    }
)
#: What `havip status --json` adds to the daemon's dict (and all it prints, with node, peer
#: and role from the config, when the daemon cannot be asked).
CLIENT_FIELDS = frozenset({"reachable", "error", "health", "problems", "control_socket"})
VIP_FIELDS = frozenset({"address", "interface", "present", "link"})
CHECK_FIELDS = frozenset(
    {
        "name",
        "kind",
        "target",
        "state",
        "passing",
        "last_outcome",
        "last_duration_seconds",
        "consecutive_failures",
        "last_output",
        "last_run",
    }
)
CERT_FIELDS = frozenset({"not_after", "subject_cn"})
CERT_ROLES = ("own", "peer", "ca")


class Problem(StrEnum):
    """Why `havip status` calls a node degraded (the `code` of each entry of `problems`)."""

    FAULT = "fault"  # state FAULT: the VIP backend failed here
    STOPPING = "stopping"  # state STOPPED: the daemon is shutting down
    TWO_OWNERS = "two_owners"  # this node and its peer both hold the VIP
    NO_OWNER = "no_owner"  # connected, and neither node holds the VIP
    VIP_MISSING = "vip_missing"  # ACTIVE, but a VIP is not on its interface here
    PEER_DISCONNECTED = "peer_disconnected"  # no live link to the peer: no failover partner
    INELIGIBLE = "ineligible"  # this node may not hold the VIP (cause in the text)
    PEER_INELIGIBLE = "peer_ineligible"  # the peer says it may not hold the VIP
    CHECK_FAILING = "check_failing"  # a health check does not pass (one entry per check)
    ISOLATED = "isolated"  # the takeover probes hear no witness
    SUSPECT = "suspect"  # holds the VIP but hears no witness: not announcing it
    FENCE_FAILED = "fence_failed"  # the fence hook failed
    STUCK = "stuck"  # has wanted the VIP for over VETO_LONG without taking it (vetoed...)
    CERT_EXPIRING = "cert_expiring"  # own, peer or CA certificate ends within CERT_WARN_DAYS


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One reason a node is degraded: a stable code and a one-line sentence."""

    code: Problem
    text: str


#: What each state means, after its name in capitals (ACTIVE and STANDBY depend on eligibility).
_STATE_WORDS: dict[str, str] = {
    State.INIT: "starting: waiting briefly for the peer",
    State.PROBING: "checking that nobody answers for the VIP, then taking it",
    State.FAULT: "the VIP backend failed here: holds nothing, retries",
    State.STOPPED: "shut down",
}
_CAUSE_WORDS: dict[str, str] = {
    Cause.LINK_DOWN: "the VIP interface is down",
    Cause.NO_CARRIER: "the VIP interface has no carrier",
    Cause.NO_INTERFACE: "the VIP interface does not exist",
    Cause.NO_WITNESS: "no witness answers",
    Cause.CHECK_FAILED: "a health check fails",
    Cause.MAINTENANCE: "in maintenance (`havip maintenance off` ends it)",
}


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _when(ts: object) -> str:
    t = _num(ts)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t is not None else "?"


def _span(seconds: float) -> str:
    """A rough human duration: 45 s, 12 min, 3 h 5 min, 4 days."""
    s = int(max(seconds, 0.0))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


def state_words(state: object, eligible: object, *, owns: object = None) -> str:
    """`STATE: what it means`, e.g. `STANDBY: ready to take over`, `ACTIVE: holds the VIP`."""
    name = str(state).upper() if state is not None else "UNKNOWN"
    if state == "active":
        words = "holds the VIP" if eligible is not False else "holds the VIP although not eligible"
    elif state == "standby":
        words = (
            "ready to take over" if eligible is not False else "not eligible, will not take over"
        )
    else:
        words = _STATE_WORDS.get(str(state), "unknown state")
    if state != "active" and owns is True:
        words += " (still holds the VIP)"
    elif state == "active" and owns is False:
        words += " (reports it does not)"
    return f"{name}: {words}"


def _owner(st: Mapping[str, object]) -> tuple[str, str]:
    """(who, words): who is "self", "peer", "both", "nobody" or "unknown"."""
    node, peer = st.get("node"), st.get("peer")
    here, there = st.get("owns_vip") is True, st.get("peer_owns_vip") is True
    if here and there:
        return "both", f"BOTH nodes ({node} and {peer}) hold the VIP!"
    owner = st.get("owner") if "owner" in st else (node if here else peer if there else None)
    if owner is not None and owner == node:
        return "self", f"this node ({node})"
    if owner is not None and owner == peer:
        return "peer", f"the peer ({peer})"
    if owner is not None:
        return "unknown", f"{owner} (not a node of this pair)"
    if st.get("peer_connected"):
        return "nobody", "nobody! neither node holds the VIP"
    return "unknown", "unknown: not this node, and the peer is not connected"


def _certs(st: Mapping[str, object]) -> list[tuple[str, str, float | None]]:
    """(role, subject, not_after) for own, peer and CA; not_after None when unknown."""
    certs = st.get("certificates")
    if not isinstance(certs, dict):
        return []
    out: list[tuple[str, str, float | None]] = []
    for role in CERT_ROLES:
        entry = certs.get(role)
        entry = entry if isinstance(entry, dict) else {}
        subject = entry.get("subject_cn")
        out.append((role, str(subject) if subject else "?", _num(entry.get("not_after"))))
    return out


def _days_left(not_after: float, now: float) -> str:
    left = not_after - now
    if left <= 0:
        return f"EXPIRED {_span(-left)} ago"
    return f"{int(left // DAY)} days left (until {_when(not_after)[:10]})"


def assess(st: Mapping[str, object], now: float) -> list[Finding]:
    """Why the node is degraded, in the order an operator should look (empty: healthy).

    `st` is the daemon's status dict; `now` is the wall clock (unix seconds)."""
    out: list[Finding] = []

    def add(code: Problem, text: str) -> None:
        out.append(Finding(code=code, text=text))

    node, peer, state = st.get("node"), st.get("peer"), st.get("state")
    if state == "fault":
        add(Problem.FAULT, "state FAULT: the VIP backend failed here (see the log)")
    elif state == "stopped":
        add(Problem.STOPPING, "the daemon is shutting down")
    who, _ = _owner(st)
    if who == "both":
        add(Problem.TWO_OWNERS, f"both {node} and {peer} hold the VIP")
    elif who == "nobody" and state != "init":
        add(Problem.NO_OWNER, "neither node holds the VIP")
    if state == "active":
        for vip in _dicts(st.get("vips")):
            if vip.get("present") is False:
                where = f"{vip.get('address')} on {vip.get('interface')}"
                add(Problem.VIP_MISSING, f"ACTIVE, but {where} is not there")
    if st.get("peer_connected") is not True:
        add(Problem.PEER_DISCONNECTED, f"the peer {peer} is not connected: no failover partner")
    if st.get("eligible") is False:
        cause = st.get("ineligible_cause")
        words = _CAUSE_WORDS.get(str(cause), str(cause))
        add(Problem.INELIGIBLE, f"this node is not eligible ({cause}): {words}")
    cause = st.get("peer_ineligible_cause")
    if st.get("peer_connected") is True and (st.get("peer_eligible") is False or cause):
        words = _CAUSE_WORDS.get(str(cause), str(cause))
        add(Problem.PEER_INELIGIBLE, f"the peer {peer} is not eligible ({cause}): {words}")
    for check in _dicts(st.get("checks")):
        passing = check.get("passing")
        if passing is False or (passing is None and check.get("state") not in ("up", "falling")):
            add(Problem.CHECK_FAILING, f"health check {check.get('name')} is {check.get('state')}")
    if st.get("isolated") is True:
        add(Problem.ISOLATED, "the takeover probes hear no witness: cannot take over")
    if st.get("suspect") is True:
        add(Problem.SUSPECT, "holds the VIP but hears no witness: not announcing it")
    if st.get("fence_failed") is True:
        add(Problem.FENCE_FAILED, "the fence hook failed")
    since = _num(st.get("since"))
    if state == "probing" and since is not None and now - since > VETO_LONG:
        why = st.get("waiting") or (
            f"{st.get('vetoed_by')} still answers for the VIP" if st.get("vetoed_by") else None
        )
        add(
            Problem.STUCK,
            f"has wanted the VIP for {_span(now - since)} without taking it"
            + (f": {why}" if why else ""),
        )
    for role, subject, not_after in _certs(st):
        if not_after is not None and not_after - now < CERT_WARN_DAYS * DAY:
            whose = {"own": "this node's", "peer": "the peer's"}.get(role, "the CA")
            add(
                Problem.CERT_EXPIRING,
                f"{whose} certificate ({subject}) ends within {CERT_WARN_DAYS} days: "
                f"{_days_left(not_after, now)}",
            )
    return out


def format_status(st: Mapping[str, object], now: float | None = None) -> str:
    """The screen `havip status` prints: a headline, then one labelled line per fact."""
    now = time.time() if now is None else now
    findings = assess(st, now)
    node, peer, role = st.get("node"), st.get("peer"), st.get("role")
    eligible = st.get("eligible")
    health = f"DEGRADED ({len(findings)})" if findings else "healthy"
    mine = state_words(st.get("state"), eligible, owns=st.get("owns_vip"))
    lines = [f"{node}: {role}, {mine}; {health}"]
    since = _num(st.get("since"))
    ago = f" ({_span(now - since)} ago)" if since is not None else ""
    lines.append(
        f"state    {str(st.get('state')).upper()} since {_when(since)}{ago}, "
        f"reason {st.get('reason')}, epoch {st.get('epoch')}"
    )
    lines.append(f"owner    {_owner(st)[1]}")
    for vip in _dicts(st.get("vips")):
        held = "held here" if vip.get("present") else "not here"
        link = f" (link {vip.get('link')})" if vip.get("link") else ""
        lines.append(f"vip      {vip.get('address')} on {vip.get('interface')}: {held}{link}")
    if eligible is False:
        lines.append(f"eligible no ({st.get('ineligible_cause')})")
    elif eligible is True:
        lines.append("eligible yes")
    if st.get("maintenance"):
        set_at = st.get("maintenance_since")
        at = _when(set_at) if _num(set_at) is not None else "an unknown time"
        lines.append(f"maint.   on since {at}: `havip maintenance off` to end it")
    for check in _dicts(st.get("checks")):
        took = _num(check.get("last_duration_seconds"))
        took_text = f" in {took * 1000:.0f} ms" if took is not None else ""
        out = check.get("last_output")
        lines.append(
            f"check    {check.get('name')} ({check.get('kind')} {check.get('target')}): "
            f"{check.get('state')}, last {check.get('last_outcome')}{took_text}"
            + (f": {out}" if out else "")
        )
    if st.get("waiting"):
        lines.append(f"waiting  {st.get('waiting')}")
    if st.get("peer_connected"):
        cause = st.get("peer_ineligible_cause")
        peer_words = state_words(
            st.get("peer_state"), st.get("peer_eligible"), owns=st.get("peer_owns_vip")
        )
        why = f" (not eligible: {cause})" if cause else ""
        lines.append(f"peer     {peer}: connected, {peer_words}{why}")
        age, rtt = _num(st.get("last_keepalive_age_seconds")), _num(st.get("rtt_seconds"))
        heard = [f"last keepalive {age:.1f} s ago" if age is not None else None]
        heard.append(f"rtt {rtt * 1000:.2f} ms" if rtt is not None else None)
        if any(heard):
            lines.append(f"link     {', '.join(h for h in heard if h)}")
    else:
        age = _num(st.get("last_keepalive_age_seconds"))
        ago = f" (last heard {age:.1f} s ago)" if age is not None else ""
        lines.append(f"peer     {peer}: NOT CONNECTED{ago}")
    for cert_role, subject, not_after in _certs(st):
        label = "CA" if cert_role == "ca" else cert_role
        if not_after is None:
            lines.append(f"cert     {label}: unknown")
        else:
            lines.append(f"cert     {label} {subject}: {_days_left(not_after, now)}")
    warnings = st.get("witness_warnings")
    if isinstance(warnings, list):
        lines.extend(f"warning  {w}" for w in warnings)
    lines.extend(f"problem  {f.text}" for f in findings)
    lines.append(f"version  havip {st.get('version')}, backend {st.get('backend')}")
    return "\n".join(lines)


def status_json(
    st: Mapping[str, object] | None, now: float, *, error: str | None = None, **known: object
) -> dict[str, object]:
    """What `status --json` prints: the daemon's dict with reachable/error/health/problems,
    or, when `st` is None (not asked or no answer), those four with the `known` fields."""
    if st is None:
        return {
            **known,
            "reachable": False,
            "error": error,
            "health": "unreachable",
            "problems": [],
        }
    findings = assess(st, now)
    return {
        **st,
        **known,
        "reachable": True,
        "error": None,
        "health": "degraded" if findings else "healthy",
        "problems": [{"code": f.code.value, "text": f.text} for f in findings],
    }


def _status(path: Path, as_json: bool) -> int:
    """`havip status`: exit 0 healthy, 1 degraded, 2 unreachable or a config error.

    Problems go to stderr as one line each; with --json stdout gets an object in every case."""
    from havip.shell.control import ControlError, query

    known: dict[str, object] = {"node": None, "peer": None, "role": None, "control_socket": None}

    def unreachable(errors: Sequence[str]) -> int:
        for line in errors:
            _err(line)
        if as_json:
            out = status_json(None, time.time(), error="; ".join(errors), **known)
            print(json.dumps(out, indent=2, sort_keys=True))
        return EXIT_UNREACHABLE

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return unreachable(exc.errors or [f"{path}: cannot load"])
    known.update(
        node=cfg.node,
        peer=cfg.peer_name,
        role="primary" if cfg.is_primary else "standby",
        control_socket=str(cfg.control_socket) if cfg.control_socket else None,
    )
    if cfg.control_socket is None:  # only configs built in code have none
        return unreachable([f"{path}: no control_socket to ask"])
    try:
        st = query(cfg.control_socket, "status")
    except ControlError as exc:
        return unreachable([str(exc)])
    now = time.time()
    if as_json:
        out = status_json(st, now, control_socket=known["control_socket"])
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(format_status(st, now))
    return EXIT_DEGRADED if assess(st, now) else EXIT_HEALTHY


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
