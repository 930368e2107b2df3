"""How the conductor takes a job's process figures from agent reports: bounded, the timelines built from the ticks,
the final disk and net averages (pure code)."""

from __future__ import annotations

from typing import Any

from cluster.dispatch import metrics
from cluster.dispatch.updates import apply_update, final_record


def proc(pid: int, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "parentPid": 1, "cpu": 12.5, "memRss": 1000, "command": "sleep 9", "disk": 0, "net": 0,
            "user": "root", "state": "Sleeping", **extra}  # fmt: skip


def tick(pids: list[int], **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "procs": {str(p): proc(p, **extra) for p in pids}, "conns": [],
            "cpu": {"min": 1, "max": 5, "total": 9, "count": 3, "current": 5},
            "mem": {"min": 10, "max": 10, "total": 30, "count": 3, "current": 10}}  # fmt: skip


def test_figures_are_objects_of_numbers() -> None:
    assert metrics.figures({"min": 1, "max": 2.5, "count": True, "x": "no", "nan": float("nan")}) == {"min": 1,
                                                                                                       "max": 2.5}
    assert metrics.figures("lots") is None and metrics.figures({"a": "b"}) is None
    job: dict[str, Any] = {"id": "j1", "cpu": {"current": 3}}
    apply_update(job, {"cpu": "lots", "mem": {"current": 7, "junk": [1]}, "disk": {"total": 5}}, now=1.0)
    assert job["cpu"] == {"current": 3} and job["mem"] == {"current": 7} and job["disk"] == {"total": 5}


def test_procs_and_conns_are_bounded() -> None:
    huge = {str(p): {**proc(p), **{f"k{i}": i for i in range(50)}, "command": "x" * 5000, "bad": {"deep": 1}}
            for p in range(300)}  # fmt: skip
    conns = [{"type": "tcp", "pid": 1, "delta": i, "nested": [i]} for i in range(500)] + ["junk"]
    job: dict[str, Any] = {"id": "j1"}
    apply_update(job, {"procs": huge, "conns": conns}, now=1.0)
    assert len(job["procs"]) == metrics.MAX_PROCS and len(job["conns"]) == metrics.MAX_CONNS
    one = job["procs"]["0"]
    assert len(one) == metrics.MAX_FIELDS and "bad" not in one and len(one["command"]) == metrics.MAX_TEXT
    assert "nested" not in job["conns"][0]
    apply_update(job, {"procs": "nope", "conns": {"not": "a list"}}, now=2.0)  # kept as they were
    assert len(job["procs"]) == metrics.MAX_PROCS and len(job["conns"]) == metrics.MAX_CONNS


def test_timelines_from_the_ticks() -> None:
    job: dict[str, Any] = {"id": "j1", "timelines": "forged"}
    apply_update(job, {"timelines": {"second": [1]}, "progress": 0.1}, now=119.0)  # never the agent's
    assert job["timelines"] == "forged"
    apply_update(job, tick([5, 6]), now=119.5)
    apply_update(job, {"progress": 0.2}, now=119.7)  # a change without procs: no entry
    apply_update(job, {**tick([5]), "conns": [{"type": "tcp", "delta": 10}]}, now=120.5)
    apply_update(job, tick([5]), now=121.5)
    second, minute = job["timelines"]["second"], job["timelines"]["minute"]
    assert [e["epoch"] for e in second] == [119.5, 120.5, 121.5]
    assert second[0]["procs"] == {"5": {"cpu": 12.5, "memRss": 1000, "command": "sleep 9", "disk": 0, "net": 0},
                                  "6": {"cpu": 12.5, "memRss": 1000, "command": "sleep 9", "disk": 0, "net": 0}}
    assert second[1]["procs"] == {"5": {"cpu": 12.5, "memRss": 1000, "disk": 0, "net": 0}}  # named once
    assert [e["epoch"] for e in minute] == [60, 120]  # the first tick of each minute
    assert minute[1]["procs"]["5"]["user"] == "root" and minute[1]["conns"] == [{"type": "tcp", "delta": 10}]


def test_timelines_are_bounded() -> None:
    job: dict[str, Any] = {"id": "j1"}
    for second in range(400):
        apply_update(job, tick([1]), now=1000.0 + second)
    assert len(job["timelines"]["second"]) == metrics.SECONDS
    assert job["timelines"]["second"][-1]["epoch"] == 1399.0
    # The entry that first named the process went: the oldest one left names it now.
    assert [e["procs"]["1"].get("command") for e in job["timelines"]["second"][:2]] == ["sleep 9", None]
    many = list(range(100, 100 + metrics.MAX_PROCS))
    for second in range(200):
        apply_update(job, tick(many, command="c" * 2000), now=2000.0 + second * 60)
    second_line, minute_line = job["timelines"]["second"], job["timelines"]["minute"]
    assert all(len(e["procs"]) <= metrics.ENTRY_PROCS for e in second_line + minute_line)
    assert sum(len(e["procs"]) for e in second_line) <= metrics.SECOND_ITEMS
    assert sum(len(e["procs"]) + len(e["conns"]) for e in minute_line) <= metrics.MINUTE_ITEMS
    assert minute_line[-1]["epoch"] == (2000 + 199 * 60) // 60 * 60  # the oldest went first
    assert len(minute_line[-1]["procs"]["100"]["command"]) == metrics.TIMELINE_TEXT


def test_final_disk_and_net_from_the_minute_timeline() -> None:
    job: dict[str, Any] = {"id": "j1", "state": "active", "started": 50.0}
    for at, disk, delta in ((60.0, 1000, 5), (120.0, 4000, 7), (180.0, 10000, 0)):
        apply_update(job, {"procs": {"5": proc(5, disk=disk)}, "conns": [{"delta": delta}, {"delta": 1}]}, now=at)
    final = final_record(job, {"code": 0}, now=200.0)
    assert final["disk"] == {"total": 9000, "count": 120} and final["net"] == {"total": 15, "count": 3}
    assert "procs" not in final and "conns" not in final and len(final["timelines"]["second"]) == 3
    bare = final_record({"id": "j2", "state": "active"}, None, now=1.0)
    assert bare["disk"] == {"total": 0, "count": 0} and bare["net"] == {"total": 0, "count": 0}


def test_a_tick_that_changes_only_figures_is_told_apart() -> None:
    job: dict[str, Any] = {"id": "j1", "state": "active", "progress": 0.5}
    assert metrics.figures_only(job, {**tick([5]), "state": "active", "progress": 0.5})
    assert not metrics.figures_only(job, {**tick([5]), "progress": 0.6})
    assert not metrics.figures_only(job, {"id": "j1", "push": {"tags": ["x"]}})
