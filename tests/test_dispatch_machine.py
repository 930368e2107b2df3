"""The dispatcher's state machine on a real in-process primary and real Redis, branch by branch: placing,
no server, concurrency and queues (drained in one step), delays, agent reports and finishes (idempotent), abort
and its deadline, the dead-job and finishing timeouts, a new primary adopting the jobs, and a deposed one.

Agents are represented by their records in the servers registry and by reading their command streams; the
agent side itself is tested end to end in tests/test_jobs_run.py and tests/test_jobs_chaos.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.dispatch.machine import NO_SERVERS, DispatchConfig, Dispatcher
from cluster.launcher import Launch, launch_job
from cluster.servers import merge_join
from storage.connection import Database
from storage.errors import FencedError
from storage.families import GROUPS
from tests.authkit import Site, open_site

Job = dict[str, Any]
FAST = DispatchConfig(dead_job_timeout_s=1.0, finishing_timeout_s=1.0, abort_timeout_s=1.0, tick_s=0.1,
                      inbox_block_ms=50)  # fmt: skip


@dataclass
class Bench:
    site: Site
    dispatcher: Dispatcher
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def stores(self) -> Any:
        return self.site.node.stores

    async def join(self, server_id: str, **extra: Any) -> None:
        groups = await self.stores.defs.all(GROUPS)
        record = merge_join(None, {"id": server_id, "hostname": f"{server_id}.example"}, time.time(), groups)
        await self.stores.servers.join({**record, **extra}, f"n1|{server_id}", 60_000)
        await self.stores.agents.post([{"server": server_id, "cmd": "joined", "data": {}}])

    async def event(self, **extra: Any) -> Job:
        event: Job = {"id": "e1", "title": "E", "enabled": True, "category": "general", "plugin": "shellplug",
                      "targets": ["main"], "algo": "random", "params": {"script": "true"}, **extra}  # fmt: skip
        return event

    async def launch(self, event: Job, **kw: Any) -> Job:
        job = await launch_job(self.site.node, Launch(event=event, source="user", **kw))
        assert job is not None
        return job

    async def job(self, job_id: str) -> Job:
        job = await self.stores.jobs.get(job_id)
        assert job is not None
        return dict(job)

    async def frames(self, server_id: str) -> list[Job]:
        got = await self.stores.agents.read_commands({server_id: "0-0"}, block_ms=0, count=1000)
        return [f for _, f in got.get(server_id, [])]

    async def report(self, server_id: str, cmd: str, data: Job) -> None:
        await self.stores.agents.post([{"server": server_id, "cmd": cmd, "data": data}])


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.02)


async def state_is(bench: Bench, job_id: str, *states: str) -> None:
    async def check() -> bool:
        return (await bench.job(job_id)).get("state") in states

    await until(check)


@contextlib.asynccontextmanager
async def running(site: Site, config: DispatchConfig = FAST) -> AsyncIterator[Bench]:
    dispatcher = site.node.dispatcher = Dispatcher(site.node, config)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await until(lambda: asyncio.sleep(0, dispatcher.loaded))
        yield Bench(site, dispatcher, stop, task)
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        site.node.dispatcher = None


@pytest.fixture
async def bench(db: Database, tmp_path: Path) -> AsyncIterator[Bench]:
    async for site in open_site(db, tmp_path / "data", login_ip_limit=0):
        async with running(site) as b:
            yield b


async def test_a_launch_is_placed_in_its_own_write(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    job = await bench.launch(await bench.event())
    stored = await bench.job(job["id"])
    assert stored["state"] == "active" and stored["server"] == "s1" and stored["remote"] is True
    assert stored["groups"] == ["main"] and "Chosen server" in stored["activity"][-1]["msg"]
    assert await bench.frames("s1") == [{"cmd": "launch_job", "data": {"id": job["id"]}}]


async def test_no_server_aborts_with_retry_allowed(bench: Bench) -> None:
    job = await bench.launch(await bench.event(targets=["nowhere"]))
    stored = await bench.job(job["id"])
    assert stored["state"] == "complete" and stored["code"] == "abort" and stored["description"] == NO_SERVERS
    assert stored["retry_ok"] is True and "_error" in stored["tags"]


async def test_concurrency_queue_and_one_step_drain(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    limits = [{"type": "job", "enabled": True, "amount": 2}, {"type": "queue", "enabled": True, "amount": 3}]
    event = await bench.event(limits=limits)
    jobs = [await bench.launch(event) for _ in range(6)]
    states = [(await bench.job(j["id"]))["state"] for j in jobs]
    assert states == ["active", "active", "queued", "queued", "queued", "complete"]
    assert "queue is full" in (await bench.job(jobs[5]["id"]))["description"]
    assert [(await bench.job(j["id"]))["position"] for j in jobs[2:5]] == [1, 2, 3]
    # Both running jobs finish: both free slots are filled in one step, and the rest renumbered.
    for job in jobs[:2]:
        await bench.report("s1", "finish", {"id": job["id"], "job": {"code": 0, "complete": True}})
    await state_is(bench, jobs[2]["id"], "active")
    await state_is(bench, jobs[3]["id"], "active")
    await until(lambda: _position(bench, jobs[4]["id"], 1))
    assert (await bench.job(jobs[0]["id"]))["code"] == 0


async def _position(bench: Bench, job_id: str, want: int) -> bool:
    return (await bench.job(job_id)).get("position") == want


async def test_reports_merge_and_a_second_finish_changes_nothing(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    job = await bench.launch(await bench.event())
    await bench.report("s1", "jobs", {job["id"]: {"progress": 0.4, "status": "half", "tags": ["x"], "server": "s9",
                                                  "push": {"tags": ["pushed"]}}})  # fmt: skip

    async def merged() -> bool:
        return (await bench.job(job["id"])).get("progress") == 0.4

    await until(merged)
    live = await bench.job(job["id"])
    assert live["status"] == "half" and live["server"] == "s1" and live["tags"] == ["pushed"]
    await bench.report("s2", "jobs", {job["id"]: {"progress": 0.9}})  # another agent's report is not taken
    await bench.report("s1", "finish", {"id": job["id"], "job": {"code": "Bad Thing", "description": "x"}})
    await state_is(bench, job["id"], "complete")
    await bench.report("s1", "finish", {"id": job["id"], "job": {"code": 0}})
    await bench.report("s1", "jobs", {job["id"]: {"progress": 0.7}})
    await asyncio.sleep(0.5)
    final = await bench.job(job["id"])
    assert final["code"] == "bad_thing" and final["progress"] == 1.0 and "_error" in final["tags"]
    aborts = [f for f in await bench.frames("s1") if f["cmd"] == "abort_job"]
    assert aborts and aborts[0]["data"]["id"] == job["id"]  # the late report is told to stop
    assert not await bench.stores.jobs.active()


async def test_abort_is_sent_and_wins_after_its_deadline(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    job = await bench.launch(await bench.event())
    assert await bench.dispatcher.abort(job["id"], "Manually aborted by user: admin")
    frames = await bench.frames("s1")
    assert frames[-1] == {"cmd": "abort_job", "data": {"id": job["id"], "reason": "Manually aborted by user: admin"}}
    await state_is(bench, job["id"], "complete")  # the agent never answers: abort_timeout_s
    final = await bench.job(job["id"])
    assert final["code"] == "abort" and final["description"] == "Manually aborted by user: admin"
    assert not await bench.dispatcher.abort(job["id"], "again")
    queued = await bench.launch(
        await bench.event(
            targets=["nowhere"],
            limits=[{"type": "job", "enabled": True, "amount": 1}, {"type": "queue", "enabled": True, "amount": 5}],
        )
    )
    assert (await bench.job(queued["id"]))["state"] == "queued"
    assert await bench.dispatcher.abort(queued["id"], "stop")  # not running: complete at once
    assert (await bench.job(queued["id"]))["code"] == "abort"


async def test_dead_job_and_finishing_timeouts(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    silent = await bench.launch(await bench.event())
    await state_is(bench, silent["id"], "complete")
    dead = await bench.job(silent["id"])
    assert dead["code"] == "abort" and "no updates received" in dead["description"].lower()
    stuck = await bench.launch(await bench.event())
    await bench.report("s1", "jobs", {stuck["id"]: {"state": "finishing", "code": 0}})
    await state_is(bench, stuck["id"], "complete")
    final = await bench.job(stuck["id"])
    assert final["code"] == "warning" and "did not finish" in final["description"]


async def test_delays_run_out_and_can_be_skipped(bench: Bench) -> None:
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    event = await bench.event()
    short = await bench.launch(event, start_delay=1)
    long = await bench.launch(event, start_delay=3600)
    assert (await bench.job(short["id"]))["state"] == "start_delay"
    await state_is(bench, short["id"], "active")
    assert await bench.dispatcher.skip_delay(long["id"])
    await state_is(bench, long["id"], "active")
    assert not await bench.dispatcher.skip_delay(long["id"])


async def test_a_new_primary_adopts_jobs_and_a_deposed_one_writes_nothing(db: Database, tmp_path: Path) -> None:
    slow = DispatchConfig(dead_job_timeout_s=600, tick_s=0.1, inbox_block_ms=50)
    async for site in open_site(db, tmp_path / "data", login_ip_limit=0):
        async with running(site, slow) as first:
            await first.join("s1")
            await until(lambda: asyncio.sleep(0, "s1" in first.dispatcher.servers))
            job = await first.launch(await first.event())
        # The next primary (here: a fresh dispatcher) loads the job from Redis and carries on with it.
        async with running(site, slow) as second:
            assert job["id"] in second.dispatcher.jobs
            await second.report("s1", "finish", {"id": job["id"], "job": {"code": 0}})
            await state_is(second, job["id"], "complete")
            # Deposed (its lease taken over at a higher epoch): no change it attempts is written.
            other = await second.launch(await second.event())
            await db.client.set(db.keys.leader, "someone-else")
            with pytest.raises(FencedError):
                await second.dispatcher.patch(other["id"], {"status": "should not land"})
            assert "status" not in await second.job(other["id"])
            await db.client.set(db.keys.leader, site.node.node_id)


async def test_job_calls_through_the_api(bench: Bench) -> None:
    sid, _ = await bench.site.login()
    admin = {"X-Session-ID": sid}

    async def ok(name: str, body: Job) -> Job:
        status, data = await bench.site.call(name, body, headers=admin)
        assert (status, data.get("code")) == (200, 0), (name, data)
        return data

    done = await bench.launch(await bench.event(targets=["nowhere"]))
    await ok("manage_job_tags", {"id": done["id"], "tags": ["blue", "red", "blue"]})
    assert (await bench.job(done["id"]))["tags"] == ["blue", "red"]
    found = await ok("search_jobs", {"query": "tags:blue"})
    assert [r["id"] for r in found["rows"]] == [done["id"]]
    assert (await ok("search_jobs", {"query": "tags:_error"}))["rows"] == []  # the old tags left the index
    await ok("create_ticket", {"id": "t1", "subject": "Linked"})  # a linked ticket must exist
    await ok("manage_job_tickets", {"id": done["id"], "tickets": ["t1"]})
    assert (await bench.job(done["id"]))["tickets"] == ["t1"]
    await bench.join("s1")
    await until(lambda: asyncio.sleep(0, "s1" in bench.dispatcher.servers))
    live = await bench.launch(await bench.event(), start_delay=3600)
    status, data = await bench.site.call("manage_job_tags", {"id": live["id"], "tags": ["x"]}, headers=admin)
    assert data["code"] == "job"  # live jobs keep their tags until they complete
    await ok("update_job", {"id": live["id"], "job": {"label": "nightly"}})
    assert (await bench.job(live["id"]))["label"] == "nightly"
    status, data = await bench.site.call("update_job", {"id": live["id"], "state": "complete"}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "state" in data["description"]
    await ok("job_skip_delay", {"id": live["id"]})
    await state_is(bench, live["id"], "active")
    await ok("abort_job", {"id": live["id"]})
    assert (await bench.frames("s1"))[-1]["cmd"] == "abort_job"
    assert (await bench.job(live["id"]))["aborting"]["reason"] == "Manually aborted by user: admin"
    status, data = await bench.site.call("abort_job", {"id": done["id"]}, headers=admin)
    assert data["code"] == "job"
