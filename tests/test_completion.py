"""Bash completion, generated from the parser, exercised in a real bash.

Each case sources the generated script, sets COMP_WORDS/COMP_CWORD as bash does for a TAB
press, calls `_havip` and reads COMPREPLY back.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from havip.cli import build_parser
from havip.completion import bash_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "havip"
    path.write_text(bash_script())
    return path


def complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """COMPREPLY for the command line `words`, the cursor at the end of the last word."""
    program = (
        f"source {shlex.quote(str(script))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_havip\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_script_is_valid_bash(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_commands_complete_from_the_parser(script: Path) -> None:
    assert complete(script, "havip", "") == list(_subcommands(build_parser()))
    assert complete(script, "havip", "ma") == ["maintenance"]
    assert complete(script, "havip", "pki", "") == ["init", "issue", "show"]
    assert complete(script, "havip", "pki", "i") == ["init", "issue"]


def test_every_commands_options_complete(script: Path) -> None:
    """Walk the real parser: `havip CMD... --` offers exactly that command's long options."""
    todo: list[tuple[list[str], argparse.ArgumentParser]] = [([], build_parser())]
    seen = 0
    while todo:
        path, parser = todo.pop()
        subs = _subcommands(parser)
        todo += [([*path, name], child) for name, child in subs.items()]
        expected = sorted(
            f for a in parser._actions for f in a.option_strings if f.startswith("--")
        )
        assert sorted(complete(script, "havip", *path, "--")) == expected, path
        seen += 1
    assert seen >= 12


def test_maintenance_takes_on_or_off(script: Path) -> None:
    assert complete(script, "havip", "maintenance", "") == ["on", "off"]
    assert complete(script, "havip", "maintenance", "o") == ["on", "off"]
    assert complete(script, "havip", "maintenance", "of") == ["off"]
    # The switch is given: nothing more to offer but options.
    assert complete(script, "havip", "maintenance", "on", "") == []
    assert complete(script, "havip", "maintenance", "--config", "x", "") == ["on", "off"]


def test_choices_complete_for_an_options_value(script: Path) -> None:
    assert complete(script, "havip", "run", "--log-level", "") == [
        "debug",
        "info",
        "warning",
        "error",
    ]
    assert complete(script, "havip", "run", "--log-level", "w") == ["warning"]
    # Bash splits --log-level=w into three words at the "=".
    assert complete(script, "havip", "run", "--log-level", "=", "w") == ["warning"]
    assert complete(script, "havip", "run", "--log-level", "=") == [
        "debug",
        "info",
        "warning",
        "error",
    ]
    # ... unless "=" is not in COMP_WORDBREAKS: then the value follows the "=" in one word.
    assert complete(script, "havip", "run", "--log-level=e") == ["--log-level=error"]


def test_config_completes_files_and_dir_completes_folders(script: Path, tmp_path: Path) -> None:
    (tmp_path / "havip.toml").write_text("")
    (tmp_path / "hooks").mkdir()
    (tmp_path / "other").write_text("")
    got = complete(script, "havip", "status", "--config", "h", cwd=tmp_path)
    assert sorted(got) == ["havip.toml", "hooks"]  # a folder may lead to the file
    got = complete(script, "havip", "check-config", "--config", f"{tmp_path}/havip.t")
    assert got == [f"{tmp_path}/havip.toml"]
    got = complete(script, "havip", "pki", "init", "--dir", "", cwd=tmp_path)
    assert got == ["hooks"]


def test_a_value_is_not_taken_for_a_command(script: Path) -> None:
    """`--config run` is a file called run; the next word still completes status's options."""
    assert complete(script, "havip", "status", "--config", "run", "--") == [
        "--help",
        "--config",
        "--json",
    ]
    # A free value (a node spec) offers nothing rather than guessing.
    assert complete(script, "havip", "pki", "init", "--node", "") == []


def test_python_m_havip_completion_bash_prints_the_script() -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "havip.completion", "bash"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == bash_script()
    assert result.stdout.rstrip().endswith("complete -F _havip havip")
    refused = subprocess.run(
        [sys.executable, "-m", "havip.completion", "fish"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
