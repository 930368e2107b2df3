"""Validation and normalisation of event triggers (the `triggers` array of an event or workflow).

`validate_triggers(triggers, workflow=False)` checks a client-supplied list and returns a normalised
deep copy, or raises `TriggerError` whose message names the position, the type and the field, e.g.
``triggers[2] (schedule): 'hours' values must be 0-23``. Pure: no I/O. Checks that need other objects
(the scheduler plugin exists, params match the event's fields, magic keys hashed into tokens) belong
to the API layer.

Normalisation (what the scheduler relies on):

- `enabled` is a bool (`true/false`, `0/1` and the strings "true"/"false" are accepted, as xyOps
  clients send all of them).
- Numbers are ints (integral floats such as `5.0` are accepted); schedule arrays and precision
  `seconds` are sorted and de-duplicated.
- `single.epoch`, and `range`/`blackout` `start`/`end`, are floored to the minute: the scheduler works
  on whole minutes there. A range `start`/`end` of 0 or null is dropped (an open end), as in xyOps.
- An empty `timezone` is dropped (the conductor default applies).

Composition rules among ENABLED triggers: at most one each of startup, catchup, nth, manual, precision,
quiet and plugin; interval, precision and delay are pairwise exclusive. With `workflow=True` every
trigger needs a unique string `id` (the workflow graph links trigger nodes by it).

Compiled schedules live in `cluster.timing` (see its docstring for what fires when, DST included)
and are re-exported here so one import serves both:

- `compile_triggers(validated, default_tz="UTC") -> Schedule`, immutable; cache it per event revision.
- `Schedule.due(start, end) -> list[Slot]`: launches with start < epoch <= end, by (epoch, index).
  Also `has_timing` (any enabled schedule/interval/single), `catchup`, `nth_every`, `startup`,
  `manual`, `magic` (token -> Origin), `keyboard`, `plugin`, `delay`, `invisible`, `ephemeral`, and
  `hot` (seconds of the minute at which schedule/single triggers can launch).
- `Slot`: `epoch` (scheduled second, the run identity), `delay`, `start` (= epoch + delay), `minute`,
  and from the originating trigger (`Slot.origin`, an `Origin`): `index`, `type`, `trigger_id`,
  `params`, `data`, `tags`.
"""

from __future__ import annotations

import copy
import functools
import zoneinfo
from collections.abc import Callable
from typing import Any

from .timing import Origin, Schedule, Slot, compile_triggers

__all__ = ["TYPES", "Origin", "Schedule", "Slot", "TriggerError", "compile_triggers", "validate_triggers"]

UNIQUE = ("startup", "catchup", "nth", "manual", "precision", "quiet", "plugin")
EXCLUSIVE = (("interval", "precision"), ("interval", "delay"), ("precision", "delay"))

# (low, high, wording) per schedule array; `days` is special-cased because 0 sits inside its span.
SCHEDULE_ARRAYS: dict[str, tuple[int, int | None, str]] = {
    "years": (1, None, ">= 1"),
    "months": (1, 12, "1-12"),
    "days": (-7, 31, "1-31 or -7..-1"),
    "weekdays": (0, 6, "0-6"),
    "hours": (0, 23, "0-23"),
    "minutes": (0, 59, "0-59"),
}


class TriggerError(ValueError):
    """A trigger list the API must refuse (code `api`); the message says which entry and field."""


class _Bad(Exception):
    """Raised inside one trigger's checks; turned into a TriggerError with the entry's position."""


@functools.cache
def known_zones() -> frozenset[str]:
    # Read once: scanning the zone database takes milliseconds.
    return frozenset(zoneinfo.available_timezones())


def _as_int(value: Any) -> int | None:
    """An int from an int or an integral float; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:  # 1e308 is "integral" too
        return int(value)
    return None


def _opt_int(trigger: dict[str, Any], key: str, low: int) -> int | None:
    """The field as an int >= low (stored back normalised), or None when absent or null."""
    if trigger.get(key) is None:
        return None
    value = _as_int(trigger[key])
    if value is None:
        raise _Bad(f"'{key}' must be an integer")
    if value < low:
        raise _Bad(f"'{key}' must be >= {low}")
    trigger[key] = value
    return value


def _req_int(trigger: dict[str, Any], key: str, low: int) -> int:
    value = _opt_int(trigger, key, low)
    if value is None:
        raise _Bad(f"'{key}' is required")
    return value


def _floor_minute(value: int) -> int:
    return value - value % 60


def _int_array(trigger: dict[str, Any], key: str, low: int, high: int | None, wording: str) -> None:
    values = trigger[key]
    if not isinstance(values, list):
        raise _Bad(f"'{key}' must be an array of integers")
    out: set[int] = set()
    for raw in values:
        value = _as_int(raw)
        if value is None:
            raise _Bad(f"'{key}' must be an array of integers")
        if value < low or (high is not None and value > high) or (key == "days" and value == 0):
            raise _Bad(f"'{key}' values must be {wording}")
        out.add(value)
    trigger[key] = sorted(out)


def _timezone(trigger: dict[str, Any]) -> None:
    tz = trigger.get("timezone")
    if tz is None or tz == "":
        trigger.pop("timezone", None)
        return
    if not isinstance(tz, str) or tz not in known_zones():
        raise _Bad(f"'timezone' must be a known IANA time zone, not {tz!r}")


def _schedule(trigger: dict[str, Any]) -> None:
    for key, (low, high, wording) in SCHEDULE_ARRAYS.items():
        if trigger.get(key) is not None:
            _int_array(trigger, key, low, high, wording)
    _timezone(trigger)


def _interval(trigger: dict[str, Any]) -> None:
    _req_int(trigger, "start", 0)
    _req_int(trigger, "duration", 1)


def _single(trigger: dict[str, Any]) -> None:
    trigger["epoch"] = _floor_minute(_req_int(trigger, "epoch", 0))


def _window(trigger: dict[str, Any], *, required: bool) -> None:
    bounds: list[int] = []
    for key in ("start", "end"):
        value = _opt_int(trigger, key, 0)
        if not value:
            if required:
                raise _Bad(f"'{key}' is required")
            trigger.pop(key, None)  # 0 means "open" in xyOps
            continue
        bounds.append(value)
        trigger[key] = _floor_minute(value)
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise _Bad("'start' must not be after 'end'")


def _nth(trigger: dict[str, Any]) -> None:
    _req_int(trigger, "every", 2)


def _delay(trigger: dict[str, Any]) -> None:
    _req_int(trigger, "duration", 1)


def _precision(trigger: dict[str, Any]) -> None:
    if trigger.get("seconds") is None:
        raise _Bad("'seconds' is required")
    _int_array(trigger, "seconds", 0, 59, "0-59")


def _quiet(trigger: dict[str, Any]) -> None:
    for key in ("invisible", "ephemeral"):
        if key in trigger and not isinstance(trigger[key], bool):
            raise _Bad(f"'{key}' must be a boolean")
    if not (trigger.get("invisible") or trigger.get("ephemeral")):
        raise _Bad("at least one of 'invisible' and 'ephemeral' must be true")


def _plugin(trigger: dict[str, Any]) -> None:
    plugin_id = trigger.get("plugin_id")
    if not isinstance(plugin_id, str) or not plugin_id:
        raise _Bad("'plugin_id' must be a non-empty string")
    _timezone(trigger)


def _keyboard(trigger: dict[str, Any]) -> None:
    keys = trigger.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise _Bad("'keys' must be a non-empty array of shortcut strings")


def _magic(trigger: dict[str, Any]) -> None:
    for key in ("key", "token", "body"):
        if key in trigger and not isinstance(trigger[key], str):
            raise _Bad(f"'{key}' must be a string")


def _nothing(trigger: dict[str, Any]) -> None:
    """manual, startup and catchup take no options."""


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "schedule": _schedule,
    "interval": _interval,
    "single": _single,
    "range": lambda t: _window(t, required=False),
    "blackout": lambda t: _window(t, required=True),
    "nth": _nth,
    "delay": _delay,
    "precision": _precision,
    "quiet": _quiet,
    "plugin": _plugin,
    "keyboard": _keyboard,
    "magic": _magic,
    "manual": _nothing,
    "startup": _nothing,
    "catchup": _nothing,
}
TYPES = frozenset(CHECKS)


def _enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if value in ("true", "false"):
        return str(value) == "true"
    raise _Bad("'enabled' must be a boolean")


def _common(trigger: dict[str, Any], workflow: bool) -> None:
    """Fields any trigger may carry."""
    if "enabled" not in trigger:
        raise _Bad("'enabled' is required")
    trigger["enabled"] = _enabled(trigger["enabled"])
    if "params" in trigger and not isinstance(trigger["params"], dict):
        raise _Bad("'params' must be an object")
    if "data" in trigger and not isinstance(trigger["data"], dict | list):
        raise _Bad("'data' must be an object or an array")
    tags = trigger.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
        raise _Bad("'tags' must be an array of strings")
    trigger_id = trigger.get("id")
    if (trigger_id is not None or workflow) and not (isinstance(trigger_id, str) and trigger_id):
        raise _Bad("'id' must be a non-empty string")


def _check_one(index: int, raw: Any, workflow: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TriggerError(f"triggers[{index}]: must be an object")
    kind = raw.get("type")
    if kind is None:
        raise TriggerError(f"triggers[{index}]: 'type' is required")
    if not isinstance(kind, str) or kind not in TYPES:
        raise TriggerError(f"triggers[{index}]: unknown type {kind!r}")
    trigger = copy.deepcopy(raw)
    try:
        _common(trigger, workflow)
        CHECKS[kind](trigger)
    except _Bad as err:
        raise TriggerError(f"triggers[{index}] ({kind}): {err}") from None
    return trigger


def _check_composition(triggers: list[dict[str, Any]], workflow: bool) -> None:
    first: dict[str, int] = {}  # type -> position of its first enabled trigger
    ids: dict[str, int] = {}
    for index, trigger in enumerate(triggers):
        kind = trigger["type"]
        trigger_id = trigger.get("id")
        if workflow and trigger_id in ids:
            raise TriggerError(f"triggers[{index}] ({kind}): 'id' {trigger_id!r} repeats triggers[{ids[trigger_id]}]")
        if isinstance(trigger_id, str):
            ids.setdefault(trigger_id, index)
        if not trigger["enabled"]:
            continue
        if kind in UNIQUE and kind in first:
            raise TriggerError(f"triggers[{index}] ({kind}): only one enabled {kind} trigger is allowed")
        for a, b in EXCLUSIVE:
            other = b if kind == a else a if kind == b else None
            if other is not None and other in first:
                raise TriggerError(
                    f"triggers[{index}] ({kind}): cannot be combined with the enabled {other} trigger"
                    f" at triggers[{first[other]}]"
                )
        first.setdefault(kind, index)


def validate_triggers(triggers: Any, *, workflow: bool = False) -> list[dict[str, Any]]:
    """Check an event's `triggers` array; return a normalised deep copy or raise TriggerError."""
    if not isinstance(triggers, list):
        raise TriggerError("triggers: must be an array")
    out = [_check_one(index, raw, workflow) for index, raw in enumerate(triggers)]
    _check_composition(out, workflow)
    return out
