"""Job actions on real jobs: completion and start actions of every condition, de-duplication, email to a real
SMTP sink and web hooks to a real receiver, run_event chains, suspend and resume, tag and label, event state,
notify-me. Real `podium serve` nodes, their own agents, real shell plugin processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.sinks import HookReceiver, MailSink, eventually

pytestmark = pytest.mark.timeout(300)
HOOK_BODY = '{"text": {{ stringify(text) }}, "job": "{{ job.id }}", "code": "{{ job.code }}"}'


@dataclass
class Bench:
    cluster: Cluster
    jobs: Jobs
    hooks: HookReceiver
    mail: MailSink

    @property
    def node(self) -> Node:
        return self.cluster.nodes[0]

    async def hook(self, hook_id: str) -> str:
        await self.jobs.ok(self.node, "create_web_hook", {
            "id": hook_id, "title": f"Hook {hook_id}", "url": f"{self.hooks.url}/{hook_id}", "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}], "body": HOOK_BODY})  # fmt: skip
        return hook_id

    async def tag(self, tag_id: str) -> None:
        await self.jobs.ok(self.node, "create_tag", {"id": tag_id, "title": tag_id.title()})

    async def settled(self, job_id: str, runs: int, timeout: float = 60.0) -> dict[str, Any]:
        """The completed job once `runs` action runs have recorded their results on it."""

        async def done() -> dict[str, Any] | None:
            job = await self.jobs.job(self.node, job_id)
            recorded = [r for r in job.get("activity") or [] if str(r.get("id", "")).startswith("r")]
            return job if job.get("state") == "complete" and len(recorded) >= runs else None

        result: dict[str, Any] = await eventually(done, timeout, f"{runs} action results on {job_id}")
        return result


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with HookReceiver() as hooks, MailSink() as mail:
        extra = ("--secret-key", SECRET, *mail.args())
        async with Cluster(tmp_path, size=1, extra=extra, env={"PODIUM_AGENT": "on"}) as c:
            node = await c.wait_single_primary()
            jobs = await Jobs.login(c, node)
            await jobs.wait_servers(node, 1)
            yield Bench(c, jobs, hooks, mail)


def action(condition: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"enabled": True, "condition": condition, "type": kind, **fields}


def ran(job: dict[str, Any], kind: str, condition: str) -> list[dict[str, Any]]:
    return [a for a in job.get("actions") or [] if a.get("type") == kind and a.get("condition") == condition
            and "code" in a]  # fmt: skip


async def test_completion_actions_by_condition_deduplicated(bench: Bench) -> None:
    jobs, node = bench.jobs, bench.node
    ok_hook, err_hook = await bench.hook("okhook"), await bench.hook("errhook")
    await bench.tag("bad")
    acts = [action("complete", "web_hook", web_hook=ok_hook), action("success", "web_hook", web_hook=ok_hook),
            action("error", "web_hook", web_hook=err_hook), action("success", "email", email="ops@example.com"),
            action("complete", "tag", tags=["finished"]), action("success", "label", label="Ran {{ job.id }}")]
    event = await jobs.event(node, "#!/bin/sh\necho fine\n", actions=acts)
    job_id = await jobs.run(node, event)
    job = await bench.settled(job_id, 4)
    assert job["code"] == 0
    assert len(bench.hooks.to("/okhook")) == 1  # complete and success name the same hook: it fires once
    assert not bench.hooks.to("/errhook")
    body = json.loads(bench.hooks.to("/okhook")[0].body)
    assert body["job"] == job_id and body["code"] == "0" and job_id in body["text"]
    mails = await eventually(lambda: [m for m in bench.mail.messages if "ops@example.com" in m.to], 30, "email")
    assert len(mails) == 1 and job_id in mails[0].text
    assert "finished" in job["tags"] and job["label"] == f"Ran {job_id}"
    hook_runs = ran(job, "web_hook", "complete")
    assert len(hook_runs) == 1 and hook_runs[0]["code"] == 0 and hook_runs[0]["elapsed_ms"] >= 0
    assert not ran(job, "web_hook", "success") and not ran(job, "web_hook", "error")  # deduplicated / no match
    assert any("Web hook action (complete)" in r["msg"] for r in job["activity"])

    # A failing job: error, user and tag:<id> conditions; success actions stay silent.
    fail_acts = [action("error", "web_hook", web_hook=err_hook), action("success", "web_hook", web_hook=ok_hook),
                 action("user", "email", email="oncall@example.com"), action("tag:bad", "label", label="bad one")]
    failing = await jobs.event(node, "#!/bin/sh\nexit 7\n", actions=fail_acts, tags=["bad"])
    failed = await bench.settled(await jobs.run(node, failing), 4)  # with the universal snapshot on error
    assert failed["code"] == 7
    assert len(bench.hooks.to("/errhook")) == 1 and len(bench.hooks.to("/okhook")) == 1
    await eventually(lambda: [m for m in bench.mail.messages if "oncall@example.com" in m.to], 30, "error email")
    assert failed["label"] == "bad one"


async def test_start_actions_suspend_and_resume(bench: Bench) -> None:
    jobs, node = bench.jobs, bench.node
    start_hook = await bench.hook("starthook")
    acts = [action("start", "web_hook", web_hook=start_hook), action("start", "suspend")]
    event = await jobs.event(node, "#!/bin/sh\necho resumed run\n", actions=acts)
    job_id = await jobs.run(node, event)
    held = await eventually(lambda: _suspended(jobs, node, job_id), 30, "suspension")
    assert held["state"] == "starting" and "server" in held
    await eventually(lambda: bench.hooks.to("/starthook"), 30, "start hook")
    assert "started" in json.loads(bench.hooks.to("/starthook")[0].body)["text"].lower()
    await jobs.ok(node, "resume_job", {"id": job_id, "params": {"extra": "1"}})
    done = await jobs.wait_job(node, job_id)
    assert done["code"] == 0 and done["params"]["extra"] == "1"
    assert "resumed run" in await jobs.log(node, job_id)
    assert len(bench.hooks.to("/starthook")) == 1  # start actions run once, not again after the resume
    _, reply = await jobs.call(node, "resume_job", {"id": job_id})
    assert reply["code"] == "job"

    # No run param gets past the hold: the state machine's own fields may not be overridden.
    for prop in ("start_runs", "suspended", "retried"):
        status, reply = await jobs.call(node, "run_event", {"id": event, "params": {f"_xy_override_{prop}": 1}})
        assert (status, reply["code"]) == (400, "api") and "reserved" in reply["description"], reply
    # A suspended job can be aborted: it completes at once, never launched.
    other = await jobs.run(node, event)
    await eventually(lambda: _suspended(jobs, node, other), 30, "second suspension")
    await jobs.ok(node, "abort_job", {"id": other})
    aborted = await jobs.wait_job(node, other)
    assert aborted["code"] == "abort" and not await jobs.log(node, other)


async def _suspended(jobs: Jobs, node: Node, job_id: str) -> dict[str, Any] | None:
    job = await jobs.job(node, job_id)
    return job if job.get("suspended") else None


async def test_run_event_chains_a_job_with_the_parents_output(bench: Bench) -> None:
    jobs, node = bench.jobs, bench.node
    child = await jobs.event(node, "#!/bin/sh\necho child ran\n", title="Child")
    parent = await jobs.event(node, '#!/bin/sh\necho \'{"xy": 1, "data": {"answer": 42}}\'\n',
                              actions=[action("success", "run_event", event_id=child)])  # fmt: skip
    parent_id = await jobs.run(node, parent)
    done = await bench.settled(parent_id, 1)
    links = [j for j in done.get("jobs") or [] if j.get("reason") == "action"]
    assert len(links) == 1, done
    chained = await jobs.wait_job(node, links[0]["id"])
    assert chained["event"] == child and chained["source"] == "action" and chained["code"] == 0
    assert chained["parent"]["job"] == parent_id and chained["input"]["data"] == {"answer": 42}


async def test_event_state_and_notify_me(bench: Bench) -> None:
    jobs, node = bench.jobs, bench.node
    event = await jobs.event(node, "#!/bin/sh\nsleep 2\necho done\n")
    first = await jobs.run(node, event)
    await jobs.wait_job(node, first, "active")
    reply = await jobs.ok(node, "job_toggle_notify_me", {"id": first})
    assert reply["enabled"] is True
    await jobs.wait_job(node, first)
    await eventually(lambda: [m for m in bench.mail.messages if "admin@localhost" in m.to], 30, "notify email")
    second = await jobs.run(node, event)
    done = await jobs.wait_job(node, second)
    state = (await jobs.ok(node, "get_global_state", method="GET"))["state"]["events"][event]
    assert state["total_count"] == 2 and state["last_job"] == second and state["last_code"] == 0
    assert state["total_elapsed"] >= 3.5 and state["last_completed"] == int(done["completed"])


async def test_a_job_cannot_push_what_only_the_conductor_may_do(bench: Bench) -> None:
    """A job's pushed actions are checked, in its live reports and in its final one: an internal type, an unknown
    type or a malformed action never runs; a sound pushed web hook does."""
    jobs, node = bench.jobs, bench.node
    hook = await bench.hook("pushed")
    evil = [{"condition": "complete", "type": "_event_change", "update": {"title": "Taken over"}},
            {"condition": "complete", "type": "shell_exec", "command": "touch /tmp/nope"},
            {"condition": "complete", "type": "web_hook", "web_hook": hook}]
    line = json.dumps({"xy": 1, "push": {"actions": evil}, "update_event": {"title": "Renamed", "targets": ["x"]}})
    event = await jobs.event(node, f"#!/bin/sh\necho '{line}'\n", title="Guarded")
    done = await bench.settled(await jobs.run(node, event), 2)  # the pushed hook and the allowed event change
    assert done["code"] == 0
    assert [a["type"] for a in done["actions"] if a.get("source") == "job"] == ["web_hook"]
    assert len(bench.hooks.to("/pushed")) == 1
    stored = (await jobs.ok(node, "get_event", {"id": event}, method="GET"))["event"]
    assert stored["title"] == "Renamed" and stored["targets"] == ["main"]  # title allowed, targets not
