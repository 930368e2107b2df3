"""A committed write answers success even when what follows it (the activity record) cannot be written.

The activity store is pointed at an address where no server listens: a real client meeting a real
refused connection, while every other store of the node keeps its healthy server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.activity import ActivityStore
from storage.connection import Database, connect
from storage.servers import ServerStore
from tests.authkit import Site, ok
from tests.servers import free_port


@pytest.fixture
def activity_down(site: Site) -> Iterator[None]:
    live = site.node.stores.activity
    dead = Database(connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5), site.node.db.keys)
    site.node.stores.activity = ActivityStore(dead)
    yield
    site.node.stores.activity = live


async def test_writes_succeed_when_their_activity_record_fails(
    site: Site, admin: dict[str, str], activity_down: None
) -> None:
    created = await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    assert created["category"]["id"] == "ops"
    await ok(site, "update_category", {"id": "ops", "title": "Ops 2"}, admin)
    got = await ok(site, "get_category", {"id": "ops"}, admin)
    assert got["category"]["title"] == "Ops 2"
    await ok(site, "delete_category", {"id": "ops"}, admin)
    body = {"username": "dora", "password": "pw", "email": "d@example.com", "full_name": "Dora"}
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login("dora", "pw")  # login writes an activity record too
    assert sid


async def test_a_secret_is_not_revealed_unaudited(site: Site, admin: dict[str, str]) -> None:
    created = await ok(site, "create_secret", {"title": "S", "fields": [{"name": "A", "value": "1"}]}, admin)
    secret_id = created["secret"]["id"]
    live = site.node.stores.activity
    site.node.stores.activity = ActivityStore(Database(connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5),
                                                       site.node.db.keys))  # fmt: skip
    try:
        status, data = await site.call("decrypt_secret", {"id": secret_id}, headers=admin)
    finally:
        site.node.stores.activity = live
    assert status == 500 and data["code"] == "db" and "fields" not in data, data
    assert (await ok(site, "decrypt_secret", {"id": secret_id}, admin))["fields"]


async def test_a_group_write_succeeds_when_regrouping_servers_fails(site: Site, admin: dict[str, str]) -> None:
    live = site.node.stores.servers
    site.node.stores.servers = ServerStore(Database(connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5),
                                                    site.node.db.keys))  # fmt: skip
    try:
        await ok(site, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
        await ok(site, "update_group", {"id": "web", "hostname_match": "^www"}, admin)
        await ok(site, "delete_group", {"id": "web"}, admin)
    finally:
        site.node.stores.servers = live
    assert [g["id"] for g in (await ok(site, "get_groups", {}, admin))["rows"]] == ["main"]
