"""jsontext: json.loads and json.dumps by the json module's C parts, the same answers and errors,
without importing the json package (and `re`) when it succeeds."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from certsync.host import jsontext
from tests.unit.hostrun import HOST_PYTHON, ISOLATED

VALUES = [
    {"b": [1, 2.5, -0.0, 1e300, None, True, False], "a": {"é": '\u2028\x00"\\/'}, "": []},
    "caf\u00e9 \ud83d\ude00",
    [],
    {},
    0,
    -12345678901234567890,
    3.141592653589793,
    None,
    [{"names": {"mail.example.com": {"action": "in sync", "not_after": "2026-01-01T00:00:00Z"}}}],
]
TEXTS = [
    ' {"a": [1, 2.5e3, -0, true, false, null, "\\u00e9\\ud83d\\ude00"]} \n',
    "[NaN, Infinity, -Infinity]",
    "12",
    '"x"',
    b'{"a": 1}',
    "\ufeff{}",  # json refuses a BOM in a str
    b"\xef\xbb\xbf{}",  # and reads bytes past it
    '{"a": 1} x',
    '{"a": 1}{"a": 2}',
    "",
    "   ",
    "[1,]",
    '{"a" 1}',
    '"\x01"',  # a control character: strict
    b"\xff",
    '{"a": 1, "a": 2}',
    "[" * 100_000,
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("sort_keys", [False, True])
def test_dumps_writes_what_json_writes(value, sort_keys):
    assert jsontext.dumps(value, sort_keys=sort_keys) == json.dumps(value, sort_keys=sort_keys)


@pytest.mark.parametrize("value", [{1: set()}, [object()], {"a": float("nan")}, {(1,): 2}])
def test_dumps_refuses_what_json_refuses(value):
    try:
        expected: object = json.dumps(value)
    except (TypeError, ValueError) as error:
        expected = type(error)
    if isinstance(expected, str):
        assert jsontext.dumps(value) == expected
    else:
        with pytest.raises(expected):  # type: ignore[call-overload]
            jsontext.dumps(value)


def outcome(read, text):
    try:
        value = read(text)
    except (ValueError, RecursionError) as error:
        return type(error), str(error)
    return "ok", json.dumps(value, sort_keys=True) if not _has_nan(value) else repr(value)


def _has_nan(value):
    return isinstance(value, list) and any(isinstance(v, float) and math.isnan(v) for v in value)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_loads_reads_and_refuses_what_json_does(text):
    assert outcome(jsontext.loads, text) == outcome(json.loads, text)


def test_an_in_sync_read_imports_neither_json_nor_re():
    """On the host's python3 (3.9+): the C parts are there and used."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(jsontext.__file__).parent)!r}); import jsontext;"
        "v = jsontext.loads(jsontext.dumps({'a': [1, 2.5, None, 'é']}, sort_keys=True));"
        "assert v == {'a': [1, 2.5, None, 'é']}, v;"
        "print(sorted(m for m in sys.modules if m in ('json', 're')))"
    )
    result = subprocess.run(
        [HOST_PYTHON, *ISOLATED, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
