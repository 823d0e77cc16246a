"""The README's state diagram is the one drawn from failover.TRANSITIONS."""

from __future__ import annotations

from pathlib import Path

from havip.core.failover import (
    TRANSITIONS,
)
from havip.core.states import State
from havip.diagram import BEGIN, END, mermaid, readme_block

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_diagram_matches_the_transition_table() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost its generated state diagram"
    start = text.index(BEGIN)
    end = text.index(END) + len(END)
    assert text[start:end] == readme_block(), "run `python -m havip.diagram` and paste it"


def test_every_transition_is_drawn() -> None:
    drawn = mermaid()
    for (frm, to), reasons in TRANSITIONS.items():
        if to is State.STOPPED:
            continue
        line = f"    {frm.value} --> {to.value}: " + ", ".join(sorted(r.value for r in reasons))
        assert line in drawn
