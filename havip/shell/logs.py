"""One log line per event: `TIME NODE LEVEL event=NAME key=value ... msg="sentence"`.

`--log-format json` writes the same event as one JSON object per line instead (for log
shippers). Under journald (its stream on our stderr) each line starts with the syslog
priority, `<4>` for a warning, so `journalctl -p warning` filters; journald strips it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Literal

LOGGER = logging.getLogger("havip")

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# syslog(3) priorities, as sd-daemon(3) prefixes them.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}
_DEBUG_PRIORITY = 7
# What event() attaches to its record (logging's `extra`), for the JSON formatter.
_EVENT, _FIELDS, _MSG = "havip_event", "havip_fields", "havip_msg"
_RESERVED = frozenset({"ts", "node", "level", "event", "msg", "exc"})


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (between levels: the next more severe)."""
    for level, prio in sorted(_PRIORITY.items()):
        if levelno <= level:
            return prio if levelno > logging.DEBUG else _DEBUG_PRIORITY
    return _PRIORITY[logging.CRITICAL]


def under_journald(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journald stream systemd connected (`$JOURNAL_STREAM` names its
    `st_dev:st_ino`, see systemd.exec(5)); a redirect in between makes it False."""
    env = os.environ if environ is None else environ
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False  # no file behind the stream, or a malformed variable


class _Formatter(logging.Formatter):
    def __init__(self, node: str, *, journald: bool = False) -> None:
        super().__init__()
        self.node = node
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = self.body(record)
        return f"<{priority(record.levelno)}>{line}" if self.journald else line

    def when(self, record: logging.LogRecord) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")

    def body(self, record: logging.LogRecord) -> str:
        line = f"{self.when(record)} {self.node} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            line += " " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class _JsonFormatter(_Formatter):
    def body(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, object] = getattr(record, _FIELDS, {})
        obj: dict[str, object] = {
            "ts": self.when(record),
            "node": self.node,
            "level": record.levelname,
            # A line that did not come through event() (a library's warning) is a "log" event.
            "event": getattr(record, _EVENT, "log"),
        }
        for key, value in fields.items():
            obj[key + "_" if key in _RESERVED else key] = _json_value(value)
        obj["msg"] = getattr(record, _MSG, record.getMessage())
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def setup_logging(
    node: str,
    level: str = "info",
    *,
    fmt: LogFormat = "text",
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send havip's log lines to `stream` (stderr), in `fmt`, with syslog priorities when the
    stream is journald's."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    out = sys.stderr if stream is None else stream
    journald = under_journald(out, environ)
    handler = logging.StreamHandler(out)
    formatter = _JsonFormatter if fmt == "json" else _Formatter
    handler.setFormatter(formatter(node, journald=journald))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


def _json_value(value: object) -> object:
    # Numbers and booleans stay numbers and booleans; everything else (enums, paths,
    # addresses) is its text, as in the text format. NaN and infinities are not JSON.
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def event(name: str, msg: str = "", *, level: int = logging.INFO, **fields: object) -> None:
    """Log one event with its fields; `msg` is the human sentence."""
    if not LOGGER.isEnabledFor(level):
        return
    kept = {key: val for key, val in fields.items() if val is not None}
    parts = [f"event={name}"]
    parts += [f"{key}={_value(val)}" for key, val in kept.items()]
    if msg:
        parts.append(f"msg={_value(msg)}")
    # The text stays the record's message (every handler sees the same line); the fields ride
    # along for the JSON formatter, so it never has to parse the text back.
    extra = {_EVENT: name, _FIELDS: kept, _MSG: msg}
    LOGGER.log(level, " ".join(parts), extra=extra)
