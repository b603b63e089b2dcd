"""README.md holds exactly the tables rendered from their sources: the "Reliability" table from
tests/e2e/reliability.py (every test it names exists) and the settings table from the settings'
one declaration (certsync/host/settings.py); and the commands it documents are the ones tests
run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts import settings_table
from tests.e2e import reliability
from tests.e2e.reliability import ROWS, TEST_FILES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.mark.parametrize(
    "table, command",
    [
        (reliability, "python3 -m tests.e2e.reliability"),
        (settings_table, "python3 -m scripts.settings_table"),
    ],
    ids=["reliability", "settings"],
)
def test_readme_holds_exactly_the_rendered_table(table, command):
    readme = README.read_text()
    start, end = table.START_MARKER, table.END_MARKER
    assert readme.count(start) == 1 and readme.count(end) == 1, (
        f"README.md needs the markers {start} and {end} once each; `{command}` prints the block"
    )
    between = readme.split(start, 1)[1].split(end, 1)[0]
    assert between.strip("\n") == table.render(), (
        f"README.md's table differs; `{command}` prints it"
    )


def test_every_test_the_table_names_exists():
    defined: set[str] = set()
    for path in TEST_FILES:
        tree = ast.parse((ROOT / path).read_text())
        defined |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    named = [name for row in ROWS for name in row.tests]
    assert named
    assert [name for name in named if name not in defined] == []


def test_every_fault_test_is_in_the_table():
    tree = ast.parse((ROOT / "tests/e2e/test_faults.py").read_text())
    tests = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    named = {name for row in ROWS for name in row.tests}
    assert sorted(tests - named) == []
