"""Index schemas, and the value normalisation that indexing and query parsing must share.

A value is found by the same rules whether it is being indexed or searched for, so both sides go
through `word_values`, `text_words` and `Column.encode` here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

Kind = Literal["word", "text", "number", "date"]
KINDS: tuple[str, ...] = ("word", "text", "number", "date")

CHUNK_BITS = 16
CHUNK = 1 << CHUNK_BITS  # slots per chunk: every bitmap is split into 8 KiB strings

_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_INDEX_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_WORD = re.compile(r"\w+")
# "2.5.1" is one word ("2_5_1") and "nancy's" is "nancys", as the xyOps indexer does.
_DOTTED_NUMBER = re.compile(r"(?<=\d)\.(?=\d)")
_APOSTROPHE = re.compile(r"['\u2019]")
_DEFAULT_BITS = {"number": 48, "date": 40}


@dataclass(frozen=True, slots=True)
class Column:
    """One searchable column.

    kind: "word" (exact values, lists allowed, case-insensitive), "text" (tokenised words; phrases),
    "number" or "date" (epoch seconds); numbers and dates take ranges.
    source: dotted path of the value in the record (default: the column name).
    sparse: keep one set of slots per value instead of bitmaps; right for high-cardinality values
    (ticket ids, parent job ids, free text). Default: True for text, False for word.
    scale / bits: numbers are stored as floor(value * scale) in a `bits`-wide signed field.
    """

    name: str
    kind: Kind
    source: str | None = None
    sparse: bool | None = None
    scale: float = 1.0
    bits: int = 0
    path: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple((self.source or self.name).split(".")))
        if not _COLUMN_NAME.fullmatch(self.name):
            raise ValueError(f"invalid column name {self.name!r} (a letter, then letters, digits, _)")
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.sparse is None:
            object.__setattr__(self, "sparse", self.kind == "text")
        if self.numeric:
            if self.kind == "date" and self.scale != 1.0:
                raise ValueError(f"date column {self.name!r} is in whole seconds; it takes no scale")
            if not self.scale > 0:
                raise ValueError(f"column {self.name!r}: scale must be positive")
            object.__setattr__(self, "bits", self.bits or _DEFAULT_BITS[self.kind])
            if not 8 <= self.bits <= 52:
                raise ValueError(f"column {self.name!r}: bits must be 8..52 (exact in a Lua double)")

    @property
    def numeric(self) -> bool:
        return self.kind in ("number", "date")

    def value(self, record: Mapping[str, Any]) -> Any:
        found: Any = record
        for step in self.path:
            if type(found) is not dict and not isinstance(found, Mapping):  # the exact check is the fast one
                return None
            found = found.get(step)
        return found

    def encode(self, value: float) -> int:
        """The unsigned field stored for a number: floor(value * scale) + bias, clamped to `bits`.

        Rounding first absorbs float noise (5.001 * 1000 is 5000.999...), as query bounds do.
        """
        return self.clamp(math.floor(round(value * self.scale, 6)) + (1 << (self.bits - 1)))

    def clamp(self, encoded: int) -> int:
        return min(max(encoded, 0), (1 << self.bits) - 1)


ORDER = Column("order", "number", bits=48)  # the built-in `_id` sort key; its planes live apart from columns


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index: its name (a key part), columns, the column bare words search, and its sorters."""

    name: str
    columns: Sequence[Column]
    default_column: str | None = None
    sorters: Sequence[str] = ()
    id_width: int = 32  # bytes reserved per record id in the slot table
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _INDEX_NAME.fullmatch(self.name):
            raise ValueError(f"invalid index name {self.name!r}")
        columns = tuple(self.columns)
        by_name = {c.name: c for c in columns}
        if len(by_name) != len(columns):
            raise ValueError(f"index {self.name!r}: duplicate column names")
        if self.default_column is not None and self.default_column not in by_name:
            raise ValueError(f"index {self.name!r}: default column {self.default_column!r} is not a column")
        for sorter in self.sorters:
            if sorter not in by_name or not by_name[sorter].numeric:
                raise ValueError(f"index {self.name!r}: sorter {sorter!r} must be a number or date column")
        if not 8 <= self.id_width <= 256:
            raise ValueError("id_width must be 8..256")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "sorters", tuple(self.sorters))
        object.__setattr__(self, "by_name", by_name)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [v for v in value if v is not None]
    return [value]


def word_values(value: Any) -> list[str]:
    """Distinct lower-cased values of a word column (a scalar or a list of them)."""
    if type(value) is str:  # the common case, kept cheap for bulk indexing
        text = value.strip().lower()
        return [text] if text else []
    out: dict[str, None] = {}
    for item in _items(value):
        text = _scalar_text(item).strip().lower()
        if text:
            out[text] = None
    return list(out)


def text_words(value: Any) -> list[str]:
    """The words of one piece of text, in order."""
    text = _APOSTROPHE.sub("", _DOTTED_NUMBER.sub("_", _scalar_text(value).lower()))
    return _WORD.findall(text)


def phrase_tokens(words: Sequence[str]) -> list[str]:
    """Index tokens a phrase needs: the word itself, or every adjacent pair ("big cats")."""
    if len(words) == 1:
        return [words[0]]
    return [f"{a} {b}" for a, b in pairwise(words)]


def text_tokens(value: Any) -> list[str]:
    """Distinct tokens indexed for a text column: words plus adjacent pairs, never across list items."""
    out: dict[str, None] = {}
    for item in _items(value):
        words = text_words(item)
        out.update(dict.fromkeys(words))
        if len(words) > 1:
            out.update(dict.fromkeys(phrase_tokens(words)))
    return list(out)


def number_value(value: Any) -> float | None:
    """A finite number, or None: only real numbers (and numeric strings) go in number columns."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def order_from_id(record_id: str, prefix: str) -> float:
    """Creation time (ms) of an xyOps id: prefix + base36(ms, 8 digits until 2059) + counter + padding."""
    digits = record_id[len(prefix) : len(prefix) + 8]
    if not record_id.startswith(prefix) or len(digits) != 8:
        raise ValueError(f"{record_id!r} is not a time-sortable id with prefix {prefix!r}")
    try:
        return float(int(digits, 36))
    except ValueError:
        raise ValueError(f"{record_id!r} is not a time-sortable id with prefix {prefix!r}") from None
