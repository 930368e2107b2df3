"""Tokens -> syntax tree (a Pratt parser), with JEXL 2.3's grammar and precedence.

Precedence, loosest first (all binary operators are left-associative, as in JEXL):
  `?:` ternary (its test is everything before the `?`; `a ?: b` yields `a` when truthy, else `b`)
  `||` `&&` (⚠ one level in JEXL, so `a || b && c` is `(a || b) && c`; kept, users' expressions depend on it)
  `==` `!=` `<` `<=` `>` `>=` `in`
  `+` `-`
  `*` `/` `//`
  `%` `^`
  prefix `!` and `-`
  postfix `.name` `.0` `[filter]` `|transform(args)` and `name(args)` calls.

Beyond JEXL, accepted because refusing them helps nobody: `-` before any operand (JEXL only negates number
literals, and not after a comma), `[...]` after any operand (JEXL: only after names, calls and transforms), string
keys in object literals, `.0` indexes. Refused although JEXL accepts them: an unclosed `(` at the end, calls on
dotted names (`a.b(1)`, which JEXL resolves to the function `b`), and names of functions that do not exist.

A tree is bounded: at most MAX_SOURCE characters, MAX_NODES nodes, MAX_DEPTH levels (the evaluator recurses once
per level, so this also bounds its stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .errors import ExpressionError
from .lexer import Token, tokenize

MAX_SOURCE: Final = 4096  # characters
MAX_NODES: Final = 1000
MAX_DEPTH: Final = 64

BINARY: Final = {"||": 10, "&&": 10, "==": 20, "!=": 20, "<": 20, "<=": 20, ">": 20, ">=": 20, "in": 20,
                 "+": 30, "-": 30, "*": 40, "/": 40, "//": 40, "%": 50, "^": 50}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Node:
    """One syntax tree node. kind: lit, name (context key), rel (`.name` of a filter's item), member (`.name`),
    index (`.0`), filter (`[...]`), call, unary (`!` `-`), binary, cond, array, object."""

    kind: str
    pos: int
    value: Any = None
    children: tuple[Node | None, ...] = ()
    depth: int = 1
    size: int = 1  # nodes in this subtree

    def kids(self) -> tuple[Node, ...]:
        return tuple(c for c in self.children if c is not None)


class _Parser:
    def __init__(self, source: str, functions: frozenset[str]) -> None:
        self.tokens = tokenize(source)
        self.at = 0
        self.nodes = 0
        self.functions = functions

    # -- helpers --

    def peek(self) -> Token:
        return self.tokens[self.at]

    def next(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def is_op(self, *values: str) -> bool:
        token = self.tokens[self.at]
        return token.kind == "op" and token.value in values

    def expect(self, value: str, opener: Token) -> None:
        token = self.peek()
        if not self.is_op(value):
            found = "the end" if token.kind == "end" else repr(_text(token))
            raise ExpressionError(
                f"expected {value!r} to close {opener.value!r} (opened at {opener.pos}), found {found}", token.pos)
        self.at += 1

    def node(self, kind: str, pos: int, value: Any = None, *children: Node | None) -> Node:
        kids = [c for c in children if c is not None]
        depth = 1 + max((c.depth for c in kids), default=0)
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH} levels", pos)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"the expression has more than {MAX_NODES} parts", pos)
        return Node(kind, pos, value, tuple(children), depth, 1 + sum(c.size for c in kids))

    def unexpected(self, token: Token, wanted: str) -> ExpressionError:
        if token.kind == "end":
            return ExpressionError(f"the expression ends where {wanted} is expected", token.pos)
        return ExpressionError(f"unexpected {_text(token)!r} where {wanted} is expected", token.pos)

    # -- grammar --

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError("the expression is empty", 0)
        tree = self.expression(0)
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token, "an operator or the end")
        return tree

    def expression(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH} levels", self.peek().pos)
        test = self.binary(0, depth)
        if not self.is_op("?"):
            return test
        question = self.next()
        consequent = None if self.is_op(":") else self.expression(depth + 1)
        if not self.is_op(":"):
            raise self.unexpected(self.peek(), f"':' of the ternary opened at {question.pos}")
        self.at += 1
        alternate = self.expression(depth + 1)
        return self.node("cond", question.pos, None, test, consequent, alternate)

    def binary(self, min_prec: int, depth: int) -> Node:
        left = self.unary(depth)
        while True:
            token = self.peek()
            prec = BINARY.get(token.value) if token.kind == "op" and isinstance(token.value, str) else None
            if prec is None or prec < min_prec:
                return left
            self.at += 1
            right = self.binary(prec + 1, depth + 1)
            left = self.node("binary", token.pos, token.value, left, right)

    def unary(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH} levels", self.peek().pos)
        token = self.peek()
        if self.is_op("!"):
            self.at += 1
            return self.node("unary", token.pos, "!", self.unary(depth + 1))
        if self.is_op("-"):
            self.at += 1
            following = self.peek()
            if following.kind == "num":  # a negative literal, as JEXL's lexer makes it
                self.at += 1
                assert isinstance(following.value, int | float)
                return self.postfix(self.node("lit", token.pos, -following.value), depth)
            return self.node("unary", token.pos, "-", self.unary(depth + 1))
        return self.postfix(self.primary(depth), depth)

    def primary(self, depth: int) -> Node:
        token = self.next()
        if token.kind in ("num", "str", "bool"):
            return self.node("lit", token.pos, token.value)
        if token.kind == "name":
            if self.is_op("("):
                return self.call(token, None, depth)
            return self.node("name", token.pos, token.value)
        if token.kind == "op":
            if token.value == "(":
                inner = self.expression(depth + 1)
                self.expect(")", token)
                return inner
            if token.value == "[":
                items = self.items("]", token, depth)
                return self.node("array", token.pos, None, *items)
            if token.value == "{":
                return self.object(token, depth)
            if token.value == ".":
                name = self.next()
                if name.kind != "name":
                    raise self.unexpected(name, "a name after '.'")
                return self.node("rel", token.pos, name.value)
        self.at -= 1
        raise self.unexpected(token, "a value")

    def items(self, close: str, opener: Token, depth: int) -> list[Node]:
        """Comma-separated expressions up to `close`; a trailing comma is allowed (as in JEXL)."""
        out: list[Node] = []
        while not self.is_op(close):
            out.append(self.expression(depth + 1))
            if not self.is_op(","):
                break
            self.at += 1
        self.expect(close, opener)
        return out

    def object(self, opener: Token, depth: int) -> Node:
        keys: list[str] = []
        values: list[Node] = []
        while not self.is_op("}"):
            key = self.next()
            if key.kind not in ("name", "str"):
                self.at -= 1
                raise self.unexpected(key, "an object key")
            if not self.is_op(":"):
                raise self.unexpected(self.peek(), "':' after an object key")
            self.at += 1
            keys.append(str(key.value))
            values.append(self.expression(depth + 1))
            if not self.is_op(","):
                break
            self.at += 1
        self.expect("}", opener)
        return self.node("object", opener.pos, tuple(keys), *values)

    def call(self, name: Token, subject: Node | None, depth: int) -> Node:
        if name.value not in self.functions:
            raise ExpressionError(f"unknown function '{name.value}' (known: {', '.join(sorted(self.functions))})",
                                  name.pos)  # fmt: skip
        args = [subject] if subject is not None else []
        if self.is_op("("):
            args += self.items(")", self.next(), depth)
        return self.node("call", name.pos, name.value, *args)

    def postfix(self, subject: Node, depth: int) -> Node:
        while True:
            token = self.peek()
            if token.kind != "op":
                return subject
            if token.value == ".":
                self.at += 1
                name = self.next()
                if name.kind == "name":
                    if self.is_op("("):
                        raise ExpressionError("a function is called by its name alone, not as a member", name.pos)
                    subject = self.node("member", token.pos, name.value, subject)
                elif name.kind == "index":
                    subject = self.node("index", token.pos, name.value, subject)
                else:
                    raise self.unexpected(name, "a name after '.'")
            elif token.value == "[":
                self.at += 1
                inner = self.expression(depth + 1)
                self.expect("]", token)
                subject = self.node("filter", token.pos, _relative(inner), subject, inner)
            elif token.value == "|":
                self.at += 1
                name = self.next()
                if name.kind != "name":
                    raise self.unexpected(name, "a transform name after '|'")
                subject = self.call(name, subject, depth)
            else:
                return subject


def _relative(node: Node) -> bool:
    """Does a filter read its items (`.name`)? Nested filters read their own."""
    if node.kind == "rel":
        return True
    kids = node.kids()[:1] if node.kind == "filter" else node.kids()
    return any(_relative(c) for c in kids)


def _text(token: Token) -> str:
    if token.kind == "str":
        return f"'{token.value}'"
    if token.kind == "bool":
        return "true" if token.value else "false"
    return str(token.value)


def parse(source: str, functions: frozenset[str]) -> Node:
    """The syntax tree of `source`; ExpressionError says what is wrong and where. `functions`: the names that
    may be called."""
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"the expression is longer than {MAX_SOURCE} characters")
    return _Parser(source, functions).parse()
