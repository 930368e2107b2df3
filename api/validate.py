"""Parameter checks shared by every handler; each error names the field (code `api`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ApiError, bad_param

RESERVED_WORDS = frozenset(
    {"__proto__", "constructor", "prototype", "hasOwnProperty", "toString", "valueOf", "__defineGetter__",
     "__defineSetter__", "__lookupGetter__", "__lookupSetter__", "isPrototypeOf", "propertyIsEnumerable",
     "toLocaleString"}
)  # fmt: skip


def text(params: Mapping[str, Any], name: str, *, pattern: str | None = None, required: bool = True) -> str:
    """A string parameter (numbers accepted and converted); '' when optional and absent."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError("api", f"Missing parameter: {name}")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad_param(name, "must be a string")
    out = str(value)
    if pattern is not None and not re.fullmatch(pattern, out):
        raise bad_param(name, "has an invalid format")
    return out


def integer(params: Mapping[str, Any], name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer parameter (strings from the query are parsed, as xyOps' parseInt does)."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_param(name, "must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise bad_param(name, "must be an integer") from None
    if minimum is not None and out < minimum:
        raise bad_param(name, f"must be at least {minimum}")
    if not -(2**53) <= out <= 2**53:  # 1e308 is an integer to Python; the store and JavaScript clients disagree
        raise bad_param(name, "is out of range")
    return out


def boolean(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if value in (1, "1", "true"):
        return True
    if value in (0, "0", "false"):
        return False
    raise bad_param(name, "must be true or false")


def string_list(params: Mapping[str, Any], name: str) -> list[str] | None:
    """An array of strings (a CSV string is accepted); None when absent."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_param(name, "must be an array of strings")
    return list(value)


MAX_PRIVILEGES = 256
_PRIVILEGE_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")


def privilege_map(params: Mapping[str, Any], name: str, known: frozenset[str]) -> dict[str, bool] | None:
    """`{privilege: true}`, falsy values dropped (never stored). Ids outside `known` are kept when well-formed,
    as xyOps stores any (its own tests use `view_jobs`); they grant nothing."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_param(name, "must be an object of privilege names")
    if len(value) > MAX_PRIVILEGES:
        raise bad_param(name, f"has more than {MAX_PRIVILEGES} privileges")
    out = {}
    for key, flag in value.items():
        if key not in known and not _PRIVILEGE_ID.fullmatch(key):
            raise bad_param(name, f"contains an invalid privilege id '{key[:64]}' (lower-case letters, digits, _)")
        if flag:
            out[key] = True
    return out


def no_reserved_keys(params: Mapping[str, Any]) -> None:
    for key in params:
        if key in RESERVED_WORDS:
            raise ApiError("api", f"Parameter name is reserved: {key}")


def title(params: Mapping[str, Any], name: str = "title", *, required: bool = True) -> str:
    out = text(params, name, required=required)
    if "<" in out or ">" in out:
        raise bad_param(name, "must not contain < or >")
    return out
