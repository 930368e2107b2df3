"""Time-sortable object ids in the xyOps form: prefix + base36(ms) + base36(counter), padded to 16."""

from __future__ import annotations

import itertools
import re
import secrets
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count()
ID_LENGTH = 16
CLIENT_ID = re.compile(r"^[a-z0-9_]+$")


def base36(value: int) -> str:
    if value == 0:
        return "0"
    out = []
    while value:
        value, rem = divmod(value, 36)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def generate_id(prefix: str, now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    core = prefix + base36(ms) + base36(next(_counter) % 1296)
    pad = ID_LENGTH - len(core)
    return core + "".join(secrets.choice(_ALPHABET) for _ in range(max(pad, 0)))


def id_time_ms(obj_id: str, prefix: str) -> int | None:
    """The creation time encoded in a generated id (8 base36 digits of ms after the prefix), if any."""
    digits = obj_id[len(prefix) : len(prefix) + 8]
    try:
        return int(digits, 36)
    except ValueError:
        return None
