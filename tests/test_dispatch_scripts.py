"""The dispatcher's fenced writes on a real server: launches that queue a frame, live writes that never
revive a finished job, the inbox cursor, and a deposed primary that changes nothing."""

from __future__ import annotations

import pytest

from storage import codec
from storage.agents import AgentStreams
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence
from storage.jobs import JobStore, JobWrite
from storage.lease import LeaseStore

from .test_scripts import elect


def job(job_id: str, state: str = "active", **extra: object) -> dict[str, object]:
    return {"id": job_id, "event": "e1", "state": state, "started": 1764627000.123456, **extra}


async def test_launch_queues_the_agent_frame_in_the_same_step(db: Database) -> None:
    fence = await elect(LeaseStore(db))
    jobs, agents = JobStore(db), AgentStreams(db)
    launch = JobWrite(db.keys).frame("s1", "launch_job", {"id": "j1"})
    assert await jobs.launch(fence, job("j1", server="s1"), extra=launch)
    got = await agents.read_commands({"s1": "0-0"}, block_ms=0)
    assert [f for _, f in got["s1"]] == [{"cmd": "launch_job", "data": {"id": "j1"}}]
    score = await db.client.zscore(db.keys.jobs_active, "j1")
    assert score == pytest.approx(1764627000.123456, abs=1e-4)


async def test_live_write_skips_jobs_no_longer_active(db: Database) -> None:
    fence = await elect(LeaseStore(db))
    jobs = JobStore(db)
    await jobs.launch(fence, job("j1"))
    await jobs.launch(fence, job("j2"))
    await jobs.finish(fence, {**job("j2", "complete"), "code": 0, "completed": 2.0})
    batch = JobWrite(db.keys).job(job("j1", progress=0.5)).job(job("j2", progress=0.5))
    batch.frame("s1", "abort_job", {"id": "j1", "reason": "r"})
    assert await jobs.write(fence, batch) == 1
    j1, j2 = await jobs.get("j1"), await jobs.get("j2")
    assert j1 is not None and j1["progress"] == 0.5
    assert j2 is not None and j2["state"] == "complete" and "progress" not in j2  # not revived
    frames = await AgentStreams(db).read_commands({"s1": "0-0"}, block_ms=0)
    assert frames["s1"][0][1]["cmd"] == "abort_job"


async def test_inbox_cursor_is_recorded_and_the_inbox_trimmed(db: Database) -> None:
    fence = await elect(LeaseStore(db))
    agents = AgentStreams(db)
    await agents.post([{"cmd": "jobs", "data": {"j": {}}, "server": "s1"} for _ in range(5)])
    entries = await agents.read_inbox("0-0", block_ms=0)
    assert len(entries) == 5
    await JobStore(db).write(fence, JobWrite(db.keys).inbox_done(entries[2][0]))
    assert await agents.inbox_cursor() == entries[2][0]
    rest = await agents.read_inbox(await agents.inbox_cursor(), block_ms=0)
    assert [e for e, _ in rest] == [e for e, _ in entries[3:]]
    assert int(await db.client.xlen(db.keys.dispatch_inbox)) == 3  # entries before the cursor's are gone


async def test_a_deposed_primary_writes_nothing(db: Database) -> None:
    fence = await elect(LeaseStore(db))
    jobs = JobStore(db)
    await jobs.launch(fence, job("j1"))
    stale = Fence(db, fence.node_id, fence.epoch - 1)
    with pytest.raises(FencedError):
        await jobs.write(stale, JobWrite(db.keys).job(job("j1", progress=0.9)).frame("s1", "launch_job", {}))
    with pytest.raises(FencedError):
        frame = JobWrite(db.keys).frame("s1", "launch_job", {})
        await jobs.launch(Fence(db, "other", fence.epoch), job("j2"), extra=frame)
    stored = await jobs.get("j1")
    assert stored is not None and "progress" not in stored
    assert int(await db.client.exists(db.keys.agent_commands("s1"))) == 0
    assert await jobs.get("j2") is None
    raw = await db.client.get(db.keys.job("j1"))
    assert isinstance(raw, bytes) and codec.unpack(raw)["state"] == "active"
