"""Monitor values from one ServerMonitorData sample (execution reference 2.2, xyOps handleMonitoringData): pure.

For each monitor in scope (no groups, or a group shared with the server) the compiled `source` is evaluated
against the sample's `data`; an error or an undefined result is 0. `data_match` (a user regex, RE2-bounded)
takes its first capture group, else the whole match, else 0. `data_type` casts: integer, bytes, seconds and
milliseconds go through JavaScript's `parseInt(v) || 0`; float through `parseFloat(v) || 0`, kept to five
decimals.

Delta monitors (`delta: true`) keep the absolute counter in `monitors` (the next sample needs it, and the time
series store it, as xyOps does: its charts derive the rate); the rate goes to `deltas`: `value - previous`, 0 on
the first sample and whenever the previous value was 0, at least `delta_min_value` when that is a number, divided
by the seconds since the previous sample with `divide_by_delta`, floored for the integer types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.expressions import Expression, ExpressionError, compile_expression, to_text
from cluster.patterns import Pattern, PatternError, TextTooLong, compile_user

INTEGER_TYPES = frozenset({"integer", "bytes", "seconds", "milliseconds"})
DATA_TYPES = INTEGER_TYPES | {"float"}
_INT = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|\d+)")
_FLOAT = re.compile(r"\s*([+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))")


def js_int(value: Any) -> int:
    """JavaScript `parseInt(value) || 0`: the leading integer of the value's text (3.9 -> 3, "12 MB" -> 12, "0x1A"
    -> 26), so a number JavaScript would print with an exponent (1e21, 1e-7) gives its first digits."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return 0
        if value != 0 and not 1e-6 <= abs(value) < 1e21:  # String() of these has an exponent: "1e+21", "1e-7"
            value = repr(value)
        else:
            return math.trunc(value)
    found = _INT.match(to_text(value))
    if not found:
        return 0
    sign, digits = found.group(1), found.group(2)
    number = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
    return -number if sign == "-" else number


def js_float(value: Any) -> float:
    """JavaScript `parseFloat(value) || 0` (NaN and 0 give 0; Infinity stays)."""
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        number = float(value)
    else:
        found = _FLOAT.match(to_text(value))
        if not found:
            return 0.0
        text = found.group(1)
        number = math.copysign(math.inf, -1.0 if text.startswith("-") else 1.0) if "Infinity" in text else float(text)
    return 0.0 if math.isnan(number) else number


def short_float(value: float, places: int = 5) -> float:
    """A float kept to `places` decimals (xyOps Tools.shortFloat)."""
    if not math.isfinite(value):
        return value
    return round(value, places) + 0.0  # + 0.0: no -0.0


MAX_SAFE = 2**53  # what every store and client holds exactly (msgpack ints stop at 2**64)


def finite(value: float) -> int | float:
    """A value the time series and JSON can hold: Infinity and NaN are 0 (xyOps would store `null`), integers
    beyond +-2**53 are clamped."""
    if isinstance(value, int):
        return max(-MAX_SAFE, min(MAX_SAFE, value))
    return value if math.isfinite(value) else 0


def cast(value: Any, data_type: str) -> int | float:
    if data_type in INTEGER_TYPES:
        return finite(js_int(value))
    return finite(short_float(js_float(value)))


def extract(value: Any, pattern: Pattern) -> Any:
    """`data_match` applied to a value: capture group 1, else the whole match, else 0."""
    try:
        found = pattern.groups(to_text(value))
    except TextTooLong:
        return 0
    if found is None:
        return 0
    return found[1] if len(found) >= 2 else found[0]


def in_scope(groups: Any, server_groups: Iterable[str]) -> bool:
    """An object with no groups applies to every server; else to servers sharing one of its groups."""
    if not groups:
        return True
    wanted = set(groups) if isinstance(groups, list | tuple | set | frozenset) else {str(groups)}
    return any(g in wanted for g in server_groups)


@dataclass(frozen=True, slots=True)
class Monitor:
    """A monitor definition, compiled."""

    id: str
    groups: tuple[str, ...]
    source: Expression
    data_type: str
    match: Pattern | None = None
    delta: bool = False
    delta_min: float | None = None
    divide: bool = False

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Monitor:
        """Compile a stored monitor (ExpressionError / PatternError when it cannot be: create_monitor refuses
        those, so a stored one compiles)."""
        minimum = record.get("delta_min_value")
        return cls(
            id=str(record["id"]), groups=tuple(str(g) for g in record.get("groups") or ()),
            source=compile_expression(str(record.get("source") or "")),
            data_type=str(record.get("data_type") or "float"),
            match=compile_user(str(record["data_match"]), "data_match") if record.get("data_match") else None,
            delta=bool(record.get("delta")),
            delta_min=float(minimum) if isinstance(minimum, int | float) and not isinstance(minimum, bool) else None,
            divide=bool(record.get("divide_by_delta")),
        )  # fmt: skip

    def value(self, data: Mapping[str, Any]) -> int | float:
        """The monitor's value for one sample."""
        try:
            raw = self.source.evaluate(data)
        except Exception:  # an ExpressionError, or any failure on odd data: 0, as xyOps (never the whole sample)
            raw = 0
        try:
            if self.match is not None:
                raw = extract(raw, self.match)
            return cast(raw, self.data_type)
        except (ValueError, OverflowError):  # e.g. a text of thousands of digits
            return 0

    def rate(self, value: float, previous: Mapping[str, Any] | None, elapsed: float | None) -> int | float:
        """The delta of a delta monitor against the previous sample's absolute value."""
        if previous is None or self.id not in previous:
            return 0
        old = previous.get(self.id) or 0
        old = old if isinstance(old, int | float) and not isinstance(old, bool) else 0
        delta: float = value - old if old else 0
        if self.delta_min is not None and delta < self.delta_min:
            delta = self.delta_min
        if self.divide and elapsed is not None:
            delta /= elapsed or 1
        if self.data_type in INTEGER_TYPES:
            return finite(math.floor(delta)) if math.isfinite(delta) else 0
        return finite(delta)


def compile_monitors(records: Sequence[Mapping[str, Any]]) -> list[Monitor]:
    """The stored monitors, compiled; one that no longer compiles (a rule tightened since) is left out."""
    out = []
    for record in records:
        try:
            out.append(Monitor.of(record))
        except (ExpressionError, PatternError, KeyError):
            continue
    return out


def compute(
    monitors: Sequence[Monitor], data: Mapping[str, Any], server_groups: Sequence[str],
    previous: Mapping[str, Any] | None, elapsed: float | None,
) -> tuple[dict[str, int | float], dict[str, int | float]]:
    """(`monitors`, `deltas`) for one sample: `previous` is the last sample's `monitors`, `elapsed` the seconds
    since it (None when there was none)."""  # fmt: skip
    values: dict[str, int | float] = {}
    deltas: dict[str, int | float] = {}
    for monitor in monitors:
        if not in_scope(monitor.groups, server_groups):
            continue
        value = values[monitor.id] = monitor.value(data)
        if monitor.delta:
            deltas[monitor.id] = monitor.rate(value, previous, elapsed)
    return values, deltas
