"""The search query language of the xyOps API, parsed into a small AST.

Simple syntax: space-separated `column:value` terms, AND-ed. A column prefix stays in force for the
words after it (`tags:a b` needs both); bare words before any prefix go to the index's default
column. `a|b` is OR within a column, `-x` excludes, `+x` is the same as `x`, `"exact phrase"` quotes.
Numbers and dates take `>`, `>=`, `<`, `<=` and inclusive ranges `a..b`. `*` (or nothing) is all.
In number columns `-5` is a number: exclude with `-column:5`.

PxQL: the whole query in parentheses, `(col = "v" & (col2 =~ "x" | col2 !~ "y") & date >= "2025-01-01")`
with `= == =~` (contains), `!~` (does not contain), `> >= < <=`, `&`/`&&`, `|`/`||` and nesting.
Mixing `&` and `|` in one group is refused as ambiguous, as xyOps does. A query is at most MAX_QUERY_CHARS
long and nests at most MAX_DEPTH parentheses deep.

Dates are read in UTC: `YYYY-MM-DD`, `YYYY/MM/DD`, `MM-DD-YYYY`, `MM/DD/YYYY`, `YYYY-MM`,
`YYYY-MM-DDTHH:MM[:SS]` (a space instead of T inside PxQL quotes), epoch seconds, `today`, `now`.
A date is a span (a day, a minute, a second): `date:D` means within it, `>D` after it, `<=D` up to
its end.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .spec import Column, IndexSpec, text_words


class QueryError(ValueError):
    """A query that cannot be parsed; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Term:
    """The column holds this value (word column) or this word / phrase (text column)."""

    column: str
    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """low <(=) value <(=) high on a number or date column; a missing bound is open-ended."""

    column: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Everything:
    """`*`: every record."""


Node = Term | Range | Not | And | Or | Everything


@dataclass(frozen=True, slots=True)
class Query:
    root: Node
    text: str = ""


MAX_QUERY_CHARS = 4096
MAX_DEPTH = 32  # PxQL parentheses; the parser (and every walker of the tree) recurses once per level


def parse(text: str, spec: IndexSpec, *, now: float | None = None) -> Query:
    """Parse `text` for the columns of `spec`; `now` (epoch seconds) pins `today` and `now` for tests."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query is too long (at most {MAX_QUERY_CHARS} characters)")
    clock = time.time() if now is None else now
    stripped = text.strip()
    if stripped.startswith("("):
        return Query(_PxQL(stripped, spec, clock).parse(), text)
    return Query(_parse_simple(stripped, spec, clock), text)


# -- values -----------------------------------------------------------------------------------

# A value's span: [low, high] for numbers (high_open False), [start, end) for dates.
Span = tuple[float, float, bool]

_YMD = re.compile(r"(\d{4})[-/_](\d{1,2})[-/_](\d{1,2})(?:[t ](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_MDY = re.compile(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})")
_YM = re.compile(r"(\d{4})-(\d{1,2})")
_EPOCH = re.compile(r"-?\d+(?:\.\d+)?")
_OPERATORS = (">=", "<=", ">", "<", "=")


def _calendar_span(value: str) -> Span | None:
    """A calendar date's span in UTC; None if `value` is not one; ValueError if it names no real day."""
    if m := _YMD.fullmatch(value):
        year, month, day, hour, minute, second = m.groups()
        start = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=UTC
        )
        width = 86400 if hour is None else 60 if second is None else 1
        return (start.timestamp(), start.timestamp() + width, True)
    if m := _MDY.fullmatch(value):
        month, day, year = (int(g) for g in m.groups())
        start = datetime(year, month, day, tzinfo=UTC)
        return (start.timestamp(), start.timestamp() + 86400, True)
    if m := _YM.fullmatch(value):
        year, month = (int(g) for g in m.groups())
        start, end = datetime(year, month, 1, tzinfo=UTC), datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return (start.timestamp(), end.timestamp(), True)
    return None


def _date_span(raw: str, column: str, now: float) -> Span:
    value = raw.strip().lower()
    if value == "now":
        return (math.floor(now), math.floor(now) + 1, True)
    if value == "today":
        start = math.floor(now) - math.floor(now) % 86400
        return (start, start + 86400, True)
    if _EPOCH.fullmatch(value):
        second = math.floor(float(value))
        return (second, second + 1, True)
    try:
        span = _calendar_span(value)
    except ValueError:
        span = None
    if span is None:
        raise QueryError(
            f"bad date {raw!r} for column {column!r} (use YYYY-MM-DD, MM-DD-YYYY, epoch seconds, today or now)"
        )
    return span


def _number_span(raw: str, column: str) -> Span:
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"bad number {raw!r} for column {column!r}") from None
    if not math.isfinite(value):
        raise QueryError(f"bad number {raw!r} for column {column!r}")
    return (value, value, False)


def _span(raw: str, col: Column, now: float) -> Span:
    if not raw:
        raise QueryError(f"column {col.name!r} needs a value")
    return _date_span(raw, col.name, now) if col.kind == "date" else _number_span(raw, col.name)


def _compare(col: Column, op: str, span: Span) -> Range:
    low, high, high_open = span
    if op == ">":
        return Range(col.name, low=high, low_open=not high_open)
    if op == ">=":
        return Range(col.name, low=low)
    if op == "<":
        return Range(col.name, high=low, high_open=True)
    if op == "<=":
        return Range(col.name, high=high, high_open=high_open)
    return Range(col.name, low=low, high=high, high_open=high_open)


def _word_term(col: Column, raw: str) -> Term:
    if col.kind == "text":
        words = text_words(raw)
        if not words:
            raise QueryError(f"{raw!r} has no searchable words for column {col.name!r}")
        return Term(col.name, tuple(words))
    value = raw.strip().lower()
    if not value:
        raise QueryError(f"column {col.name!r} needs a value")
    return Term(col.name, (value,))


def _column(spec: IndexSpec, name: str) -> Column:
    col = spec.by_name.get(name)
    if col is None:
        known = ", ".join(sorted(spec.by_name))
        raise QueryError(f"unknown column {name!r} in index {spec.name!r} (columns: {known})")
    return col


# -- simple syntax ----------------------------------------------------------------------------

_CLEANUPS = (
    (re.compile(r"\s*\|\s*"), "|"),
    (re.compile(r"(\w):\s+"), r"\1:"),
    (re.compile(r"\s*\.\.\s*"), ".."),
    (re.compile(r"(^|[\s:])(>=|<=|>|<|=)\s+"), r"\1\2"),
)
_PREFIX = re.compile(r"([A-Za-z]\w*):(.*)", re.S)
_ALTERNATIVE = re.compile(r'(?:"[^"]*"|[^|"])+')  # the pieces between `|`, quotes kept whole


def _split_parts(text: str) -> list[str]:
    """Whitespace-separated parts; a quoted phrase keeps its spaces (and its quotes)."""
    if text.count('"') % 2:
        raise QueryError('unterminated quote (")')
    segments = re.split(r'("[^"]*")', text)
    bare = "".join(segments[::2])
    if bare.count("(") != bare.count(")"):
        raise QueryError("unbalanced parentheses (a PxQL query must start with '(' and end with ')')")
    for i in range(0, len(segments), 2):  # tidy up only outside quotes
        for pattern, repl in _CLEANUPS:
            segments[i] = pattern.sub(repl, segments[i])
    return re.findall(r'(?:"[^"]*"|[^\s"])+', "".join(segments))


def _unquote(raw: str) -> str:
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw


def _simple_value(col: Column, raw: str, now: float) -> Node:
    """One alternative of a part (the pieces between `|`), for its column's kind."""
    if not col.numeric:
        return _word_term(col, _unquote(raw))
    raw = _unquote(raw)
    if ".." in raw:
        low_raw, high_raw = raw.split("..", 1)
        low, high = _span(low_raw, col, now), _span(high_raw, col, now)
        return Range(col.name, low=low[0], high=high[1], high_open=high[2])
    op = next((o for o in _OPERATORS if raw.startswith(o)), "")
    return _compare(col, op or "=", _span(raw[len(op) :], col, now))


def _parse_simple(text: str, spec: IndexSpec, now: float) -> Node:
    current = spec.default_column
    nodes: list[Node] = []
    for part in _split_parts(text):
        if part == "*":
            continue
        sign = ""
        if part[0] in "+-" and _PREFIX.fullmatch(part[1:]):
            sign, part = part[0], part[1:]
        m = _PREFIX.fullmatch(part) if not part.startswith('"') else None
        if m is not None:
            current, part = _column(spec, m.group(1)).name, m.group(2)
            if not part:
                raise QueryError(f"column {current!r} needs a value")
        if current is None:
            raise QueryError(f"{part!r} has no column and index {spec.name!r} has no default column")
        col = _column(spec, current)
        if not sign and part[0] in "+-" and len(part) > 1 and not (col.kind == "number" and part[1].isdigit()):
            sign, part = part[0], part[1:]
        alternatives = [_simple_value(col, alt, now) for alt in _ALTERNATIVE.findall(part)]
        if not alternatives:
            raise QueryError(f"column {col.name!r} needs a value")
        node = alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))
        nodes.append(Not(node) if sign == "-" else node)
    if not nodes:
        return Everything()
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


# -- PxQL ------------------------------------------------------------------------------------------

_PXQL_TOKEN = re.compile(
    r"""\s*(?:
    (?P<paren>[()])
    | (?P<op>=~|!~|<=|>=|==|=|<|>)
    | (?P<sep>&&|&|\|\||\|)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<column>[A-Za-z_]\w*)
    )""",
    re.X,
)


class _PxQL:
    """Recursive descent over the PxQL tokens: group := item (sep item)*, item := (group) | col op value."""

    def __init__(self, text: str, spec: IndexSpec, now: float) -> None:
        self.spec, self.now, self.pos, self.depth = spec, now, 0, 0
        self.tokens: list[tuple[str, str]] = []
        index, end = 0, len(text.rstrip())
        while index < end:
            m = _PXQL_TOKEN.match(text, index)
            if m is None or m.lastgroup is None:
                char = text[index:].lstrip()[:1]
                if char == '"':
                    raise QueryError("unterminated string in PxQL query")
                raise QueryError(f"unexpected {char!r} at position {index} in PxQL query")
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            index = m.end()

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, kind: str, what: str) -> str:
        got, value = self.peek()
        if got != kind:
            raise QueryError(f"expected {what} but found {value or 'the end'!r} in PxQL query")
        self.pos += 1
        return value

    def parse(self) -> Node:
        node = self.group()
        kind, value = self.peek()
        if kind != "end":
            if value == ")":
                raise QueryError("unbalanced parentheses: ')' without '('")
            raise QueryError(f"unexpected {value!r} after a complete PxQL expression")
        return node

    def group(self) -> Node:
        items = [self.item()]
        mode = ""
        while self.peek()[0] == "sep":
            sep = self.take("sep", "& or |")[0]
            if mode and sep != mode:
                raise QueryError("mixing & and | in one group is ambiguous: group them with parentheses")
            mode = sep
            items.append(self.item())
        if len(items) == 1:
            return items[0]
        return Or(tuple(items)) if mode == "|" else And(tuple(items))

    def item(self) -> Node:
        kind, value = self.peek()
        if value == "(":
            self.pos += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"query is nested too deeply (at most {MAX_DEPTH} levels of parentheses)")
            if self.peek()[1] == ")":
                raise QueryError("empty parentheses in PxQL query")
            node = self.group()
            if self.peek()[1] != ")":
                raise QueryError("unbalanced parentheses: missing ')'")
            self.pos += 1
            self.depth -= 1
            return node
        if kind == "end":
            raise QueryError("unbalanced parentheses: missing ')'" if self.pos else "empty PxQL query")
        col = _column(self.spec, self.take("column", "a column name"))
        op = self.take("op", f"an operator after {col.name!r} (= == =~ !~ > >= < <=)")
        kind, raw = self.peek()
        if kind not in ("string", "number"):
            raise QueryError(f'expected a "quoted value" or a number after {col.name} {op}')
        self.pos += 1
        if kind == "string":
            try:
                raw = json.loads(raw)
            except ValueError:
                raise QueryError(f"bad string {raw} in PxQL query") from None
        return self.expression(col, op, raw)

    def expression(self, col: Column, op: str, raw: str) -> Node:
        if op in ("=", "==", "=~", "!~"):
            node: Node = _compare(col, "=", _span(raw, col, self.now)) if col.numeric else _word_term(col, raw)
            return Not(node) if op == "!~" else node
        if not col.numeric:
            raise QueryError(f"operator {op} needs a number or date column; {col.name!r} is a {col.kind} column")
        return _compare(col, op, _span(raw, col, self.now))


def restrict(query: Query, *terms: Query) -> Query:
    """`query` AND every one of `terms`, combined as parsed trees (never by pasting text, which a
    caller could break out of with an unbalanced parenthesis)."""
    if not terms:
        return query
    return Query(And((query.root, *(t.root for t in terms))), query.text)
