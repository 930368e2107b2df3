"""`{{ }}` placeholders in alert messages, web hook URLs, headers and bodies, emails and action summaries.

A placeholder holds any expression of the language (`{{ job.id }}`, `{{ bytes(memory.available) }}`,
`{{ job.code == 0 ? 'ok' : 'failed' }}`, `{{ data.headers['x-uuid'] }}`), evaluated against the data with the
same compiler and bounds as everywhere else. A result renders as JavaScript's String() would, except that arrays
and objects render as JSON (as xyOps does) and null or undefined as the caller's `missing` text.

Scanning follows xyOps: the first `{{` pairs with the next `}}`. A `}}` with no opening `{{` is plain text (JSON
bodies routinely end in `}}`); an unclosed `{{`, an empty placeholder or an expression that does not compile is
refused by `check()` with a message saying where.

Differences from xyOps, on purpose:
- one pass only: a value that itself contains `{{ }}` is inserted as is, never expanded again (xyOps re-expands up
  to 32 times, which lets data inject placeholders);
- null renders as `missing` like undefined (xyOps writes "null"); `stringify()` of undefined is "null";
- a placeholder that fails at evaluation (a bound, a refused `match` pattern) renders as "(error: ...)", the
  message naming the problem, never the data (xyOps: "(ERROR: ...)").

Bounds: one render has one Budget of MAX_STEPS shared by all its placeholders, and each inserted text costs a
step per CHARS_PER_STEP characters, so repeating a costly placeholder does not multiply the work (once the steps
are spent, the rest render as errors). The text the placeholders insert is at most MAX_OUTPUT characters in all;
beyond, render() raises EvaluationError (a ValueError), the caller's path for a template that cannot render.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from . import values
from .compiler import MAX_STEPS, Expression, compile_expression
from .errors import EvaluationError, ExpressionError
from .functions import BUILTINS
from .values import Budget, charging, get_property

OPEN, CLOSE = "{{", "}}"
MAX_OUTPUT: Final = 256 * 1024  # characters all placeholders of one render may insert
FUNCTIONS = BUILTINS  # the functions a placeholder may call (plus the caller's `server` / `event`)


def to_text(value: Any) -> str:
    """A value as it appears in rendered text (JavaScript-like: true/false, 3 not 3.0, objects as JSON)."""
    try:
        return values.text(value)
    except values.LimitError:
        return ""


class Placeholder(NamedTuple):
    expression: Expression
    start: int  # offset of its `{{` in the template


def _compile(source: str, start: int) -> Placeholder:
    if not source.strip():
        raise ValueError(f"empty placeholder '{OPEN}{source}{CLOSE}' at position {start}")
    try:
        return Placeholder(compile_expression(source), start)
    except ExpressionError as exc:
        where = "" if exc.position is None else f" (at {exc.position} in the placeholder)"
        raise ValueError(f"unsupported expression '{source.strip()}' at position {start}: {exc.problem}{where}"
                         ) from None  # fmt: skip


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
        value = get_property(value, step)
        if value is None or value is values.UNDEFINED:
            return None
    return value


def _room(inserted: int) -> None:
    if inserted > MAX_OUTPUT:
        raise EvaluationError(f"the template would insert more than {MAX_OUTPUT} characters")


def render(template: str, data: Mapping[str, Any], escape: Callable[[str], str] | None = None, *,
           raw_start: bool = False, missing: str = "",
           functions: Mapping[str, Callable[..., Any]] | None = None) -> str:  # fmt: skip
    """Expand every placeholder. `escape` filters each inserted value (e.g. URL-encoding); with `raw_start`, a
    placeholder at the very start is inserted unescaped (a URL's base address); a value that is missing or renders
    empty becomes `missing` (emails and summaries show "n/a" there, as xyOps does). `functions`: lookups for
    `server(id)` and `event(id)`. EvaluationError when the placeholders would insert more than MAX_OUTPUT
    characters."""
    out: list[str] = []
    budget = Budget(MAX_STEPS)
    inserted = 0
    for part in parse(template):
        if isinstance(part, str):
            out.append(part)
            continue
        try:
            with charging(budget):  # the JSON of a container result is charged too
                text = values.text(part.expression.evaluate_raw(data, functions, budget=budget))
                budget.spend_chars(len(text))
        except (EvaluationError, values.LimitError) as exc:
            text = f"(error: {exc})"
        if not text:
            text = missing
        if escape is not None and not (raw_start and part.start == 0):
            _room(inserted + len(text))  # escaping never shortens a text: refuse before the work
            text = escape(text)
        inserted += len(text)
        _room(inserted)
        out.append(text)
    return "".join(out)
