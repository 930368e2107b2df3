"""Facts about this machine for `hello`, and the CPU and memory of a job's process tree for `jobs`."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from collections.abc import Mapping
from typing import Any

import psutil


def hello_info(version: str, hostname: str) -> dict[str, Any]:
    """`hello.info`: `podium` marks Podium's own agent; `features.log_offsets` says it speaks offsets and acks."""
    uname = platform.uname()
    distro = ""
    with contextlib.suppress(OSError):
        distro = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    return {
        "podium": version,
        "satellite": f"podium-agent/{version}",
        "booted": psutil.boot_time(),
        "arch": uname.machine,
        "platform": uname.system.lower(),
        "release": uname.release,
        "os": {
            "platform": uname.system.lower(), "distro": distro, "release": uname.release, "arch": uname.machine,
            "hostname": hostname,
        },
        "memory": {"total": psutil.virtual_memory().total},
        "cpu": {"cores": os.cpu_count() or 1, "brand": platform.processor() or uname.machine},
        "virt": {},
        "features": {"log_offsets": True},
    }


def default_hostname() -> str:
    return socket.gethostname()


MAX_TREE = 500  # processes measured per job


def process_children() -> dict[int, list[int]]:
    """Every process's children (pid -> child pids), from one pass over the process table."""
    out: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if isinstance(ppid, int):
            out.setdefault(ppid, []).append(proc.pid)
    return out


class TreeMeter:
    """CPU (percent) and memory (RSS bytes) of a process and its descendants, with running min/max/total/count."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}  # kept across samples: cpu_percent measures since last call
        self.cpu: dict[str, float] = {}
        self.mem: dict[str, float] = {}

    def sample(self, pid: int, children: Mapping[int, list[int]] | None = None) -> dict[str, Any] | None:
        """Measure now; the `procs` map (pid -> figures), or None when the process is gone. `children` (from
        process_children(), read once for every job of a tick) saves each job a scan of every process."""
        try:
            root = self._procs.get(pid) or psutil.Process(pid)
            if children is None:
                tree = [root, *root.children(recursive=True)]
            else:
                tree = [root]
                todo = list(children.get(pid, ()))
                while todo and len(tree) < MAX_TREE:
                    child = todo.pop()
                    try:
                        tree.append(self._procs.get(child) or psutil.Process(child))
                    except psutil.Error:  # ended since the table was read
                        continue
                    todo.extend(children.get(child, ()))
        except psutil.Error:
            return None
        procs: dict[str, Any] = {}
        cpu = mem = 0.0
        live: dict[int, psutil.Process] = {}
        for proc in tree:
            proc = self._procs.get(proc.pid, proc)
            try:
                with proc.oneshot():
                    pcpu = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
                    procs[str(proc.pid)] = {"pid": proc.pid, "parentPid": proc.ppid(), "name": proc.name(),
                                            "cpu": pcpu, "memRss": rss}  # fmt: skip
            except psutil.Error:
                continue
            live[proc.pid] = proc
            cpu += pcpu
            mem += rss
        self._procs = live
        for figures, value in ((self.cpu, cpu), (self.mem, mem)):
            if figures:
                figures.update(min=min(figures["min"], value), max=max(figures["max"], value),
                               total=figures["total"] + value, count=figures["count"] + 1, current=value)  # fmt: skip
            else:
                figures.update(min=value, max=value, total=value, count=1, current=value)
        return procs
