"""Well-known names: syntax now; the registry (owners, queues, activators) lives here too."""

from __future__ import annotations

from .limits import NAME_MAX_LEN


def _element_ok(element: str) -> bool:
    if not element or element[0].isdigit():
        return False
    return all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in element)


def is_valid_name(name: str, allow_wildcard: bool = False) -> bool:
    """D-Bus well-known name rules as kdbus checks them; `a.b.*` only where wildcards are allowed."""
    if not name or len(name) > NAME_MAX_LEN:
        return False
    elements = name.split(".")
    if len(elements) < 2:
        return False
    if allow_wildcard and elements[-1] == "*":
        elements = elements[:-1]
        if not elements:
            return False
        return all(_element_ok(e) for e in elements)
    return all(_element_ok(e) for e in elements)
