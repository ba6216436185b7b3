"""Replays every consensus scenario script and compares what happened with what it says.

Set KEELDB_REWRITE_SCENARIOS=1 to rewrite the scripts with the outputs actually produced
(then review the diff before committing it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keeldb.consensus.scenario import ScriptError, parse, run_script

SCRIPTS = Path(__file__).parent / "consensus"
REWRITE = os.environ.get("KEELDB_REWRITE_SCENARIOS") == "1"


def _scripts() -> list[Path]:
    return sorted(SCRIPTS.glob("*.txt"))


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: p.stem)
def test_scenario_produces_the_recorded_output(path: Path) -> None:
    text = path.read_text()
    actual = run_script(text)
    if REWRITE:
        path.write_text(actual)
        return
    assert actual == text


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: p.stem)
def test_scenario_states_its_claim_and_checks_something(path: Path) -> None:
    blocks, _ = parse(path.read_text())
    assert blocks[0].comments, "a scenario opens with a comment stating its claim"
    assert any(b.expected != ["ok"] for b in blocks[1:])


def test_runner_notices_a_changed_expected_output() -> None:
    script = "# claim\nnodes standard\n----\nconfig wrong\n"
    assert run_script(script) != script


def test_runner_rejects_an_unknown_command() -> None:
    with pytest.raises(ScriptError):
        run_script("# claim\nfly 1\n----\nok\n")


def test_there_are_scenarios() -> None:
    assert len(_scripts()) >= 10
