"""README.md's "Reliability" table is the one tests/e2e/reliability.py renders, and every test it
names exists (render it with `python3 -m tests.e2e.reliability`)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.e2e.reliability import END_MARKER, ROWS, START_MARKER, TEST_FILES, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_holds_exactly_the_rendered_reliability_table():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(START_MARKER) == 1 and readme.count(END_MARKER) == 1, (
        f"README.md needs the markers {START_MARKER} and {END_MARKER} once each;"
        " `python3 -m tests.e2e.reliability` prints the block"
    )
    between = readme.split(START_MARKER, 1)[1].split(END_MARKER, 1)[0]
    assert between.strip("\n") == render(), (
        "README.md's reliability table differs; `python3 -m tests.e2e.reliability` prints it"
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
