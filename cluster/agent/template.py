"""`{{ path.to.value }}` placeholders filled from the job, as xySat's plugins fill their params (Tools.sub)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .environ import nice_string

_PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")


def lookup(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def fill(text: str, data: Mapping[str, Any]) -> str:
    """Each placeholder replaced by its value as text (a missing one by nothing)."""

    def one(match: re.Match[str]) -> str:
        value = lookup(data, match.group(1))
        return "" if value is None else nice_string(value)

    return _PLACEHOLDER.sub(one, text)
