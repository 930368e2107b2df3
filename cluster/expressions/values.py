"""JavaScript value semantics for expressions: truthiness, loose equality, `+`, comparisons, number text, JSON.

Values are what JSON gives Python (None, bool, int, float, str, list, dict) plus UNDEFINED, JavaScript's
`undefined` (a missing key or index), which stays distinct from None (`null`) inside an evaluation: `null + 1`
is 1, `undefined + 1` is NaN, as in JavaScript. Containers built by an expression's own literals are JSList and
JSDict, so `plain()` only has to walk those to turn UNDEFINED into None at the edge. Anything else (a Python
object slipped into a context) is opaque: it has no properties and reads as "[object Object]".

Every text this module builds (array joins, JSON) is capped at MAX_STRING characters and raises LimitError beyond,
so no conversion of a large context value costs more than that much work. Conversions also charge the Budget of
the evaluation under way (`charging()`): one step per item joined or written and one per CHARS_PER_STEP characters,
so an expression that converts the same large array for every item of a filter runs out of steps instead of
running for seconds. Outside an evaluation nothing is charged (the caps still hold).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import ROUND_HALF_UP, Decimal
from json.encoder import encode_basestring
from typing import Any, Final

MAX_STRING: Final = 65536  # characters in any string an expression produces
MAX_ITEMS: Final = 10_000  # items in any array an expression produces
MAX_NESTING: Final = 64  # levels of arrays/objects walked when joining or serialising
SAFE_INT: Final = 2**53  # beyond this JavaScript numbers are inexact; ints are carried as floats
CHARS_PER_STEP: Final = 32  # characters converted, scanned or produced per step of the budget
LONG_DIGITS: Final = 4000  # decimal digits beyond which text is read as a float (Python refuses int() past 4300)


class LimitError(Exception):
    """A value grew past a bound (string length, array size, nesting); the evaluator turns it into an error."""


class Budget:
    """Work left to one evaluation (or one template render): filters spend per item visited, functions and
    conversions per item walked and per CHARS_PER_STEP characters. `patterns` are those compiled so far."""

    __slots__ = ("patterns", "steps")

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.patterns: set[str] = set()

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise LimitError("the expression takes too many steps")

    def spend_chars(self, count: int) -> None:
        self.spend(count // CHARS_PER_STEP)


_BUDGET: ContextVar[Budget | None] = ContextVar("expression_budget", default=None)


@contextmanager
def charging(budget: Budget) -> Iterator[Budget]:
    """Charge the conversions made inside the block (joins, JSON, string scans) to `budget`."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def charge(steps: int, chars: int = 0) -> None:
    """Spend steps (and characters) of the evaluation under way, if any."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.spend(steps + chars // CHARS_PER_STEP)


class _Undefined:
    """JavaScript `undefined`: the value of a missing key, index or argument."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()


class JSList(list[Any]):
    """An array built by an expression (may hold UNDEFINED)."""


class JSDict(dict[str, Any]):
    """An object built by an expression (may hold UNDEFINED values)."""


def is_number(value: Any) -> bool:
    if type(value) is int or type(value) is float:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)


def plain(value: Any) -> Any:
    """The value as plain Python data: UNDEFINED becomes None, in containers built by the expression too."""
    if value is UNDEFINED:
        return None
    if type(value) is JSList:
        return [plain(v) for v in value]
    if type(value) is JSDict:
        return {k: plain(v) for k, v in value.items()}
    return value


def truthy(value: Any) -> bool:
    """JavaScript truthiness: false, 0, NaN, "", null and undefined are false; every array and object is true."""
    if value is None or value is UNDEFINED or value is False:
        return False
    if value is True:
        return True
    if type(value) is str:
        return value != ""
    if is_number(value):
        return bool(value == value and value != 0)  # NaN is false
    if isinstance(value, str):
        return value != ""
    return True


# -- numbers ------------------------------------------------------------------------------------------------------

_NUMERIC = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)")
_RADIX_BASE = {"x": 16, "o": 8, "b": 2}
_INT_PREFIX = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|(\d+))")
_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def _int_or_float(value: int) -> int | float:
    if -SAFE_INT <= value <= SAFE_INT:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _decimal_int(digits: str) -> int | float:
    """Decimal digits (with an optional sign) as a number; past LONG_DIGITS as the float JavaScript reads
    (Infinity for a long run of non-zero digits), so no text reaches Python's int-conversion limit."""
    if len(digits) > LONG_DIGITS:
        value = float(digits)
        return int(value) if value.is_integer() and abs(value) <= SAFE_INT else value
    return _int_or_float(int(digits))


def _string_number(text: str) -> int | float:
    text = text.strip()
    if not text:
        return 0
    if _NUMERIC.fullmatch(text):
        if text.lstrip("+-") == "Infinity":
            return -math.inf if text[0] == "-" else math.inf
        if "." in text or "e" in text or "E" in text:
            return float(text)
        return _decimal_int(text)
    if m := _RADIX.fullmatch(text):
        try:
            return _int_or_float(int(m[2], _RADIX_BASE[m[1].lower()]))
        except ValueError:
            return math.nan
    return math.nan


def to_number(value: Any) -> int | float:
    """JavaScript ToNumber (Number(value))."""
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if type(value) is int:
        return _int_or_float(value)
    if type(value) is float:
        return value
    if value is UNDEFINED:
        return math.nan
    if isinstance(value, str):
        return _string_number(value)
    if isinstance(value, int | float):
        return _int_or_float(int(value)) if isinstance(value, int) else float(value)
    return to_number(to_primitive(value))


def parse_int(value: Any) -> int | float:
    """JavaScript parseInt(value) without a radix: leading integer digits of String(value), or NaN."""
    m = _INT_PREFIX.match(to_string(value).strip())
    if m is None:
        return math.nan
    if m[2] is None:
        return _decimal_int(m[1] + m[3])
    number = int(m[2], 16)  # a power-of-two base: no conversion limit, linear
    return _int_or_float(-number if m[1] == "-" else number)


def parse_float(value: Any) -> float:
    """JavaScript parseFloat(value): the leading decimal number of String(value), or NaN."""
    m = _FLOAT_PREFIX.match(to_string(value).strip())
    if m is None:
        return math.nan
    text = m[0]
    if text.lstrip("+-") == "Infinity":
        return -math.inf if text[0] == "-" else math.inf
    return float(text)


def number_text(value: float | int) -> str:
    """JavaScript Number.prototype.toString(): 3 not 3.0, 1e+21, 1e-7, NaN, Infinity."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -SAFE_INT <= value <= SAFE_INT:
            return str(value)
        value = float(_int_or_float(value))
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) <= SAFE_INT:
        return str(int(value))
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)  # value = 0.digits x 10^n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exp = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def locale_number(value: Any) -> str:
    """Intl.NumberFormat('en-US').format(): grouped thousands, at most 3 decimals rounded half away from zero."""
    number = to_number(value)
    if number != number:
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    rounded = Decimal(repr(float(number)) if isinstance(number, float) else number).quantize(
        Decimal("0.001"), rounding=ROUND_HALF_UP)  # fmt: skip
    text = f"{abs(rounded):,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    negative = rounded < 0 or (rounded == 0 and math.copysign(1.0, float(number)) < 0)
    return ("-" if negative else "") + text


# -- strings ------------------------------------------------------------------------------------------------------


def utf16_length(text: str) -> int:
    """A string's JavaScript `length` (UTF-16 code units), counted by the codec rather than a Python loop."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def utf16_units(text: str) -> str | bytes:
    """A key that orders strings by UTF-16 code units (JavaScript's `<`): the text itself when it is ASCII."""
    return text if text.isascii() else text.encode("utf-16-be", "surrogatepass")


def check_string(text: str) -> str:
    if len(text) > MAX_STRING:
        raise LimitError(f"a string would exceed {MAX_STRING} characters")
    return text


def _join(items: list[Any] | tuple[Any, ...], depth: int) -> str:
    if depth > MAX_NESTING:
        raise LimitError(f"arrays nest deeper than {MAX_NESTING} levels")
    charge(min(len(items), MAX_STRING + 1))  # more items than that cannot fit in a string anyway
    parts: list[str] = []
    size = 0
    for item in items:
        text = "" if item is None or item is UNDEFINED else _string(item, depth + 1)
        size += len(text) + 1
        if size > MAX_STRING + 1:
            raise LimitError(f"a string would exceed {MAX_STRING} characters")
        parts.append(text)
    charge(0, size)
    return ",".join(parts)


def _string(value: Any, depth: int) -> str:
    if type(value) is str:
        return value
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if value is True or value is False:
        return "true" if value else "false"
    if is_number(value):
        return number_text(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list | tuple):
        return _join(value, depth)
    return "[object Object]"


def to_string(value: Any) -> str:
    """JavaScript String(value): arrays join with commas, objects are "[object Object]"."""
    return _string(value, 0)


def to_primitive(value: Any) -> Any:
    """JavaScript ToPrimitive for our values: arrays and objects become their string, the rest stay."""
    if value is None or value is UNDEFINED or isinstance(value, str | int | float):
        return value
    return to_string(value)


def text(value: Any) -> str:
    """A value as it appears in rendered text: null and undefined are empty, arrays and objects are JSON."""
    if value is None or value is UNDEFINED:
        return ""
    if isinstance(value, list | tuple | Mapping):
        return json_text(value) or ""
    if not isinstance(value, str | int | float):
        return ""
    return to_string(value)


# -- reading data ---------------------------------------------------------------------------------------------------


def _is_index(key: str) -> bool:
    """An array index as JavaScript writes it: ASCII digits, no leading zero, short enough for int()."""
    return key.isascii() and key.isdigit() and len(key) <= 15 and (key == "0" or key[0] != "0")


def get_property(value: Any, key: str) -> Any:
    """value[key] as JavaScript reads it, for data only: a mapping's key, a list's index or length, a string's
    character or length; anything else is undefined."""
    if type(value) is dict or type(value) is JSDict:
        return value.get(key, UNDEFINED)
    if isinstance(value, list | tuple):
        if key == "length":
            return len(value)
        if _is_index(key):
            index = int(key)
            return value[index] if index < len(value) else UNDEFINED
        return UNDEFINED
    if isinstance(value, str):
        if key == "length":
            return utf16_length(value)
        if _is_index(key):
            index = int(key)
            return value[index] if index < len(value) else UNDEFINED
        return UNDEFINED
    if isinstance(value, Mapping):
        return value.get(key, UNDEFINED)
    return UNDEFINED


# -- comparisons -----------------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None or value is UNDEFINED:
        return "nullish"
    if value is True or value is False:
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, int | float):
        return "num"
    return "obj"


_SIMPLE: Final = (str, int, float)
_NUMBERS: Final = (int, float)


def loose_equal(left: Any, right: Any) -> bool:
    """JavaScript `==`: null == undefined, "1" == 1, true == 1, [7] == "7"; objects only equal themselves."""
    if type(left) is type(right) and type(left) in _SIMPLE:
        return bool(left == right)
    lk, rk = _kind(left), _kind(right)
    if lk == rk:
        if lk == "nullish":
            return True
        if lk == "obj":
            return left is right
        return bool(left == right)
    if lk == "nullish" or rk == "nullish":
        return False
    if lk == "bool":
        return loose_equal(int(left), right)
    if rk == "bool":
        return loose_equal(left, int(right))
    if lk == "num" and rk == "str":
        return bool(left == _string_number(right))
    if lk == "str" and rk == "num":
        return bool(_string_number(left) == right)
    if lk == "obj":
        return loose_equal(to_primitive(left), right)
    return loose_equal(left, to_primitive(right))


def strict_equal(left: Any, right: Any) -> bool:
    """JavaScript `===` (used by `in` over arrays)."""
    lk, rk = _kind(left), _kind(right)
    if lk != rk:
        return False
    if lk == "nullish":
        return left is right
    if lk == "obj":
        return left is right
    return bool(left == right)


def same_value_zero(left: Any, right: Any) -> bool:
    """Array.prototype.includes equality: `===` except that NaN equals NaN."""
    if _kind(left) == "num" and _kind(right) == "num" and left != left and right != right:
        return True
    return strict_equal(left, right)


def compare(op: str, left: Any, right: Any) -> bool:
    """JavaScript `<`, `<=`, `>`, `>=`: two strings compare by UTF-16 code units, anything else as numbers
    (NaN compares false)."""
    a: Any
    b: Any
    if type(left) in _NUMBERS and type(right) in _NUMBERS:
        a, b = left, right
        return bool(a < b if op == "<" else a <= b if op == "<=" else a > b if op == ">" else a >= b)
    left, right = to_primitive(left), to_primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        a, b = left, right
        if not (a.isascii() and b.isascii()):
            charge(0, len(a) + len(b))
            a, b = a.encode("utf-16-be", "surrogatepass"), b.encode("utf-16-be", "surrogatepass")
    else:
        a, b = to_number(left), to_number(right)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


# -- JSON ------------------------------------------------------------------------------------------------------------

_INDEX_KEY = re.compile(r"0|[1-9]\d{0,9}")
JSON_ITEM_STEPS: Final = 4  # an item or member written as JSON costs about four filter steps of work
_quote: Final[Callable[[str], str]] = encode_basestring  # JSON string text in C, non-ASCII kept as is


def _ordered_keys(obj: Mapping[Any, Any]) -> list[str]:
    """JavaScript's own-key order: integer-like keys ascending first, then the rest in insertion order.
    Every member takes at least 4 characters of JSON (`"":0` or a comma), so more keys than MAX_STRING // 4
    cannot fit and are refused before any sorting."""
    charge(min(len(obj), MAX_STRING) * JSON_ITEM_STEPS)
    index: list[str] = []
    rest: list[str] = []
    for key in obj:
        if isinstance(key, str):
            (index if _INDEX_KEY.fullmatch(key) and int(key) < 2**32 - 1 else rest).append(key)
            if len(index) + len(rest) > MAX_STRING // 4:
                raise LimitError(f"a string would exceed {MAX_STRING} characters")
    if not index:
        return rest
    return sorted(index, key=int) + rest


class _JsonWriter:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def put(self, piece: str) -> None:
        self.size += len(piece)
        if self.size > MAX_STRING:
            raise LimitError(f"a string would exceed {MAX_STRING} characters")
        self.parts.append(piece)

    def text(self, value: str) -> None:
        if len(value) > MAX_STRING:  # its JSON is at least as long: refuse before encoding
            raise LimitError(f"a string would exceed {MAX_STRING} characters")
        self.put(_quote(value))

    def value(self, value: Any, depth: int) -> bool:
        """Write one value; False when it has no JSON form (undefined), which the caller omits or writes as null."""
        kind = type(value)
        if kind is str:
            self.text(value)
        elif kind is int and -SAFE_INT <= value <= SAFE_INT:
            self.put(str(value))
        elif value is UNDEFINED:
            return False
        elif value is None:
            self.put("null")
        elif value is True or value is False:
            self.put("true" if value else "false")
        elif isinstance(value, str):
            self.text(str.__str__(value))
        elif isinstance(value, int | float):
            number = to_number(value)
            self.put(number_text(number) if math.isfinite(number) else "null")
        elif isinstance(value, list | tuple):
            self._array(value, depth)
        elif isinstance(value, Mapping):
            self._object(value, depth)
        else:
            self.put("{}")  # an opaque object: JSON.stringify of a class instance without own fields
        return True

    def _array(self, value: list[Any] | tuple[Any, ...], depth: int) -> None:
        self._nest(depth)
        charge(min(len(value), MAX_STRING) * JSON_ITEM_STEPS)
        self.put("[")
        for i, item in enumerate(value):
            if i:
                self.put(",")
            if not self.value(item, depth + 1):
                self.put("null")
        self.put("]")

    def _object(self, value: Mapping[Any, Any], depth: int) -> None:
        self._nest(depth)
        self.put("{")
        first = True
        for key in _ordered_keys(value):
            if len(key) > MAX_STRING:
                raise LimitError(f"a string would exceed {MAX_STRING} characters")
            mark = len(self.parts)
            self.put(("" if first else ",") + _quote(key) + ":")
            if self.value(value[key], depth + 1):
                first = False
            else:
                del self.parts[mark:]
        self.put("}")

    @staticmethod
    def _nest(depth: int) -> None:
        if depth >= MAX_NESTING:
            raise LimitError(f"values nest deeper than {MAX_NESTING} levels")


def json_text(value: Any) -> str | None:
    """JSON.stringify(value) (compact, JavaScript number text and key order), or None for undefined."""
    writer = _JsonWriter()
    if not writer.value(value, 0):
        return None
    charge(0, writer.size)
    return "".join(writer.parts)
