"""`{{ }}` placeholders in web hook URLs, headers and bodies, emails and action summaries.

A placeholder holds a dotted path into the data (`{{ job.id }}`, `{{ hook.headers.0.name }}`,
`{{ secrets.API_TOKEN }}`), optionally wrapped in one helper from `FUNCTIONS` (`{{ encode(text) }}`).
Nothing is ever evaluated as code: a path only walks mappings by key and lists by index.

Scanning follows xyOps: the first `{{` pairs with the next `}}`. A `}}` with no opening `{{` is
plain text (JSON bodies routinely end in `}}`); an unclosed `{{`, an empty placeholder or an
expression outside the grammar below is refused by `check()` with a message saying where.

Differences from xyOps' expression format (JEXL), by design or not yet needed:
- no operators, comparisons, ternaries, literals, `|` transforms or `[...]` filter expressions
  (only `[n]` list indices);
- of the helpers only `encode`, `stringify`, `integer` and `float` exist (add more to FUNCTIONS);
- one pass only: a value that itself contains `{{ }}` is inserted as is, never expanded again
  (xyOps re-expands up to 32 times, which lets data inject placeholders);
- a missing value renders as an empty string, or as the caller's `missing` text (xyOps: a fallback).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

OPEN, CLOSE = "{{", "}}"
_SEGMENT = r"[A-Za-z0-9_$]+"
_PATH = rf"{_SEGMENT}(?:\.{_SEGMENT}|\[\d+\])*"
_EXPR = re.compile(rf"(?:(?P<func>[A-Za-z_]\w*)\(\s*(?P<arg>{_PATH})\s*\)|(?P<path>{_PATH}))")
_STEP = re.compile(rf"\.?({_SEGMENT})|\[(\d+)\]")


def to_text(value: Any) -> str:
    """A value as it appears in rendered text (JavaScript-like: true/false, 3 not 3.0, objects as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _integer(value: Any) -> str:
    try:
        return str(math.trunc(float(value)))
    except (TypeError, ValueError, OverflowError):
        return "0"


def _float(value: Any) -> str:
    try:
        return to_text(float(value))
    except (TypeError, ValueError):
        return "0"


# Helper name -> function of the looked-up value (None when missing) returning text.
FUNCTIONS: dict[str, Callable[[Any], str]] = {
    "encode": lambda v: quote(to_text(v), safe="-_.!~*'()"),  # encodeURIComponent
    "stringify": lambda v: json.dumps(v, separators=(",", ":"), default=str),
    "integer": _integer,
    "float": _float,
}


class Placeholder(NamedTuple):
    func: str | None
    path: tuple[str, ...]
    start: int  # offset of its `{{` in the template


def _compile(expr: str, start: int) -> Placeholder:
    source = expr.strip()
    if not source:
        raise ValueError(f"empty placeholder '{{{{{expr}}}}}' at position {start}")
    match = _EXPR.fullmatch(source)
    if match is None:
        raise ValueError(
            f"unsupported expression '{source}' at position {start}: use a dotted path such as "
            f"'job.id', optionally inside one of {', '.join(f'{f}()' for f in FUNCTIONS)}"
        )
    func = match["func"]
    if func is not None and func not in FUNCTIONS:
        raise ValueError(f"unknown function '{func}' at position {start}; known: {', '.join(FUNCTIONS)}")
    path = match["arg"] or match["path"]
    steps = tuple(m[1] or m[2] for m in _STEP.finditer(path))
    return Placeholder(func, steps, start)


@functools.lru_cache(maxsize=2048)
def parse(template: str) -> tuple[str | Placeholder, ...]:
    """The template as literal text and placeholders; ValueError names the first problem."""
    parts: list[str | Placeholder] = []
    pos = 0
    while (start := template.find(OPEN, pos)) >= 0:
        end = template.find(CLOSE, start + len(OPEN))
        if end < 0:
            raise ValueError(f"unclosed '{OPEN}' at position {start}: every '{OPEN}' needs a matching '{CLOSE}'")
        if start > pos:
            parts.append(template[pos:start])
        parts.append(_compile(template[start + len(OPEN) : end], start))
        pos = end + len(CLOSE)
    if pos < len(template):
        parts.append(template[pos:])
    return tuple(parts)


def check(template: str) -> None:
    """Raise ValueError with a clear message unless every placeholder in the template compiles."""
    parse(template)


def lookup(data: Any, path: Sequence[str]) -> Any:
    """Walk mappings by key and lists by index; None as soon as a step is missing."""
    value = data
    for step in path:
        if isinstance(value, Mapping):
            value = value.get(step)
        elif isinstance(value, list | tuple) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
        if value is None:
            return None
    return value


def render(template: str, data: Mapping[str, Any], escape: Callable[[str], str] | None = None, *,
           raw_start: bool = False, missing: str = "") -> str:  # fmt: skip
    """Expand every placeholder. `escape` filters each inserted value (e.g. URL-encoding); with `raw_start`, a
    placeholder at the very start is inserted unescaped (a URL's base address); a value that is missing or renders
    empty becomes `missing` (emails and summaries show "n/a" there, as xyOps does)."""
    out: list[str] = []
    for part in parse(template):
        if isinstance(part, str):
            out.append(part)
            continue
        value = lookup(data, part.path)
        text = FUNCTIONS[part.func](value) if part.func is not None else to_text(value)
        if not text:
            text = missing
        if escape is not None and not (raw_start and part.start == 0):
            text = escape(text)
        out.append(text)
    return "".join(out)
