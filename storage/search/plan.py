"""Compile a query AST into the bitmap program that the SEARCH script runs on every chunk.

A *vector* is one logical bitmap over all slots, stored as one key per chunk. The program is a list
of `[op, dst, src, ...]` BITOP instructions (AND, OR, XOR) on vectors; the same list runs on each
chunk, so it is built once here and the script only loops. Sources are never written: results go to
*temp* vectors, which the script clears before and after.

Ranges on number and date columns use the bit-sliced comparison of O'Neil and Quass: walking the
bit planes from the most significant, `eq` keeps records whose high bits equal the bound's and
`gt`/`lt` collect those already above/below it. AND-NOT is `a XOR (a AND b)`: BITOP NOT would need
every string padded to the full chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .query import And, Everything, Node, Not, Or, Range, Term
from .spec import ORDER, Column, IndexSpec, phrase_tokens

Parts = tuple[str, ...]


@dataclass(slots=True)
class Program:
    vectors: list[Parts] = field(default_factory=list)  # key parts; chunk c is index(name, *parts, str(c))
    temps: list[int] = field(default_factory=list)
    sets: list[Parts] = field(default_factory=list)  # sparse value sets (one key, not per chunk)
    loads: list[list[int]] = field(default_factory=list)  # [set position (1-based), vector]
    ops: list[list[str | int]] = field(default_factory=list)
    result: int = -1


def planes(col: Column) -> list[Parts]:
    """Key parts of a number column's bit planes, most significant first."""
    base: Parts = ("order",) if col is ORDER else ("n", col.name)
    return [(*base, str(b)) for b in range(col.bits - 1, -1, -1)]


def has(col: Column) -> Parts:
    """Key parts of the bitmap of records that have a value in this number column."""
    return ("all",) if col is ORDER else ("n", col.name, "has")


def _bounds(col: Column, node: Range) -> tuple[int | None, int | None]:
    """Encoded inclusive bounds; None = unbounded. Rounding absorbs float noise such as 1.1 * 1000."""
    bias = 1 << (col.bits - 1)
    low = high = None
    if node.low is not None:
        q = round(node.low * col.scale, 6)
        low = (math.floor(q) + 1 if node.low_open else math.ceil(q)) + bias
    if node.high is not None:
        q = round(node.high * col.scale, 6)
        high = (math.ceil(q) - 1 if node.high_open else math.floor(q)) + bias
    return low, high


class Compiler:
    """Builds one Program; `node()` returns the vector holding a subtree's matches."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.program = Program()
        self._ids: dict[Parts, int] = {}
        self._loaded: dict[Parts, int] = {}
        self.scratch = self.temp()  # written and read within one helper, never held across

    def compile(self, root: Node) -> Program:
        self.program.result = self.node(root)
        return self.program

    # -- vectors ----------------------------------------------------------------------------------
    def vector(self, *parts: str) -> int:
        found = self._ids.get(parts)
        if found is None:
            found = self._ids[parts] = len(self.program.vectors)
            self.program.vectors.append(parts)
        return found

    def temp(self) -> int:
        vid = len(self.program.vectors)
        self.program.vectors.append(("tmp", str(len(self.program.temps))))
        self.program.temps.append(vid)
        return vid

    def emit(self, op: str, dst: int, *srcs: int) -> int:
        self.program.ops.append([op, dst, *srcs])
        return dst

    def combine(self, op: str, vids: list[int]) -> int:
        return vids[0] if len(vids) == 1 else self.emit(op, self.temp(), *vids)

    def and_not(self, a: int, b: int) -> int:
        self.emit("AND", self.scratch, a, b)
        return self.emit("XOR", self.temp(), a, self.scratch)

    # -- nodes ------------------------------------------------------------------------------------
    def node(self, node: Node) -> int:
        if isinstance(node, Everything):
            return self.vector("all")
        if isinstance(node, Term):
            return self.term(node)
        if isinstance(node, Range):
            return self.range(node)
        if isinstance(node, Not):
            return self.and_not(self.vector("all"), self.node(node.node))
        if isinstance(node, Or):
            return self.combine("OR", [self.node(n) for n in node.nodes])
        if not isinstance(node, And):
            raise TypeError(f"not a query node: {node!r}")
        positive = [self.node(n) for n in node.nodes if not isinstance(n, Not)]
        negative = [self.node(n.node) for n in node.nodes if isinstance(n, Not)]
        base = self.combine("AND", positive) if positive else self.vector("all")
        return self.and_not(base, self.combine("OR", negative)) if negative else base

    def term(self, node: Term) -> int:
        col = self.spec.by_name[node.column]
        tokens = phrase_tokens(node.words) if col.kind == "text" else list(node.words[:1])
        return self.combine("AND", [self.token(col, t) for t in tokens])

    def token(self, col: Column, token: str) -> int:
        if not col.sparse:
            return self.vector("w", col.name, token)
        parts: Parts = ("s", col.name, token)
        found = self._loaded.get(parts)
        if found is None:
            found = self._loaded[parts] = self.temp()
            self.program.sets.append(parts)
            self.program.loads.append([len(self.program.sets), found])
        return found

    def range(self, node: Range) -> int:
        col = self.spec.by_name[node.column]
        top = (1 << col.bits) - 1
        low, high = _bounds(col, node)
        lo = 0 if low is None else max(low, 0)
        hi = top if high is None else min(high, top)
        if lo > hi:
            return self.temp()  # never written: empty
        bits = [self.vector(*p) for p in planes(col)]
        present = self.vector(*has(col))
        if lo == hi:
            return self.equal(present, bits, lo)
        found = [self.at_least(present, bits, lo)] if lo > 0 else []
        found += [self.at_most(present, bits, hi)] if hi < top else []
        return self.combine("AND", found or [present])

    def equal(self, present: int, bits: list[int], value: int) -> int:
        eq = self.emit("OR", self.temp(), present)
        for i, plane in enumerate(bits):
            if value >> (len(bits) - 1 - i) & 1:
                self.emit("AND", eq, eq, plane)
            else:
                self.emit("AND", self.scratch, eq, plane)
                self.emit("XOR", eq, eq, self.scratch)
        return eq

    def at_least(self, present: int, bits: list[int], low: int) -> int:
        eq, gt = self.emit("OR", self.temp(), present), self.temp()
        started = False
        lowest = (low & -low).bit_length() - 1  # below it the bound's bits are 0: eq already qualifies
        for i, plane in enumerate(bits):
            b = len(bits) - 1 - i
            if b < lowest:
                break
            if low >> b & 1:
                self.emit("AND", eq, eq, plane)
            else:
                self.emit("AND", self.scratch, eq, plane)
                self.emit("OR", gt, *([gt] if started else []), self.scratch)
                self.emit("XOR", eq, eq, self.scratch)
                started = True
        return self.emit("OR", gt, gt, eq) if started else eq

    def at_most(self, present: int, bits: list[int], high: int) -> int:
        eq, other, lt = self.emit("OR", self.temp(), present), self.temp(), self.temp()
        started = False
        lowest = ((high + 1) & -(high + 1)).bit_length() - 1  # below it the bound's bits are 1
        for i, plane in enumerate(bits):
            b = len(bits) - 1 - i
            if b < lowest:
                break
            self.emit("AND", other, eq, plane)
            self.emit("XOR", eq, eq, other)  # eq AND NOT plane
            if high >> b & 1:
                self.emit("OR", lt, *([lt] if started else []), eq)
                eq, other, started = other, eq, True
        return self.emit("OR", lt, lt, eq) if started else eq
