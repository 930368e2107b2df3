"""A job's process figures end to end: a real node, its own `podium agent`, real shell jobs that burn CPU, hold
memory and talk TCP; the figures are read back with get_job while they run and from the final record."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.test_jobs_run import wait_log

pytestmark = pytest.mark.timeout(300)
PY = sys.executable
BURN = f"""#!/bin/sh
{PY} -c 'import time
end = time.time() + 8  # live figures reach the store every few seconds (FIGURES_WRITE_S)
while time.time() < end: pass' &
echo burner $!
wait
"""
HOLD = f"""#!/bin/sh
{PY} -c 'import time
held = b"x" * (200 << 20)
time.sleep(8)' &
echo holder $!
wait
"""


def talk(port: int) -> str:
    return f"""#!/bin/sh
{PY} -c 'import socket, time
s = socket.create_connection(("127.0.0.1", {port}))
for _ in range(40):
    s.sendall(b"x" * 20000)
    time.sleep(0.2)' &
echo talker $!
wait
"""


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Jobs]]:
    async with Cluster(tmp_path, size=1, extra=("--secret-key", SECRET), env={"PODIUM_AGENT": "on"}) as c:
        node = await c.wait_single_primary()
        jobs = await Jobs.login(c, node)
        await jobs.wait_servers(node, 1)
        yield c, jobs


async def child_pid(jobs: Jobs, node: Node, job_id: str, word: str) -> str:
    log = await wait_log(jobs, node, job_id, word)
    found = re.search(rf"{word} (\d+)", log)
    assert found, log
    return found.group(1)


async def live_until(c: Cluster, jobs: Jobs, node: Node, job_id: str, check: Any) -> dict[str, Any]:
    """The running job (get_job) once `check(job)` holds."""

    async def probe() -> dict[str, Any] | None:
        job = await jobs.job(node, job_id)
        assert job["state"] in ("active", "finishing", "queued", "ready", "starting"), job
        return job if check(job) else None

    found: dict[str, Any] = await c.wait_for(probe, timeout=60, interval=0.2)
    return found


async def test_process_figures_of_running_and_finished_jobs(single: tuple[Cluster, Jobs]) -> None:
    c, jobs = single
    node = c.nodes[0]
    received = 0

    async def reader(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        while chunk := await r.read(65536):
            received += len(chunk)
        w.close()

    server = await asyncio.start_server(reader, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        burn = await jobs.run(node, await jobs.event(node, BURN))
        hold = await jobs.run(node, await jobs.event(node, HOLD))
        chat = await jobs.run(node, await jobs.event(node, talk(port)))
        burner = await child_pid(jobs, node, burn, "burner")
        holder = await child_pid(jobs, node, hold, "holder")
        talker = await child_pid(jobs, node, chat, "talker")

        hot = await live_until(c, jobs, node, burn, lambda j: (j.get("cpu") or {}).get("max", 0) > 50)
        assert burner in hot["procs"] and str(hot["pid"]) in hot["procs"], hot["procs"]
        assert hot["procs"][burner]["parentPid"] == hot["pid"] and "time.time()" in hot["procs"][burner]["command"]
        assert hot["timelines"]["second"] and hot["timelines"]["minute"], hot.get("timelines")
        count = hot["cpu"]["count"]
        later = await live_until(c, jobs, node, burn, lambda j: j["cpu"]["count"] > count)
        assert later["cpu"]["total"] >= hot["cpu"]["total"]  # (live timelines are stored every few seconds)

        big = await live_until(c, jobs, node, hold, lambda j: (j.get("mem") or {}).get("max", 0) > 150e6)
        assert big["procs"][holder]["memRss"] > 150e6 and big["mem"]["current"] >= big["procs"][holder]["memRss"]

        busy = await live_until(c, jobs, node, chat, lambda j: any(
            x.get("remote_addr") == f"127.0.0.1:{port}" for x in j.get("conns") or []))
        conns = [x for x in busy["conns"] if x["remote_addr"] == f"127.0.0.1:{port}"]
        assert conns and conns[0]["pid"] == int(talker) and conns[0]["type"] == "tcp", busy["conns"]
        assert busy["procs"][talker]["conns"] == 1

        done = {i: await jobs.wait_job(node, i) for i in (burn, hold, chat)}
    assert all(d["code"] == 0 for d in done.values()), done
    final = done[burn]
    assert final["cpu"]["max"] > 50 and final["cpu"]["count"] >= later["cpu"]["count"], final["cpu"]
    assert done[hold]["mem"]["max"] > 150e6
    assert len(final["timelines"]["second"]) >= 2
    assert any(e["procs"].get(talker, {}).get("net", 0) > 0 for e in done[chat]["timelines"]["second"])
    for record in done.values():
        assert "procs" not in record and "conns" not in record
        assert record["timelines"]["second"] and record["timelines"]["minute"]
        assert set(record["disk"]) == set(record["net"]) == {"total", "count"}
    assert received == 40 * 20000
