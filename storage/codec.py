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


def as_bytes(value: Any) -> bytes:
    """A Redis reply as bytes (the client answers bytes; its annotations say bytes or str)."""
    return value if isinstance(value, bytes) else str(value).encode()


def unpack_record(raw: Any) -> dict[str, Any] | None:
    """A stored record from its Redis reply: None when the key is missing or holds no mapping."""
    if raw is None:
        return None
    found = unpack(as_bytes(raw))
    return dict(found) if isinstance(found, dict) else None
