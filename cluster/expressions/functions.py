"""The xyOps expression functions (docs/xyexp.md), with the behaviour of xyOps' own definitions.

Each takes and returns evaluator values (UNDEFINED for a missing argument). Where xyOps throws on missing data
this returns an empty result instead, marked ⚠. `server(id)` and `event(id)` need lookups the caller passes in
(`functions=`); without one, `server` returns the id and `event` undefined (what xyOps gives for an unknown id).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

from ..patterns import PatternError, TextTooLong, compile_user
from .values import (
    MAX_ITEMS,
    UNDEFINED,
    Budget,
    JSList,
    LimitError,
    check_string,
    get_property,
    json_text,
    locale_number,
    number_text,
    parse_float,
    parse_int,
    same_value_zero,
    to_number,
    to_string,
    truthy,
    utf16_length,
)


class FunctionFailed(Exception):
    """A function could not produce a value (an invalid pattern, a text too long to match)."""


COMPILE_STEPS: Final = 500  # a pattern compiled by match() (0.2-0.5 ms of RE2 work), once per evaluation


Builtin = Callable[[Budget, list[Any]], Any]


def _arg(args: list[Any], i: int) -> Any:
    return args[i] if i < len(args) else UNDEFINED


def _number(value: float | int) -> float | int:
    """A float that holds an integer becomes an int (so 2.0 reads as 2 everywhere)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def js_min(budget: Budget, args: list[Any]) -> Any:
    budget.spend(len(args))
    numbers = [to_number(a) for a in args]
    if any(n != n for n in numbers):
        return math.nan
    return min(numbers, default=math.inf)


def js_max(budget: Budget, args: list[Any]) -> Any:
    budget.spend(len(args))
    numbers = [to_number(a) for a in args]
    if any(n != n for n in numbers):
        return math.nan
    return max(numbers, default=-math.inf)


def _rounding(how: Callable[[float], int]) -> Builtin:
    def run(_budget: Budget, args: list[Any]) -> Any:
        n = to_number(_arg(args, 0))
        if isinstance(n, int) or not math.isfinite(n):
            return n
        return _number(float(how(n)))

    return run


def _js_round(n: float) -> int:
    """Math.round: halves go up (-2.5 -> -2), computed exactly."""
    floor = math.floor(n)
    return floor + 1 if n - floor >= 0.5 else floor


def clamp(budget: Budget, args: list[Any]) -> Any:
    value, low, high = _arg(args, 0), _arg(args, 1), _arg(args, 2)
    return js_max(budget, [low, js_min(budget, [high, value])])


def _bytes_text(count: float | int) -> str:
    """pixl-tools getTextFromBytes: floor, then divide by 1024 keeping one decimal (floored) up to TB."""
    if count != count:
        return "NaN bytes"
    value: float = math.floor(count) if math.isfinite(count) else count
    if value < 1024:
        return number_text(value) + (" byte" if value == 1 else " bytes")
    for unit in ("K", "MB", "GB"):
        value = math.floor((value / 1024) * 10) / 10 if math.isfinite(value) else value
        if value < 1024:
            return f"{number_text(value)} {unit}"
    value = math.floor((value / 1024) * 10) / 10 if math.isfinite(value) else value
    return f"{number_text(value)} TB"


def bytes_(_budget: Budget, args: list[Any]) -> Any:
    return _bytes_text(parse_int(_arg(args, 0)))


def number(_budget: Budget, args: list[Any]) -> Any:
    value = _arg(args, 0)
    return locale_number(value if truthy(value) else 0)


def _short_float(value: Any) -> float:
    """pixl-tools shortFloat: at most 2 decimals, floored."""
    n = parse_float(value if truthy(value) else 0)
    if not math.isfinite(n):
        return n
    return math.floor(n * 100) / 100


def pct(_budget: Budget, args: list[Any]) -> Any:
    value, most, floor = _arg(args, 0), _arg(args, 1), _arg(args, 2)
    most = most if truthy(most) else 100
    try:
        ratio = (to_number(value) * 100) / to_number(most)
    except ZeroDivisionError:
        ratio = math.inf
    if not math.isfinite(ratio) or ratio < 0 or "e" in number_text(ratio):
        ratio = 0  # pixl-tools keeps only plain non-negative decimals
    result = math.floor(ratio) if truthy(floor) else _short_float(ratio)
    return number_text(_number(float(result))) + "%"


def integer(_budget: Budget, args: list[Any]) -> Any:
    n = parse_int(_arg(args, 0))
    return n if truthy(n) else 0


def float_(_budget: Budget, args: list[Any]) -> Any:
    n = _short_float(_arg(args, 0))
    return _number(n) if truthy(n) else 0


def stringify(_budget: Budget, args: list[Any]) -> Any:
    # ⚠ JSON.stringify(undefined) is undefined; "null" keeps a JSON body such as {"t": {{stringify(x)}}} valid.
    text = json_text(_arg(args, 0))
    return "null" if text is None else text


def encode(budget: Budget, args: list[Any]) -> Any:
    text = check_string(to_string(_arg(args, 0)))  # the result is at least as long: refuse before encoding
    budget.spend_chars(len(text) * 4)  # quote() walks the UTF-8 bytes one by one
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise FunctionFailed("encode(): the text holds a lone surrogate") from None
    return check_string(quote(data, safe="-_.!~*'()"))  # encodeURIComponent


def count(_budget: Budget, args: list[Any]) -> Any:
    value = _arg(args, 0)
    if not truthy(value):
        return 0
    if isinstance(value, str):
        return utf16_length(value)
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, Mapping):
        return value.get("length", UNDEFINED)
    return UNDEFINED


def find(budget: Budget, args: list[Any]) -> Any:
    """Items of an array whose `key` holds `value` as a substring."""
    items, key, needle = _arg(args, 0), to_string(_arg(args, 1)), to_string(_arg(args, 2))
    if not isinstance(items, list | tuple):
        return JSList()  # ⚠ xyOps throws on a missing array; an empty result reads as "nothing found"
    budget.spend(len(items))
    out = JSList() if isinstance(items, JSList) else []
    for item in items:
        if item is None or item is UNDEFINED:
            continue  # ⚠ xyOps throws on a null item
        value = to_string(get_property(item, key))
        budget.spend_chars(len(value))
        if needle in value:
            out.append(item)
    if len(out) > MAX_ITEMS:
        raise LimitError(f"an array would exceed {MAX_ITEMS} items")
    return out


def includes(budget: Budget, args: list[Any]) -> Any:
    haystack, needle = _arg(args, 0), _arg(args, 1)
    if isinstance(haystack, str):
        budget.spend_chars(len(haystack))
        return haystack != "" and to_string(needle) in haystack
    if isinstance(haystack, list | tuple):
        budget.spend(len(haystack))
        return any(same_value_zero(item, needle) for item in haystack)
    return False


def match(budget: Budget, args: list[Any]) -> Any:
    """Does the text match the regular expression (JavaScript syntax, run by RE2 in bounded time)? Each pattern
    costs COMPILE_STEPS the first time an evaluation uses it, so a filter that builds a pattern per item runs
    out of steps rather than compiling thousands."""
    text, pattern = _arg(args, 0), _arg(args, 1)
    if text is None or text is UNDEFINED:
        return False
    source = "(?:)" if pattern is UNDEFINED else to_string(pattern)
    if source not in budget.patterns:
        budget.spend(COMPILE_STEPS)  # so at most MAX_STEPS // COMPILE_STEPS patterns are held here
        budget.patterns.add(source)
    subject = to_string(text)
    budget.spend_chars(len(subject))
    try:
        return compile_user(source, "match").search(subject)
    except PatternError as exc:
        raise FunctionFailed(f"match(): the pattern {exc.problem}") from None
    except TextTooLong as exc:
        raise FunctionFailed(f"match(): {exc}") from None


def server(_budget: Budget, args: list[Any]) -> Any:
    return _arg(args, 0)


def event(_budget: Budget, _args: list[Any]) -> Any:
    return UNDEFINED


BUILTINS: Final[Mapping[str, Builtin]] = {
    "min": js_min, "max": js_max, "floor": _rounding(math.floor), "ceil": _rounding(math.ceil),
    "round": _rounding(_js_round), "clamp": clamp, "bytes": bytes_, "number": number, "pct": pct,
    "integer": integer, "float": float_, "stringify": stringify, "encode": encode, "count": count, "find": find,
    "includes": includes, "match": match, "server": server, "event": event,
}  # fmt: skip
NAMES: Final = frozenset(BUILTINS)
