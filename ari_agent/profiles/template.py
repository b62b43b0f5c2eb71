"""The instructions template: the call's details filled into a profile's instructions.

The rule, chosen so that any text an operator writes reaches the model as
written: ``{name}`` is replaced only when ``name`` is one of the call's
details (``caller_number``, ``caller_name``, ``extension``, ``context``) or a
channel variable the profile declares in ``template_variables``, and
``{{name}}`` for such a name gives a literal ``{name}``. Everything else —
JSON examples, ``{0}``, ``{}``, an unknown ``{name}``, lone braces — is left
exactly as written, so the instructions text can never fail a call. ``check``
warns about an unknown ``{name}``, which is most likely a typo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

CALL_NAMES = ("caller_number", "caller_name", "extension", "context")

# {{name}} (an escape) or {name}, where name is an identifier; nothing else is a placeholder.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the known names filled in from ``values``; the rest as written."""

    def fill(match: re.Match[str]) -> str:
        escaped, name = match.group(1), match.group(2)
        if escaped is not None:
            return "{" + escaped + "}" if escaped in values else match.group(0)
        return values[name] if name in values else match.group(0)

    return _PLACEHOLDER.sub(fill, text)


def template_warnings(text: str, declared: Iterable[str]) -> list[tuple[str, str]]:
    """(problem, fix) for each placeholder-looking part of ``text`` that will be sent as written."""
    known = [*CALL_NAMES, *declared]
    unknown: list[str] = []
    old_escapes = False
    for match in _PLACEHOLDER.finditer(text):
        escaped, name = match.group(1), match.group(2)
        if name is not None and name not in known:
            unknown.append(name)
        if escaped is not None and escaped not in known:
            old_escapes = True
    warnings = []
    if unknown:
        names = ", ".join("{" + n + "}" for n in dict.fromkeys(unknown))
        warnings.append(
            (
                f"{names} is not a template name, so it is sent as written.",
                f"use one of {', '.join('{' + n + '}' for n in known)}, "
                "or add a channel variable's name to template_variables",
            )
        )
    # Outside an escaped name '{{' is sent as written: valid JSON never has it, old str.format escapes do.
    if old_escapes or re.search(r"\{\{(?![A-Za-z_][A-Za-z0-9_]*\}\})", text):
        warnings.append(
            (
                "'{{' is sent as written; braces need no escaping here.",
                "write single braces, e.g. a JSON example as is ('{{name}}' only escapes a template name)",
            )
        )
    return warnings
