"""More job actions on real jobs: action plugins (their own results and failures), a snapshot, ticket recorded as
skipped, disable and delete of the event, a job's own update_event, channels (email, web hook and run_event, each
once), pushed `instant` actions while the job runs, de-duplication across event and category actions, a web
hook's daily cap, and what a job sends in its last moment. Real `podium serve` nodes, their own agents, real
shell jobs and real action plugin processes."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.actionkit import Bench, Record, action, bench_on, meta, results
from tests.sinks import eventually

pytestmark = pytest.mark.timeout(300)


async def action_plugin(bench: Bench, tmp_path: Path, plugin_id: str, source: str) -> str:
    path = tmp_path / f"{plugin_id}.py"
    path.write_text(textwrap.dedent(source))
    await bench.jobs.ok(bench.node, "create_plugin", {"id": plugin_id, "title": f"Plugin {plugin_id}",
                                                      "type": "action", "command": f"{sys.executable} {path}"})
    return plugin_id


async def event_of(bench: Bench, event_id: str) -> Record | None:
    status, reply = await bench.jobs.call(bench.node, "get_event", {"id": event_id}, method="GET")
    return dict(reply["event"]) if status == 200 and reply.get("code") == 0 else None


async def _asked(bench: Bench, job_id: str) -> Record | None:
    job = await bench.jobs.job(bench.node, job_id)
    return job if meta(job, "as the job asked") else None


async def test_plugins_skipped_kinds_and_changes_to_the_event(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        good = await action_plugin(bench, tmp_path, "pgood", """
            import json, sys
            doc = json.loads(sys.stdin.readline())
            print(json.dumps({"xy": 1, "code": 0,
                              "description": f"acted on {doc['job']['id']} ({doc['condition']})"}))
        """)
        refusing = await action_plugin(bench, tmp_path, "prefuse", """
            import json
            print(json.dumps({"xy": 1, "code": "quota", "description": "over the quota"}))
        """)
        crashing = await action_plugin(bench, tmp_path, "pcrash", """
            import sys
            print("boom", file=sys.stderr)
            sys.exit(3)
        """)
        acts = [action("success", "plugin", plugin_id=good), action("complete", "plugin", plugin_id=refusing),
                action("complete", "plugin", plugin_id=crashing), action("complete", "snapshot"),
                action("complete", "ticket", ticket_type="issue")]  # fmt: skip
        event = await jobs.event(node, "#!/bin/sh\necho fine\n", actions=acts)
        job_id = await jobs.run(node, event)
        job = await bench.done(job_id, recorded=5)
        (ran,) = results(job, "plugin", "success")
        assert (ran["code"], ran["description"]) == (0, f"acted on {job_id} (success)"), ran
        refused, crashed = results(job, "plugin", "complete")
        assert (refused["code"], refused["description"]) == ("quota", "over the quota"), refused
        assert (crashed["code"], crashed["description"]) == ("plugin", "Plugin exited with code 3"), crashed
        assert "boom" in crashed["details"]
        assert meta(job, "Plugin action (complete): over the quota")
        (made,) = results(job, "ticket", "complete")  # a ticket about the job, linked both ways
        assert made["code"] == 0 and made["description"].startswith("Successfully created ticket: #"), made
        ticket_id = made["description"].rsplit("(", 1)[1].rstrip(")")
        ticket = (await jobs.ok(node, "get_ticket", {"id": ticket_id}))["ticket"]
        assert ticket["type"] == "issue" and ticket["username"] == "system" and ticket["status"] == "open"
        assert job_id in ticket["subject"] and job_id in ticket["jobs"] and ticket["num"] >= 1
        assert ticket_id in (await jobs.ok(node, "get_job", {"id": job_id}))["job"]["tickets"]
        found = await jobs.ok(node, "search_tickets", {"query": f"jobs:{job_id}"})
        assert [r["id"] for r in found["rows"]] == [ticket_id]
        (snapped,) = results(job, "snapshot", "complete")  # the agent may not have sent its first sample yet
        assert (snapped["code"] == 0 and "Successfully took snapshot" in snapped["description"]) or \
            (snapped["code"] == "snapshot" and "No monitoring data" in snapped["description"]), snapped  # fmt: skip

        # disable and delete act on the job's own event, once the job is done.
        disabling = await jobs.event(node, "#!/bin/sh\necho x\n", actions=[action("complete", "disable")])
        deleting = await jobs.event(node, "#!/bin/sh\necho x\n", actions=[action("complete", "delete")])
        # update_event from the job itself: the allowed fields change, others are ignored.
        printing = ('#!/bin/sh\necho \'{"xy": 1, "update_event": {"notes": "set by the job", "title": "Renamed",'
                    ' "targets": ["nowhere"], "plugin": "other", "limits": [{"type": "time"}]}}\'\n')  # fmt: skip
        updating = await jobs.event(node, printing, notes="before")
        before = await event_of(bench, updating)
        assert before is not None
        for event_id in (disabling, deleting):
            await bench.done(await jobs.run(node, event_id), recorded=1)
        changed = await event_of(bench, disabling)
        assert changed is not None and changed["enabled"] is False
        assert await event_of(bench, deleting) is None
        updater = await bench.done(await jobs.run(node, updating))
        done = await eventually(lambda: _asked(bench, updater["id"]), 30, "the event change recorded")
        assert meta(done, "Updated the event (notes, title), as the job asked."), done["activity"]
        updated = await event_of(bench, updating)
        assert updated is not None and (updated["notes"], updated["title"]) == ("set by the job", "Renamed")
        assert (updated["targets"], updated["plugin"], updated["limits"]) == \
            (before["targets"], before["plugin"], before["limits"])  # fmt: skip
        assert updated["revision"] == before["revision"] + 1
        _, reply = await jobs.call(node, "run_event", {"id": disabling})
        assert reply["code"] == "event" and "disabled" in reply["description"].lower()


async def test_channels_instant_actions_deduplication_and_daily_cap(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        for hook_id in ("chanhook", "insthook", "duphook"):
            await bench.hook(hook_id)
        await bench.hook("caphook", max_per_day=1)

        # A channel: its users' and its own addresses by email, its web hook and its event, each once.
        child = await jobs.event(node, "#!/bin/sh\necho child\n", title="Channel child")
        channel = (await jobs.ok(node, "create_channel", {"title": "Ops channel", "users": ["admin"],
                                                          "email": "chan@example.com", "web_hook": "chanhook",
                                                          "run_event": child}))["channel"]["id"]  # fmt: skip
        notifying = await jobs.event(node, "#!/bin/sh\necho hi\n",
                                     actions=[action("success", "channel", channel_id=channel)])  # fmt: skip
        job_id = await jobs.run(node, notifying)
        job = await bench.done(job_id, recorded=1)
        (ran,) = results(job, "channel", "success")
        assert (ran["code"], ran["description"]) == (0, "Successfully notified channel: Ops channel"), ran
        for section in ("### Email Details:", "### Web Hook Details:", "### Event Details:"):
            assert section in ran["details"]
        mails = await eventually(lambda: bench.mails_for("chan@example.com", job_id), 30, "channel email")
        assert len(mails) == 1 and sorted(mails[0].to) == ["admin@localhost", "chan@example.com"]
        assert len(bench.hooks_for("/chanhook", job_id)) == 1
        (link,) = [j for j in job.get("jobs") or [] if j.get("reason") == "action"]
        chained = await jobs.wait_job(node, link["id"])
        assert chained["event"] == child and chained["source"] == "action" and chained["parent"]["job"] == job_id

        # An instant action pushed while the job runs fires at once: the job waits for the test's go-ahead.
        go = tmp_path / "go"
        push = {"xy": 1, "push": {"actions": [{"condition": "instant", "type": "web_hook", "web_hook": "insthook"},
                                              {"condition": "instant", "type": "email", "email": "inst@example.com"}]}}
        script = f"#!/bin/sh\necho '{json.dumps(push)}'\nwhile [ ! -f {go} ]; do sleep 0.1; done\necho released\n"
        running = await jobs.run(node, await jobs.event(node, script))
        (request,) = await eventually(lambda: bench.hooks.to("/insthook"), 30, "instant web hook")
        assert json.loads(request.body)["job"] == running
        (mail,) = await eventually(lambda: bench.mails_for("inst@example.com", running), 30, "instant email")
        assert "still running" in mail.text, mail.text  # the job_progress template
        assert (await jobs.job(node, running))["state"] == "active"  # it cannot end before `go` exists
        go.touch()
        finished = await bench.done(running, recorded=2)
        (instant,) = results(finished, "web_hook", "instant")
        assert instant["code"] == 0 and instant["source"] == "job"
        assert len(bench.hooks.to("/insthook")) == 1 and len(bench.mails_for("inst@example.com", running)) == 1

        # The same hook on the event and on its category: one request.
        category = (await jobs.ok(node, "create_category", {"title": "Dup category", "actions": [
            action("complete", "web_hook", web_hook="duphook")]}))["category"]["id"]  # fmt: skip
        doubled = await jobs.event(node, "#!/bin/sh\necho dup\n", category=category,
                                   actions=[action("complete", "web_hook", web_hook="duphook"),
                                            action("success", "web_hook", web_hook="duphook")])  # fmt: skip
        dup_id = await jobs.run(node, doubled)
        dup = await bench.done(dup_id, recorded=1)
        assert len(bench.hooks_for("/duphook", dup_id)) == 1
        sources = [a.get("source") for a in dup["actions"] if a.get("web_hook") == "duphook"]
        assert sorted(s or "event" for s in sources) == ["category", "event", "event"], dup["actions"]
        assert [a.get("source", "event") for a in dup["actions"] if "code" in a and a["type"] == "web_hook"] == \
            ["event"]  # fmt: skip

        # A hook's daily cap: the second job's call is refused and recorded so.
        capped = await jobs.event(node, "#!/bin/sh\necho cap\n", actions=[action("complete", "web_hook",
                                                                                  web_hook="caphook")])
        first = await bench.done(await jobs.run(node, capped), recorded=1)
        second = await bench.done(await jobs.run(node, capped), recorded=1)
        assert results(first, "web_hook", "complete")[0]["code"] == 0
        (refused,) = results(second, "web_hook", "complete")
        assert refused["code"] == "webhook" and "maximum daily limit" in refused["description"], refused
        assert [json.loads(r.body)["job"] for r in bench.hooks.to("/caphook")] == [first["id"]]


async def test_what_a_job_sends_in_its_last_moment_arrives(tmp_path: Path) -> None:
    """A job that pushes tags and prints a table as its last act, then exits at once: its final report goes by
    HTTP while those went over the agent's socket, and they still arrive (with the agent's meta lines)."""
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        await bench.tags("lastword")
        table = {"title": "Last", "header": ["a"], "rows": [["1"]]}
        record = {"xy": 1, "push": {"tags": ["lastword"]}, "table": table}
        event = await jobs.event(node, f"#!/bin/sh\necho '{json.dumps(record)}'\n")
        ids = [await jobs.run(node, event) for _ in range(12)]
        for job_id in ids:
            job = await jobs.wait_job(node, job_id)
            assert "lastword" in job["tags"] and job.get("table", {}).get("rows") == [["1"]], job
            assert meta(job, "Spawned child process"), job["activity"]
