"""delete_event with `delete_jobs`: the event's job history goes too (and only that event's)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.authkit import Site


def event_body(title: str) -> dict[str, Any]:
    return {
        "title": title, "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
        "algo": "random", "params": {"script": "#!/bin/sh\n"}, "triggers": [{"type": "manual", "enabled": True}],
    }  # fmt: skip


async def test_delete_event_with_its_jobs(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    ids = {}
    for title in ("doomed", "kept"):
        _, created = await site.call("create_event", event_body(title), headers=admin)
        ids[title] = created["event"]["id"]
        for _ in range(3):
            status, ran = await site.call("run_event", {"id": ids[title]}, headers=admin)
            assert status == 200, ran

    async def count(event_id: str) -> int:
        _, found = await site.call("search_jobs", {"query": f"event:{event_id}"}, headers=admin)
        return int(found["list"]["length"])

    assert await count(ids["doomed"]) == 3
    status, _ = await site.call("delete_event", {"id": ids["doomed"], "delete_jobs": True}, headers=admin)
    assert status == 200
    deadline = time.monotonic() + 20
    while await count(ids["doomed"]):
        assert time.monotonic() < deadline, "job history of the deleted event is still there"
        await asyncio.sleep(0.05)
    assert await count(ids["kept"]) == 3
    status, _ = await site.call("delete_event", {"id": ids["kept"]}, headers=admin)
    assert status == 200
    await asyncio.sleep(0.3)
    assert await count(ids["kept"]) == 3  # without delete_jobs the history stays


async def test_override_params_set_job_props_but_never_core_ones(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    body = event_body("overrides")
    body["params"] = {**body["params"], "_xy_override_label": "Nightly build"}
    _, created = await site.call("create_event", body, headers=admin)
    status, ran = await site.call("run_event", {"id": created["event"]["id"]}, headers=admin)
    assert status == 200, ran
    _, got = await site.call("get_job", {"id": ran["id"]}, headers=admin)
    assert got["job"]["label"] == "Nightly build"
    refused = {**body, "params": {**body["params"], "_xy_override_command": "rm -rf /"}}
    status, data = await site.call("create_event", refused, headers=admin)
    assert status == 400 and "_xy_override_command" in data["description"]


async def test_update_event_and_plugin_answer_the_merged_object(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    _, created = await site.call("create_event", event_body("to edit"), headers=admin)
    event_id = created["event"]["id"]
    status, updated = await site.call("update_event", {"id": event_id, "notes": "edited"}, headers=admin)
    assert status == 200 and updated["event"]["notes"] == "edited" and updated["event"]["title"] == "to edit"
    assert updated["event"]["revision"] == created["event"]["revision"] + 1
    status, plugin = await site.call("update_plugin", {"id": "testplug", "notes": "n"}, headers=admin)
    assert status == 200 and plugin["plugin"]["notes"] == "n" and plugin["plugin"]["command"] == "[test-plugin]"
    _, tag = await site.call("update_tag", {"id": "flag", "notes": "n"}, headers=admin)
    assert tag == {"code": 0}  # other families answer {} as xyOps does
