"""Every process and every network connection of the machine, for ServerMonitorData `processes` and `conns`.

`processes` is {all, <state>: count, ..., blocked, list} with xySat's per-process keys (pid, parentPid, user, cpu,
memRss, age, state, priority, nice, memVsz, tty, mem, class, group, threads, time, command, started; plus job,
disk, conns, net for a running job's processes). The list is bounded (MAX_LIST: the running jobs' processes, then
the busiest by cpu and memory); the counts are over every process. A process's `cpu` is its share since the last
sample with 100 = one core (⚠ xySat reports `ps`'s lifetime average divided by the number of cores, against the
documented "100 = one core" that the jobs' figures use here too); a process seen for the first time gets its
lifetime average.

`conns` is the sockets that belong to a process, as xySat lists them from `ss -nutipaO` (only lines with a pid):
{type, state, local_addr, remote_addr, pid, bytes_out, bytes_in}; `stats.network.conns` counts all of them, the
list holds at most MAX_CONNS. On Linux through sock_diag (sockets.py) and each process's descriptors.
"""

from __future__ import annotations

import grp
import pwd
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from .metrics import MAX_COMMAND
from .sockets import PSUTIL_STATES, QUERIES, dump, pair, socket_inodes
from .sysinfo import STATES, name_of, priority_of, sched_class

MAX_LIST = 200  # processes listed
MAX_CONNS = 1000  # connections listed
MAX_PROCS = 100_000  # processes read
_ATTRS = ["pid", "ppid", "uids", "gids", "cpu_times", "memory_info", "status", "nice", "num_threads", "create_time",
          "name", "cmdline", "terminal"]  # fmt: skip


@dataclass
class ProcTableShape:
    """One sample: ServerMonitorData `processes`, and every pid seen (for the connections)."""

    shape: dict[str, Any]
    pids: list[int]


class ProcessList:
    """Every process once a minute, with each one's cpu time kept for the next sample's share."""

    def __init__(self) -> None:
        self._cpu: dict[int, tuple[float, float]] = {}  # pid -> (created, cpu seconds) at the last sample
        self._at: float | None = None
        self._memory = psutil.virtual_memory().total or 1

    def sample(self, job_procs: Mapping[int, tuple[str, Mapping[str, Any]]]) -> ProcTableShape:
        now = time.time()
        elapsed = now - self._at if self._at is not None else 0.0
        counts: dict[str, int] = {"all": 0}
        rows: list[dict[str, Any]] = []
        cpu_now: dict[int, tuple[float, float]] = {}
        for proc in psutil.process_iter(_ATTRS, ad_value=None):
            if counts["all"] >= MAX_PROCS:
                break
            info = proc.info
            row = self._row(info, now, elapsed, cpu_now)
            if row is None:
                continue
            counts["all"] += 1
            key = row["state"].lower()
            counts[key] = counts.get(key, 0) + 1
            if info.get("status") == psutil.STATUS_DISK_SLEEP:
                counts["blocked"] = counts.get("blocked", 0) + 1
            job = job_procs.get(row["pid"])
            if job is not None:
                figures = job[1]
                row.update(job=job[0], disk=figures.get("disk", 0), conns=figures.get("conns", 0),
                           net=figures.get("net", 0))  # fmt: skip
            rows.append(row)
        self._cpu, self._at = cpu_now, now
        counts.setdefault("running", 0)
        counts.setdefault("sleeping", 0)
        counts.setdefault("blocked", 0)
        listed = sorted(rows, key=lambda r: ("job" not in r, -r["cpu"], -r["memRss"]))[:MAX_LIST]
        listed.sort(key=lambda r: r["pid"])
        return ProcTableShape({**counts, "list": listed}, [r["pid"] for r in rows])

    def _row(self, info: Mapping[str, Any], now: float, elapsed: float,
             cpu_now: dict[int, tuple[float, float]]) -> dict[str, Any] | None:  # fmt: skip
        pid, created, times = info.get("pid"), info.get("create_time"), info.get("cpu_times")
        if not isinstance(pid, int) or created is None or times is None:
            return None
        used = times.user + times.system
        cpu_now[pid] = (created, used)
        before = self._cpu.get(pid)
        if before is not None and before[0] == created and elapsed > 0:
            share = max(0.0, used - before[1]) / elapsed * 100
        else:
            share = used / max(now - created, 1.0) * 100
        memory = info.get("memory_info")
        nice = info.get("nice") or 0
        sched = sched_class(pid)
        uids, gids = info.get("uids"), info.get("gids")
        argv = info.get("cmdline") or []
        name = info.get("name") or ""
        command = " ".join(argv) if argv else f"[{name}]" if sys.platform.startswith("linux") else name
        tty = str(info.get("terminal") or "").removeprefix("/dev/") or "?"
        return {
            "pid": pid, "parentPid": info.get("ppid") or 0,
            "user": name_of(pwd.getpwuid, uids.effective) if uids else "",
            "cpu": round(share, 2), "memRss": memory.rss if memory else 0, "age": max(0, int(now - created)),
            "state": STATES.get(str(info.get("status")), "Unknown"), "priority": priority_of(pid, nice, sched),
            "nice": nice, "memVsz": memory.vms if memory else 0,
            "tty": tty, "mem": round((memory.rss if memory else 0) / self._memory * 100, 2), "class": sched,
            "group": name_of(grp.getgrgid, gids.effective) if gids else "", "threads": info.get("num_threads") or 0,
            "time": int(used), "command": command[:MAX_COMMAND], "started": int(created),
        }  # fmt: skip


def _count(conns: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    listed: list[dict[str, Any]] = []
    states = {"established": 0}
    total = 0
    for conn in conns:
        total += 1
        key = str(conn["state"]).lower()
        states[key] = states.get(key, 0) + 1
        if len(listed) < MAX_CONNS:
            listed.append(conn)
    return listed, total, states


class ConnTable:
    """The machine's TCP and UDP sockets that belong to a process."""

    def __init__(self) -> None:
        self.netlink = sys.platform.startswith("linux")

    def sample(self, pids: Iterable[int]) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
        """(conns listed, how many there are, count by lowercased state with `established` always there)."""
        if self.netlink:
            try:
                return _count(self._linux(pids))
            except OSError:  # no sock_diag here: psutil from now on
                self.netlink = False
        return _count(self._psutil())

    @staticmethod
    def _linux(pids: Iterable[int]) -> list[dict[str, Any]]:
        owner: dict[int, int] = {}
        for pid in pids:
            for inode in socket_inodes(pid):
                owner.setdefault(inode, pid)
        out = []
        for family, protocol in QUERIES:
            try:
                found = dump(family, protocol)
            except OSError:
                if protocol == socket.IPPROTO_UDP:
                    continue
                raise
            for inode, sock in found:
                pid = owner.get(inode, 0)
                if pid:
                    out.append({"type": sock.type, "state": sock.state, "local_addr": sock.local_addr,
                                "remote_addr": sock.remote_addr, "pid": pid, "bytes_out": sock.sent,
                                "bytes_in": sock.received})  # fmt: skip
        return out

    @staticmethod
    def _psutil() -> list[dict[str, Any]]:
        try:
            conns = psutil.net_connections("inet")
        except (psutil.Error, OSError):
            return []
        out = []
        for conn in conns:
            if not conn.pid:
                continue
            tcp = conn.type == socket.SOCK_STREAM
            out.append({"type": "tcp" if tcp else "udp",
                        "state": PSUTIL_STATES.get(conn.status, "UNKNOWN") if tcp else "UNCONNECTED",
                        "local_addr": pair(conn.laddr), "remote_addr": pair(conn.raddr), "pid": conn.pid,
                        "bytes_out": 0, "bytes_in": 0})  # fmt: skip
        return out
