"""Jobs that really run: a node's own agent, standalone agents, the shell plugin, abort and kill modes, the
dead-job timeout, and queue and concurrency limits over several agents. Real nodes, agents and processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.jobkit import SECRET, Jobs, agent, alive
from tests.servers import Cluster, Node

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Jobs]]:
    """One node with its own agent (the default of `podium serve`)."""
    async with Cluster(tmp_path, size=1, extra=("--secret-key", SECRET), env={"PODIUM_AGENT": "on"}) as c:
        node = await c.wait_single_primary()
        jobs = await Jobs.login(c, node)
        await jobs.wait_servers(node, 1)
        yield c, jobs


async def test_shell_jobs_on_the_nodes_own_agent(single: tuple[Cluster, Jobs]) -> None:
    c, jobs = single
    node = c.nodes[0]
    ok_event = await jobs.event(node, "#!/bin/sh\necho first line\necho 50%\necho 'to stderr' >&2\necho last line\n")
    job_id = await jobs.run(node, ok_event)
    done = await jobs.wait_job(node, job_id)
    assert done["code"] == 0, done
    assert done["server"] and done["final"] is True and "_success" in done["tags"]
    log = await jobs.log(node, job_id)
    assert log.index("first line") < log.index("last line") and "to stderr" in log
    assert "50%" not in log.splitlines()  # a progress line is not output
    bad_event = await jobs.event(node, "#!/bin/sh\necho failing\nexit 3\n")
    failed = await jobs.wait_job(node, await jobs.run(node, bad_event))
    assert failed["code"] == 3 and "exited with code: 3" in failed["description"].lower(), failed
    assert "_error" in failed["tags"]


async def test_abort_kills_the_process_group_and_kill_none_leaves_it(single: tuple[Cluster, Jobs]) -> None:
    c, jobs = single
    node = c.nodes[0]
    script = "#!/bin/sh\nsleep 300 &\necho child $!\necho parent $$\nwait\n"
    job_id = await jobs.run(node, await jobs.event(node, script))
    await jobs.wait_job(node, job_id, "active")
    log = await wait_log(jobs, node, job_id, "parent")
    pids = [int(p) for p in re.findall(r"(?:child|parent) (\d+)", log)]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    await jobs.ok(node, "abort_job", {"id": job_id})
    aborted = await jobs.wait_job(node, job_id)
    assert aborted["code"] == "abort" and "aborted by user" in aborted["description"].lower()
    await until(lambda: not any(alive(p) for p in pids))
    # A plugin with kill: none leaves its process running when the job is aborted.
    plugin = (await jobs.ok(node, "get_plugin", {"id": "shellplug"}, method="GET"))["plugin"]
    await jobs.ok(node, "create_plugin", {**{k: v for k, v in plugin.items() if k not in ("id", "stock", "created",
                                          "modified", "revision", "username")}, "id": "keepshell", "kill": "none",
                                          "title": "Shell, kill none"})  # fmt: skip
    keep = await jobs.event(node, script, plugin="keepshell")
    kept_id = await jobs.run(node, keep)
    log = await wait_log(jobs, node, kept_id, "parent")
    kept = [int(p) for p in re.findall(r"(?:child|parent) (\d+)", log)]
    await jobs.ok(node, "abort_job", {"id": kept_id})
    assert (await jobs.wait_job(node, kept_id))["code"] == "abort"
    await asyncio.sleep(1.0)
    assert all(alive(p) for p in kept)
    for pid in kept:
        with contextlib.suppress(ProcessLookupError):  # the parent ends once its child is gone
            os.kill(pid, signal.SIGKILL)


async def test_dead_job_timeout_aborts_a_job_whose_agent_died(tmp_path: Path) -> None:
    extra = ("--secret-key", SECRET, "--dead-job-timeout", "4")
    async with Cluster(tmp_path, size=1, extra=extra) as c:
        node = await c.wait_single_primary()
        jobs = await Jobs.login(c, node)
        worker = agent(tmp_path, "dead", node.url).start()
        try:
            await jobs.wait_servers(node, 1)
            job_id = await jobs.run(node, await jobs.event(node, "#!/bin/sh\necho started\nexec sleep 300\n"))
            await wait_log(jobs, node, job_id, "started")
            worker.kill9()
            started = time.monotonic()
            done = await jobs.wait_job(node, job_id, timeout=60)
            assert done["code"] == "abort" and "no updates received" in done["description"].lower(), done
            assert time.monotonic() - started >= 3.0
        finally:
            worker.kill9()
            for pid in sleepers(worker.directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def test_queue_and_concurrency_limits_over_several_agents(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2, extra=("--secret-key", SECRET)) as c:
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        jobs = await Jobs.login(c, primary)
        agents = [agent(tmp_path, "a", primary.url).start(), agent(tmp_path, "b", satellite.url).start()]
        try:
            await jobs.wait_servers(primary, 2)
            limits = [{"type": "job", "enabled": True, "amount": 2}, {"type": "queue", "enabled": True, "amount": 3}]
            event = await jobs.event(primary, "#!/bin/sh\necho run $JOB_ID\nsleep 1.5\n", limits=limits,
                                     algo="round_robin")  # fmt: skip
            ids = [await jobs.run(primary, event) for _ in range(6)]
            states = [(await jobs.job(primary, i))["state"] for i in ids]
            assert states.count("active") == 2 and states.count("queued") == 3 and states.count("complete") == 1
            rejected = await jobs.job(primary, ids[5])
            assert rejected["code"] == "abort" and "queue is full" in rejected["description"], rejected
            queued = [await jobs.job(satellite, i) for i in ids[2:5]]
            assert [q["position"] for q in queued] == [1, 2, 3]
            # Never more than two `active` at once, watched while they run. (As xyOps, a job that is `finishing`
            # — its process ended, its agent is sending what it held — no longer counts against the limit, so the
            # jobs' started/completed intervals may overlap by that much.)
            most = 0
            while True:
                live = (await jobs.ok(primary, "get_active_jobs", {"limit": 1000}, method="GET"))["rows"]
                mine = [j for j in live if j["id"] in ids]
                most = max(most, sum(1 for j in mine if j["state"] in ("active", "starting")))
                if not mine:
                    break
                await asyncio.sleep(0.05)
            assert most == 2
            done = [await jobs.wait_job(primary, i) for i in ids[:5]]
            assert all(d["code"] == 0 for d in done), done
            assert {d["server"] for d in done} == {"sa", "sb"}  # round robin over both agents
        finally:
            for a in agents:
                a.terminate()


async def wait_log(jobs: Jobs, node: Node, job_id: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = await jobs.log(node, job_id)
        if text in log:
            return log
        assert time.monotonic() < deadline, f"{text!r} not in the log of {job_id}: {log!r}"
        await asyncio.sleep(0.1)


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.1)


def sleepers(directory: Path) -> list[int]:
    """Pids of processes still running in an agent's job directories (left by a killed agent)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)):
                found.append(int(pid))
    return found


async def test_hundreds_of_running_jobs_all_report_every_second(tmp_path: Path) -> None:
    """An agent running many jobs still reports each of them every second (its process table is read once a
    tick, not once per job), so none is taken for dead."""
    async with Cluster(tmp_path, size=1, extra=("--secret-key", SECRET)) as c:
        node = await c.wait_single_primary()
        jobs = await Jobs.login(c, node)
        worker = agent(tmp_path, "many", node.url).start()
        try:
            # The stock "High Active Jobs" alert (50 or more jobs on a server) limits jobs, as xyOps' does: from the
            # first monitor sample that sees 50 running, later launches would find no server. This test wants all
            # 300 on the one agent, so the alert is off before the first job starts.
            await jobs.ok(node, "update_alert", {"id": "active_jobs_high", "enabled": False})
            await jobs.wait_servers(node, 1)
            event = await jobs.event(node, "#!/bin/sh\necho up\nsleep 60\n")
            ids = [await jobs.run(node, event) for _ in range(300)]
            live: list[dict[str, Any]] = []
            deadline = time.monotonic() + 45  # a loaded machine starts 300 processes slowly
            while not (len(live) == 300 and all(j["state"] == "active" for j in live)):
                states = sorted({j["state"] for j in live})
                if time.monotonic() > deadline:
                    listed = {j["id"] for j in live}
                    missing = [i for i in ids if i not in listed][:3]
                    gone = [await jobs.ok(node, "get_job", {"id": i}, method="GET") for i in missing]
                    raise AssertionError(f"{len(live)} jobs listed ({states}), not all active; not listed: {gone}")
                await asyncio.sleep(0.5)
                live = (await jobs.ok(node, "get_active_jobs", {"limit": 1000}, method="GET"))["rows"]
            await asyncio.sleep(6)  # every job has now had several report ticks
            live = (await jobs.ok(node, "get_active_jobs", {"limit": 1000}, method="GET"))["rows"]
            assert len(live) == 300 and all(j["state"] == "active" for j in live)
            now = time.time()
            stale = [round(now - j["updated"], 1) for j in live if now - j["updated"] > 5]
            assert not stale, f"{len(stale)} jobs without a report for over 5 s: {stale[:10]}"
            done = [await jobs.wait_job(node, i, timeout=120) for i in ids]
            assert all(d["code"] == 0 for d in done)
        finally:
            worker.terminate()
