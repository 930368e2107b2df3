"""Syntax checks for JEXL expressions (event `expression`, later monitors and alerts).

This checks structure only: known tokens, balanced brackets, operands and operators in turn, and
well-formed `|transform(args)` calls and ternaries. Evaluation arrives with monitors and alerts.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|>=|<=|=~|!~|&&|\|\||[-+*/%<>^]|\bin\b)
    | (?P<ident>[A-Za-z_$][\w$]*)
    | (?P<punct>[.()\[\]{},:?!|])
    )""",
    re.VERBOSE,
)
_CLOSE = {")": "(", "]": "[", "}": "{"}


class ExpressionError(ValueError):
    """The expression is not valid JEXL syntax."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected character at position {pos}: {text[pos]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Checker:
    """Walks the tokens expecting, in turn, a value then an operator (or a postfix: . | ( [)."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.stack: list[str] = []  # "(" group, "call", "[" array or index, "{" object
        self.expect_value = True

    def run(self) -> None:
        for i, (kind, value) in enumerate(self.tokens):
            if self.expect_value:
                self._value(i, kind, value)
            else:
                self._after_value(i, kind, value)
        if self.stack:
            raise ExpressionError(f"unclosed {self.stack[-1].replace('call', '(')!r}")
        if self.expect_value:
            raise ExpressionError("the expression ends where a value is expected")

    def _value(self, i: int, kind: str, value: str) -> None:
        if kind in ("num", "str", "ident"):
            self.expect_value = False
        elif value in ("(", "[", "{"):
            self.stack.append(value)
        elif value in ("!", "-", "+"):
            return  # unary
        elif value in _CLOSE and self._empty_close(i, value):
            self.stack.pop()  # f(), [] or {}
            self.expect_value = False
        else:
            raise ExpressionError(f"expected a value at token {i + 1} ({value!r})")

    def _empty_close(self, i: int, value: str) -> bool:
        top = self.stack[-1] if self.stack else ""
        opener = "(" if top == "call" else top
        return top in ("call", "[", "{") and opener == _CLOSE[value] and self.tokens[i - 1][1] == opener

    def _after_value(self, i: int, kind: str, value: str) -> None:
        if kind == "op" or value in ("?", ":", ","):
            self.expect_value = True
        elif value in (".", "|"):
            if i + 1 >= len(self.tokens) or self.tokens[i + 1][0] != "ident":
                raise ExpressionError(f"a name must follow {value!r} at token {i + 1}")
            self.expect_value = True
        elif value in ("(", "["):  # call or index on the value just read
            self.stack.append("call" if value == "(" else "[")
            self.expect_value = True
        elif value in _CLOSE:
            top = self.stack[-1] if self.stack else ""
            if ("(" if top == "call" else top) != _CLOSE[value]:
                raise ExpressionError(f"unbalanced {value!r} at token {i + 1}")
            self.stack.pop()
        else:
            raise ExpressionError(f"unexpected {value!r} at token {i + 1}")


def check(text: str) -> None:
    """Raise ExpressionError unless `text` is a syntactically valid expression."""
    if not text.strip():
        raise ExpressionError("the expression is empty")
    _Checker(_tokens(text)).run()
