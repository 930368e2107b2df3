"""Syntax tree -> a tree of closures, and the Expression that runs them within bounds.

Reading data follows JEXL: `a.b` on an array reads `b` of its first item (so `list[.x == 1].y` is the `y` of the
first match); `a[expr]` filters an array by `expr` when `expr` reads the item (`.key`), and otherwise indexes it
(`a[0]`, `a['key']`, `a[true]` is `a`, `a[false]` undefined). Only mapping keys, list indexes and the `length` of
strings are reachable: no attribute of a Python object ever is. ⚠ Where JEXL throws on a missing value (`x[0]` or
`x.y` with `x` missing or null, `.y` of an empty filter result) the result is undefined instead.

Bounds at evaluation: every item a filter visits costs the filter's size in steps, every item a function walks,
`in` scans or a conversion joins one step, every CHARS_PER_STEP characters scanned or converted one step, every
pattern `match` compiles COMPILE_STEPS, at most MAX_STEPS in all; no string over MAX_STRING characters and no
array over MAX_ITEMS items is made. Going past any of them raises EvaluationError, as does a function that fails
(e.g. `match` with a refused pattern) or any other fault inside the evaluator: callers only ever see
ExpressionError.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import values
from .errors import EvaluationError
from .functions import BUILTINS, NAMES, Builtin, FunctionFailed
from .parser import Node, parse
from .values import MAX_ITEMS, UNDEFINED, Budget, JSDict, JSList, LimitError, charging, get_property

MAX_STEPS: Final = 100_000
CACHE_SIZE: Final = 1024

Run = Callable[["_Env", Any], Any]  # (evaluation, the current filter item) -> value


class _Env:
    """One evaluation: the context, the functions and the budget left."""

    __slots__ = ("budget", "context", "functions")

    def __init__(self, context: Mapping[str, Any], functions: Mapping[str, Builtin], budget: Budget) -> None:
        self.context = context
        self.functions = functions
        self.budget = budget


# -- reading data ----------------------------------------------------------------------------------------------------


def _member(value: Any, key: str) -> Any:
    """`value.key`: on an array, the key of its first item (JEXL)."""
    if type(value) is dict:
        return value.get(key, UNDEFINED)
    if isinstance(value, list | tuple):
        return get_property(value[0], key) if value else UNDEFINED
    return get_property(value, key)


def _index(value: Any, key: Any) -> Any:
    """`value[key]` for a key that is not a boolean."""
    if isinstance(key, int | float) and not isinstance(key, bool) and isinstance(value, list | tuple | str):
        if key == key and float(key).is_integer() and 0 <= key < len(value):
            return value[int(key)]
        return UNDEFINED
    return get_property(value, values.to_string(key))


def _context(env: _Env, name: str) -> Any:
    context = env.context
    if type(context) is dict:
        return context.get(name, UNDEFINED)
    return get_property(context, name)


# -- operators -------------------------------------------------------------------------------------------------------


def _result(value: int | float) -> int | float:
    if type(value) is int and not -values.SAFE_INT <= value <= values.SAFE_INT:
        return float(value)
    return value


def _add(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        return _result(left + right)
    left, right = values.to_primitive(left), values.to_primitive(right)
    if isinstance(left, str) or isinstance(right, str):
        return values.check_string(values.to_string(left) + values.to_string(right))
    return _result(values.to_number(left) + values.to_number(right))


def _sub(left: Any, right: Any) -> Any:
    return _result(values.to_number(left) - values.to_number(right))


def _mul(left: Any, right: Any) -> Any:
    return _result(values.to_number(left) * values.to_number(right))


def _divide(a: float | int, b: float | int) -> float:
    if b == 0:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _div(left: Any, right: Any) -> Any:
    return _divide(values.to_number(left), values.to_number(right))


def _floordiv(left: Any, right: Any) -> Any:
    quotient = _divide(values.to_number(left), values.to_number(right))
    return float(math.floor(quotient)) if math.isfinite(quotient) else quotient


def _mod(left: Any, right: Any) -> Any:
    a, b = values.to_number(left), values.to_number(right)
    if b == 0 or a != a or b != b or math.isinf(a):
        return math.nan
    if math.isinf(b):
        return a
    if type(a) is int and type(b) is int:
        rest = abs(a) % abs(b)
        return -rest if a < 0 else rest
    return math.fmod(a, b)


def _pow(left: Any, right: Any) -> Any:
    a, b = float(values.to_number(left)), float(values.to_number(right))
    if b != b:
        return math.nan
    if b == 0:
        return 1
    if a != a or (abs(a) == 1 and math.isinf(b)):
        return math.nan
    odd = b.is_integer() and abs(b) < 2**53 and int(b) % 2 == 1
    if a == 0 and b < 0:
        return -math.inf if odd and math.copysign(1.0, a) < 0 else math.inf
    try:
        return _result_float(math.pow(a, b))
    except OverflowError:
        return -math.inf if a < 0 and odd else math.inf
    except ValueError:
        return math.nan


def _result_float(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) <= values.SAFE_INT else value


def _in(budget: Budget, left: Any, right: Any) -> Any:
    """`left in right`: a substring of a string, or an item (===) of an array; each element or CHARS_PER_STEP
    characters scanned costs a step, so `list[.x in other_list]` over two large arrays runs out of steps."""
    if isinstance(right, str):
        budget.spend_chars(len(right))
        return values.to_string(left) in right
    if isinstance(right, list | tuple):
        budget.spend(len(right))
        return any(values.strict_equal(item, left) for item in right)
    return False


_BINARY: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": _add, "-": _sub, "*": _mul, "/": _div, "//": _floordiv, "%": _mod, "^": _pow,
    "==": values.loose_equal, "!=": lambda a, b: not values.loose_equal(a, b),
    "<": lambda a, b: values.compare("<", a, b), "<=": lambda a, b: values.compare("<=", a, b),
    ">": lambda a, b: values.compare(">", a, b), ">=": lambda a, b: values.compare(">=", a, b),
}  # fmt: skip


_NUMBERS: Final = (int, float)
_SIMPLE: Final = (str, int, float)
_FAST_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}  # fmt: skip


# -- compiling -------------------------------------------------------------------------------------------------------


def _path(node: Node) -> tuple[str, list[str]] | None:
    """`name.a.b` as (name, [a, b]), for the common case of a plain path read in one loop."""
    keys: list[str] = []
    while node.kind == "member":
        keys.append(node.value)
        child = node.children[0]
        assert child is not None
        node = child
    if node.kind != "name":
        return None
    return node.value, keys[::-1]


def _compile(node: Node) -> Run:  # noqa: C901 (one case per kind of node)
    kind = node.kind
    kids = node.kids()
    if kind == "lit":
        value = node.value
        return lambda env, item: value
    if kind in ("name", "member") and (path := _path(node)) is not None:
        root, keys = path
        if not keys:
            return lambda env, item: _context(env, root)
        if len(keys) == 1:
            key = keys[0]
            return lambda env, item: _member(_context(env, root), key)

        def read_path(env: _Env, item: Any) -> Any:
            value = _context(env, root)
            for key in keys:
                value = _member(value, key)
            return value

        return read_path
    if kind == "rel":
        name = node.value
        return lambda env, item: item.get(name, UNDEFINED) if type(item) is dict else get_property(item, name)
    if kind == "member":
        subject, key = _compile(kids[0]), node.value
        return lambda env, item: _member(subject(env, item), key)
    if kind == "index":
        subject, position = _compile(kids[0]), node.value
        return lambda env, item: _index(subject(env, item), position)
    if kind == "filter":
        return _compile_filter(node)
    if kind == "unary":
        operand = _compile(kids[0])
        if node.value == "!":
            return lambda env, item: not values.truthy(operand(env, item))
        return lambda env, item: _result(-values.to_number(operand(env, item)))
    if kind == "binary":
        return _compile_binary(node)
    if kind == "cond":
        return _compile_cond(node)
    if kind == "array":
        parts = [_compile(k) for k in kids]
        return lambda env, item: JSList(p(env, item) for p in parts)
    if kind == "object":
        keys_values = list(zip(node.value, [_compile(k) for k in kids], strict=True))
        return lambda env, item: JSDict((k, p(env, item)) for k, p in keys_values)
    if kind == "call":
        return _compile_call(node)
    raise AssertionError(f"unknown node {kind}")


def _compile_binary(node: Node) -> Run:
    left_node, right_node = node.kids()
    left, right = _compile(left_node), _compile(right_node)
    if node.value == "&&":
        def both(env: _Env, item: Any) -> Any:
            value = left(env, item)
            return right(env, item) if values.truthy(value) else value

        return both
    if node.value == "||":
        def either(env: _Env, item: Any) -> Any:
            value = left(env, item)
            return value if values.truthy(value) else right(env, item)

        return either
    if node.value in ("<", "<=", ">", ">="):
        compare, name = _FAST_COMPARE[node.value], node.value

        def ordered(env: _Env, item: Any) -> Any:
            a, b = left(env, item), right(env, item)
            if type(a) in _NUMBERS and type(b) in _NUMBERS:
                return compare(a, b)
            return values.compare(name, a, b)

        return ordered
    if node.value in ("==", "!="):
        negate = node.value == "!="

        def equal(env: _Env, item: Any) -> Any:
            a, b = left(env, item), right(env, item)
            same = a == b if type(a) is type(b) and type(a) in _SIMPLE else values.loose_equal(a, b)
            return not same if negate else same

        return equal
    if node.value == "in":
        return lambda env, item: _in(env.budget, left(env, item), right(env, item))
    op = _BINARY[node.value]
    return lambda env, item: op(left(env, item), right(env, item))


def _compile_cond(node: Node) -> Run:
    test_node, consequent_node, alternate_node = node.children
    assert test_node is not None and alternate_node is not None
    test, alternate = _compile(test_node), _compile(alternate_node)
    consequent = _compile(consequent_node) if consequent_node is not None else None

    def choose(env: _Env, item: Any) -> Any:
        value = test(env, item)
        if values.truthy(value):
            return consequent(env, item) if consequent is not None else value
        return alternate(env, item)

    return choose


def _compile_filter(node: Node) -> Run:
    subject_node, expr_node = node.kids()
    subject, expr = _compile(subject_node), _compile(expr_node)
    if not node.value:  # a static filter: an index, a key, or a boolean gate
        def pick(env: _Env, item: Any) -> Any:
            base, key = subject(env, item), expr(env, item)
            if key is True or key is False:
                return base if key else UNDEFINED
            return _index(base, key)

        return pick
    cost = expr_node.size

    def keep(env: _Env, item: Any) -> Any:
        base = subject(env, item)
        if not isinstance(base, list | tuple):
            base = [] if base is UNDEFINED else [base]
        env.budget.spend(cost * len(base))
        out = [element for element in base if (kept := expr(env, element)) is True or (
            kept is not False and values.truthy(kept))]  # fmt: skip
        if len(out) > MAX_ITEMS:
            raise LimitError(f"an array would exceed {MAX_ITEMS} items")
        return JSList(out) if isinstance(base, JSList) else out

    return keep


def _compile_call(node: Node) -> Run:
    name = node.value
    args = [_compile(k) for k in node.kids()]

    def call(env: _Env, item: Any) -> Any:
        return env.functions[name](env.budget, [a(env, item) for a in args])

    return call


# -- the public face -------------------------------------------------------------------------------------------------


def _external(name: str, func: Callable[..., Any]) -> Builtin:
    """A caller's function (e.g. `server`): plain Python arguments in, None out reads as undefined."""

    def run(_budget: Budget, args: list[Any]) -> Any:
        try:
            result = func(*[values.plain(a) for a in args])
        except Exception as exc:
            raise FunctionFailed(f"{name}() failed ({type(exc).__name__})") from None
        return UNDEFINED if result is None else result

    return run


class Expression:
    """A compiled expression. `evaluate()` never raises for missing or odd data (it yields None, JavaScript's
    undefined); it raises EvaluationError only when a bound is exceeded or a function fails."""

    __slots__ = ("_run", "source")

    def __init__(self, source: str, run: Run) -> None:
        self.source = source
        self._run = run

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate_raw(self, context: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None,
                     *, budget: Budget | None = None) -> Any:  # fmt: skip
        """The value as the evaluator holds it (UNDEFINED distinct from None; literals as JSList/JSDict).
        `budget`: steps shared with other evaluations (a template's placeholders); by default MAX_STEPS."""
        table: Mapping[str, Builtin] = BUILTINS
        if functions:
            table = {**BUILTINS, **{k: _external(k, f) for k, f in functions.items() if k in NAMES}}
        env = _Env(context, table, Budget(MAX_STEPS) if budget is None else budget)
        try:
            with charging(env.budget):
                return self._run(env, context)
        except (LimitError, FunctionFailed) as exc:
            raise EvaluationError(str(exc)) from None
        except RecursionError:
            raise EvaluationError("the expression recursed too deeply") from None
        except Exception as exc:  # a fault of ours on odd data: named by its type only, never the data
            raise EvaluationError(f"the expression failed ({type(exc).__name__})") from None

    def evaluate(self, context: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None) -> Any:
        """The value as plain Python data (undefined is None)."""
        return values.plain(self.evaluate_raw(context, functions))


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile_expression(source: str) -> Expression:
    """Compile (and cache) an expression; ExpressionError says what is wrong and at which position."""
    return Expression(source, _compile(parse(source, NAMES)))


def evaluate(source: str, context: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None) -> Any:
    """Compile (cached) and evaluate in one call."""
    return compile_expression(source).evaluate(context, functions)
