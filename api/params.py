"""Declared handler parameters: one declaration per parameter, next to the handler's registration.

A handler lists its parameters (`text`, `integer`, `flag`, `strings`, `obj`, ...); the registry compiles them
once into a pydantic-core validator that the transport runs before the handler, and the OpenAPI document is
generated from the same declarations. Every string has a maximum length, every number bounds that fit the
store (64-bit integers, finite floats), every list a maximum length and every free-form value a maximum
encoded size, so nothing unbounded reaches a handler or the store.

Absent, `null` and (except for optional text) `""` all mean "not given", as xyOps' parameter handling treats
them.
Undeclared keys pass through unchanged unless the handler is declared `closed` (then they are refused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema, SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

from .errors import ApiError

# Integers must survive msgpack and JavaScript clients: JSON numbers beyond 2^53 lose precision in xyOps' UI.
INT_MIN = -(2**53)
INT_MAX = 2**53
MAX_PAGE = 1000  # the largest `limit` of any list or search call
MAX_OFFSET = 10_000_000
ID_LEN = 128  # ids, usernames, names
TITLE_LEN = 256
TEXT_LEN = 8192  # notes, descriptions, commands
QUERY_LEN = 4096  # search queries
OBJECT_BYTES = 256 * 1024  # default encoded size of a free-form value (params, actions, triggers, ...)

Kind = str  # text | int | number | bool | strings | object | array | any


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter. Build them with the helpers below, not directly."""

    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    max_len: int | None = None  # characters (text), items (strings)
    item_len: int = ID_LEN  # characters per item (strings)
    ge: float | None = None
    le: float | None = None
    pattern: str | None = None
    max_bytes: int = OBJECT_BYTES  # encoded JSON size (object, array, any)
    choices: tuple[str, ...] = ()
    strict: bool = False  # text: refuse numbers rather than turn them into text
    doc: str = ""

    def with_(self, **changes: Any) -> Param:
        return dataclasses.replace(self, **changes)


def text(name: str, *, required: bool = False, max_len: int = TITLE_LEN, pattern: str | None = None,
         default: str | None = None, choices: Iterable[str] = (), doc: str = "") -> Param:  # fmt: skip
    """A string; numbers are accepted and turned into their text (query strings and xyOps clients send both).
    `pattern` must match the whole value."""
    anchored = f"^(?:{pattern})$" if pattern is not None else None
    return Param(name, "text", required, default, max_len=max_len, pattern=anchored, choices=tuple(choices), doc=doc)


def ident(name: str = "id", *, required: bool = True, doc: str = "") -> Param:
    """An object id, username or similar name: a string (a JSON number is refused, not turned into an id)."""
    return dataclasses.replace(text(name, required=required, max_len=ID_LEN, doc=doc), strict=True)


def integer(name: str, default: int | None = None, *, ge: int | None = INT_MIN, le: int | None = INT_MAX,
            required: bool = False, doc: str = "") -> Param:  # fmt: skip
    """An integer (numeric strings from the query are parsed; `1.0` is 1; `1.5` is refused)."""
    return Param(name, "int", required, default, ge=ge, le=le, doc=doc)


def number(name: str, default: float | None = None, *, ge: float | None = None, le: float | None = None,
           required: bool = False, doc: str = "") -> Param:  # fmt: skip
    """A finite number (integer or float)."""
    return Param(name, "number", required, default, ge=ge, le=le, doc=doc)


def flag(name: str, default: bool | None = None, *, required: bool = False, doc: str = "") -> Param:
    """A boolean: true/false, 1/0, "true"/"false", "1"/"0" (and yes/no, on/off)."""
    return Param(name, "bool", required, default, doc=doc)


def strings(name: str, *, required: bool = False, max_items: int = 100, item_len: int = ID_LEN,
            default: list[str] | None = None, doc: str = "") -> Param:  # fmt: skip
    """An array of strings; a comma-separated string is accepted too (query strings, xyOps' CSV form)."""
    return Param(name, "strings", required, default, max_len=max_items, item_len=item_len, doc=doc)


def obj(name: str, *, required: bool = False, max_bytes: int = OBJECT_BYTES, default: Any = None,
        doc: str = "") -> Param:  # fmt: skip
    """A JSON object of bounded encoded size."""
    return Param(name, "object", required, default, max_bytes=max_bytes, doc=doc)


def array(name: str, *, required: bool = False, max_bytes: int = OBJECT_BYTES, default: Any = None,
          doc: str = "") -> Param:  # fmt: skip
    """A JSON array of bounded encoded size."""
    return Param(name, "array", required, default, max_bytes=max_bytes, doc=doc)


def anything(name: str, *, required: bool = False, max_bytes: int = OBJECT_BYTES, default: Any = None,
             doc: str = "") -> Param:  # fmt: skip
    """Any JSON value of bounded encoded size (checked further by the handler)."""
    return Param(name, "any", required, default, max_bytes=max_bytes, doc=doc)


def page(limit: int = 50) -> tuple[Param, Param]:
    """`offset` and `limit` of a list or search call; `limit` is capped at MAX_PAGE."""
    return (integer("offset", 0, ge=0, le=MAX_OFFSET, doc="rows to skip"),
            integer("limit", limit, ge=0, le=MAX_PAGE, doc=f"rows to return (at most {MAX_PAGE})"))  # fmt: skip


# -- compiling ------------------------------------------------------------------------------------------------


def encoded_size(value: Any) -> int:
    """The JSON size of a value; ValueError if it cannot be stored (lone surrogates, integers beyond 64 bits,
    nesting deeper than the encoder allows)."""
    try:
        return len(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ValueError(f"cannot be stored ({exc})") from None


def _bounded(max_bytes: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if encoded_size(value) > max_bytes:
            raise ValueError(f"is larger than {max_bytes} bytes")
        return value

    return check


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _text_schema(p: Param) -> CoreSchema:
    if p.choices:
        return cs.literal_schema(list(p.choices))
    # Lone surrogates never get this far: the transport refuses them in query strings and form fields, and
    # orjson in JSON bodies.
    return cs.str_schema(max_length=p.max_len, pattern=p.pattern, strict=p.strict or None)


def field_schema(p: Param) -> CoreSchema:
    """The pydantic-core schema of one parameter's value."""
    schema: CoreSchema
    if p.kind == "text":
        schema = _text_schema(p)
    elif p.kind == "int":
        schema = cs.no_info_before_validator_function(_no_bool, cs.int_schema(ge=_int_or_none(p.ge),
                                                                              le=_int_or_none(p.le)))  # fmt: skip
    elif p.kind == "number":
        schema = cs.no_info_before_validator_function(_no_bool, cs.float_schema(ge=p.ge, le=p.le, allow_inf_nan=False))
    elif p.kind == "bool":
        schema = cs.bool_schema()
    elif p.kind == "strings":
        item = cs.str_schema(max_length=p.item_len)
        schema = cs.no_info_before_validator_function(_split_csv, cs.list_schema(item, max_length=p.max_len))
    elif p.kind == "object":
        mapping = cs.dict_schema(cs.str_schema(), cs.any_schema())
        schema = cs.no_info_after_validator_function(_bounded(p.max_bytes), mapping)
    elif p.kind == "array":
        schema = cs.no_info_after_validator_function(_bounded(p.max_bytes), cs.list_schema(cs.any_schema()))
    elif p.kind == "any":
        schema = cs.no_info_after_validator_function(_bounded(p.max_bytes), cs.any_schema())
    else:
        raise ValueError(f"unknown parameter kind {p.kind!r}")
    return schema


def _no_bool(value: Any) -> Any:
    """JSON true is not the number 1 (pydantic's lax mode would take it)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


_NOT_GIVEN_TEXT = (None,)
_NOT_GIVEN = (None, "")


@dataclass(slots=True)
class Validator:
    """The compiled declarations of one handler."""

    params: tuple[Param, ...]
    closed: bool = False  # refuse undeclared keys
    schema: CoreSchema = field(init=False)
    _validator: SchemaValidator = field(init=False)
    _defaults: dict[str, Any] = field(init=False)
    _names: frozenset[str] = field(init=False)
    _blank: tuple[tuple[str, tuple[Any, ...]], ...] = field(init=False)
    _nothing_needed: bool = field(init=False)  # no parameter is required, so no params validate to the defaults

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter declared twice in {names}")
        fields = {p.name: cs.typed_dict_field(field_schema(p), required=p.required) for p in self.params}
        self.schema = cs.typed_dict_schema(
            fields,
            extra_behavior="forbid" if self.closed else "allow",
            config=cs.CoreConfig(coerce_numbers_to_str=True, allow_inf_nan=False),
        )
        self._validator = SchemaValidator(self.schema)
        self._defaults = {p.name: p.default for p in self.params if p.default is not None}
        self._nothing_needed = not any(p.required for p in self.params)
        self._names = frozenset(names)
        # An optional text may be "" (clearing a field); a required one may not (xyOps' "Missing parameter").
        self._blank = tuple((p.name, _NOT_GIVEN_TEXT if p.kind == "text" and not p.required else _NOT_GIVEN)
                            for p in self.params)  # fmt: skip

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated params (declared defaults filled in); ApiError `api` naming the first bad field."""
        if not params and self._nothing_needed:  # most reads (ping, get_events): nothing to validate
            return self._filled({})
        data = dict(params)
        for name, blank in self._blank:
            if name in data and data[name] in blank:
                del data[name]
        try:
            out: dict[str, Any] = self._validator.validate_python(data)
        except ValidationError as exc:
            raise _api_error(exc) from None
        _check_extras(out, self._names)
        return self._filled(out)

    def _filled(self, out: dict[str, Any]) -> dict[str, Any]:
        for name, default in self._defaults.items():
            if name not in out:
                out[name] = default if not isinstance(default, list | dict) else type(default)(default)
        return out

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = _GENERATOR().generate(self.schema)
        by_name = {p.name: p for p in self.params}
        for name, prop in out.get("properties", {}).items():
            prop.pop("title", None)
            p = by_name[name]
            if p.doc:
                prop["description"] = p.doc
            if p.default is not None:
                prop["default"] = p.default
            if p.kind in ("object", "array", "any"):
                prop["x-max-bytes"] = p.max_bytes
            if p.kind == "strings":  # a comma-separated string is accepted too
                prop["anyOf"] = [{"type": "array", "items": prop.pop("items"), "maxItems": prop.pop("maxItems")},
                                 {"type": "string"}]  # fmt: skip
                prop.pop("type", None)
        return out


class _Generator(GenerateJsonSchema):
    """JSON Schema of the declarations: a validator function is described by the schema it wraps."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
        return {}


def _GENERATOR() -> _Generator:
    return _Generator()


def _check_extras(params: Mapping[str, Any], declared: frozenset[str]) -> None:
    """Undeclared values (filters, overrides, state paths) are bounded too: name length, and the encoded size
    of all of them together (they may end up stored, e.g. as a job's overrides)."""
    total = 0
    for key, value in params.items():
        if key in declared:
            continue
        if len(key) > ID_LEN:
            raise ApiError("api", f"Parameter name is too long: {key[:32]}...")
        if isinstance(value, str):
            total += (len(value) if value.isascii() else len(value.encode(errors="replace"))) + len(key)
        elif isinstance(value, int | float | bool) or value is None:
            total += 8 + len(key)
        else:
            try:
                total += encoded_size(value) + len(key)
            except ValueError as exc:
                raise ApiError("api", f"Parameter '{key}' {exc}.") from None
        if total > OBJECT_BYTES:
            raise ApiError("api", f"Undeclared parameters (from '{key}') are larger than {OBJECT_BYTES} bytes in all.")


# pydantic error type -> how the rest of the API words the same problem (never quoting the value).
_WORDING = {
    "string_type": "must be a string", "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer", "int_parsing_size": "must be an integer within range",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false", "list_type": "must be an array",
    "dict_type": "must be an object", "literal_error": "must be one of: {expected}",
    "string_too_long": "must be at most {max_length} characters", "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "has an invalid format", "less_than_equal": "must be at most {le}",
    "greater_than_equal": "must be at least {ge}",
}  # fmt: skip


def _api_error(exc: ValidationError) -> ApiError:
    err = exc.errors(include_url=False, include_context=True, include_input=False)[0]
    parts = [str(p)[:64] if not isinstance(p, int) else f"[{p}]" for p in err["loc"]]  # names may be hostile
    loc = "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(parts)) or "body"
    if err["type"] == "missing":
        return ApiError("api", f"Missing parameter: {loc}")
    if err["type"] == "extra_forbidden":
        return ApiError("api", f"Parameter '{loc}' is not accepted by this call.")
    msg = str(err["msg"]).rstrip(".")
    if msg.startswith("Value error, "):  # our own checks read as a sentence about the field
        return ApiError("api", f"Parameter '{loc}' {msg[len('Value error, '):]}.")
    wording = _WORDING.get(err["type"])
    if wording is not None:
        try:
            return ApiError("api", f"Parameter '{loc}' {wording.format(**err.get('ctx', {}))}.")
        except (KeyError, IndexError):
            pass
    return ApiError("api", f"Parameter '{loc}' is invalid: {msg}.")
