"""Behaviour an xyOps client expects: privilege ids and titles, refusals in xyOps' words, reserved
`_xy_override_` params, workflow ids, and administrators without resource limits."""

from __future__ import annotations

from typing import Any

import pytest

from api.principal import PRIVILEGE_TITLES
from tests.authkit import Site, ok

Headers = dict[str, str]
SCRIPT = "#!/bin/sh\n"


def event_body(**changes: Any) -> dict[str, Any]:
    body = {"title": "Nightly", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
            "algo": "random", "params": {"script": SCRIPT},
            "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
    body.update(changes)
    return body


async def make_user(site: Site, admin: Headers, name: str, **fields: Any) -> Headers:
    body = {"username": name, "email": f"{name}@example.com", "full_name": name, "password": f"pw-{name}", **fields}
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login(name, f"pw-{name}")
    return {"X-Session-ID": sid}


def refused(status: int, data: dict[str, Any], http: int, code: str, description: str) -> None:
    assert (status, data.get("code")) == (http, code), (status, data)
    assert description in data["description"], (description, data["description"])


# -- privileges ---------------------------------------------------------------------------------------------------


def test_the_privilege_list_is_xyops_list() -> None:
    assert len(PRIVILEGE_TITLES) == 47
    assert (PRIVILEGE_TITLES["admin"], PRIVILEGE_TITLES["delete_tags"], PRIVILEGE_TITLES["tag_jobs"]) == (
        "Administrator", "Delete Tags", "Job Tags")  # fmt: skip
    families = ("alerts", "buckets", "categories", "channels", "events", "groups", "monitors", "plugins", "roles",
                "tags", "tickets", "web_hooks")  # fmt: skip
    for family in families:
        assert {f"create_{family}", f"edit_{family}", f"delete_{family}"} <= set(PRIVILEGE_TITLES)


async def test_privilege_ids_outside_the_list_are_kept_as_xyops_does(site: Site, admin: Headers) -> None:
    # xyOps' own test suite creates a role with `view_jobs` and reads it back.
    role = {"title": "Unit Test Role", "categories": ["general"], "groups": ["main"], "privileges": {"view_jobs": True}}
    made = (await ok(site, "create_role", role, admin))["role"]
    got = (await ok(site, "get_role", {"id": made["id"]}, admin))["role"]
    assert got["privileges"] == {"view_jobs": True}
    every = dict.fromkeys(PRIVILEGE_TITLES, True)
    whole = (await ok(site, "create_role", {"title": "Everything", "privileges": every}, admin))["role"]
    assert (await ok(site, "get_role", {"id": whole["id"]}, admin))["role"]["privileges"] == every
    plain, key = await site.admin_key(admin["X-Session-ID"], privileges={"view_jobs": True, "run_jobs": True})
    assert (await ok(site, "get_api_key", {"id": key["id"]}, admin))["api_key"]["privileges"] == {
        "view_jobs": True, "run_jobs": True}  # fmt: skip
    # An unknown id grants nothing.
    status, data = await site.call("create_tag", {"title": "T"}, headers={"X-API-Key": plain})
    refused(status, data, 403, "access", '"Create Tags"')
    for bad in ("View-Jobs", "__proto__", "x" * 65, ""):
        status, data = await site.call("create_role", {"title": "Bad", "privileges": {bad: True}}, headers=admin)
        refused(status, data, 400, "api", "Parameter 'privileges' contains an invalid privilege id")


async def test_access_errors_name_the_privilege_by_its_title(site: Site, admin: Headers) -> None:
    nobody = await make_user(site, admin, "nobody")
    status, data = await site.call("delete_tag", {"id": "flag"}, headers=nobody)
    user_says = 'You do not have the "Delete Tags" privilege required to perform this action.'
    assert (status, data) == (403, {"code": "access", "description": user_says})
    plain, _ = await site.admin_key(admin["X-Session-ID"], title="Deploy bot")
    status, data = await site.call("delete_tag", {"id": "flag"}, headers={"X-API-Key": plain})
    key_says = 'API Key "Deploy bot" does not have the "Delete Tags" privilege required to perform this action.'
    assert (status, data["description"]) == (403, key_says)
    status, data = await site.call("get_api_keys", headers=nobody)
    refused(status, data, 403, "access", 'You do not have the "Administrator" privilege')


# -- reserved overrides -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["_xy_override_uid", "_xy_override_command", "_xy_override_actions",
                                 "_xy_override_limits", "_xy_override_params", "_xy_override_category"])  # fmt: skip
async def test_reserved_overrides_are_refused_everywhere(site: Site, admin: Headers, key: str) -> None:
    status, data = await site.call("create_event", event_body(params={"script": SCRIPT, key: "x"}), headers=admin)
    refused(status, data, 400, "api", f"Event params: Invalid parameter ID: {key} (reserved)")
    triggers = [{"type": "manual", "enabled": True}, {"type": "magic", "enabled": True, "key": "k1"}]
    event = (await ok(site, "create_event", event_body(triggers=triggers), admin))["event"]
    status, data = await site.call("update_event", {"id": event["id"], "params": {"script": SCRIPT, key: "x"}},
                                   headers=admin)  # fmt: skip
    refused(status, data, 400, "api", f"Event params: Invalid parameter ID: {key} (reserved)")
    status, data = await site.call("run_event", {"id": event["id"], "params": {key: "x"}}, headers=admin)
    refused(status, data, 400, "api", f"Job params: Invalid parameter ID: {key} (reserved)")
    resp = await site.client.post("/api/app/magic/v1/k1", json={key: "x"})
    data = await resp.json()
    refused(resp.status, data, 400, "api", f"Magic trigger params: Invalid parameter ID: {key} (reserved)")
    fields = [{"id": key, "type": "text", "title": "X"}]
    status, data = await site.call("create_event", event_body(fields=fields), headers=admin)
    refused(status, data, 400, "api", f"fields[0] ({key}): Invalid parameter ID: {key} (reserved)")
    plugin = {"title": "P", "type": "event", "command": "/bin/true", "params": fields}
    status, data = await site.call("create_plugin", plugin, headers=admin)
    refused(status, data, 400, "api", f"params[0] ({key}): Invalid parameter ID: {key} (reserved)")
    assert (await ok(site, "search_jobs", {"query": "*"}, admin))["list"]["length"] == 0  # nothing ran


async def test_other_overrides_set_the_job_property(site: Site, admin: Headers) -> None:
    event = (await ok(site, "create_event", event_body(), admin))["event"]
    run = {"id": event["id"], "params": {"_xy_override_label": "nightly"}}
    job_id = (await ok(site, "run_event", run, admin))["id"]
    job = (await ok(site, "get_job", {"id": job_id}, admin))["job"]
    assert job["label"] == "nightly"


# -- workflows ----------------------------------------------------------------------------------------------------


def workflow(nodes: list[dict[str, Any]], connections: list[dict[str, Any]]) -> dict[str, Any]:
    return {"title": "Flow", "enabled": True, "category": "general", "type": "workflow", "triggers": [],
            "workflow": {"nodes": nodes, "connections": connections}}  # fmt: skip


def node(node_id: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "job", "x": 0, "y": 0, "data": data}


def conn(conn_id: str, source: str, dest: str) -> dict[str, Any]:
    return {"id": conn_id, "source": source, "dest": dest}


NODES = [node("n1"), node("n2"), node("n3")]
BAD_WORKFLOWS = [
    ([node("n1"), node("n1")], [], "Parameter 'workflow.nodes[1].id' duplicates the node id 'n1'"),
    (NODES, [conn("c1", "n1", "n2"), conn("c1", "n2", "n3")],
     "Parameter 'workflow.connections[1].id' duplicates the connection id 'c1'"),
    (NODES, [conn("c1", "n1", "n2"), conn("c2", "n1", "n2")],
     "Parameter 'workflow.connections[1]' connects 'n1' to 'n2' a second time (connection 'c2')"),
    (NODES, [conn("c1", "n1", "n9")], "Parameter 'workflow.connections[0].dest' is not a node of the workflow"),
    ([{"type": "job"}], [], "Parameter 'workflow.nodes[0].id' must be a non-empty string"),
    ([node("n1", params={"_xy_override_uid": "0"})], [],
     "Malformed workflow node #n1 params: Invalid parameter ID: _xy_override_uid (reserved)"),
]  # fmt: skip


async def test_workflow_ids_are_checked_at_create_and_update(site: Site, admin: Headers) -> None:
    good = (await ok(site, "create_event", workflow(NODES, [conn("c1", "n1", "n2"), conn("c2", "n2", "n1")]),
                     admin))["event"]  # fmt: skip
    assert [n["id"] for n in good["workflow"]["nodes"]] == ["n1", "n2", "n3"]
    for nodes, connections, message in BAD_WORKFLOWS:
        status, data = await site.call("create_event", workflow(nodes, connections), headers=admin)
        refused(status, data, 400, "api", message)
        status, data = await site.call("update_event", {"id": good["id"], "workflow": {"nodes": nodes,
                                       "connections": connections}}, headers=admin)  # fmt: skip
        refused(status, data, 400, "api", message)
    assert (await ok(site, "get_event", {"id": good["id"]}, admin))["event"]["revision"] == 1  # left as it was


# -- administrators have no resource limits -------------------------------------------------------------------


async def test_admins_have_no_category_or_group_limits(site: Site, admin: Headers) -> None:
    limits = {"categories": ["general"], "groups": ["main"]}
    await ok(site, "create_role", {"id": "boss", "title": "Boss", "privileges": {"admin": True}}, admin)
    await ok(site, "create_role", {"id": "viewer", "title": "Viewer", "privileges": {}}, admin)
    body = {"email": "x@example.com", "full_name": "X", "password": "pw-x", **limits}
    await ok(site, "admin_create", {"username": "direct", "privileges": {"admin": True}, **body}, admin, ns="user")
    await ok(site, "admin_create", {"username": "byrole", "roles": ["boss"], **body}, admin, ns="user")
    await ok(site, "admin_create", {"username": "limited", "roles": ["viewer"], **body}, admin, ns="user")

    async def stored(username: str) -> tuple[list[str], list[str]]:
        user = (await ok(site, "admin_get_user", {"username": username}, admin, ns="user"))["user"]
        return user["categories"], user["groups"]

    assert await stored("direct") == await stored("byrole") == ([], [])
    assert await stored("limited") == (["general"], ["main"])  # not an admin: the limits stay
    # Granting admin through a role on update drops the limits too.
    await ok(site, "admin_update", {"username": "limited", "roles": ["viewer", "boss"]}, admin, ns="user")
    assert await stored("limited") == ([], [])
    # Limits given to an admin in the same update are dropped as well.
    await ok(site, "admin_update", {"username": "direct", **limits}, admin, ns="user")
    assert await stored("direct") == ([], [])


async def test_admin_keys_have_no_limits_either(site: Site, admin: Headers) -> None:
    await ok(site, "create_category", {"id": "secret", "title": "Secret"}, admin)
    await ok(site, "create_role", {"id": "boss", "title": "Boss", "privileges": {"admin": True},
                                   "categories": ["general"], "groups": ["main"]}, admin)  # fmt: skip
    plain, key = await site.admin_key(admin["X-Session-ID"], roles=["boss"], categories=["general"])
    assert "categories" not in key and "groups" not in key  # a key has no limits of its own (as in xyOps)
    made = await ok(site, "create_event", event_body(category="secret"), {"X-API-Key": plain})
    assert made["event"]["category"] == "secret"  # the role's categories do not limit an admin
