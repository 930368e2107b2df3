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
# Replies that are not JSON by contract when they succeed or refuse a token: a job log (text or gzip), its refusal
# as text (as xyOps), the job's event stream.
NOT_JSON = frozenset({"view_job_log", "download_job_log", "get_job_log", "stream_job", "bulk_search_export"})


def valid(param: Param) -> Any:
    """A value the declaration accepts, for the required parameters around the hostile one."""
    return {"text": "fz", "int": 1, "number": 1, "bool": False, "strings": ["fz"], "object": {}, "array": [],
            "any": "fz"}[param.kind] if not param.choices else param.choices[0]  # fmt: skip


def family_of(handler: Handler) -> Any:
    if not handler.name.startswith("create_"):
        return None
    singular = handler.name[len("create_") :]
    return next((s.family for s in FAMILY_SPECS.values() if s.singular == singular), None)


async def real_ids(site: Site, key: dict[str, str]) -> dict[str, str]:
    """Handler name suffix -> the id of a real object, so hostile values reach the update and run logic."""
    _, lists = await site.call("get_multiple", {"lists": "all"}, headers=key)
    ids = {spec.singular: str(lists[plural][0]["id"]) for plural, spec in FAMILY_SPECS.items()
           if lists.get(plural)}  # fmt: skip
    event = {"id": "fzev", "title": "Fuzz", "enabled": True, "category": "general", "plugin": "testplug",
             "targets": ["main"], "params": {"duration": 1}, "fields": [{"id": "f1", "type": "text", "title": "F",
             "regex": "^[a-z]*$"}], "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
    status, data = await site.call("create_event", event, headers=key)
    assert status == 200, data
    ids["event"] = "fzev"
    status, data = await site.call("create_api_key", {"title": "fuzzed"}, headers=key)  # not the key in use
    ids["api_key"] = str(data["api_key"]["id"])
    status, data = await site.call("run_event", {"id": "fzev"}, headers=key)
    assert status == 200, data
    ids["job"] = str(data["id"])
    return ids


def base_body(handler: Handler, params: list[Param], ids: dict[str, str]) -> dict[str, Any]:
    body = {p.name: valid(p) for p in params if p.required}
    target = handler.name.split("_", 1)[-1]
    if "id" in body and not handler.name.startswith("delete_"):  # deletes keep a placeholder: objects stay
        body["id"] = ids.get(target) or ids.get(target.removeprefix("event_")) or body["id"]
    if handler.name in ("run_event", "get_event_history", "flush_event_queue"):  # `id` is optional for runs
        body["id"] = ids["event"]
    return body


async def readback(site: Site, key: dict[str, str]) -> int:
    """Every list, object and job must still read after the fuzzing: a stored value must not poison reads."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_multiple", {"lists": "all"}), ("search_jobs", {"query": "*", "limit": 1000}),
        ("search_activity", {"query": "*", "limit": 1000}), ("get_active_jobs", {}),
    ]  # fmt: skip
    for plural, spec in FAMILY_SPECS.items():
        _, data = await site.call(f"get_{plural}", headers=key)
        assert data["code"] != "internal", (plural, data)
        calls += [(f"get_{spec.singular}", {"id": row["id"]}) for row in data.get("rows", [])]
    _, jobs = await site.call("search_jobs", {"query": "*", "limit": 1000, "select": ["id"]}, headers=key)
    assert jobs["code"] == 0, jobs  # the fuzzing never disabled the caller's own key
    calls += [("get_job", {"id": row["id"]}) for row in jobs["rows"]]
    for api, body in calls:
        _, data = await site.call(api, body, headers=key)
        assert data["code"] not in ("internal", "db"), (api, body, data)
    return len(calls)


async def test_no_hostile_value_crashes_a_handler(site: Site, admin: dict[str, str]) -> None:
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"admin": True})
    key = {"X-API-Key": plain}
    ids = await real_ids(site, key)
    epoch = site.node.epoch
    sent, serial = 0, 0
    for handler in HANDLERS:
        if handler.name in SKIP:
            continue
        assert handler.args is not None
        params = [*handler.args.params, Param("zz_undeclared", "any")]
        base = base_body(handler, list(handler.args.params), ids)
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
                if handler.name in NOT_JSON and status in (200, 204, 403, 404) and not text.startswith("{"):
                    continue
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
    read = await readback(site, key)
    assert read > 20
    print(f"registry fuzz: {sent} hostile requests, {read} read back")


async def _post(site: Site, handler: Handler, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
    resp = await site.client.post(f"/api/{handler.ns}/{handler.name}/v1", data=json.dumps(body),
                                  headers={**headers, "Content-Type": "application/json"})  # fmt: skip
    return resp.status, (await resp.read()).decode(errors="replace")  # a download may be gzip
