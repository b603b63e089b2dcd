"""JSON read and written as the json module does it, by the json module's own C parts (`_json`):
importing the json package imports `re` and compiles its patterns, a sixth of the CPU of an
in-sync state read. The C scanner and encoder are the ones json.loads and json.dumps use; what
they refuse, or a Python whose `_json` differs, goes to the json module itself (same answer,
same errors)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE's characters
CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Decoding:
    """What the C scanner reads of a json.JSONDecoder(): the defaults of json.loads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = CONSTANTS.__getitem__


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def loads(text: str | bytes) -> Any:
    """json.loads(text)."""
    try:
        import _json

        string = text.decode() if isinstance(text, bytes) else text
        start = len(string) - len(string.lstrip(WHITESPACE))
        value, end = _json.make_scanner(_Decoding())(string, start)  # type: ignore[arg-type]
        if string[end:].lstrip(WHITESPACE):
            raise ValueError("extra data")
        return value
    except Exception:  # (or RecursionError) the json module's answer, and its error
        import json

        return json.loads(text)


def dumps(value: Any, sort_keys: bool = False) -> str:
    """json.dumps(value, sort_keys=sort_keys)."""
    try:
        import _json

        if isinstance(value, str):
            return str(_json.encode_basestring_ascii(value))
        encode = _json.make_encoder(
            {}, _refuse, _json.encode_basestring_ascii, None, ": ", ", ", sort_keys, False, True
        )
        return "".join(encode(value, 0))
    except Exception:
        import json

        return json.dumps(value, sort_keys=sort_keys)
