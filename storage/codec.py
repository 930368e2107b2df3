"""msgpack codec for every value Podium stores."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def pack_for_lua(value: Any) -> bytes:
    """msgpack for Lua's cmsgpack, which cannot decode the bin type: bytes go out as raw strings."""
    return msgpack.packb(value, use_bin_type=False)  # type: ignore[no-any-return]


def unpack(data: bytes | None) -> Any:
    if data is None:
        return None
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
