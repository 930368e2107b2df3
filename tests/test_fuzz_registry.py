"""Registry-driven hostile values: every declared parameter of every production handler, one at a time.

Each request carries valid values for the other required parameters, so the hostile one travels as deep as
it can. No reply may be a crash (`internal`) or show a traceback, the node must stay primary at the same
epoch, and a create that was refused must leave nothing behind.
"""

from __future__ import annotations

import json
from typing import Any

from api.definitions import FAMILY_SPECS
from api.params import Param
from api.registry import HANDLERS, Handler
from tests.authkit import Site


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": [value]}
    return value


HOSTILE: list[Any] = [
    None, True, False, 0, -1, 2**63, 2**64 - 1, -(2**63), 1e308, -1e308, 1.5, "", "x" * 100_000, "\x00",
    "\ud800", "\u202eevil", "\U0001f389" * 500, "../../../etc/passwd", "<script>alert(1)</script>",
    "' OR '1'='1", "${jndi:x}", "__proto__", [], {}, _nested(200), list(range(5000)), {"$ne": 1}, "(" * 3000,
    ["\ud800"], {"\ud800": 1},
]  # fmt: skip
# test_web_hook sends real requests to the URL it is given; only loopback traffic is allowed from tests.
SKIP = frozenset({"test_web_hook"})
LEAKS = ("Traceback", 'File "/', "$2b$")


def valid(param: Param) -> Any:
    """A value the declaration accepts, for the required parameters around the hostile one."""
    return {"text": "fz", "int": 1, "number": 1, "bool": False, "strings": ["fz"], "object": {}, "array": [],
            "any": "fz"}[param.kind] if not param.choices else param.choices[0]  # fmt: skip


def family_of(handler: Handler) -> Any:
    if not handler.name.startswith("create_"):
        return None
    singular = handler.name[len("create_") :]
    return next((s.family for s in FAMILY_SPECS.values() if s.singular == singular), None)


async def test_no_hostile_value_crashes_a_handler(site: Site, admin: dict[str, str]) -> None:
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"admin": True})
    key = {"X-API-Key": plain}
    epoch = site.node.epoch
    sent, serial = 0, 0
    for handler in HANDLERS:
        if handler.name in SKIP:
            continue
        assert handler.args is not None
        params = list(handler.args.params) or [Param("x", "any")]
        base = {p.name: valid(p) for p in params if p.required}
        headers = admin if handler.privilege == "session" else key
        family = family_of(handler)
        for param in params:
            for value in HOSTILE:
                serial += 1
                body = {**base, param.name: value}
                if family is not None and param.name != "id":
                    body["id"] = f"fz{serial}"
                status, text = await _post(site, handler, body, headers)
                sent += 1
                where = (handler.ns, handler.name, param.name, repr(value)[:60])
                for leak in LEAKS:
                    assert leak not in text, (where, text[:300])
                try:
                    reply = json.loads(text)
                except ValueError:
                    raise AssertionError((where, status, text[:300])) from None
                # Other error codes answer 500 by the seed's table; a crash or a store failure must not happen.
                assert reply["code"] not in ("internal", "db"), (where, status, reply)
                if family is not None and reply["code"] != 0 and "id" in body:
                    assert await site.node.stores.defs.get(family, str(body["id"])) is None, where
    assert site.node.is_primary and site.node.epoch == epoch
    assert sent > 5000


async def _post(site: Site, handler: Handler, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
    resp = await site.client.post(f"/api/{handler.ns}/{handler.name}/v1", data=json.dumps(body),
                                  headers={**headers, "Content-Type": "application/json"})  # fmt: skip
    return resp.status, await resp.text()
