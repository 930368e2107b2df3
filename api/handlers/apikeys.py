"""API keys (digest 3.13, admin only). Only sha256(plain + id) is stored, and shown in `key` as xyOps does;
the plain key is shown once, in the create reply."""

from __future__ import annotations

import secrets
from typing import Any

from storage.families import API_KEYS

from ..auth import key_hash
from ..call import Call
from ..definitions import FamilySpec, Field, register_family


def mask(plain: str) -> str:
    return plain[:4] + "*" * 8 + plain[-4:]


async def _generate(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    # xyOps ignores any client-supplied key and generates one (the docs say otherwise; the code wins).
    plain = secrets.token_urlsafe(32)
    record["key"] = key_hash(plain, str(record["id"]))
    record["mask"] = mask(plain)
    return {"plain_key": plain}


API_KEY_SPEC = FamilySpec(
    family=API_KEYS,
    singular="api_key",
    plural="api_keys",
    prefix="k",
    read="admin",
    activity="apikey",
    client_ids=False,
    fields=(
        Field("title", "title", required=True),
        Field("description", "text", default=""),
        Field("active", "flag01", default=1),
        Field("expires", "int", default=0),
        Field("privileges", "privileges", default={}),
        Field("roles", "strings", default=[]),
        Field("max_per_sec", "int", default=0),
    ),
    before_create=_generate,
)

api_keys = register_family(API_KEY_SPEC)
