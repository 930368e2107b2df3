"""The msgpack codec: what goes in comes back, with str and bytes kept apart."""

from __future__ import annotations

import math
from typing import Any

import pytest

from storage import codec

ROUND_TRIPS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**31,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.0,
    -0.5,
    0.1,
    1 / 3,
    1e300,
    -1e-300,
    math.inf,
    -math.inf,
    "",
    "plain",
    "ünïcödé ✓ 日本語 🚀",
    "x" * 70_000,
    b"",
    b"\x00\x01\xff\xfe",
    bytes(range(256)),
    b"y" * 70_000,
    [],
    {},
    [1, "two", 3.0, None, b"four", [5, [6, [7]]]],
    {"a": 1, "b": [1, 2, {"c": None}], "d": {"e": {"f": {"g": b"\x00"}}}},
    {1: "int key", 2: {3: [4]}},
    {"ключ": "значение", "🔑": ["✓"]},
    {
        "id": "job1",
        "state": "active",
        "progress": 0.25,
        "params": {"script": "echo hi", "env": {"A": "1"}},
        "tags": ["a", "b"],
        "started": 1712345678.123456,
        "pid": None,
        "blob": b"\x89PNG\r\n",
    },
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_round_trip(value: Any) -> None:
    packed = codec.pack(value)
    assert isinstance(packed, bytes)
    back = codec.unpack(packed)
    assert back == value
    assert type(back) is type(value)


def test_nan_round_trips() -> None:
    back = codec.unpack(codec.pack(math.nan))
    assert isinstance(back, float)
    assert math.isnan(back)


def test_bytes_and_str_stay_apart() -> None:
    back = codec.unpack(codec.pack({"s": "abc", "b": b"abc"}))
    assert back == {"s": "abc", "b": b"abc"}
    assert isinstance(back["s"], str)
    assert isinstance(back["b"], bytes)


def test_nested_types_are_preserved() -> None:
    value = {"outer": [{"inner": [1, 2.5, "x", b"y", None, True]}]}
    back = codec.unpack(codec.pack(value))
    inner = back["outer"][0]["inner"]
    assert [type(v) for v in inner] == [int, float, str, bytes, type(None), bool]
    assert back == value


def test_float_precision_is_exact() -> None:
    for value in (0.1 + 0.2, 1 / 3, 2.0**-1074, 1.7976931348623157e308):
        assert codec.unpack(codec.pack(value)) == value


def test_tuples_come_back_as_lists() -> None:
    assert codec.unpack(codec.pack((1, (2, 3)))) == [1, [2, 3]]


def test_unpack_none_is_none() -> None:
    assert codec.unpack(None) is None


def test_none_and_empty_values_are_distinct() -> None:
    values: list[Any] = [None, "", b"", [], {}, 0, False]
    packed = {codec.pack(v) for v in values}
    assert len(packed) == 7


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(TypeError):
        codec.pack(object())
    with pytest.raises(TypeError):
        codec.pack({1, 2})


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.unpack(b"\xc1")  # never used in msgpack
    with pytest.raises(ValueError):
        codec.unpack(codec.pack([1, 2]) + b"\x01")  # trailing data
