"""Categories, plugins, groups, tags and channels on one in-process node with real Redis: CRUD, validation,
privileges, category/group limits, multi_update, the first-start defaults, get_multiple and revision history."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.principal import privilege_title
from storage import families
from storage.definitions import Family
from storage.ids import id_time_ms
from tests.authkit import Site, ok

Headers = dict[str, str]
Body = dict[str, Any]


@dataclass(frozen=True)
class Fam:
    singular: str
    plural: str
    prefix: str
    body: Body  # a minimal valid create body
    family: Family = field(repr=False, default=families.TAGS)

    def __str__(self) -> str:
        return self.plural


FAMILIES = [
    Fam("category", "categories", "ca", {"title": "Ops"}, families.CATEGORIES),
    Fam("plugin", "plugins", "p", {"title": "Runner", "type": "event", "command": "/usr/bin/env"}, families.PLUGINS),
    Fam("group", "groups", "g", {"title": "Web", "hostname_match": "^web\\d+$"}, families.GROUPS),
    Fam("tag", "tags", "t", {"title": "Urgent"}, families.TAGS),
    Fam("channel", "channels", "ch", {"title": "Pager"}, families.CHANNELS),
]
BY_PLURAL = {f.plural: f for f in FAMILIES}
# A first-start object of each family (digest section 4).
DEFAULT_ID = {"categories": "general", "plugins": "shellplug", "groups": "main", "tags": "important",
              "channels": "sev1"}  # fmt: skip


async def get(site: Site, fam: Fam, obj_id: str, headers: Headers) -> dict[str, Any]:
    data = await ok(site, f"get_{fam.singular}", {"id": obj_id}, headers)
    record: dict[str, Any] = data[fam.singular]
    return record


async def ids(site: Site, fam: Fam, headers: Headers) -> list[str]:
    data = await ok(site, f"get_{fam.plural}", None, headers)
    assert data["list"]["length"] == len(data["rows"])
    return [r["id"] for r in data["rows"]]


async def make_user(site: Site, admin: Headers, username: str, **fields: Any) -> Headers:
    """Create a user with /api/user/admin_create and log in as it."""
    body = {"username": username, "email": f"{username}@example.com", "full_name": username.title(),
            "password": f"pw-{username}", **fields}  # fmt: skip
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert (status, data["code"]) == (200, 0), data
    sid, _ = await site.login(username, f"pw-{username}")
    return {"X-Session-ID": sid}


def refused(status: int, data: dict[str, Any], code: str, http: int, *fragments: str) -> None:
    assert (status, data.get("code")) == (http, code), (status, data)
    for fragment in fragments:
        assert fragment in data["description"], (fragment, data)


# -- create / get / list / update / delete ------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES, ids=str)
async def test_round_trip(site: Site, admin: Headers, fam: Fam) -> None:
    before = int(time.time())
    created = (await ok(site, f"create_{fam.singular}", fam.body, admin))[fam.singular]
    after = time.time()
    obj_id = created["id"]
    # Generated id: the family prefix, then base36 milliseconds, 16 characters in all.
    assert re.fullmatch(re.escape(fam.prefix) + r"[a-z0-9]+", obj_id) and len(obj_id) == 16, obj_id
    stamp = id_time_ms(obj_id, fam.prefix)
    assert stamp is not None and before * 1000 - 1000 <= stamp <= after * 1000 + 1000, obj_id
    assert created["revision"] == 1 and created["username"] == "admin"
    assert before <= created["created"] == created["modified"] <= after
    assert {k: created[k] for k in fam.body} == fam.body
    assert await get(site, fam, obj_id, admin) == created
    assert obj_id in await ids(site, fam, admin)

    # Backdate the stored record so the update's `modified` can be told apart from `created`.
    old = before - 1000
    await site.node.stores.defs.replace(site.node.fence(), fam.family, {**created, "created": old, "modified": old}, 1)
    # System fields in an update are ignored: the store owns them.
    reply = await ok(site, f"update_{fam.singular}", {"id": obj_id, "title": "Renamed", "username": "mallory",
                                                      "created": 5, "modified": 5}, admin)  # fmt: skip
    # update_plugin answers the full plugin (digest 3.8); the other families answer {}.
    assert reply == ({"code": 0, "plugin": reply["plugin"]} if fam.singular == "plugin" else {"code": 0})
    updated = await get(site, fam, obj_id, admin)
    assert updated["title"] == "Renamed" and updated["revision"] == 2
    assert updated["created"] == old and updated["modified"] >= before and updated["username"] == "admin"
    # Shallow merge: a second update keeps what the first one set.
    await ok(site, f"update_{fam.singular}", {"id": obj_id, "notes": "second"}, admin)
    again = await get(site, fam, obj_id, admin)
    assert (again["revision"], again["title"], again["notes"]) == (3, "Renamed", "second")
    for key, value in fam.body.items():
        if key != "title":
            assert again[key] == value

    assert await ok(site, f"delete_{fam.singular}", {"id": obj_id}, admin) == {"code": 0}
    status, data = await site.call(f"get_{fam.singular}", {"id": obj_id}, headers=admin)
    refused(status, data, "notfound", 404, obj_id)
    assert obj_id not in await ids(site, fam, admin)
    status, data = await site.call(f"delete_{fam.singular}", {"id": obj_id}, headers=admin)
    refused(status, data, fam.singular, 500, obj_id)
    status, data = await site.call(f"update_{fam.singular}", {"id": obj_id, "title": "Ghost"}, headers=admin)
    refused(status, data, fam.singular, 500, obj_id)
    assert obj_id not in await ids(site, fam, admin)


@pytest.mark.parametrize("fam", FAMILIES, ids=str)
async def test_client_chosen_ids(site: Site, admin: Headers, fam: Fam) -> None:
    chosen = f"my_{fam.singular}_2"
    created = (await ok(site, f"create_{fam.singular}", {**fam.body, "id": chosen}, admin))[fam.singular]
    assert created["id"] == chosen and (await get(site, fam, chosen, admin))["title"] == fam.body["title"]

    status, data = await site.call(f"create_{fam.singular}", {**fam.body, "id": chosen, "title": "Twin"},
                                   headers=admin)  # fmt: skip
    refused(status, data, fam.singular, 500, chosen)
    assert (await get(site, fam, chosen, admin))["title"] == fam.body["title"]  # the first one stands

    before = await ids(site, fam, admin)
    for bad in ("Upper", "has-dash", "has space", "dot.ted", "trailing\n", "\u00e9t\u00e9", "constructor", 42):
        status, data = await site.call(f"create_{fam.singular}", {**fam.body, "id": bad}, headers=admin)
        refused(status, data, "api", 400, "'id'")
    assert await ids(site, fam, admin) == before


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES, ids=str)
async def test_common_validation(site: Site, admin: Headers, fam: Fam) -> None:
    before = await ids(site, fam, admin)
    no_title = {k: v for k, v in fam.body.items() if k != "title"}
    cases: list[tuple[Body, str]] = [
        (no_title, "title"),
        ({**fam.body, "title": ""}, "title"),
        ({**fam.body, "title": "   "}, "title"),
        ({**fam.body, "title": "<b>bold</b>"}, "'title'"),
        ({**fam.body, "title": "a > b"}, "'title'"),
        ({**fam.body, "title": ["list"]}, "'title'"),
        ({**fam.body, "icon": "bad icon!"}, "'icon'"),
        ({**fam.body, "notes": {"not": "text"}}, "'notes'"),
        ({**fam.body, "__proto__": {"admin": True}}, "__proto__"),
    ]
    for body, fragment in cases:
        status, data = await site.call(f"create_{fam.singular}", body, headers=admin)
        refused(status, data, "api", 400, fragment)
    assert await ids(site, fam, admin) == before
    # Updates are checked the same way and leave the object as it was.
    target = DEFAULT_ID[fam.plural]
    stored = await get(site, fam, target, admin)
    for changes, fragment in [({"title": "<script>"}, "'title'"), ({"title": ""}, "title"), ({"icon": "a b"}, "icon")]:
        status, data = await site.call(f"update_{fam.singular}", {"id": target, **changes}, headers=admin)
        refused(status, data, "api", 400, fragment)
    status, data = await site.call(f"update_{fam.singular}", {"title": "No id"}, headers=admin)
    refused(status, data, "api", 400, "id")
    assert await get(site, fam, target, admin) == stored


HOOK_ACTION = {"enabled": True, "condition": "error", "type": "web_hook", "web_hook": "example_hook"}
EMAIL_ACTION = {"enabled": True, "condition": "success", "type": "email", "email": "ops@example.com"}
# (family, changes to the minimal body, keys dropped from it, fragments the description must contain)
SPECIFIC_CASES: list[tuple[str, Body, tuple[str, ...], tuple[str, ...]]] = [
    ("categories", {"color": "chartreuse"}, (), ("'color'",)),
    ("categories", {"color": ""}, (), ("'color'",)),
    ("categories", {"sort_order": "first"}, (), ("'sort_order'",)),
    ("categories", {"enabled": "maybe"}, (), ("'enabled'",)),
    ("categories", {"limits": "none"}, (), ("'limits'",)),
    ("categories", {"limits": [{"type": "time", "duration": 60}]}, (), ("limits[0]", "enabled")),
    ("categories", {"limits": [{"enabled": True, "type": "bogus"}]}, (), ("limits[0]", "bogus")),
    ("categories", {"limits": [{"enabled": True, "type": "time"}]}, (), ("limits[0]", "duration")),
    ("categories", {"limits": [{"enabled": True, "type": "job", "amount": -1}]}, (), ("limits[0]", "amount")),
    ("categories", {"limits": [{"enabled": True, "type": "mem", "amount": "lots"}]}, (), ("limits[0]", "amount")),
    ("categories", {"limits": [{"enabled": True, "type": "queue", "amount": 5}]}, (), ("limits[0]", "'job'")),
    ("categories", {"actions": {"type": "email"}}, (), ("'actions'",)),
    ("categories", {"actions": [{"condition": "error", "type": "snapshot"}]}, (), ("actions[0]", "enabled")),
    (
        "categories",
        {"actions": [EMAIL_ACTION, {**EMAIL_ACTION, "condition": "sometimes"}]},
        (),
        ("actions[1]", "sometimes"),
    ),
    ("categories", {"actions": [{**EMAIL_ACTION, "type": "teleport"}]}, (), ("actions[0]", "teleport")),
    ("categories", {"actions": [{**HOOK_ACTION, "web_hook": ""}]}, (), ("actions[0]", "web_hook")),
    (
        "categories",
        {"actions": [HOOK_ACTION, {**HOOK_ACTION, "web_hook": "no_such_hook"}]},
        (),
        ("actions[1]", "web_hook", "no_such_hook"),
    ),
    ("categories", {"actions": [{**EMAIL_ACTION, "email": "", "users": ["ghost"]}]}, (), ("actions[0]", "ghost")),
    (
        "categories",
        {"actions": [{"enabled": True, "condition": "error", "type": "channel", "channel_id": "nope"}]},
        (),
        ("actions[0]", "channel_id", "nope"),
    ),
    ("plugins", {}, ("type",), ("type",)),
    ("plugins", {"type": "bogus"}, (), ("'type'",)),
    ("plugins", {}, ("command",), ("command",)),
    ("plugins", {"command": ""}, (), ("command",)),
    ("plugins", {"kill": "sometimes"}, (), ("'kill'",)),
    ("plugins", {"format": "yaml"}, (), ("'format'",)),
    ("plugins", {"groups": 5}, (), ("'groups'",)),
    ("plugins", {"params": "script"}, (), ("'params'",)),
    (
        "plugins",
        {"params": [{"id": "a", "title": "A", "type": "text"}, {"id": "a", "title": "B", "type": "text"}]},
        (),
        ("params[1]", "duplicate", "'a'"),
    ),
    ("plugins", {"params": [{"id": "1abc", "title": "A", "type": "text"}]}, (), ("params[0]", "'id'")),
    ("plugins", {"params": [{"title": "A", "type": "text"}]}, (), ("params[0]", "'id'")),
    ("plugins", {"params": [{"id": "a", "title": "A", "type": "slider"}]}, (), ("params[0]", "type", "slider")),
    ("plugins", {"params": [{"id": "a", "type": "text"}]}, (), ("params[0]", "title")),
    (
        "plugins",
        {"params": [{"id": "a", "title": "A", "type": "text", "regex": "(unclosed"}]},
        (),
        ("params[0]", "regex"),
    ),
    ("groups", {}, ("hostname_match",), ("hostname_match",)),
    ("groups", {"hostname_match": "(web"}, (), ("'hostname_match'",)),
    ("groups", {"hostname_match": "[a-"}, (), ("'hostname_match'",)),
    ("groups", {"max_jobs_per_server": -1}, (), ("'max_jobs_per_server'",)),
    ("groups", {"alert_actions": [{**HOOK_ACTION, "web_hook": "nope"}]}, (), ("alert_actions[0]", "nope")),
    ("channels", {"users": ["ghost"]}, (), ("'users'", "ghost")),
    ("channels", {"users": "admin, ghost"}, (), ("'users'", "ghost")),
    ("channels", {"users": [1]}, (), ("'users'",)),
    ("channels", {"web_hook": "nope"}, (), ("'web_hook'", "nope")),
    ("channels", {"run_event": "nope"}, (), ("'run_event'", "nope")),
    ("channels", {"sound": "alarm.wav"}, (), ("'sound'",)),
    ("channels", {"sound": "../../etc/passwd.mp3"}, (), ("'sound'",)),
    ("channels", {"max_per_day": -3}, (), ("'max_per_day'",)),
    ("tags", {"icon": "<svg>"}, (), ("'icon'",)),
]


@pytest.mark.parametrize(("plural", "changes", "drop", "fragments"), SPECIFIC_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SPECIFIC_CASES)])  # fmt: skip
async def test_family_validation(site: Site, admin: Headers, plural: str, changes: Body, drop: tuple[str, ...],
                                 fragments: tuple[str, ...]) -> None:  # fmt: skip
    fam = BY_PLURAL[plural]
    before = await ids(site, fam, admin)
    body = {k: v for k, v in {**fam.body, **changes}.items() if k not in drop}
    status, data = await site.call(f"create_{fam.singular}", body, headers=admin)
    refused(status, data, "api", 400, *fragments)
    assert await ids(site, fam, admin) == before
    # The same change on an existing object is refused too, and leaves it untouched.
    if drop:
        return
    target = DEFAULT_ID[plural]
    stored = await get(site, fam, target, admin)
    status, data = await site.call(f"update_{fam.singular}", {"id": target, **changes}, headers=admin)
    refused(status, data, "api", 400, *fragments)
    assert await get(site, fam, target, admin) == stored


async def test_valid_references_and_shapes_are_stored(site: Site, admin: Headers) -> None:
    limits = [{"enabled": True, "type": "job", "amount": 2}, {"enabled": True, "type": "queue", "amount": 10},
              {"enabled": False, "type": "time", "duration": 3600}]  # fmt: skip
    actions = [HOOK_ACTION, {**EMAIL_ACTION, "email": "", "users": ["admin"]},
               {"enabled": True, "condition": "tag:flag", "type": "channel", "channel_id": "sev1"}]  # fmt: skip
    cat = (await ok(site, "create_category", {"title": "Nightly", "color": "teal", "limits": limits,
                                              "actions": actions}, admin))["category"]  # fmt: skip
    stored = await get(site, BY_PLURAL["categories"], cat["id"], admin)
    assert stored["limits"] == limits and stored["actions"] == actions and stored["color"] == "teal"

    params = [{"id": "target_host", "title": "Host", "type": "text", "regex": "^[a-z.]+$", "required": True},
              {"id": "mode", "title": "Mode", "type": "select", "value": "fast, slow"},
              {"id": "_internal", "type": "hidden", "value": "x"}]  # fmt: skip
    plug = (await ok(site, "create_plugin", {"title": "Probe", "type": "monitor", "command": "/bin/sh",
                                             "script": "echo 1", "format": "json", "params": params, "uid": "nobody",
                                             "groups": "main, web"}, admin))["plugin"]  # fmt: skip
    assert plug["params"] == params and plug["uid"] == "nobody" and plug["groups"] == ["main", "web"]
    # Defaults: enabled, kill parent.
    assert plug["enabled"] is True and plug["kill"] == "parent"
    # Marketplace plugins never run as another user.
    market = (await ok(site, "create_plugin", {"title": "Market", "type": "event", "command": "/bin/true",
                                               "marketplace": {"id": "x"}, "uid": "root", "gid": "root"},
                       admin))["plugin"]  # fmt: skip
    assert "uid" not in market and "gid" not in market
    assert "uid" not in await get(site, BY_PLURAL["plugins"], market["id"], admin)

    group = (await ok(site, "create_group", {"title": "DB", "hostname_match": "^db-(a|b)\\d+", "alert_actions":
                                             [HOOK_ACTION], "max_jobs_per_server": 3}, admin))["group"]  # fmt: skip
    assert group["alert_actions"] == [HOOK_ACTION] and group["max_jobs_per_server"] == 3

    chan = (await ok(site, "create_channel", {"title": "Ops", "users": "admin", "web_hook": "example_hook",
                                              "sound": "ding.mp3", "max_per_day": 5}, admin))["channel"]  # fmt: skip
    assert (chan["users"], chan["web_hook"], chan["sound"], chan["max_per_day"]) == (
        ["admin"], "example_hook", "ding.mp3", 5)  # fmt: skip


async def test_optimistic_locking(site: Site, admin: Headers) -> None:
    for fam in FAMILIES:
        obj_id = (await ok(site, f"create_{fam.singular}", fam.body, admin))[fam.singular]["id"]
        await ok(site, f"update_{fam.singular}", {"id": obj_id, "title": "One", "revision": 1}, admin)
        await ok(site, f"update_{fam.singular}", {"id": obj_id, "title": "Two", "revision": "2"}, admin)
        status, data = await site.call(f"update_{fam.singular}", {"id": obj_id, "title": "Stale", "revision": 2},
                                       headers=admin)  # fmt: skip
        refused(status, data, "api", 400, "revision", obj_id)
        current = await get(site, fam, obj_id, admin)
        assert (current["title"], current["revision"]) == ("Two", 3)
        # Without a revision the write is last-writer-wins.
        await ok(site, f"update_{fam.singular}", {"id": obj_id, "title": "Three"}, admin)
        assert (await get(site, fam, obj_id, admin))["revision"] == 4


async def test_new_sort_order_goes_after_the_last_even_after_deletes(site: Site, admin: Headers) -> None:
    """xyOps: "deleting will produce a hole in the sort orders, so we have to find the max + 1"."""
    for fam in (BY_PLURAL["categories"], BY_PLURAL["groups"]):
        first = (await ok(site, f"create_{fam.singular}", fam.body, admin))[fam.singular]
        second = (await ok(site, f"create_{fam.singular}", fam.body, admin))[fam.singular]
        assert (first["sort_order"], second["sort_order"]) == (1, 2)  # the default object holds 0
        await ok(site, f"delete_{fam.singular}", {"id": first["id"]}, admin)
        third = (await ok(site, f"create_{fam.singular}", fam.body, admin))[fam.singular]
        assert third["sort_order"] == 3, fam
        chosen = (await ok(site, f"create_{fam.singular}", {**fam.body, "sort_order": 0}, admin))[fam.singular]
        assert chosen["sort_order"] == 0  # an explicit position is kept


# -- privileges and category / group limits --------------------------------------------------------------------


async def test_privileges_are_required_per_verb(site: Site, admin: Headers) -> None:
    nobody = await make_user(site, admin, "nobody")
    creator = await make_user(site, admin, "creator", privileges={f"create_{f.plural}": True for f in FAMILIES})
    for fam in FAMILIES:
        target = DEFAULT_ID[fam.plural]
        stored = await get(site, fam, target, admin)
        # Reading needs no privilege.
        assert target in await ids(site, fam, nobody) and await get(site, fam, target, nobody) == stored
        for verb, body in (
            ("create", fam.body),
            ("update", {"id": target, "title": "Mine"}),
            ("delete", {"id": target}),
        ):
            status, data = await site.call(f"{verb}_{fam.singular}", body, headers=nobody)
            privilege = f"{'edit' if verb == 'update' else verb}_{fam.plural}"
            refused(status, data, "access", 403, f'"{privilege_title(privilege)}" privilege')
        # create_X alone allows creating but not editing or deleting.
        made = (await ok(site, f"create_{fam.singular}", fam.body, creator))[fam.singular]
        assert made["username"] == "creator"
        status, data = await site.call(f"update_{fam.singular}", {"id": made["id"], "title": "x"}, headers=creator)
        refused(status, data, "access", 403, f'"{privilege_title(f"edit_{fam.plural}")}"')
        status, data = await site.call(f"delete_{fam.singular}", {"id": made["id"]}, headers=creator)
        refused(status, data, "access", 403, f'"{privilege_title(f"delete_{fam.plural}")}"')
        assert await get(site, fam, target, admin) == stored
    for name in ("multi_update_category", "multi_update_group"):
        status, data = await site.call(name, {"items": [{"id": "general", "sort_order": 9}]}, headers=nobody)
        refused(status, data, "access", 403, '"Edit ')


async def test_privilege_through_a_role_and_api_key(site: Site, admin: Headers) -> None:
    await ok(site, "create_role", {"id": "taggers", "title": "Taggers", "privileges": {"create_tags": True}}, admin)
    plain, _ = await site.admin_key(admin["X-Session-ID"], roles=["taggers"])
    key = {"X-API-Key": plain}
    tag = (await ok(site, "create_tag", {"title": "By key"}, key))["tag"]
    assert tag["username"] != "admin" and tag["username"].startswith("k")  # API keys sign with their id
    status, data = await site.call("create_category", {"title": "No"}, headers=key)
    refused(status, data, "access", 403, '"Create Categories"')


async def test_category_limited_user(site: Site, admin: Headers) -> None:
    cats = BY_PLURAL["categories"]
    other = (await ok(site, "create_category", {"id": "other", "title": "Other"}, admin))["category"]
    limited = await make_user(site, admin, "catty", categories=["general"],
                              privileges={"create_categories": True, "edit_categories": True})  # fmt: skip
    data = await ok(site, "get_categories", None, limited)
    assert [r["id"] for r in data["rows"]] == ["general"] and data["list"]["length"] == 1
    assert set(await ids(site, cats, admin)) >= {"general", "other"}
    assert (await get(site, cats, "general", limited))["id"] == "general"

    status, data = await site.call("get_category", {"id": "other"}, headers=limited)
    refused(status, data, "access", 403, "other")
    status, data = await site.call("update_category", {"id": "other", "title": "Mine"}, headers=limited)
    refused(status, data, "access", 403, "other")
    for body in ({"id": "newcat", "title": "New"}, {"title": "Generated id"}):
        status, data = await site.call("create_category", body, headers=limited)
        refused(status, data, "access", 403)
    status, data = await site.call("multi_update_category", {"items": [{"id": "general", "sort_order": 7}]},
                                   headers=limited)  # fmt: skip
    refused(status, data, "access", 403, "restriction")
    status, data = await site.call("get_multiple", {"lists": ["categories"]}, headers=limited)
    refused(status, data, "access", 403)
    # Allowed: editing the one category the user may see.
    await ok(site, "update_category", {"id": "general", "notes": "mine"}, limited)
    assert (await get(site, cats, "general", admin))["sort_order"] == 0
    assert await get(site, cats, "other", admin) == other
    assert set(await ids(site, cats, admin)) == {"general", "other"}
    # Group limits do not touch categories.
    glimited = await make_user(site, admin, "groupie", groups=["main"])
    assert set(await ids(site, cats, glimited)) == {"general", "other"}


async def test_group_limited_user(site: Site, admin: Headers) -> None:
    groups = BY_PLURAL["groups"]
    await ok(site, "create_group", {"id": "dbs", "title": "DBs", "hostname_match": "^db"}, admin)
    privileges = {"create_groups": True, "edit_groups": True, "delete_groups": True}
    limited = await make_user(site, admin, "grouper", groups=["main"], privileges=privileges)
    data = await ok(site, "get_groups", None, limited)
    assert [r["id"] for r in data["rows"]] == ["main"] and data["list"]["length"] == 1
    status, data = await site.call("get_group", {"id": "dbs"}, headers=limited)
    refused(status, data, "access", 403, "dbs")
    for api, body in (("update_group", {"id": "dbs", "title": "x"}), ("delete_group", {"id": "dbs"}),
                      ("create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}),
                      ("multi_update_group", {"items": [{"id": "main", "sort_order": 4}]})):  # fmt: skip
        status, data = await site.call(api, body, headers=limited)
        refused(status, data, "access", 403)
    await ok(site, "update_group", {"id": "main", "notes": "edited by grouper"}, limited)
    assert set(await ids(site, groups, admin)) == {"main", "dbs"}
    assert (await get(site, groups, "main", admin))["sort_order"] == 0
    # Category limits do not touch groups; admins are never limited.
    climited = await make_user(site, admin, "catless", categories=["general"])
    assert set(await ids(site, groups, climited)) == {"main", "dbs"}
    boss = await make_user(site, admin, "boss", privileges={"admin": True}, groups=["main"], categories=["general"])
    assert set(await ids(site, groups, boss)) == {"main", "dbs"}
    await ok(site, "multi_update_group", {"items": [{"id": "dbs", "sort_order": 1}]}, boss)


# -- multi_update -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plural", ["categories", "groups"])
async def test_multi_update(site: Site, admin: Headers, plural: str) -> None:
    fam = BY_PLURAL[plural]
    first = (await ok(site, f"create_{fam.singular}", {**fam.body, "id": "first"}, admin))[fam.singular]
    second = (await ok(site, f"create_{fam.singular}", {**fam.body, "id": "second"}, admin))[fam.singular]
    default = DEFAULT_ID[plural]
    items: list[Body] = [{"id": "second", "sort_order": 0}, {"id": "first", "sort_order": 1},
                         {"id": default, "sort_order": 2}]  # fmt: skip
    assert await ok(site, f"multi_update_{fam.singular}", {"items": items}, admin) == {"code": 0}
    for item in items:
        stored = await get(site, fam, item["id"], admin)
        assert stored["sort_order"] == item["sort_order"]
        assert stored["revision"] == 1  # as in xyOps, no revision bump
    assert (await get(site, fam, "first", admin))["title"] == first["title"]
    snapshot = {i: await get(site, fam, i, admin) for i in ("first", "second", default)}

    # Every item is validated before anything is written: a bad item late in the list stops them all.
    bad_items: list[tuple[list[Body], str, int, str]] = [
        ([{"id": "first", "sort_order": 9}, {"id": "ghost", "sort_order": 1}], fam.singular, 500, "ghost"),
        ([{"id": "first", "sort_order": 9}, {"id": "second", "title": "<b>"}], "api", 400, "'title'"),
        ([{"id": "first", "sort_order": 9}, {"id": "second", "sort_order": "last"}], "api", 400, "'sort_order'"),
        ([{"id": "first", "sort_order": 9}, {"sort_order": 1}], "api", 400, "id"),
    ]
    if plural == "categories":
        bad_items.append(([{"id": "first", "sort_order": 9}, {"id": "second", "color": "octarine"}], "api", 400,
                          "'color'"))  # fmt: skip
        bad_items.append(([{"id": "first", "sort_order": 9}, {"id": "second", "limits": [{"type": "x"}]}], "api",
                          400, "limits[0]"))  # fmt: skip
    else:
        bad_items.append(([{"id": "first", "sort_order": 9}, {"id": "second", "hostname_match": "(("}], "api", 400,
                          "'hostname_match'"))  # fmt: skip
    for bad, code, http, fragment in bad_items:
        status, data = await site.call(f"multi_update_{fam.singular}", {"items": bad}, headers=admin)
        refused(status, data, code, http, fragment)
    empty: list[Body] = [{}, {"items": []}, {"items": "first"}, {"items": [["first"]]}]
    for body in empty:
        status, data = await site.call(f"multi_update_{fam.singular}", body, headers=admin)
        refused(status, data, "api", 400, "items")
    assert {i: await get(site, fam, i, admin) for i in snapshot} == snapshot
    assert second["sort_order"] != snapshot["second"]["sort_order"]


async def test_delete_category_refused_while_an_event_uses_it(site: Site, admin: Headers) -> None:
    cats = BY_PLURAL["categories"]
    await ok(site, "create_category", {"id": "busy", "title": "Busy"}, admin)
    now = int(time.time())
    event = {"id": "ev_busy", "title": "Uses busy", "category": "busy", "enabled": True, "plugin": "shellplug",
             "targets": ["main"], "username": "admin", "created": now, "modified": now, "revision": 1}  # fmt: skip
    await site.node.stores.defs.create(site.node.fence(), families.EVENTS, event)
    status, data = await site.call("delete_category", {"id": "busy"}, headers=admin)
    refused(status, data, "category", 500, "ev_busy")
    assert (await get(site, cats, "busy", admin))["title"] == "Busy"
    # An event in another category does not block.
    await site.node.stores.defs.replace(site.node.fence(), families.EVENTS, {**event, "category": "general"}, 1)
    await ok(site, "delete_category", {"id": "busy"}, admin)
    status, data = await site.call("get_category", {"id": "busy"}, headers=admin)
    assert status == 404


# -- first-start defaults ------------------------------------------------------------------------------------------


async def test_default_objects(site: Site, admin: Headers) -> None:
    def common(rec: dict[str, Any]) -> None:
        assert rec["revision"] == 1 and rec["username"] == "admin" and rec["created"] == rec["modified"] > 0

    general = await get(site, BY_PLURAL["categories"], "general", admin)
    common(general)
    assert (general["title"], general["enabled"], general["color"], general["sort_order"], general["limits"],
            general["actions"]) == ("General", True, "plain", 0, [], [])  # fmt: skip

    plugins = {p["id"]: p for p in (await ok(site, "get_plugins", None, admin))["rows"]}
    assert set(plugins) == {"testplug", "shellplug", "httpplug", "dockerplug", "hookplug", "open_files"}
    for plug in plugins.values():
        common(plug)
        assert plug["enabled"] is True
    expect = {"testplug": ("event", "[test-plugin]", "parent"), "shellplug": ("event", "[shell-plugin]", "all"),
              "httpplug": ("event", "[http-plugin]", "parent"), "dockerplug": ("event", "[docker-plugin]", "all"),
              "hookplug": ("event", "[hook-plugin]", "parent"), "open_files": ("monitor", "/bin/sh", None)}  # fmt: skip
    for pid, (kind, command, kill) in expect.items():
        assert (plugins[pid]["type"], plugins[pid]["command"], plugins[pid].get("kill")) == (kind, command, kill)
    assert {p for p, rec in plugins.items() if rec.get("stock")} == {"testplug", "shellplug", "httpplug",
                                                                      "dockerplug"}  # fmt: skip
    shell = {p["id"]: p for p in plugins["shellplug"]["params"]}
    assert set(shell) == {"script", "annotate"}
    assert shell["script"]["type"] == "code" and shell["script"]["locked"] is True
    assert shell["script"]["value"].startswith("#!/bin/sh")
    assert shell["annotate"]["type"] == "checkbox"
    test_params = [p["id"] for p in plugins["testplug"]["params"]]
    assert test_params == ["duration", "action", "custom", "burn", "network", "upload"]
    http = {p["id"]: p for p in plugins["httpplug"]["params"]}
    assert {"method", "url", "headers", "data"} <= set(http) and http["url"]["locked"] is True
    assert plugins["dockerplug"]["runner"] is True
    assert [p["id"] for p in plugins["hookplug"]["params"]] == ["web_hook", "text"]
    files = plugins["open_files"]
    assert (files["script"], files["format"]) == ("cat /proc/sys/fs/file-nr", "text")

    main = await get(site, BY_PLURAL["groups"], "main", admin)
    common(main)
    assert (main["title"], main["hostname_match"], main["alert_actions"], main["sort_order"]) == (
        "Main Group", ".+", [], 0)  # fmt: skip

    tags = {t["id"]: t for t in (await ok(site, "get_tags", None, admin))["rows"]}
    assert {k: v["icon"] for k, v in tags.items()} == {"important": "alert-rhombus", "flag": "flag-checkered"}
    assert tags["important"]["title"] == "Important" and tags["flag"]["title"] == "Flag"

    hook = (await ok(site, "get_web_hook", {"id": "example_hook"}, admin))["web_hook"]
    common(hook)
    assert (hook["title"], hook["method"], hook["url"], hook["timeout"]) == (
        "Example Hook", "POST", "https://httpbin.org/post", 30)  # fmt: skip
    assert "{{text}}" in hook["body"]

    sev1 = await get(site, BY_PLURAL["channels"], "sev1", admin)
    common(sev1)
    assert (sev1["title"], sev1["users"], sev1["sound"]) == ("Severity 1", ["admin"], "attention-3.mp3")

    role = (await ok(site, "get_role", {"id": "all"}, admin))["role"]
    assert (role["title"], role["enabled"], role["categories"], role["groups"]) == ("All Users", True, [], [])
    assert role["privileges"] == {"create_events": True, "edit_events": True, "run_jobs": True, "tag_jobs": True}

    # One `<type>_create` activity record per default object, by admin.
    made = {"plugins": ("plugin", 6), "categories": ("category", 1), "groups": ("group", 1), "tags": ("tag", 2),
            "channels": ("channel", 1), "web_hooks": ("web_hook", 1)}  # fmt: skip
    for kind, (singular, count) in made.items():
        found = await ok(site, "search_revision_history", {"type": kind, "limit": 50}, admin)
        assert found["list"]["length"] == len(found["rows"]) == count, kind
        assert {r["action"] for r in found["rows"]} == {f"{singular}_create"}
        assert {r["username"] for r in found["rows"]} == {"admin"}


# -- get_multiple -------------------------------------------------------------------------------------------------


async def test_get_multiple(site: Site, admin: Headers) -> None:
    plain, key = await site.admin_key(admin["X-Session-ID"])
    await ok(site, "create_secret", {"id": "db_pass", "title": "DB", "fields": [{"name": "DB_PASSWORD",
                                                                                 "value": "hunter2-secret"}]},
             admin)  # fmt: skip

    data = await ok(site, "get_multiple", {"lists": ["categories", "tags"]}, admin)
    assert set(data) == {"code", "epoch", "categories", "tags"}
    assert abs(data["epoch"] - time.time()) < 5
    assert [c["id"] for c in data["categories"]] == ["general"]
    assert {t["id"] for t in data["tags"]} == {"important", "flag"}

    status, data = await site.call("get_multiple", method="GET", query={"lists": "plugins, groups,channels"},
                                   headers=admin)  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    assert set(data) == {"code", "epoch", "plugins", "groups", "channels"}
    assert len(data["plugins"]) == 6 and data["groups"][0]["id"] == "main" and data["channels"][0]["id"] == "sev1"

    every = await ok(site, "get_multiple", {"lists": "all", "state": 1}, admin)
    lists = {"api_keys", "groups", "plugins", "categories", "events", "channels", "web_hooks", "buckets", "secrets",
             "monitors", "alerts", "tags", "roles"}  # fmt: skip
    assert set(every) == {"code", "epoch", "state"} | lists
    assert every["state"]["scheduler"]["enabled"] is True
    assert [k["id"] for k in every["api_keys"]] == [key["id"]]
    assert all(len(k["key"]) == 64 for k in every["api_keys"]) and plain not in str(every)
    (secret,) = every["secrets"]
    assert secret["id"] == "db_pass" and secret["names"] == ["DB_PASSWORD"]
    assert "encrypted" not in secret and "fields" not in secret and "hunter2-secret" not in str(every)
    assert [r["id"] for r in every["roles"]] == ["all"] and every["web_hooks"][0]["id"] == "example_hook"

    status, data = await site.call("get_multiple", {"lists": ["categories", "bogus"]}, headers=admin)
    refused(status, data, "admin", 500, "bogus")
    status, data = await site.call("get_multiple", {}, headers=admin)
    refused(status, data, "api", 400, "lists")
    status, data = await site.call("get_multiple", {"lists": ["tags"]})
    assert (status, data["code"]) == (401, "session")

    # Any signed-in user may read lists, but API keys (hashes) stay admin-only.
    reader = await make_user(site, admin, "reader")
    data = await ok(site, "get_multiple", {"lists": "categories,tags"}, reader)
    assert [c["id"] for c in data["categories"]] == ["general"]
    status, data = await site.call("get_multiple", {"lists": ["api_keys"]}, headers=reader)
    refused(status, data, "access", 403, "api_keys")
    everything = await ok(site, "get_multiple", {"lists": "all"}, reader)
    assert "api_keys" not in everything and set(everything) == {"code", "epoch"} | (lists - {"api_keys"})
    # Category- or group-limited users get nothing: the lists are raw.
    for limit in ({"categories": ["general"]}, {"groups": ["main"]}):
        limited = await make_user(site, admin, f"limited_{next(iter(limit))}", **limit)
        status, data = await site.call("get_multiple", {"lists": ["tags"]}, headers=limited)
        refused(status, data, "access", 403)


# -- search_revision_history --------------------------------------------------------------------------------------


async def test_search_revision_history(site: Site, admin: Headers) -> None:
    await ok(site, "create_category", {"id": "rev_a", "title": "Rev A"}, admin)
    await ok(site, "update_category", {"id": "rev_a", "title": "Rev A2"}, admin)
    await ok(site, "create_category", {"id": "rev_b", "title": "Rev B"}, admin)
    await ok(site, "update_category", {"id": "rev_a", "title": "Rev A3"}, admin)
    await ok(site, "create_tag", {"id": "rev_tag", "title": "Not a category"}, admin)
    await ok(site, "delete_category", {"id": "rev_a"}, admin)
    await ok(site, "multi_update_category", {"items": [{"id": "rev_b", "sort_order": 0}]}, admin)

    found = await ok(site, "search_revision_history", {"type": "categories", "limit": 100}, admin)
    rows = found["rows"]
    assert found["list"]["length"] == len(rows) == 7  # 6 above (the tag excluded) + general's first-start record
    assert [r["action"] for r in rows] == ["category_multi_update", "category_delete", "category_update",
                                           "category_create", "category_update", "category_create",
                                           "category_create"]  # fmt: skip
    assert rows[-1]["category"]["id"] == "general" and rows[-1]["username"] == "admin"
    epochs = [r["epoch"] for r in rows]
    assert epochs == sorted(epochs, reverse=True)
    # The activity log itself keeps the client's address; the revision history never shows it.
    raw = await ok(site, "search_activity", {"query": "action:category_create keywords:rev_a", "limit": 5}, admin)
    assert raw["rows"][0]["ip"] and raw["rows"][0]["headers"]
    for row in rows:
        assert not {"ip", "ips", "headers"} & set(row), row

    narrowed = await ok(site, "search_revision_history", {"type": "categories", "query": "keywords:rev_a",
                                                          "limit": 100}, admin)  # fmt: skip
    assert [r["action"] for r in narrowed["rows"]] == ["category_delete", "category_update", "category_update",
                                                       "category_create"]  # fmt: skip
    assert [r["category"]["title"] for r in narrowed["rows"]] == ["Rev A3", "Rev A3", "Rev A2", "Rev A"]
    assert all(not {"ip", "ips", "headers"} & set(r) for r in narrowed["rows"])
    # A multi_update shows in the history of each object it changed.
    only_b = await ok(site, "search_revision_history", {"type": "categories", "query": "keywords:rev_b",
                                                        "limit": 100}, admin)  # fmt: skip
    assert [r["action"] for r in only_b["rows"]] == ["category_multi_update", "category_create"]

    # Default limit 1; offset pages; PxQL queries are AND-ed with the type.
    first = await ok(site, "search_revision_history", {"type": "categories"}, admin)
    assert len(first["rows"]) == 1 and first["list"]["length"] == 7 and first["rows"][0]["id"] == rows[0]["id"]
    page = await ok(site, "search_revision_history", {"type": "categories", "offset": 2, "limit": 2}, admin)
    assert [r["id"] for r in page["rows"]] == [r["id"] for r in rows[2:4]]
    pxql = await ok(site, "search_revision_history", {"type": "categories", "query": '(action = "category_update")',
                                                      "limit": 10}, admin)  # fmt: skip
    assert [r["action"] for r in pxql["rows"]] == ["category_update"] * 2
    tags = await ok(site, "search_revision_history", {"type": "tags", "limit": 10}, admin)
    assert "rev_tag" in {r["tag"]["id"] for r in tags["rows"]}
    # GET with query parameters works too, for any signed-in user.
    reader = await make_user(site, admin, "historian")
    status, data = await site.call("search_revision_history", method="GET",
                                   query={"type": "categories", "query": "keywords:rev_b", "limit": "5"},
                                   headers=reader)  # fmt: skip
    assert (status, data["list"]["length"]) == (200, 2)

    for body in ({"type": "users"}, {"type": "api_keys"}, {}):
        status, data = await site.call("search_revision_history", body, headers=admin)
        refused(status, data, "api", 400, "type")
    status, data = await site.call("search_revision_history", {"type": "categories", "query": "(action = "},
                                   headers=admin)  # fmt: skip
    refused(status, data, "api", 400)
