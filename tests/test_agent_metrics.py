"""The agent's per-job process figures: the pure aggregation (running figures, trees, CPU shares, sockets), then
the readers over real processes and real sockets (psutil, sock_diag)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cluster.agent.metrics import (
    MAX_CONNS,
    MAX_PROCS,
    ConnTracker,
    CpuShare,
    Proc,
    Running,
    Socket,
    TreeMeter,
    tree,
)
from cluster.agent.sockets import RESCAN, SocketReader, address, parse_dump
from cluster.agent.sysinfo import ProcTable

# The keys xySat reports for each process (its `ps` columns, then disk and network).
XYSAT_KEYS = {"pid", "parentPid", "user", "group", "cpu", "memRss", "memVsz", "mem", "age", "started", "state",
              "priority", "nice", "tty", "class", "threads", "time", "command", "disk", "conns", "net"}  # fmt: skip


def proc(pid: int, ppid: int = 1, own: float = 0.0, reaped: float = 0.0, created: float = 0.0, rss: int = 0) -> Proc:
    return Proc(pid=pid, ppid=ppid, own=own, reaped=reaped, created=created, rss=rss, command=f"cmd{pid}")


def test_running_figures() -> None:
    figures = Running()
    for value in (5, 2, 9):
        figures.add(value)
    assert figures.shape() == {"min": 2, "max": 9, "total": 16, "count": 3, "current": 9}
    assert isinstance(figures.shape()["total"], int)  # bytes stay whole


def test_tree_is_breadth_first_bounded_and_ignores_cycles() -> None:
    children = {1: [2, 3], 2: [4], 3: [5, 6], 4: [1], 6: [7]}
    assert tree(1, children) == [1, 2, 3, 4, 5, 6, 7]
    assert tree(1, children, limit=4) == [1, 2, 3, 4]
    assert tree(9, children) == [9]


def test_cpu_share_between_samples() -> None:
    share = CpuShare()
    # First sample: the job started at 100 and its root used 0.5 s in its first second.
    assert share.update({10: proc(10, own=0.5, created=100.0)}, now=101.0) == {10: 50.0}
    # One core busy for the next two seconds, and a child started since that used 0.2 s.
    got = share.update({10: proc(10, own=2.5, created=100.0), 11: proc(11, 10, own=0.2, created=102.0)}, now=103.0)
    assert got == pytest.approx({10: 100.0, 11: 10.0})


def test_cpu_of_ended_children_is_counted_once() -> None:
    share = CpuShare()
    share.update({10: proc(10, created=100.0)}, now=100.5)
    share.update({10: proc(10, own=0.1, created=100.0), 11: proc(11, 10, own=0.3, created=100.6)}, now=101.0)
    # The child used 0.4 s more, ended and was reaped (0.7 s of it reach the root's reaped time); a grandchild
    # that started and ended within the second (0.25 s) was reaped by it: the root's reaped time says 0.95 s.
    got = share.update({10: proc(10, own=0.1, reaped=0.95, created=100.0)}, now=102.0)
    assert got == pytest.approx({10: (0.95 - 0.3) * 100})
    # A child that ended and was reaped within one interval, never seen: all of it counts.
    got = share.update({10: proc(10, own=0.1, reaped=1.45, created=100.0)}, now=103.0)
    assert got == pytest.approx({10: 50.0})


def test_cpu_of_a_process_gone_with_its_parent_reaches_the_next_ancestor_once() -> None:
    share = CpuShare()
    first = {1: proc(1, created=10.0), 2: proc(2, 1, own=1.0, created=10.0), 3: proc(3, 2, own=2.0, created=10.0)}
    share.update(first, now=11.0)
    # 2 reaped 3 (2.5 s in all), then 2 ended (1.2 s of its own): the root's reaped time grows by 3.7 s.
    got = share.update({1: proc(1, reaped=3.7, created=10.0)}, now=12.0)
    assert got == pytest.approx({1: (3.7 - 3.0) * 100})


def test_cpu_share_of_a_reused_pid_and_of_a_late_joiner() -> None:
    share = CpuShare()
    share.update({10: proc(10, created=100.0), 20: proc(20, 10, own=5.0, created=100.2)}, now=101.0)
    # Pid 20 is now another process, started within the interval: its own time is all new.
    got = share.update({10: proc(10, created=100.0), 20: proc(20, 10, own=0.3, created=101.5)}, now=102.0)
    assert got[20] == pytest.approx(30.0)
    # A process older than the last sample that joins the tree only now is counted from now on.
    got = share.update({10: proc(10, created=100.0), 20: proc(20, 10, own=0.3, created=101.5),
                        30: proc(30, 10, own=50.0, created=50.0)}, now=103.0)  # fmt: skip
    assert got[30] == 0.0


def test_conn_tracker_deltas() -> None:
    tracker = ConnTracker()
    sock = Socket("tcp", "ESTABLISHED", "127.0.0.1:5000", "127.0.0.1:80", pid=7, bytes=100)
    first = tracker.update([sock], now=1000.4)
    assert first == {7: [{"type": "tcp", "state": "ESTABLISHED", "local_addr": "127.0.0.1:5000",
                          "remote_addr": "127.0.0.1:80", "pid": 7, "bytes": 100, "delta": 100,
                          "started": 1000}]}  # fmt: skip
    later = tracker.update([Socket("tcp", "ESTABLISHED", "127.0.0.1:5000", "127.0.0.1:80", pid=7, bytes=350)], 1001.4)
    assert (later[7][0]["delta"], later[7][0]["started"]) == (250, 1000)
    assert tracker.update([], 1002.0) == {}
    again = tracker.update([sock], 1003.0)  # forgotten once gone: new again
    assert (again[7][0]["delta"], again[7][0]["started"]) == (100, 1003)


def test_tree_meter_figures_and_bounds() -> None:
    meter = TreeMeter()
    pids = list(range(1, MAX_PROCS + 21))
    table = {pid: proc(pid, max(1, pid - 1), own=0.0, created=10.0, rss=1000) for pid in pids}
    sockets = {2: [{"pid": 2, "delta": 30 + i} for i in range(MAX_CONNS + 5)]}
    got = meter.update(pids, table, sockets, now=11.0)
    assert got is not None
    assert len(got.procs) == MAX_PROCS and next(iter(got.procs)) == "1" and len(got.conns) == MAX_CONNS
    assert got.mem == {"min": 1000 * len(pids), "max": 1000 * len(pids), "total": 1000 * len(pids), "count": 1,
                       "current": 1000 * len(pids)}  # fmt: skip
    two = got.procs["2"]
    assert set(two) == XYSAT_KEYS
    assert (two["conns"], two["net"], two["parentPid"], two["age"], two["command"]) == (
        MAX_CONNS + 5, sum(30 + i for i in range(MAX_CONNS + 5)), 1, 1, "cmd2")
    again = meter.update(pids, {**table, 1: proc(1, own=0.5, created=10.0, rss=1000)}, {}, now=12.0)
    assert again is not None and again.cpu["count"] == 2 and again.cpu["current"] == 50.0
    assert again.cpu["max"] == 50.0 and again.cpu["min"] == 0.0
    assert meter.update(pids, {p: table[p] for p in pids[1:]}, {}, now=13.0) is None  # the root is gone


def test_socket_address_and_dump_parsing() -> None:
    assert address(socket.AF_INET, bytes([10, 0, 0, 1]) + bytes(12), 80) == "10.0.0.1:80"
    assert address(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::1"), 0) == "[::1]:*"
    assert list(parse_dump(b"", socket.IPPROTO_TCP)) == []
    done = (16).to_bytes(4, "little") + (3).to_bytes(2, "little") + bytes(10)
    assert list(parse_dump(done, socket.IPPROTO_TCP)) == [None]
    error = (20).to_bytes(4, "little") + (2).to_bytes(2, "little") + bytes(10)
    error += (-13).to_bytes(4, "little", signed=True)  # EACCES
    with pytest.raises(PermissionError):
        list(parse_dump(error, socket.IPPROTO_TCP))


# -- real processes ---------------------------------------------------------------------------------------------


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for child in procs:
        for pid in [c.pid for c in _descendants(child.pid)] + [child.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def sample(table: ProcTable, meter: TreeMeter, root: int, sockets: dict[int, list[dict[str, object]]] | None = None,
           ) -> tuple[float, dict[int, Proc], object]:  # fmt: skip
    now = time.time()
    children = table.walk()
    pids = tree(root, children)
    procs = table.read(pids)
    return now, procs, meter.update(pids, procs, sockets or {}, now)


def test_proc_table_reads_a_real_process_tree(spawned: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("sleep 30 &\nwait\n")
    spawned.append(subprocess.Popen(["/bin/sh", str(script)]))
    root = spawned[0].pid
    table, meter = ProcTable(), TreeMeter()
    deadline = time.monotonic() + 10
    while True:
        _now, procs, measured = sample(table, meter, root)
        if len(procs) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(procs) == 2, procs
    child = next(p for p in procs.values() if p.pid != root)
    assert child.ppid == root and child.command == "sleep 30" and child.state == "Sleeping"
    assert procs[root].command == f"/bin/sh {script}" and procs[root].rss > 0 and procs[root].threads == 1
    assert abs(procs[root].created - time.time()) < 5  # on time.time()'s clock
    me = psutil.Process()
    tty = (me.terminal() or "?").removeprefix("/dev/")  # the test's own terminal, if it has one
    assert child.user == me.username() and child.tty == tty and child.sched == "Other"
    assert child.priority == 19 - me.nice() and child.disk >= 0
    assert measured is not None


def test_cpu_of_a_shell_running_short_commands_adds_up(spawned: list[subprocess.Popen[bytes]],
                                                       tmp_path: Path) -> None:  # fmt: skip
    """Children that start and end between samples still count, once: the figures, summed over the samples,
    come to the CPU time the tree really used (the root's own plus what it reaped)."""
    script = tmp_path / "burn.sh"
    script.write_text("for n in 1 2 3 4 5 6; do\n"
                      "  sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'\n"
                      "done\nsleep 30\n")  # fmt: skip
    spawned.append(subprocess.Popen(["/bin/sh", str(script)]))
    root = psutil.Process(spawned[0].pid)
    table, meter = ProcTable(), TreeMeter()
    used, last = 0.0, None
    time.sleep(0.3)
    while True:
        now, procs, _ = sample(table, meter, root.pid)
        used += meter.cpu.current / 100 * (now - (last if last is not None else procs[root.pid].created))
        last = now
        if any(p.command == "sleep 30" for p in procs.values()):
            break
        time.sleep(0.05)  # each child is seen running, then ends between two samples
    times = root.cpu_times()
    really = times.user + times.system + times.children_user + times.children_system
    assert really > 0.3, times  # the loops took some CPU
    assert used == pytest.approx(really, rel=0.15, abs=0.05), (used, really)
    assert meter.cpu.count >= 2 and meter.cpu.max > 0


def test_sockets_of_a_real_process_with_their_bytes(spawned: list[subprocess.Popen[bytes]]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = (f"import socket,sys,time; s=socket.create_connection(('127.0.0.1',{port})); s.sendall(b'x'*50000);"
            f"print('sent', flush=True); time.sleep(30)")  # fmt: skip
    spawned.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE))
    conn, _ = server.accept()
    with conn, server:
        got = 0
        while got < 50000:
            got += len(conn.recv(65536))
        assert spawned[0].stdout is not None and spawned[0].stdout.readline() == b"sent\n"
        reader, tracker = SocketReader(), ConnTracker()
        pid = spawned[0].pid
        young = {pid: proc(pid, created=time.time())}
        found = tracker.update(reader.read(young, time.time()), time.time())
        if sys.platform.startswith("linux"):
            assert reader.netlink, "sock_diag should answer on Linux"
        [mine] = found[pid]
        assert (mine["type"], mine["state"], mine["remote_addr"]) == ("tcp", "ESTABLISHED", f"127.0.0.1:{port}")
        assert mine["local_addr"].startswith("127.0.0.1:") and mine["pid"] == pid
        if reader.netlink:
            assert mine["bytes"] >= 50000 and mine["delta"] == mine["bytes"]
            conn.sendall(b"y" * 7000)
            time.sleep(0.2)
            [again] = tracker.update(reader.read(young, time.time()), time.time())[pid]
            assert again["delta"] >= 7000 and again["bytes"] == mine["bytes"] + again["delta"]
        gone = os.getpid() + 10**7
        assert reader.read({gone: proc(gone, created=time.time())}, time.time()) == []  # no error either


def test_an_older_process_without_sockets_is_looked_at_again_in_turn(spawned: list[subprocess.Popen[bytes]]) -> None:
    code = "import socket,sys,time; sys.stdin.readline(); s=socket.create_server(('127.0.0.1',0)); time.sleep(30)"
    spawned.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE))
    pid = spawned[0].pid
    old = {pid: proc(pid, created=time.time() - 3600)}
    reader = SocketReader()
    if not reader.netlink:
        pytest.skip("descriptors are only read on Linux")
    assert reader.read(old, time.time()) == []
    assert spawned[0].stdin is not None
    spawned[0].stdin.write(b"listen\n")
    spawned[0].stdin.flush()
    time.sleep(0.5)
    looks = []
    for _ in range(RESCAN):
        looks.append(len(reader.read(old, time.time())))
    assert looks.count(1) >= 1 and looks[-1] == 1, looks  # seen within RESCAN ticks, then every tick

