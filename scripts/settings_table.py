"""The README's settings table, rendered from the one declaration of every setting
(certsync/host/settings.py): name, default, documentation.

    python3 -m scripts.settings_table      # prints the block README.md holds between its markers

tests/test_readme.py checks that README.md holds exactly this table.
"""

from __future__ import annotations

from certsync.host.settings import SETTINGS, Setting
from scripts.readme_tables import block, markdown_table

START_MARKER = "<!-- settings:start -->"
END_MARKER = "<!-- settings:end -->"


def _default(setting: Setting) -> str:
    if setting.default in ("", []):
        return "(none)"
    return f"`{setting.default!r}`"


def render() -> str:
    """The Markdown table, one line per setting."""
    rows = ((f"`{setting.key}`", _default(setting), setting.doc) for setting in SETTINGS)
    return markdown_table(("setting", "default", "what"), rows)


def render_block() -> str:
    return block(START_MARKER, END_MARKER, render())


if __name__ == "__main__":
    print(render_block())
