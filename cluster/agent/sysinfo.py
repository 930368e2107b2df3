"""Facts about this machine for `hello`, and the processes of the jobs (through psutil) for `jobs`."""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import platform
import pwd
import socket
import sys
import time
from collections.abc import Iterable
from typing import Any

import psutil

from .metrics import MAX_COMMAND, Proc


def hello_info(version: str, hostname: str) -> dict[str, Any]:
    """`hello.info`: `podium` marks Podium's own agent; `features.log_offsets` says it speaks offsets and acks. The
    os, memory and cpu facts are those of the minute sample (hostdata.py), as xySat sends them."""
    from .hostdata import cpu_info, memory, node_arch, node_platform, os_info  # (hostdata imports this module)

    return {
        "podium": version,
        "satellite": f"podium-agent/{version}",
        "booted": psutil.boot_time(),
        "arch": node_arch(),
        "platform": node_platform(),
        "release": platform.release(),
        "quickmon": True,
        "os": os_info(hostname),
        "memory": memory(),
        "cpu": cpu_info(),
        "virt": {},
        "features": {"log_offsets": True},
    }


def default_hostname() -> str:
    return socket.gethostname()


STATES = {psutil.STATUS_RUNNING: "Running", psutil.STATUS_SLEEPING: "Sleeping", psutil.STATUS_DISK_SLEEP: "Sleeping",
           psutil.STATUS_STOPPED: "Stopped", psutil.STATUS_TRACING_STOP: "Stopped", psutil.STATUS_ZOMBIE: "Zombie",
           psutil.STATUS_DEAD: "Dead", psutil.STATUS_IDLE: "Idle", psutil.STATUS_WAKING: "Running",
           psutil.STATUS_PARKED: "Sleeping"}  # fmt: skip
_CLASSES = {getattr(os, name): title for name, title in (("SCHED_OTHER", "Other"), ("SCHED_FIFO", "FIFO"),
            ("SCHED_RR", "RR"), ("SCHED_BATCH", "Batch"), ("SCHED_IDLE", "Idle")) if hasattr(os, name)}  # fmt: skip


REREAD = 5  # ticks between reads of a process's thread count


class _Fixed:
    """What changes seldom in a process, read once: who it runs as, its terminal, class and command line (read
    again when its name changes, as after an exec); its thread count every REREAD ticks (on Linux one more file
    to read, for a figure that seldom moves)."""

    __slots__ = ("command", "created", "group", "name", "proc", "sched", "threads", "tty", "user")

    def __init__(self, proc: psutil.Process, name: str, created: float) -> None:
        self.proc, self.name, self.created, self.threads = proc, name, created, proc.num_threads()
        self.user = name_of(pwd.getpwuid, proc.uids().effective)
        self.group = name_of(grp.getgrgid, proc.gids().effective)
        self.tty = terminal(proc)
        self.sched = sched_class(proc.pid)
        self.command = _command(proc, name)


class ProcTable:
    """The machine's processes through psutil: one walk of the table a tick (who is whose child), then the jobs'
    own processes read, keeping each one's seldom-changing details across ticks."""

    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}
        self._fixed: dict[int, _Fixed] = {}
        self._turn = 0
        self._memory = psutil.virtual_memory().total or 1

    def walk(self) -> dict[int, list[int]]:
        """Every process's children (pid -> child pids), from one pass over the process table. psutil keeps its
        handles across passes (a pid that ends and comes back gets a new one)."""
        out: dict[int, list[int]] = {}
        handles: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["ppid"]):
            handles[proc.pid] = proc
            ppid = proc.info.get("ppid")
            if isinstance(ppid, int):
                out.setdefault(ppid, []).append(proc.pid)
        self._handles = handles
        return out

    def read(self, pids: Iterable[int]) -> dict[int, Proc]:
        """The processes of `pids` still there (of the last walk); details of the others are forgotten."""
        out: dict[int, Proc] = {}
        fixed: dict[int, _Fixed] = {}
        skew = _boot_skew()
        self._turn += 1
        for pid in pids:
            handle = self._handles.get(pid)
            if handle is None:
                continue
            try:
                out[pid], fixed[pid] = self._read(handle, skew)
            except psutil.Error:  # ended since the table was read, or not ours to read
                continue
        self._fixed = fixed
        return out

    def _read(self, handle: psutil.Process, skew: float) -> tuple[Proc, _Fixed]:
        pid = handle.pid
        keep = self._fixed.get(pid)
        with handle.oneshot():
            name = handle.name()
            if keep is None or keep.proc is not handle:
                keep = _Fixed(handle, name, handle.create_time() + skew)
            else:
                if keep.name != name:
                    keep.name, keep.command = name, _command(handle, name)
                if (pid + self._turn) % REREAD == 0:  # in turn, not every process in the same tick
                    keep.threads = handle.num_threads()
            times = handle.cpu_times()
            memory = handle.memory_info()
            nice = handle.nice()
            proc = Proc(pid=pid, ppid=handle.ppid(), own=times.user + times.system,
                        reaped=times.children_user + times.children_system, created=keep.created, rss=memory.rss,
                        vms=memory.vms, mem=memory.rss / self._memory * 100,
                        state=STATES.get(handle.status(), "Unknown"), priority=priority_of(pid, nice, keep.sched),
                        nice=nice, threads=keep.threads, user=keep.user, group=keep.group, tty=keep.tty,
                        sched=keep.sched, command=keep.command, disk=_disk(handle))  # fmt: skip
        return proc, keep


def _boot_skew() -> float:
    """What to add to psutil's creation times to have them on time.time()'s clock to the tick: on Linux psutil adds
    the boot time in whole seconds (`btime`), so a process could seem up to a second older than it is."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None or not sys.platform.startswith("linux"):
        return 0.0
    try:
        return time.time() - time.clock_gettime(boottime) - psutil.boot_time()
    except (OSError, RuntimeError):
        return 0.0


@functools.lru_cache(maxsize=1024)
def name_of(lookup: Any, ident: int) -> str:
    """A user's or group's name (its number when it has none), remembered: a thousand jobs are often one user."""
    try:
        return str(lookup(ident)[0])
    except (KeyError, OverflowError):
        return str(ident)


def terminal(proc: psutil.Process) -> str:
    try:
        tty = proc.terminal()
    except (psutil.Error, OSError):
        tty = None
    return tty.removeprefix("/dev/") if tty else "?"


def sched_class(pid: int) -> str:
    getter = getattr(os, "sched_getscheduler", None)
    if getter is None:
        return "Other"
    try:
        return _CLASSES.get(getter(pid) & 0xFF, "Unknown")  # the reset-on-fork flag is not the class
    except OSError:
        return "Unknown"


def priority_of(pid: int, nice: int, sched: str) -> int:
    """As `ps -o pri`: 19 - nice for the normal classes, 40 + the real-time priority for FIFO and RR."""
    if sched in ("FIFO", "RR"):
        with contextlib.suppress(OSError, AttributeError):
            return 40 + os.sched_getparam(pid).sched_priority
    return 19 - nice


def _command(proc: psutil.Process, name: str) -> str:
    try:
        argv = proc.cmdline()
    except psutil.Error:
        argv = []
    return (" ".join(argv) or name)[:MAX_COMMAND]


def _disk(proc: psutil.Process) -> int:
    """Bytes read and written so far (Linux: every read and write call, as xySat's rchar + wchar; 0 where the
    platform does not say)."""
    try:
        io = proc.io_counters()  # type: ignore[attr-defined,unused-ignore]  # not on every platform
    except (psutil.Error, AttributeError, NotImplementedError, OSError):
        return 0
    chars = getattr(io, "read_chars", None)
    if chars is not None:
        return int(chars) + int(io.write_chars)
    return int(io.read_bytes) + int(io.write_bytes)
