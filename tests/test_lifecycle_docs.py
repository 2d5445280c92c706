"""The lifecycle table is written for people twice (ARCHITECTURE.md and lifecycle.py's docstring): both
must say exactly what TRANSITIONS and WHO do, or a maintainer reads one thing and the code does another."""

from __future__ import annotations

import re
from pathlib import Path

from agent.alerts import lifecycle
from agent.alerts.lifecycle import TRANSITIONS as CODE
from agent.alerts.lifecycle import WHO, AlertState, Cause, next_state

ROOT = Path(__file__).resolve().parents[1]
FINAL = ("voided", "refunded", "dismissed", "expired")


def expected(state: str, cause: Cause) -> str:
    moves = CODE[AlertState(state)]
    return moves[cause].value if cause in moves else "refused"


def first_word(cell: str) -> str:
    """`voided` -> voided; refused ("refund it instead") -> refused; `escalated` (note) -> escalated."""
    match = re.match(r"\s*`?([a-z_]+)`?", cell)
    assert match, f"cannot read the cell {cell!r}"
    return match.group(1)


def test_architecture_md_states_every_cell_of_the_table() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## The alert lifecycle", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    # The columns: cause, who, then one per state the alert may be in ("from `x`").
    froms = [re.findall(r"`([a-z_]+)`", h) for h in header[2:]]
    assert froms[-1] == list(FINAL), "the last column is the final states"
    seen = set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        cause = Cause(first_word(cells[0]))
        seen.add(cause)
        assert first_word(cells[1]) == WHO[cause].value, f"{cause}: who"
        for states, cell in zip(froms, cells[2:], strict=True):
            for state in states:
                assert first_word(cell) == expected(state, cause), f"{cause} from {state}"
    assert seen == set(Cause), "every cause has its row"
    assert {s for col in froms for s in col} == {s.value for s in AlertState}, "every state has its column"


def test_the_docstring_table_matches_the_code() -> None:
    doc = lifecycle.__doc__ or ""
    rows = [ln for ln in doc.splitlines() if ln and ln.split()[0] in {c.value for c in Cause}]
    assert {ln.split()[0] for ln in rows} == {c.value for c in Cause}
    header = next(ln for ln in doc.splitlines() if ln.startswith("cause "))
    columns = header.split()[2:]                # open void_printed void_claimed escalated voided, refunded,
    states = [c.rstrip(",") for c in columns if c.rstrip(",") in {s.value for s in AlertState}]
    assert states[:4] == ["open", "void_printed", "void_claimed", "escalated"]
    for row in rows:
        cause = Cause(row.split()[0])
        outcomes = row.split()[-5:]                    # the five state columns end every row
        for state, outcome in zip(["open", "void_printed", "void_claimed", "escalated", "voided"], outcomes,
                                  strict=True):
            assert outcome == expected(state, cause), f"{cause} from {state}"


def test_final_states_refuse_everything_and_the_rest_move_somewhere() -> None:
    for state in AlertState:
        for cause in Cause:
            if state.value in FINAL:
                assert not lifecycle.allows(state, cause)
            elif cause in CODE[state]:
                assert next_state(state, cause) == CODE[state][cause]
