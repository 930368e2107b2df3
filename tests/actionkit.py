"""A bench for tests of job policies on real processes: one `podium serve` node with its own agent, a web hook
receiver and an SMTP sink (tests/sinks.py), and the lookups those tests share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.sinks import HookReceiver, Mail, MailSink, Received, eventually

Record = dict[str, Any]
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

    async def hook(self, hook_id: str, **fields: Any) -> str:
        await self.jobs.ok(self.node, "create_web_hook", {
            "id": hook_id, "title": f"Hook {hook_id}", "url": f"{self.hooks.url}/{hook_id}", "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}], "body": HOOK_BODY,
            **fields})  # fmt: skip
        return hook_id

    async def tags(self, *tag_ids: str) -> None:
        for tag_id in tag_ids:
            await self.jobs.ok(self.node, "create_tag", {"id": tag_id, "title": tag_id.title()})

    def hooks_for(self, path: str, job_id: str) -> list[Received]:
        """The requests to `path` whose body names `job_id`."""
        return [r for r in self.hooks.to(path) if json.loads(r.body).get("job") == job_id]

    def mails_for(self, address: str, job_id: str) -> list[Mail]:
        return [m for m in self.mail.messages if address in m.to and job_id in m.text]

    async def done(self, job_id: str, *, recorded: int = 0, timeout: float = 60.0) -> Record:
        """The completed job once `recorded` of its actions have their results (limit sub-actions included)."""

        async def check() -> Record | None:
            job = await self.jobs.job(self.node, job_id)
            ran = [a for a in job.get("actions") or [] if "code" in a]
            return job if job.get("state") == "complete" and len(ran) >= recorded else None

        result: Record = await eventually(check, timeout, f"{job_id} complete with {recorded} action results")
        return result

    async def chain(self, first: str, count: int, timeout: float = 90.0) -> list[Record]:
        """`first` and its retries, `count` jobs in all, each complete (follows the `reason: retry` links)."""
        out = [await self.jobs.wait_job(self.node, first, timeout=timeout)]
        while len(out) < count:
            links = [j["id"] for j in out[-1].get("jobs") or [] if j.get("reason") == "retry"]
            assert len(links) == 1, out[-1]
            out.append(await self.jobs.wait_job(self.node, links[0], timeout=timeout))
        return out


@asynccontextmanager
async def bench_on(tmp_path: Path, *extra: str) -> AsyncIterator[Bench]:
    """A one-node cluster with its own agent, its email sent to a sink; `extra` are more `podium serve` options."""
    async with HookReceiver() as hooks, MailSink() as mail:
        args = ("--secret-key", SECRET, *mail.args(), *extra)
        async with Cluster(tmp_path, size=1, extra=args, env={"PODIUM_AGENT": "on"}) as cluster:
            node = await cluster.wait_single_primary()
            jobs = await Jobs.login(cluster, node)
            await jobs.wait_servers(node, 1)
            yield Bench(cluster, jobs, hooks, mail)


def action(condition: str, kind: str, **fields: Any) -> Record:
    return {"enabled": True, "condition": condition, "type": kind, **fields}


def limit(kind: str, **fields: Any) -> Record:
    return {"enabled": True, "type": kind, **fields}


def results(job: Record, kind: str, condition: str) -> list[Record]:
    """The job's actions of `kind` for `condition` that ran (have a result)."""
    return [a for a in job.get("actions") or [] if a.get("type") == kind and a.get("condition") == condition
            and "code" in a]  # fmt: skip


def meta(job: Record, text: str) -> list[str]:
    """The job's meta-log lines that contain `text`."""
    return [str(r["msg"]) for r in job.get("activity") or [] if text in str(r.get("msg", ""))]


def fired(job: Record, kind: str) -> list[Record]:
    """The job's limits of `kind` that fired."""
    return [lim for lim in job.get("limits") or [] if lim.get("type") == kind and lim.get("date")]


def agent_process(node: Node) -> psutil.Process:
    """The agent `podium serve` runs for its own machine (api/childagent.py): a child of the node."""
    found = [p for p in psutil.Process(node.pid).children() if "agent" in p.cmdline()]
    assert len(found) == 1, found
    return found[0]
