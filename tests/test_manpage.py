"""havip(1), generated from the parser: renders without warnings and names every command.

The checks walk the real parser (havip.cli) independently of the page's own walk, so a new
command or option that the page would miss fails here.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess

import pytest

from havip import manpage
from havip.cli import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, build_parser


def _render_text(roff: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(plain text, warnings) as man(1) shows the page; groff directly if man is missing."""
    page = tmp_path_factory.mktemp("man") / "havip.1"
    page.write_text(roff)
    env = {**os.environ, "LC_ALL": "C", "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""}
    if shutil.which("man"):
        cmd = ["man", "--warnings=all", "-l", str(page)]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-ww", "-Tascii", "-P-cbou", str(page)]
    else:
        pytest.skip("neither man nor groff is installed")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return _render_text(manpage.render(date="2026-01-01"), tmp_path_factory)


def _sections(text: str) -> dict[str, str]:
    """Top-level sections of the rendered page by heading (headings start in column 0)."""
    parts = re.split(r"^([A-Z][A-Z ]+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _walk(child, (*path, name))
    return found


def test_the_page_renders_without_warnings(rendered: tuple[str, str]) -> None:
    text, warnings = rendered
    assert warnings == ""
    assert "HAVIP(1)" in text


def test_the_page_has_the_sections_of_a_man_page(rendered: tuple[str, str]) -> None:
    sections = _sections(rendered[0])
    for name in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "FILES",
        "EXIT STATUS",
        "SIGNALS",
        "SEE ALSO",
    ):
        assert name in sections, f"no {name} section"
    assert "havip - keep a virtual IP alive" in sections["NAME"]
    for code in (EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG):
        assert re.search(rf"^\s+{code}\s", sections["EXIT STATUS"], re.M), code
    assert "SIGTERM" in sections["SIGNALS"] and "handover" in sections["SIGNALS"]
    assert "SIGHUP" in sections["SIGNALS"] and "reload" in sections["SIGNALS"].lower()
    assert "/etc/havip/havip.toml" in sections["FILES"]


def test_every_command_and_option_of_the_parser_is_on_the_page(rendered: tuple[str, str]) -> None:
    commands = _sections(rendered[0])["COMMANDS"]
    # Each command's block: from its "havip ..." heading to the next one.
    blocks = dict(
        re.findall(r"^ {3}havip ([a-z -]+)\n(.*?)(?=^ {3}havip |\Z)", commands, re.M | re.S)
    )
    walked = _walk(build_parser())
    assert len(walked) > 10
    for path, parser in walked[1:]:
        name = " ".join(path)
        assert name in blocks, f"`havip {name}` has no section"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices:
                    assert sub in blocks[name], (name, sub)
            elif "--help" not in action.option_strings:
                for flag in action.option_strings:
                    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", blocks[name]), (
                        f"`havip {name}`: {flag} missing"
                    )
                for choice in action.choices or ():
                    assert str(choice) in blocks[name], (name, choice)
                if action.help:
                    first_words = " ".join(action.help.split()[1:4])
                    assert first_words in " ".join(blocks[name].split()), (name, action.help)


def test_the_synopsis_lists_every_leaf_command(rendered: tuple[str, str]) -> None:
    synopsis = " ".join(_sections(rendered[0])["SYNOPSIS"].split())
    for path, parser in _walk(build_parser())[1:]:
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if not has_sub:
            assert f"havip {' '.join(path)} " in synopsis + " ", path


def test_roff_escapes_dashes_and_leading_dots() -> None:
    assert manpage._esc("--config") == "\\-\\-config"
    assert manpage._esc(".hidden") == "\\&.hidden"
    assert manpage._esc("a\\b") == "a\\eb"


def test_the_prefix_names_the_installed_docs() -> None:
    page = manpage.render(date="2026-01-01", prefix="/usr")
    assert "/usr/share/doc/havip/INSTALL.md" in page
    assert "/usr/local" not in page


def test_source_date_epoch_makes_the_page_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00Z
    assert '.TH HAVIP 1 "2026-01-01"' in manpage.render()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767312000")
    assert '.TH HAVIP 1 "2026-01-02"' in manpage.render()


def test_python_m_havip_manpage_prints_the_page() -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "havip.manpage"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('.\\" Generated') and "\n.SH COMMANDS\n" in result.stdout
