"""One log line per event: `TIME NODE LEVEL event=NAME key=value ... msg="sentence"`."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

LOGGER = logging.getLogger("havip")


class _Formatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
        line = f"{when} {self.node} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            line += " " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def setup_logging(node: str, level: str = "info") -> None:
    """Send havip's log lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


def event(name: str, msg: str = "", *, level: int = logging.INFO, **fields: object) -> None:
    """Log one event with its fields; `msg` is the human sentence."""
    parts = [f"event={name}"]
    parts += [f"{key}={_value(val)}" for key, val in fields.items() if val is not None]
    if msg:
        parts.append(f"msg={_value(msg)}")
    LOGGER.log(level, " ".join(parts))
