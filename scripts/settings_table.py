"""The README's settings table, rendered from the one declaration of every setting
(certsync/host/settings.py): name, default, documentation.

    python3 -m scripts.settings_table      # prints the block README.md holds between its markers

tests/test_readme.py checks that README.md holds exactly this table.
"""

from __future__ import annotations

from certsync.host.settings import SETTINGS, Setting

START_MARKER = "<!-- settings:start -->"
END_MARKER = "<!-- settings:end -->"


def _default(setting: Setting) -> str:
    if setting.default in ("", []):
        return "(none)"
    return f"`{setting.default!r}`"


def render() -> str:
    """The Markdown table, one line per setting (no trailing newline)."""
    lines = ["| setting | default | what |", "|---|---|---|"]
    for setting in SETTINGS:
        doc = setting.doc.replace("|", "\\|")
        lines.append(f"| `{setting.key}` | {_default(setting)} | {doc} |")
    return "\n".join(lines)


def render_block() -> str:
    """The table between its markers, as README.md holds it."""
    return f"{START_MARKER}\n{render()}\n{END_MARKER}"


if __name__ == "__main__":
    print(render_block())
