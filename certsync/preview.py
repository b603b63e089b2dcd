"""What the deploy shows for a host: one line per name from the host's own plan (`state`)."""

from __future__ import annotations

from typing import Any


def name_lines(name: str, plan: dict[str, Any]) -> list[str]:
    lines = [f"{name}: {plan['action']}: {plan['detail']}"]
    new = (plan.get("caddy") or {}).get("cert")
    if plan["action"] == "install" and plan.get("key_changes") and new:
        lines.append(
            f"{name}: the private key changes: publish the DANE record TLSA 3 1 1"
            f" {new['spki_sha256']} before mail from DANE senders fails"
        )
    lines += [f"{name}: warning: {warning}" for warning in plan.get("warnings", [])]
    return lines


def host_lines(state: dict[str, Any]) -> list[str]:
    lines = [f"warning: {warning}" for warning in state.get("warnings", [])]
    for name, plan in state["names"].items():
        lines += name_lines(name, plan)
    return lines
