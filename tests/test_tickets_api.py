"""The tickets API on a real in-process primary (and a satellite sharing its valkey): the lifecycle and change
history (defaults, server-owned keys ignored, the draft rule, collapse, comments and their owners, the delete audit
entry, activity records), search on every column (jobs: and alerts: filled by the manage_* calls, bare words,
dates, sorting by num and modified, compact, a category-limited caller), validation errors with their code and
field, get by num, the job and alert templates, and what a delete takes with it (files, links)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.settings import Settings
from cluster.node import NodeRuntime
from cluster.tickets.fields import TicketError
from cluster.tickets.service import link_invocation, link_job, open_ticket
from storage import codec
from storage.connection import Database
from storage.stores import Stores
from tests.authkit import Client, NodeTestServer, Site, ok, wait_until
from tests.test_jobs_api import event_body, make_user, post

Headers = dict[str, str]
Ticket = dict[str, Any]


async def create(site: Site, headers: Headers, **fields: Any) -> Ticket:
    ticket: Ticket = (await ok(site, "create_ticket", {"subject": "A ticket", **fields}, headers))["ticket"]
    return ticket


async def update(site: Site, headers: Headers, ticket_id: str, **fields: Any) -> Ticket:
    ticket: Ticket = (await ok(site, "update_ticket", {"id": ticket_id, **fields}, headers))["ticket"]
    return ticket


async def get(site: Site, headers: Headers, ticket_id: str) -> Ticket:
    ticket: Ticket = (await ok(site, "get_ticket", {"id": ticket_id}, headers))["ticket"]
    return ticket


async def find(site: Site, headers: Headers, query: str, **extra: Any) -> list[str]:
    data = await ok(site, "search_tickets", {"query": query, "limit": 100, **extra}, headers)
    assert data["list"]["length"] == len(data["rows"]), data
    return [r["id"] for r in data["rows"]]


def refused(status: int, data: dict[str, Any], http: int, code: str, *words: str) -> None:
    assert (status, data.get("code")) == (http, code), data
    for word in words:
        assert word in data["description"], (word, data)


async def completed_job(site: Site, admin: Headers) -> dict[str, Any]:
    """A job that completed at once (no server matches its targets)."""
    event = (await ok(site, "create_event", event_body(targets=["nowhere"]), admin))["event"]
    status, data = await post(site.client, "/api/app/run_event/v1/wait", {"id": event["id"]}, admin)
    assert (status, data["code"], data["job"]["state"]) == (200, 0, "complete"), data
    job: dict[str, Any] = data["job"]
    return job


async def invocation(site: Site, inv_id: str) -> dict[str, Any]:
    """An alert invocation written as the evaluator writes it."""
    db = site.node.stores.db
    now = time.time()
    record = {"id": inv_id, "active": False, "alert": "load_avg_high", "server": "s1", "groups": ["main"],
              "date": now, "modified": now, "message": "High load", "jobs": [], "tickets": []}  # fmt: skip
    await db.client.set(db.keys.alert_invocation(inv_id), codec.pack(record))
    await db.client.sadd(db.keys.alerts_unindexed, inv_id)
    await site.node.stores.alerts.index_pending()
    return record


@pytest.fixture
async def satellite(site: Site, db: Database, tmp_path: Path) -> AsyncIterator[Client]:
    node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000,
                       stores=Stores.open(db, secret_key=site.node.stores.secret_key))  # fmt: skip
    client = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "sat"), node), **RUNNER_OPTIONS))
    await client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.stores.bus.healthy and node.election.primary_id == "n1", "satellite")
        yield client
    finally:
        await node.stop()
        await client.close()


# -- lifecycle ------------------------------------------------------------------------------------------------------


async def test_create_defaults_and_server_owned_keys(site: Site, admin: Headers) -> None:
    before = int(time.time())
    first = await create(site, admin, subject="Disk <b>full</b> on <i>db1</i>", body="See <script>x()</script>**log**",
                         num=77, username="mallory", created=5, modified=5, changes=[{"type": "comment"}],
                         files=[{"path": "users/admin/secret"}], jobs=["j1"], alerts=["a1"], template="")  # fmt: skip
    assert first["subject"] == "Disk full on db1" and first["body"] == "See **log**"
    assert first["num"] == 1 and first["username"] == "admin" and first["files"] == [] and first["jobs"] == []
    assert first["alerts"] == [] and before <= first["created"] == first["modified"] <= int(time.time())
    assert first["changes"] == [{"type": "change", "username": "admin", "date": first["created"], "key": "created"}]
    assert {k: first[k] for k in ("type", "status", "category", "server", "assignees", "cc", "notify", "due",
                                  "tags")} == {"type": "issue", "status": "open", "category": "", "server": "",
                                               "assignees": [], "cc": [], "notify": [], "due": 0, "tags": []}
    second = await create(site, admin, id="my_ticket", type="question", due="1 day")
    assert (second["id"], second["num"], second["type"]) == ("my_ticket", 2, "question")
    assert second["due"] > time.time() and second["due"] % 60 == 0  # the local midnight that starts tomorrow
    assert await get(site, admin, first["id"]) == first
    got = (await ok(site, "get_ticket", {"num": 2}, admin))["ticket"]
    assert got == second
    status, data = await site.call("get_ticket", method="GET", query={"num": "2"}, headers=admin)
    assert data["ticket"]["id"] == "my_ticket"
    status, data = await site.call("create_ticket", {"id": "my_ticket", "subject": "again"}, headers=admin)
    refused(status, data, 500, "ticket", "my_ticket")
    act = await ok(site, "search_activity", {"query": "action:ticket_create", "limit": 10}, admin)
    assert act["list"]["length"] == 2 and "changes" not in act["rows"][0]["ticket"]
    assert first["id"] in act["rows"][1]["keywords"]


async def test_update_history_collapse_and_drafts(site: Site, admin: Headers) -> None:
    ticket = await create(site, admin, assignees=["ann"], tags=[])
    tid = ticket["id"]
    got = await update(site, admin, tid, subject="Second", body="new body", assignees=["ann"], status="closed",
                       due=0, cc=["bob"], server="")  # fmt: skip
    keys = [c.get("key") for c in got["changes"]]
    assert keys == ["created", "subject", "body", "status", "cc"]  # unchanged values record nothing
    body_change = got["changes"][2]
    assert "value" not in body_change and got["changes"][1]["value"] == "Second"
    assert got["modified"] >= ticket["modified"] and got["num"] == ticket["num"]
    # Changes of one key within a calendar minute collapse into the last; whatever the clock did, no two subject
    # entries share a minute and the last one holds the last value.
    await update(site, admin, tid, subject="Third")
    got = await update(site, admin, tid, subject="Fourth")
    subjects = [c for c in got["changes"] if c.get("key") == "subject"]
    minutes = [time.strftime("%Y%m%d%H%M", time.localtime(c["date"])) for c in subjects]
    assert len(set(minutes)) == len(minutes) and subjects[-1]["value"] == "Fourth" and 1 <= len(subjects) <= 3
    assert (await get(site, admin, tid))["subject"] == "Fourth"
    # A draft records nothing but its creation, even when an update does not repeat the status.
    draft = await create(site, admin, status="draft")
    quiet = await update(site, admin, draft["id"], subject="Still a draft", tags=[])
    assert [c.get("key") for c in quiet["changes"]] == ["created"] and quiet["subject"] == "Still a draft"
    opened = await update(site, admin, draft["id"], status="open", subject="Now open")
    assert [c.get("key") for c in opened["changes"]] == ["created", "subject", "status"]
    act = await ok(site, "search_activity", {"query": "action:ticket_update", "limit": 20}, admin)
    assert act["list"]["length"] == 5 and "changes" not in act["rows"][0]["ticket"]
    status, data = await site.call("update_ticket", {"id": "nope", "subject": "x"}, headers=admin)
    refused(status, data, 404, "notfound", "nope")


async def test_comments_owners_and_delete_audit(site: Site, admin: Headers) -> None:
    editor = await make_user(site, admin, "ed", privileges={"create_tickets": True, "edit_tickets": True})
    other = await make_user(site, admin, "otto", privileges={"edit_tickets": True})
    ticket = await create(site, editor)
    tid = ticket["id"]
    got = (await ok(site, "add_ticket_change", {"id": tid, "change": {
        "type": "comment", "body": "Looks <img src=x onerror=y>bad", "key": "status", "value": "x", "id": "c_forged",
        "username": "admin", "date": 1}}, editor))["ticket"]  # fmt: skip
    comment = got["changes"][-1]
    assert comment["id"].startswith("c") and comment["id"] != "c_forged" and comment["username"] == "ed"
    assert comment["body"] == "Looks bad" and "key" not in comment and "value" not in comment
    assert comment["date"] >= ticket["created"] and got["modified"] == comment["date"]
    cid = comment["id"]
    status, data = await site.call("update_ticket_change", {"id": tid, "change_id": cid, "change": {"body": "mine"}},
                                   headers=other)  # fmt: skip
    refused(status, data, 403, "access", "posted by others")
    status, data = await site.call("update_ticket_change", {"id": tid, "change_id": "cnope", "delete": True},
                                   headers=editor)  # fmt: skip
    refused(status, data, 500, "ticket", f"{tid}/cnope")
    status, data = await site.call("update_ticket_change", {"id": tid, "change_id": cid}, headers=editor)
    refused(status, data, 500, "ticket", "'change'")
    edited = (await ok(site, "update_ticket_change", {"id": tid, "change_id": cid, "change": {
        "body": "Fixed <b>it</b>", "username": "otto", "id": "c2"}}, editor))["ticket"]["changes"][-1]  # fmt: skip
    assert (edited["id"], edited["username"], edited["body"]) == (cid, "ed", "Fixed it") and edited["edited"] > 0
    # An admin may change anyone's comment; a delete leaves an audit entry without an id.
    after = (await ok(site, "update_ticket_change", {"id": tid, "change_id": cid, "delete": True}, admin))["ticket"]
    assert [c.get("key") for c in after["changes"]] == ["created", "delete"]
    assert after["changes"][-1]["username"] == "admin" and "id" not in after["changes"][-1]
    for bad, word in [({"id": tid}, "'change'"), ({"id": tid, "change": {"body": "x"}}, "'type'"),
                      ({"id": tid, "change": {"type": "vote"}}, "vote")]:  # fmt: skip
        status, data = await site.call("add_ticket_change", bad, headers=editor)
        refused(status, data, 500, "ticket", word)
    for action, count in (("ticket_add_change", 1), ("ticket_update_change", 2)):
        act = await ok(site, "search_activity", {"query": f"action:{action}", "limit": 10}, admin)
        assert act["list"]["length"] == count, action
    act = await ok(site, "search_activity", {"query": "action:ticket_update_change", "limit": 1}, admin)
    assert act["rows"][0]["delete"] is True and act["rows"][0]["ticket"]["id"] == tid


async def test_validation_errors_name_the_field(site: Site, admin: Headers) -> None:
    await ok(site, "create_tag", {"id": "disk", "title": "Disk"}, admin)
    await create(site, admin, tags=["disk"])
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({}, 400, "api", "subject"),
        ({"subject": "   "}, 400, "api", "subject"),
        ({"subject": "x", "type": "bug"}, 500, "ticket", "Unknown ticket type: bug"),
        ({"subject": "x", "status": "pending"}, 500, "ticket", "Unknown ticket status: pending"),
        ({"subject": "x", "assignees": "ann"}, 500, "ticket", "Malformed ticket parameter: assignees"),
        ({"subject": "x", "cc": {"a": 1}}, 500, "ticket", "Malformed ticket parameter: cc"),
        ({"subject": "x", "notify": [5]}, 500, "ticket", "Malformed ticket parameter: notify"),
        ({"subject": "x", "tags": ["nope"]}, 500, "ticket", "Unknown tag: nope"),
        ({"subject": "x", "category": "nope"}, 500, "ticket", "Unknown category: nope"),
        ({"subject": "x", "events": [{"id": "nope"}]}, 500, "ticket", "Unknown event: nope"),
        ({"subject": "x", "due": "next week"}, 500, "ticket", "Malformed ticket parameter: due"),
        ({"subject": "x", "template": "server"}, 500, "ticket", "Unsupported ticket template"),
        ({"subject": "x", "template": "job", "job": "jnope"}, 500, "ticket", "jnope"),
        ({"subject": "x", "id": "Bad Id"}, 400, "api", "id"),
        ({"subject": "x" * 1025}, 400, "api", "subject"),
        ({"subject": "x", "body": "b" * (256 * 1024 + 1)}, 400, "api", "body"),
    ]
    for body, http, code, word in cases:
        status, data = await site.call("create_ticket", body, headers=admin)
        refused(status, data, http, code, word)
    status, data = await site.call("update_ticket", {"id": "t_x", "type": "bug"}, headers=admin)
    refused(status, data, 500, "ticket", "Unknown ticket type")
    for body, word in [({}, "No ticket ID"), ({"id": "Bad/Id"}, "id")]:
        status, data = await site.call("get_ticket", body, headers=admin)
        assert data["code"] in ("ticket", "api") and word in data["description"], data
    status, data = await site.call("get_ticket", {"num": 99}, headers=admin)
    refused(status, data, 404, "notfound", "Ticket not found: 99")
    status, data = await site.call("get_tickets", {"ids": []}, headers=admin)
    refused(status, data, 500, "ticket", "ids")
    status, data = await site.call("search_tickets", {"query": "nosuch:x"}, headers=admin)
    refused(status, data, 500, "ticket", "Failed DB search")
    # Nothing half-written: only the first ticket exists.
    assert (await ok(site, "search_tickets", {"query": "*"}, admin))["list"]["length"] == 1


# -- search ----------------------------------------------------------------------------------------------------------


async def test_search_every_column(site: Site, admin: Headers) -> None:
    for tag in ("disk", "net"):
        await ok(site, "create_tag", {"id": tag, "title": tag.title()}, admin)
    await ok(site, "create_category", {"id": "ops", "title": "Ops"}, admin)
    editor = await make_user(site, admin, "ed", privileges={"create_tickets": True, "edit_tickets": True})
    a = await create(site, admin, subject="Disk full on db1", body="The **volume** filled overnight", type="issue",
                     tags=["disk"], category="ops", server="s1", assignees=["ann"], cc=["carl"],
                     due=1_900_000_000)  # fmt: skip
    b = await create(site, editor, subject="Network flapping", body="Switch port errors", type="change",
                     status="draft", tags=["net", "disk"], assignees=["bob", "ann"], cc=[])  # fmt: skip
    c = await create(site, admin, subject="Upgrade plan", body="next release", type="release", due="3 days")
    await ok(site, "add_ticket_change", {"id": c["id"], "change": {"type": "comment", "body": "zebra stripes"}}, admin)
    await update(site, admin, a["id"], status="closed")
    job = await completed_job(site, admin)
    await ok(site, "manage_job_tickets", {"id": job["id"], "tickets": [a["id"], b["id"]]}, admin)
    await invocation(site, "ainv1")
    await ok(site, "manage_alert_invocation_tickets", {"id": "ainv1", "tickets": [c["id"]]}, admin)
    ids = {a["id"]: "a", b["id"]: "b", c["id"]: "c"}

    async def q(query: str, **extra: Any) -> list[str]:
        return sorted(ids[i] for i in await find(site, admin, query, **extra))

    expected = {
        "type:issue": ["a"], "type:change|release": ["b", "c"], "status:closed": ["a"], "status:draft": ["b"],
        "tags:disk": ["a", "b"], "tags:disk tags:net": ["b"], "tags:net|disk -tags:net": ["a"],
        "category:ops": ["a"], "server:s1": ["a"], f"jobs:{job['id']}": ["a", "b"], "alerts:ainv1": ["c"],
        "username:ed": ["b"], "username:admin": ["a", "c"], "assignees:ann": ["a", "b"], "assignees:bob": ["b"],
        "cc:carl": ["a"], f"num:{b['num']}": ["b"], f"num:>={b['num']}": ["b", "c"], "num:1..2": ["a", "b"],
        "created:today": ["a", "b", "c"], "modified:>=today": ["a", "b", "c"], "created:<2020-01-01": [],
        "due:>2030-01-01": ["a"], "due:<2030-01-01": ["c"], "due:>=today": ["a", "c"],
        "subject:disk": ["a"], 'subject:"network flapping"': ["b"], "body:volume": ["a"], "volume": ["a"],
        "disk": ["a"], "ed": ["b"], "overnight filled": ["a"], '"port errors"': ["b"], "zebra": [],
        "changes:zebra": ["c"], "changes:closed": ["a"], "*": ["a", "b", "c"], "": ["a", "b", "c"],
        '(type = "issue" | type = "release")': ["a", "c"], '(subject =~ "disk" & status = "closed")': ["a"],
    }  # fmt: skip
    for query, want in expected.items():
        assert await q(query) == want, query
    # The other direction was there already: the job and the invocation list their tickets.
    jobs = await ok(site, "search_jobs", {"query": f"tickets:{b['id']}", "limit": 5}, admin)
    assert [r["id"] for r in jobs["rows"]] == [job["id"]]
    alerts = await ok(site, "search_alerts", {"query": f"tickets:{c['id']}", "limit": 5}, admin)
    assert [r["id"] for r in alerts["rows"]] == ["ainv1"]
    # Unlinking takes the job out of the ticket's `jobs` too; an unknown ticket is refused.
    await ok(site, "manage_job_tickets", {"id": job["id"], "tickets": [b["id"]]}, admin)
    assert await q(f"jobs:{job['id']}") == ["b"] and (await get(site, admin, a["id"]))["jobs"] == []
    for api, obj_id in (("manage_job_tickets", job["id"]), ("manage_alert_invocation_tickets", "ainv1")):
        status, data = await site.call(api, {"id": obj_id, "tickets": [b["id"], "tnope"]}, headers=admin)
        refused(status, data, 500, "ticket", "Unknown ticket: tnope")
    assert (await get(site, admin, b["id"]))["jobs"] == [job["id"]]  # nothing changed by the refusals

    # Sorting: by num and by modified, both directions; _id is creation order.
    async def order(sort_by: str, sort_dir: int) -> list[str]:
        return [ids[i] for i in await find(site, admin, "*", sort_by=sort_by, sort_dir=sort_dir)]

    assert await order("num", 1) == ["a", "b", "c"] and await order("num", -1) == ["c", "b", "a"]
    assert await order("_id", -1) == ["c", "b", "a"]
    await asyncio.sleep(1.1)  # a later second for `modified` (an ordering, not a timing assertion)
    await update(site, admin, b["id"], subject="Network flapping again")
    assert (await order("modified", -1))[0] == "b" and (await order("modified", 1))[-1] == "b"
    # Paging, compact rows and the limit.
    data = await ok(site, "search_tickets", {"query": "*", "sort_by": "num", "sort_dir": 1, "offset": 1, "limit": 1},
                    admin)  # fmt: skip
    assert [ids[r["id"]] for r in data["rows"]] == ["b"] and data["list"]["length"] == 3
    status, data = await site.call("search_tickets", method="GET", headers=admin,
                                   query={"query": f"num:{c['num']}", "compact": "1"})  # fmt: skip
    row = data["rows"][0]
    assert "body" not in row and row["changes"] == 2 and row["subject"] == "Upgrade plan"
    full = (await ok(site, "search_tickets", {"query": f"num:{c['num']}"}, admin))["rows"][0]
    assert full["body"] == "next release" and len(full["changes"]) == 2
    # get_tickets: order kept, placeholders, light rows unless verbose.
    got = (await ok(site, "get_tickets", {"ids": [c["id"], "tnope", a["id"]]}, admin))["tickets"]
    assert [t.get("id") for t in got] == [c["id"], None, a["id"]]
    assert got[1] == {"err": "Failed to locate ticket: tnope"}
    assert "body" not in got[0] and "changes" not in got[0]
    verbose = (await ok(site, "get_tickets", {"ids": c["id"], "verbose": True}, admin))["tickets"][0]
    assert verbose["body"] == "next release"


async def test_category_limited_caller(site: Site, admin: Headers) -> None:
    for cat in ("ops", "dev"):
        await ok(site, "create_category", {"id": cat, "title": cat.title()}, admin)
    ops = await create(site, admin, subject="Ops thing", category="ops")
    dev = await create(site, admin, subject="Dev thing", category="dev")
    bare = await create(site, admin, subject="No category thing")
    limited = await make_user(site, admin, "opsonly", categories=["ops"],
                              privileges={"create_tickets": True, "edit_tickets": True, "delete_tickets": True})
    assert await find(site, limited, "thing") == [ops["id"]]
    assert await find(site, limited, "*") == [ops["id"]]
    # The restriction is a separate part of the plan: a query cannot break out of it.
    for query in ("category:dev", "category:dev|ops", ') | (category = "dev"',
                  '(category = "dev" | status = "open")', "thing category:ops|dev"):  # fmt: skip
        status, data = await site.call("search_tickets", {"query": query, "limit": 10}, headers=limited)
        assert data["code"] in (0, "ticket"), data
        assert all(r["id"] == ops["id"] for r in data.get("rows", [])), (query, data)
    assert await find(site, admin, "thing") == [bare["id"], dev["id"], ops["id"]]
    for ticket in (dev, bare):
        status, data = await site.call("get_ticket", {"id": ticket["id"]}, headers=limited)
        refused(status, data, 403, "access", "category")
        status, data = await site.call("update_ticket", {"id": ticket["id"], "subject": "x"}, headers=limited)
        refused(status, data, 403, "access", "category")
        status, data = await site.call("delete_ticket", {"id": ticket["id"]}, headers=limited)
        refused(status, data, 403, "access", "category")
    got = (await ok(site, "get_tickets", {"ids": [dev["id"], ops["id"]]}, limited))["tickets"]
    assert got[0] == {"err": f"Failed to locate ticket: {dev['id']}"} and got[1]["id"] == ops["id"]
    status, data = await site.call("update_ticket", {"id": ops["id"], "category": "dev"}, headers=limited)
    refused(status, data, 403, "access", "dev")
    status, data = await site.call("create_ticket", {"subject": "x", "category": "dev"}, headers=limited)
    refused(status, data, 403, "access", "dev")
    await create(site, limited, subject="Mine", category="ops")
    assert (await get(site, admin, dev["id"]))["subject"] == "Dev thing"


async def test_privileges_and_satellite(site: Site, admin: Headers, satellite: Client) -> None:
    ticket = await create(site, admin)
    reader = await make_user(site, admin, "reader", privileges={})
    for api, body, title in [("create_ticket", {"subject": "x"}, "Create Tickets"),
                             ("update_ticket", {"id": ticket["id"], "subject": "y"}, "Edit Tickets"),
                             ("add_ticket_change", {"id": ticket["id"], "change": {"type": "comment"}}, "Edit Tickets"),
                             ("delete_ticket", {"id": ticket["id"]}, "Delete Tickets")]:  # fmt: skip
        status, data = await site.call(api, body, headers=reader)
        refused(status, data, 403, "access", title)
    assert (await get(site, reader, ticket["id"]))["id"] == ticket["id"]
    # Reads answer on a satellite; writes name the primary.
    resp = await satellite.post("/api/app/get_ticket/v1", json={"id": ticket["id"]}, headers=admin)
    assert (await resp.json())["ticket"] == ticket
    resp = await satellite.post("/api/app/search_tickets/v1", json={"query": "ticket"}, headers=admin)
    assert (await resp.json())["list"]["length"] == 1
    resp = await satellite.post("/api/app/update_ticket/v1", json={"id": ticket["id"], "subject": "z"}, headers=admin)
    data = await resp.json()
    assert (resp.status, data["code"], data["url"]) == (500, "master", "http://127.0.0.1:5522")


# -- templates ---------------------------------------------------------------------------------------------------------


async def test_job_and_alert_templates(site: Site, admin: Headers) -> None:
    job = await completed_job(site, admin)
    ticket = await create(site, admin, subject="From a job", template="job", job=job["id"], body="ignored")
    assert ticket["subject"] == "From a job" and ticket["body"] != "ignored"  # ⚠ as xyOps: the body is generated
    assert job["id"] in ticket["body"] and "Nightly" in ticket["body"] and "<" not in ticket["body"]
    assert ticket["jobs"] == [] and "template" not in ticket  # linked only through manage_job_tickets, as xyOps
    status, data = await site.call("create_ticket", {"subject": " ", "template": "job", "job": job["id"]},
                                   headers=admin)  # fmt: skip
    refused(status, data, 400, "api", "subject")
    await invocation(site, "ainv2")
    alert = await create(site, admin, subject="From an alert", template="alert", alert="ainv2")
    assert "High load" in alert["body"] and "High CPU Load" in alert["body"]  # the invocation and its alert
    # The service the ticket actions call: no subject needed, and the ticket lists what it is about.
    by_job = await open_ticket(site.node, {"type": "change", "assignees": ["ann"], "due": "7 days", "num": 5},
                               username="system", job=job, template="job")  # fmt: skip
    assert by_job["subject"] == f"Job #{job['id']} failed with code: abort (Nightly)"
    assert (by_job["username"], by_job["jobs"], by_job["type"], by_job["num"]) == ("system", [job["id"]], "change", 3)
    assert by_job["due"] > time.time() + 6 * 86400
    source = await site.node.stores.alerts.get("ainv2")
    by_alert = await open_ticket(site.node, {}, username="system", invocation=source, template="alert")
    assert by_alert["subject"] == "Alert: High CPU Load on s1" and by_alert["alerts"] == ["ainv2"]
    assert await find(site, admin, f"jobs:{job['id']}") == [by_job["id"]]
    assert await find(site, admin, "alerts:ainv2") == [by_alert["id"]]
    with pytest.raises(TicketError) as caught:
        await open_ticket(site.node, {"tags": "x"}, username="system")
    assert (caught.value.code, caught.value.message) == ("ticket", "Malformed ticket parameter: tags")
    assert await link_invocation(site.node, "ainv2", by_alert["id"])
    assert (await site.node.stores.alerts.get("ainv2") or {})["tickets"] == [by_alert["id"]]
    assert await link_job(site.node, job["id"], by_job["id"])
    assert (await site.node.stores.jobs.get(job["id"]) or {})["tickets"] == [by_job["id"]]
    status, data = await site.call("create_ticket", {"subject": "x", "template": "alert", "alert": "nope"},
                                   headers=admin)  # fmt: skip
    refused(status, data, 500, "ticket", "nope")


# -- delete ------------------------------------------------------------------------------------------------------------


async def test_delete_takes_files_and_links(site: Site, admin: Headers) -> None:
    stores = site.node.stores
    ticket = await create(site, admin, subject="Doomed", tags=[])
    keep = await create(site, admin, subject="Kept")
    tid = ticket["id"]
    job = await completed_job(site, admin)
    await ok(site, "manage_job_tickets", {"id": job["id"], "tickets": [tid, keep["id"]]}, admin)
    await invocation(site, "ainv3")
    await ok(site, "manage_alert_invocation_tickets", {"id": "ainv3", "tickets": [tid]}, admin)
    await stores.files.put(f"files/tickets/{tid}/r4nd0m/log.txt", b"evidence")
    await stores.files.put(f"files/tickets/{keep['id']}/r4nd0m/other.txt", b"stays")
    await ok(site, "delete_ticket", {"id": tid}, admin)
    status, data = await site.call("get_ticket", {"id": tid}, headers=admin)
    refused(status, data, 404, "notfound", tid)
    status, data = await site.call("get_ticket", {"num": ticket["num"]}, headers=admin)
    refused(status, data, 404, "notfound")
    assert await find(site, admin, "doomed") == [] and await find(site, admin, "*") == [keep["id"]]

    async def swept() -> bool:
        got_job = await stores.jobs.get(job["id"])
        got_inv = await stores.alerts.get("ainv3")
        return (await stores.files.get(f"files/tickets/{tid}/r4nd0m/log.txt") is None and got_job is not None
                and got_job.get("tickets") == [keep["id"]] and got_inv is not None and got_inv["tickets"] == [])

    deadline = time.monotonic() + 20
    while not await swept():
        assert time.monotonic() < deadline, "the delete's sweep did not finish"
        await asyncio.sleep(0.05)
    assert await stores.files.get(f"files/tickets/{keep['id']}/r4nd0m/other.txt") == b"stays"
    assert (await ok(site, "search_jobs", {"query": f"tickets:{tid}"}, admin))["list"]["length"] == 0
    act = await ok(site, "search_activity", {"query": "action:ticket_delete", "limit": 5}, admin)
    assert act["rows"][0]["ticket"]["id"] == tid
    status, data = await site.call("delete_ticket", {"id": tid}, headers=admin)
    refused(status, data, 404, "notfound", tid)
    # Numbers are never given out again.
    assert (await create(site, admin, subject="Next"))["num"] == keep["num"] + 1


async def test_concurrent_updates_lose_nothing(site: Site, admin: Headers) -> None:
    ticket = await create(site, admin)
    bodies = [{"id": ticket["id"], "change": {"type": "comment", "body": f"comment {i}"}} for i in range(20)]
    replies = await asyncio.gather(*(site.call("add_ticket_change", b, headers=admin) for b in bodies))
    assert all(data["code"] == 0 for _, data in replies), replies
    got = await get(site, admin, ticket["id"])
    assert sorted(c["body"] for c in got["changes"] if c["type"] == "comment") == sorted(
        f"comment {i}" for i in range(20))
    assert await find(site, admin, "changes:comment") == [ticket["id"]]


async def test_the_overdue_search_pages_past_the_byte_budget(site: Site) -> None:
    """The primary's daily overdue pass finds every overdue ticket even when their records together are larger
    than one search page may be (five tickets near the 2 MiB record limit > 8 MiB)."""
    from api.server import ticket_mailer

    yesterday = int(time.time()) - 2 * 86400
    body = "x" * (10 * 1024)
    for n in range(100):
        await open_ticket(site.node, {"subject": f"Late {n}", "body": body, "due": yesterday}, username="admin",
                          activity=False)  # fmt: skip
    big = "z" * (250 * 1024)
    for n in range(100, 105):  # five tickets near the record limit: a page holding them all is too large
        ticket = await open_ticket(site.node, {"subject": f"Late {n}", "body": big, "due": yesterday},
                                   username="admin", activity=False)  # fmt: skip
        comments = [{"id": f"c{i}", "type": "comment", "body": big, "username": "admin", "date": 1} for i in range(6)]

        def fill(rec: dict[str, Any], c: list[dict[str, Any]] = comments) -> dict[str, Any]:
            return {**rec, "changes": c}

        await site.node.stores.tickets.update(site.node.fence(), ticket["id"], fill)
    await open_ticket(site.node, {"subject": "Not late", "due": yesterday + 10 * 86400}, username="admin",
                      activity=False)  # fmt: skip
    mailer = ticket_mailer(site.node, site.settings)
    assert mailer.find_overdue is not None
    found = await mailer.find_overdue(datetime.date.today())
    assert sorted(t["subject"] for t in found) == sorted(f"Late {n}" for n in range(105))


async def test_a_ticket_action_mails_its_new_ticket_at_once(site: Site) -> None:
    """The `ticket` action's new ticket is mailed at once, as create_ticket's is, not after the debounce."""
    from cluster.actions.ticket import make_ticket

    inv = await invocation(site, "ainv1")
    run = {"id": "run1", "action": {"type": "ticket", "ticket_type": "issue", "ticket_assignees": ["admin"]}}
    before = time.time()
    outcome, ticket_id = await make_ticket(site.node, run, base_url="", invocation=inv)
    assert ticket_id and outcome.code == 0, outcome
    due = await site.node.stores.ticket_outbox.due_at(ticket_id)
    assert due is not None and due <= before + 1, due  # due now, not 30 s on (no SMTP here: it stays queued)


async def test_a_ticket_past_the_record_limit_is_refused_with_code_ticket(site: Site, admin: Headers) -> None:
    ticket = await create(site, admin, body="y" * 200_000)
    body = "x" * (256 * 1024)
    codes: list[Any] = []
    for _ in range(12):  # 12 x 256 KiB of comments cannot fit in a 2 MiB record
        status, data = await site.call("add_ticket_change", {"id": ticket["id"], "change": {"type": "comment",
                                                                                          "body": body}},
                                       headers=admin)  # fmt: skip
        codes.append(data["code"])
        if data["code"] != 0:
            assert (status, data["code"]) == (500, "ticket") and "Failed to update ticket" in data["description"]
            break
    assert codes[-1] == "ticket" and codes[:-1] == [0] * (len(codes) - 1), codes
    stored = await get(site, admin, ticket["id"])
    assert len(stored["changes"]) == len(codes)  # the created entry and the comments that fitted
