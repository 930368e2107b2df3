"""Actions across a failover: the primary is killed (-9) in the middle of a job's completion, and every email and
web hook of that completion is delivered exactly once. Three real nodes, a real agent connected to all of them,
a real SMTP sink and web hook receiver on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jobkit import SECRET, Jobs, agent
from tests.servers import AgentProcess, Cluster, Node
from tests.sinks import HookReceiver, MailSink, eventually

pytestmark = pytest.mark.timeout(300)


@dataclass
class Bench:
    cluster: Cluster
    jobs: Jobs
    hooks: HookReceiver
    mail: MailSink
    agent: AgentProcess

    async def primary(self) -> Node:
        return await self.cluster.wait_single_primary(timeout=60)

    async def any_node(self) -> Node:
        return next(n for n in self.cluster.nodes if n.running)

    async def event(self, script: str, hook: str, to: str) -> str:
        node = await self.primary()
        await self.jobs.ok(node, "create_web_hook", {
            "id": hook, "title": hook, "url": f"{self.hooks.url}/{hook}", "method": "POST",
            "body": '{"job": "{{ job.id }}"}', "timeout": 60})  # fmt: skip
        acts = [{"enabled": True, "condition": "complete", "type": "web_hook", "web_hook": hook},
                {"enabled": True, "condition": "complete", "type": "email", "email": to}]
        return await self.jobs.event(node, script, actions=acts)

    async def recorded(self, job_id: str, runs: int) -> dict[str, Any]:
        """The job once `runs` action results are on it, read from any live node."""

        async def done() -> dict[str, Any] | None:
            try:
                job = await self.jobs.job(await self.any_node(), job_id)
            except (TimeoutError, AssertionError, OSError):
                return None
            rows = [r for r in job.get("activity") or [] if str(r.get("id", "")).startswith("r")]
            return job if job.get("state") == "complete" and len(rows) >= runs else None

        found: dict[str, Any] = await eventually(done, 90, f"{runs} action results on {job_id}")
        return found

    def mails_to(self, address: str) -> list[Any]:
        return [m for m in self.mail.messages if address in m.to]


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with HookReceiver() as hooks, MailSink() as mail:
        extra = ("--secret-key", SECRET, "--lease-ms", "3000", *mail.args())
        async with Cluster(tmp_path, size=3, extra=extra) as c:
            primary = await c.wait_single_primary(timeout=60)
            jobs = await Jobs.login(c, primary)
            worker = agent(tmp_path, "w", *(n.url for n in c.nodes)).start()
            try:
                await jobs.wait_servers(primary, 1)
                yield Bench(c, jobs, hooks, mail, worker)
            finally:
                worker.kill9()


async def run_on_primary(b: Bench, event_id: str) -> str:
    return await b.jobs.run(await b.primary(), event_id)


async def test_primary_killed_while_the_completion_actions_run(bench: Bench) -> None:
    """The web hook is in flight (held by the receiver) and the email sent when the primary dies: the next
    primary finds both runs claimed and repeats neither."""
    event = await bench.event("#!/bin/sh\necho quick\n", "heldhook", "held@example.com")
    bench.hooks.hold()
    victim = await bench.primary()
    job_id = await run_on_primary(bench, event)
    await eventually(lambda: bench.hooks.to("/heldhook"), 60, "the web hook to arrive")
    await eventually(lambda: bench.mails_to("held@example.com"), 60, "the email to arrive")
    victim.kill9()
    bench.hooks.release()
    survivor = await bench.cluster.wait_single_primary(timeout=60, nodes=[n for n in bench.cluster.nodes if n.running])
    assert survivor is not victim
    job = await bench.recorded(job_id, 2)
    await asyncio.sleep(3)  # time for a wrong second delivery to show
    assert len(bench.hooks.to("/heldhook")) == 1
    assert len(bench.mails_to("held@example.com")) == 1
    hook = next(a for a in job["actions"] if a["type"] == "web_hook")
    assert hook["code"] == "interrupted", hook  # its answer died with the primary: recorded so, never sent again
    sent = next(a for a in job["actions"] if a["type"] == "email")
    assert sent["code"] in (0, "interrupted"), sent  # sent; recorded by the old primary, or found claimed
    victim.start()


async def test_primary_killed_before_the_job_finishes(bench: Bench) -> None:
    """The job finishes while there is no primary: its finish waits in the inbox and the next primary runs the
    completion actions, once."""
    event = await bench.event("#!/bin/sh\nsleep 4\necho slow\n", "latehook", "late@example.com")
    victim = await bench.primary()
    job_id = await run_on_primary(bench, event)
    await bench.jobs.wait_job(victim, job_id, "active")
    victim.kill9()
    job = await bench.recorded(job_id, 2)
    assert job["code"] == 0
    await asyncio.sleep(3)
    assert len(bench.hooks.to("/latehook")) == 1
    assert len(bench.mails_to("late@example.com")) == 1
    assert all(a.get("code") == 0 for a in job["actions"] if a["type"] in ("web_hook", "email")), job["actions"]
    # The restarted node joins as a satellite; nothing is sent again when it does.
    victim.start()
    await bench.cluster.wait_all_up(60)
    await asyncio.sleep(3)
    assert len(bench.hooks.to("/latehook")) == 1 and len(bench.mails_to("late@example.com")) == 1
