"""A job's process figures, as xySat reports them: pure code over what sysinfo.py and sockets.py read each second.

- `cpu` and `mem` of a job are {min, max, total, count, current} over its samples (one a second); `current` is
  the sum over the job's process tree: cpu in percent where 100 = one core, mem in RSS bytes. (⚠ xySat divides
  `ps`'s lifetime average by the number of cores, so 100 = every core, against its own docs and the cpu limit's
  "100 equals one core fully utilized": the documented unit is used here, measured over the last second.)
- A process's cpu counts the time of its children that ended since the last sample (the kernel adds them to
  their parent's reaped times), each second of them once: a shell script running short commands uses CPU too.
- `procs` is {pid: figures} with xySat's keys; `conns` the job tree's sockets in xySat's shape, `delta` being
  the bytes moved since the last sample (which also add up to each process's `net`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TREE = 500  # processes measured per job
MAX_PROCS = 100  # processes reported per job (the root and the first descendants, breadth first)
MAX_CONNS = 100  # connections reported per job
MAX_COMMAND = 1024  # characters of a process's command line
CREATED_SLACK = 0.05  # s: a start time is known to the clock tick (10 ms), a process started then was not seen


@dataclass(slots=True)
class Running:
    """min/max/total/count/current of a figure sampled once a second."""

    min: float = 0
    max: float = 0
    total: float = 0  # stays an int while every value is one (mem: bytes)
    count: int = 0
    current: float = 0

    def add(self, value: float) -> None:
        if self.count:
            self.min, self.max = min(self.min, value), max(self.max, value)
        else:
            self.min = self.max = value
        self.total += value
        self.count += 1
        self.current = value

    def shape(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "total": self.total, "count": self.count, "current": self.current}


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as read at one moment (times in CPU seconds, sizes in bytes, `created` an epoch)."""

    pid: int
    ppid: int
    own: float  # user + system time of the process itself
    reaped: float  # user + system time of its children that ended and were waited for
    created: float
    rss: int = 0
    vms: int = 0
    mem: float = 0.0  # rss as a percentage of the machine's memory
    state: str = "Unknown"
    priority: int = 0
    nice: int = 0
    threads: int = 0
    user: str = ""
    group: str = ""
    tty: str = "?"
    sched: str = "Other"
    command: str = ""
    disk: int = 0  # bytes read + written so far (every read and write call, pipes and sockets too, as xySat)


@dataclass(frozen=True, slots=True)
class Socket:
    """One socket of a process: `bytes` is what it has sent (and had acknowledged) plus what it received."""

    type: str
    state: str
    local_addr: str
    remote_addr: str
    pid: int
    bytes: int = 0
    sent: int = 0  # of `bytes`: sent and acknowledged (TCP on Linux; 0 where not known)
    received: int = 0


def tree(root: int, children: Mapping[int, Sequence[int]], limit: int = MAX_TREE) -> list[int]:
    """The process and its descendants, breadth first (so the first ones are the closest), at most `limit`."""
    out, seen, i = [root], {root}, 0
    while i < len(out) and len(out) < limit:
        for child in children.get(out[i], ()):
            if child not in seen and len(out) < limit:
                seen.add(child)
                out.append(child)
        i += 1
    return out


class CpuShare:
    """Each process's CPU percent between two samples of one job's tree."""

    def __init__(self) -> None:
        self._last: dict[int, Proc] = {}
        self._at: float | None = None

    def update(self, procs: Mapping[int, Proc], now: float) -> dict[int, float]:
        last, at = self._last, self._at
        if at is not None:
            elapsed = max(now - at, 0.001)
        else:  # since the job started (at least 0.1 s: a job just started gets no absurd percentage)
            elapsed = max(now - min((p.created for p in procs.values()), default=now), 0.1)
        # Times of a process gone since the last sample reach its parent's reaped times when the parent waits
        # for it (or the first ancestor still here, through the ones gone with it): what was counted of them
        # already is not counted again there.
        counted: dict[int, float] = {}
        for pid, old in last.items():
            if pid in procs and procs[pid].created == old.created:
                continue
            parent, hops = old.ppid, 0
            while parent in last and parent not in procs and hops < MAX_TREE:
                parent, hops = last[parent].ppid, hops + 1
            counted[parent] = counted.get(parent, 0.0) + old.own + old.reaped
        shares: dict[int, float] = {}
        for pid, proc in procs.items():
            before = last.get(pid)
            if before is not None and before.created == proc.created:
                used = proc.own - before.own + max(0.0, proc.reaped - before.reaped - counted.get(pid, 0.0))
            elif at is None or proc.created >= at - CREATED_SLACK:  # started since: all of its time is in the interval
                used = proc.own + proc.reaped
            else:  # seen for the first time though older (just joined the tree): counted from now on
                used = 0.0
            shares[pid] = max(0.0, used) / elapsed * 100
        self._last, self._at = dict(procs), now
        return shares


class ConnTracker:
    """Sockets across samples, keyed `local|remote` as xySat does: when each was first seen and the bytes moved
    since the last sample (`delta`). Sockets no longer there are forgotten."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, Any]] = {}

    def update(self, sockets: Iterable[Socket], now: float) -> dict[int, list[dict[str, Any]]]:
        """The connections of this sample by pid."""
        known, seen = self._known, {}
        by_pid: dict[int, list[dict[str, Any]]] = {}
        for sock in sockets:
            key = f"{sock.local_addr}|{sock.remote_addr}"
            old = known.get(key)
            conn = {"type": sock.type, "state": sock.state, "local_addr": sock.local_addr,
                    "remote_addr": sock.remote_addr, "pid": sock.pid, "bytes": sock.bytes,
                    "delta": max(0, sock.bytes - (old["bytes"] if old else 0)),
                    "started": old["started"] if old else int(now)}  # fmt: skip
            seen[key] = conn
            by_pid.setdefault(sock.pid, []).append(conn)
        self._known = seen
        return by_pid


def proc_figures(proc: Proc, cpu: float, now: float, conns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One process in xySat's keys and units."""
    return {
        "pid": proc.pid, "parentPid": proc.ppid, "user": proc.user, "group": proc.group, "cpu": round(cpu, 2),
        "memRss": proc.rss, "memVsz": proc.vms, "mem": round(proc.mem, 2), "age": max(0, int(now - proc.created)),
        "started": int(proc.created), "state": proc.state, "priority": proc.priority, "nice": proc.nice,
        "tty": proc.tty, "class": proc.sched, "threads": proc.threads, "time": int(proc.own),
        "command": proc.command[:MAX_COMMAND], "disk": proc.disk, "conns": len(conns),
        "net": sum(int(c["delta"]) for c in conns),
    }  # fmt: skip


@dataclass
class Measured:
    """One sample of one job, to report: `procs` ({pid: figures}), `conns`, and the running `cpu` and `mem`."""

    procs: dict[str, dict[str, Any]]
    conns: list[dict[str, Any]]
    cpu: dict[str, float]
    mem: dict[str, float]


@dataclass
class TreeMeter:
    """One job's process tree across samples, with its running cpu and mem figures."""

    cpu: Running = field(default_factory=Running)
    mem: Running = field(default_factory=Running)
    share: CpuShare = field(default_factory=CpuShare)

    def update(self, pids: Sequence[int], table: Mapping[int, Proc], conns: Mapping[int, Sequence[dict[str, Any]]],
               now: float) -> Measured | None:  # fmt: skip
        """Fold in this sample of the tree `pids` (root first); None when the root is gone."""
        if not pids or pids[0] not in table:
            return None
        procs = {pid: table[pid] for pid in pids if pid in table}
        shares = self.share.update(procs, now)
        self.cpu.add(round(sum(shares.values()), 2))
        self.mem.add(sum(p.rss for p in procs.values()))
        reported: dict[str, dict[str, Any]] = {}
        job_conns: list[dict[str, Any]] = []
        for pid, proc in procs.items():
            own = conns.get(pid, ())
            if len(job_conns) < MAX_CONNS:
                job_conns.extend(own[: MAX_CONNS - len(job_conns)])
            if len(reported) < MAX_PROCS:
                reported[str(pid)] = proc_figures(proc, shares[pid], now, own)
        return Measured(reported, job_conns, self.cpu.shape(), self.mem.shape())
