"""havip(1), generated from the command-line parser: `python -m havip.manpage > havip.1`.

The page is built from `havip.cli`'s argparse parser (every command, option, choice and
default), so it cannot drift from the code; only the sections the parser cannot know (files,
exit status, signals) are written here. `havip.completion` walks the parser the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from havip import __version__
from havip.cli import build_parser


@dataclass(frozen=True, kw_only=True)
class Option:
    """One argument of one command, as the parser defines it."""

    flags: tuple[str, ...]  # empty for a positional argument
    metavar: str | None  # None: the option takes no value
    choices: tuple[str, ...]
    help: str
    default: str | None  # shown only when it tells the reader something
    required: bool
    repeatable: bool
    kind: str  # "file", "dir" or "" (how a shell completes the value)


@dataclass(frozen=True, kw_only=True)
class Command:
    """A command or sub-command: its words after `havip`, its help, its arguments."""

    path: tuple[str, ...]  # () for `havip` itself, ("pki", "init") for `havip pki init`
    help: str
    options: tuple[Option, ...]
    subcommands: tuple[str, ...]


def commands(parser: argparse.ArgumentParser | None = None) -> list[Command]:
    """Every command reachable from the parser, parents before their sub-commands."""
    return list(_walk(parser or build_parser(), (), ""))


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...], help_text: str
) -> Iterator[Command]:
    options: list[Option] = []
    children: list[tuple[str, argparse.ArgumentParser, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                children.append((name, child, helps.get(name, "")))
            continue
        if action.help == argparse.SUPPRESS:
            continue
        options.append(_option(action))
    yield Command(
        path=path,
        help=help_text or parser.description or "",
        options=tuple(options),
        subcommands=tuple(name for name, _, _ in children),
    )
    for name, child, child_help in children:
        yield from _walk(child, (*path, name), child_help)


def _option(action: argparse.Action) -> Option:
    takes_value = action.nargs != 0
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    metavar: str | None = None
    if takes_value:
        if isinstance(action.metavar, str):
            metavar = action.metavar
        elif choices:
            metavar = "{" + ",".join(choices) + "}"
        else:
            metavar = action.dest.upper().replace("_", "-")
    help_text = action.help or ""
    if "%(" in help_text:  # argparse's own expansion, e.g. %(default)s
        help_text = help_text % {**vars(action), "prog": ""}
    default = None
    if (
        takes_value
        and action.option_strings
        and action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in help_text
    ):
        default = str(action.default)
    kind = ""
    if action.type is not None and getattr(action.type, "__name__", "") in ("Path", "PosixPath"):
        kind = "dir" if action.dest == "dir" else "file"
    return Option(
        flags=tuple(action.option_strings),
        metavar=metavar,
        choices=choices,
        help=help_text,
        default=default,
        required=bool(action.required) and bool(action.option_strings),
        repeatable=isinstance(action, argparse._AppendAction),
        kind=kind,
    )


# --- roff ---------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe in a roff line: backslashes and dashes escaped, no leading control dot."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + out if out[:1] in (".", "'") else out


def _usage(option: Option) -> str:
    """`[--config FILE]`, `--node NAME=ADDRESS ...`, `{on,off}` in roff fonts."""
    if not option.flags:
        body = f"\\fI{_esc(option.metavar or '')}\\fR"
    else:
        flag = option.flags[-1]  # the long form reads best in a synopsis
        body = f"\\fB{_esc(flag)}\\fR"
        if option.metavar:
            body += f" \\fI{_esc(option.metavar)}\\fR"
    if option.repeatable:
        body += " ..."
    return body if option.required or not option.flags else f"[{body}]"


def _synopsis(cmd: Command) -> str:
    words = " ".join(_esc(w) for w in cmd.path)
    parts = [f"\\fBhavip {words}\\fR" if words else "\\fBhavip\\fR"]
    parts += [_usage(o) for o in cmd.options if "-h" not in o.flags]
    if cmd.subcommands:
        parts.append("\\fI" + _esc("|".join(cmd.subcommands)) + "\\fR ...")
    return " ".join(parts)


def _option_item(option: Option) -> list[str]:
    if option.flags:
        tag = ", ".join(f"\\fB{_esc(f)}\\fR" for f in option.flags)
        if option.metavar:
            tag += f" \\fI{_esc(option.metavar)}\\fR"
    else:
        tag = f"\\fI{_esc(option.metavar or '')}\\fR"
    text = option.help[:1].upper() + option.help[1:] if option.help else ""
    if not text and not option.flags and option.choices:
        text = "One of " + ", ".join(option.choices)
    notes = []
    if option.choices and option.flags and option.metavar and not option.metavar.startswith("{"):
        notes.append("one of " + ", ".join(option.choices))
    if option.default is not None:
        notes.append(f"default: {option.default}")
    if option.required:
        notes.append("required")
    if option.repeatable:
        notes.append("may be repeated")
    if notes:
        text = (text + " " if text else "") + "(" + "; ".join(notes) + ")"
    if text and not text.endswith((".", ")")):
        text += "."
    return [".TP", tag, _esc(text)]


_DESCRIPTION = """\
havip keeps a virtual IP address (VIP) on one of two servers. The standby keeps one \
mutual-TLS connection to the primary; both send keepalives over it. When the primary's \
keepalives stop, the standby probes the LAN and takes the VIP only once nothing answers for \
it any more. Run \\fBhavip run\\fR on both nodes, normally as a service (systemd or SMF)."""

_FILES = [
    ("/etc/havip/havip.toml", "The configuration (the default of every --config)."),
    (
        "/etc/havip/pki/",
        "ca.crt, and this node's NODE.crt and NODE.key from havip pki init; the key readable "
        "by the daemon's user only. The CA key (ca.key) never goes on a node.",
    ),
    (
        "/var/lib/havip/",
        "state_dir: NODE.epoch (the ownership epoch) and NODE.maintenance (the maintenance "
        "switch), kept across restarts.",
    ),
    (
        "/run/havip/NODE.sock",
        "control_socket: havip status, handover, maintenance and reload talk to the daemon here.",
    ),
    ("{prefix}/share/doc/havip/", "README.md and INSTALL.md (the install guide)."),
]

_EXIT = [
    ("0", "Success."),
    (
        "1",
        "Runtime failure: the daemon cannot bind or start, or the daemon refused handover, "
        "maintenance or reload. For status: the pair is degraded (see havip status in the "
        "README).",
    ),
    (
        "2",
        "Usage or configuration error, including pki init refusing to overwrite a key "
        "without --force and reload with a config that does not load; for status, the "
        "daemon is unreachable. A service manager should not restart the daemon after exit "
        "status 2.",
    ),
]

_SIGNALS = [
    (
        "SIGTERM, SIGINT",
        "Planned handover and exit: the active node removes the VIP, tells the peer (RESIGN), "
        "which takes it at once, and exits 0.",
    ),
    (
        "SIGHUP",
        "Reload: re-read the config and the certificates without moving the VIP, as havip "
        "reload (a refused reload is logged and changes nothing).",
    ),
    (
        "SIGKILL",
        "Leaves the VIP on the interface; the restarted daemon resumes ownership.",
    ),
]

_SEE_ALSO = (
    "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsvcadm\\fR(8), \\fBsvcs\\fR(1), "
    "\\fBipadm\\fR(8), \\fBip\\fR(8)"
)


def render(
    parser: argparse.ArgumentParser | None = None,
    *,
    date: str | None = None,
    prefix: str = "/usr/local",
) -> str:
    """The whole havip(1) page in roff (man macros); `prefix` is where the docs are installed."""
    cmds = commands(parser)
    top = cmds[0]
    if date is None:
        # Reproducible builds set SOURCE_DATE_EPOCH; otherwise the page carries today's date.
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
        date = when.strftime("%Y-%m-%d")
    lines = [
        ".\\\" Generated by `python -m havip.manpage` from havip's argument parser: do not edit.",
        f'.TH HAVIP 1 "{date}" "havip {_esc(__version__)}" "User Commands"',
        ".ad l",  # ragged right, no hyphenation: options stay whole and copy-pasteable
        ".nh",
        ".SH NAME",
        "havip \\- " + _esc(top.help.rstrip(".").lower()[:1] + top.help.rstrip(".")[1:]),
        ".SH SYNOPSIS",
        _synopsis(top),
    ]
    for cmd in cmds[1:]:
        if not cmd.subcommands:
            lines += [".br", _synopsis(cmd)]
    lines += [".SH DESCRIPTION", _DESCRIPTION, ".SH OPTIONS"]
    for option in top.options:
        lines += _option_item(option)
    lines += [".PP", "Every command also takes \\fB\\-h\\fR, \\fB\\-\\-help\\fR."]
    lines += [".SH COMMANDS"]
    for cmd in cmds[1:]:
        lines += [f'.SS "havip {_esc(" ".join(cmd.path))}"', _esc(_sentence(cmd.help))]
        lines += [".PP", _synopsis(cmd)]
        for option in cmd.options:
            if "--help" not in option.flags:  # said once, under OPTIONS
                lines += _option_item(option)
        if cmd.subcommands:
            lines += [".PP", "Commands: " + _esc(", ".join(cmd.subcommands)) + " (below)."]
    lines += [".SH FILES"]
    for path, text in _FILES:
        lines += [".TP", f"\\fI{_esc(path.format(prefix=prefix))}\\fR", _esc(text)]
    lines += [".SH EXIT STATUS"]
    for code, text in _EXIT:
        lines += [".TP", f"\\fB{code}\\fR", _esc(text)]
    lines += [".SH SIGNALS"]
    for name, text in _SIGNALS:
        lines += [".TP", f"\\fB{_esc(name)}\\fR", _esc(text)]
    docs = _esc(f"{prefix}/share/doc/havip")
    lines += [
        ".SH SEE ALSO",
        _SEE_ALSO,
        ".PP",
        f"The install guide and the full documentation: \\fI{docs}/INSTALL.md\\fR and "
        f"\\fI{docs}/README.md\\fR.",
    ]
    return "\n".join(lines) + "\n"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def main(argv: Sequence[str] | None = None) -> int:
    """Print havip(1) in roff to stdout."""
    cli = argparse.ArgumentParser(
        prog="python -m havip.manpage", description="Print havip(1) in roff to stdout."
    )
    cli.add_argument(
        "--prefix",
        default="/usr/local",
        help="install prefix the page names for the docs (default: /usr/local)",
    )
    args = cli.parse_args(argv)
    sys.stdout.write(render(prefix=args.prefix.rstrip("/")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
