"""`havip demo`: the loopback fallback runs end to end and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))


def test_loopback_demo_fails_over_and_back() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "havip", "demo", "--loopback"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120 * SCALE,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "no network namespaces (--loopback was given)" in text
    for step in ("failure detected by n2", "VIP added on n2", "sent RESIGN", "VIP added on n1"):
        assert step in text, text
    assert "Traceback" not in out.stderr


def test_without_root_the_demo_says_why_and_uses_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from havip.lab import demo
    from havip.lab.netns import Lab

    reason = "not root (network namespaces need root)"
    monkeypatch.setattr(Lab, "available", staticmethod(lambda: reason))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert demo.run_demo() == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    assert f"no network namespaces ({reason})" in out
    assert "loopback with the dry-run backend" in out
