"""Tokens of the expression language, as JEXL 2.3 reads them.

- numbers are `12` or `1.5` (no exponent, no leading `.`); a `-` is told apart as sign or operator by the parser;
- strings use '...' or "..."; `\\'` (or `\\"`) is the quote and `\\\\` a backslash, any other backslash stays as
  written (so `'\\d+'` is the regex `\\d+`). ⚠ JEXL turns only the first `\\\\` of a string into `\\`; here every
  one is;
- identifiers are letters (ASCII, Latin-1 and Cyrillic as in JEXL), digits, `_` and `$`, not starting with a digit;
  `true` and `false` are literals, `in` is an operator; `null`, `undefined` and the like are names looked up in the
  context (as in JEXL, where they read as undefined);
- after a `.`, digits are an index (`hook.headers.0.name`), an extension JEXL refuses, kept from the template
  syntax this project had before.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from .errors import ExpressionError

_LETTER = "A-Za-z_$\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0410-\u044f"
_TOKEN: Final = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<ident>[{_LETTER}][{_LETTER}0-9]*)
    | (?P<op>//|==|!=|>=|<=|&&|\|\||[-+*/%^<>!.\[\](){{}},:?|])
    | (?P<quote>['"])
    """,
    re.VERBOSE,
)
_INDEX: Final = re.compile(r"\s*(\d+)")


class Token(NamedTuple):
    kind: str  # num, str, bool, name, op, index, end
    value: object
    pos: int


def _string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ExpressionError("unterminated string", start)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if tokens and tokens[-1].value == "." and tokens[-1].kind == "op" and (m := _INDEX.match(text, pos)):
            tokens.append(Token("index", int(m[1]), m.start(1)))
            pos = m.end()
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup
        if kind == "space":
            pass
        elif kind == "num":
            raw = m[0]
            number = float(raw)  # JavaScript numbers are doubles; small integers stay ints for clean output
            tokens.append(Token("num", int(number) if number.is_integer() and number <= 2**53 else number, pos))
        elif kind == "ident":
            word = m[0]
            if word in ("true", "false"):
                tokens.append(Token("bool", word == "true", pos))
            elif word == "in":
                tokens.append(Token("op", "in", pos))
            else:
                tokens.append(Token("name", word, pos))
        elif kind == "quote":
            value, end = _string(text, pos)
            tokens.append(Token("str", value, pos))
            pos = end
            continue
        else:
            tokens.append(Token("op", m[0], pos))
        pos = m.end()
    tokens.append(Token("end", None, len(text)))
    return tokens
