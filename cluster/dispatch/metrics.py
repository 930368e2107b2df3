"""A running job's process figures as agents report them (xySat's shapes), bounded, and the timelines built from them.

Pure code, used by updates.py on every report:

- `cpu`, `mem` (and `disk`, `net` if an agent sends them) are objects of numbers ({min, max, total, count,
  current}); anything else in them is dropped.
- `procs` ({pid: {...}}) and `conns` ([{...}]) keep at most 100 entries of at most 32 plain values each.
- The timelines are the conductor's, as in xyOps (xySat never sends them): every report with `procs` (the agent's
  once-a-second tick) adds a `second` entry {epoch, procs: {pid: {cpu, memRss, command, disk, net}}}, and the first
  one of each minute a `minute` entry {epoch: the minute, procs, conns}. Podium writes a running job's whole
  record on every change, so besides xyOps' 300 seconds and 1440 minutes they are bounded in what they hold
  (16 processes and 16 connections an entry, 1,200 processes in all seconds, 1,440 items in all minutes, the
  oldest entries going first), and a second entry names a process's command (cut to 64 characters) only where
  the process first appears in the timeline, which is all xyOps' charts read of it: a job of two processes
  holds about 40 KiB (msgpack) of timelines once five minutes have passed, and a long job stays under 1 MiB.
- The final record's `disk` and `net` come from the minute timeline, as xyOps' calcAvgDiskNet: disk = {total:
  bytes read and written between minute samples, count: seconds between them}, net = {total: the bytes per
  second of each minute sample's connections, count: minute samples}; avg = total / count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Record = dict[str, Any]

FIGURES = ("cpu", "mem", "disk", "net")
TICK = frozenset({*FIGURES, "procs", "conns", "id"})  # what a tick carries besides the job's own changes
MAX_FIGURE_KEYS = 8
MAX_PROCS = 100
MAX_CONNS = 100
MAX_FIELDS = 32  # plain values kept of one process or connection
MAX_KEY = 64
MAX_TEXT = 1024
SECONDS = 300
MINUTES = 1440
ENTRY_PROCS = 16
ENTRY_CONNS = 16
SECOND_ITEMS = 1200
MINUTE_ITEMS = 1440
TIMELINE_TEXT = 256  # characters of a command line (or a connection's text) in a minute entry
SECOND_TEXT = 64  # in a second entry, where charts only name the process by it
SLIM = ("cpu", "memRss", "command", "disk", "net")


def figures(value: Any) -> dict[str, float] | None:
    """{name: number}, at most a few, or None when nothing in it is one."""
    if not isinstance(value, Mapping):
        return None
    out = {}
    for key, number in list(value.items())[:MAX_FIGURE_KEYS]:
        if isinstance(key, str) and _number(number):
            out[key[:MAX_KEY]] = number
    return out or None


def procs(value: Any) -> dict[str, Record] | None:
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Record] = {}
    for pid, proc in value.items():
        if len(out) >= MAX_PROCS:
            break
        if isinstance(proc, Mapping):
            out[str(pid)[:MAX_KEY]] = _plain(proc, MAX_TEXT)
    return out


def conns(value: Any) -> list[Record] | None:
    if not isinstance(value, list):
        return None
    return [_plain(conn, MAX_TEXT) for conn in value[:MAX_CONNS] if isinstance(conn, Mapping)]


def figures_only(job: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
    """Whether a report (before it is applied) changes nothing of the job but its process figures, as most of an
    agent's once-a-second ticks do: a caller may write such a job less often than every second."""
    return all(key in TICK or job.get(key) == value for key, value in update.items())


def add_timelines(job: Record, now: float) -> None:
    """Append this report's `procs` and `conns` (already bounded, on the job) to the job's timelines."""
    current = job.get("procs")
    if not isinstance(current, Mapping):
        return
    lines = job.get("timelines")
    if not isinstance(lines, dict):
        lines = job["timelines"] = {}
    second = lines["second"] if isinstance(lines.get("second"), list) else []
    minute = lines["minute"] if isinstance(lines.get("minute"), list) else []
    lines.update(second=second, minute=minute)
    last = second[-1].get("procs") if second and isinstance(second[-1], Mapping) else None
    second.append(second_entry(current, last if isinstance(last, Mapping) else {}, now))
    _carry_commands(second, _trim(second, SECONDS, SECOND_ITEMS))
    previous = minute[-1].get("epoch") if minute and isinstance(minute[-1], Mapping) else None
    entry = minute_entry(current, job.get("conns"), now, previous)
    if entry is not None:
        minute.append(entry)
        _trim(minute, MINUTES, MINUTE_ITEMS)


def second_entry(procs: Mapping[str, Any], before: Mapping[str, Any], now: float) -> Record:
    """The `second` timeline entry of one tick; `before` is the procs of the entry before it. A process's command
    is only where it first appears (all the charts read of it), not again every second."""
    return {"epoch": round(now, 3), "procs": {
        pid: _short({k: p[k] for k in SLIM if k in p and (k != "command" or pid not in before)}, SECOND_TEXT)
        for pid, p in list(procs.items())[:ENTRY_PROCS] if isinstance(p, Mapping)}}  # fmt: skip


def minute_entry(procs: Mapping[str, Any], conns: Any, now: float, previous: Any) -> Record | None:
    """The `minute` timeline entry of a tick, or None when the minute has one (`previous`: the last entry's epoch)."""
    epoch = int(now // 60 * 60)
    if previous == epoch:
        return None
    found = conns if isinstance(conns, list) else []
    return {"epoch": epoch,
            "procs": {pid: _short(p, TIMELINE_TEXT) for pid, p in list(procs.items())[:ENTRY_PROCS]
                      if isinstance(p, Mapping)},
            "conns": [_short(c, TIMELINE_TEXT) for c in found[:ENTRY_CONNS] if isinstance(c, Mapping)]}  # fmt: skip


def disk_net(job: Record) -> None:
    """The final `disk` and `net` from the minute timeline (zeros without one, as xyOps)."""
    disk, net = {"total": 0, "count": 0}, {"total": 0, "count": 0}
    lines = job.get("timelines")
    minute = lines.get("minute") if isinstance(lines, Mapping) else None
    previous: Mapping[str, Any] | None = None
    for entry in minute if isinstance(minute, list) else []:
        if not isinstance(entry, Mapping):
            continue
        net["total"] += sum(_int(c.get("delta")) for c in entry.get("conns") or [] if isinstance(c, Mapping))
        net["count"] += 1
        if previous is not None:
            now_procs, then_procs = entry.get("procs") or {}, previous.get("procs") or {}
            for pid, proc in now_procs.items():  # the counters only grow: each process's growth since then
                before = then_procs.get(pid)
                if isinstance(proc, Mapping) and isinstance(before, Mapping) and _int(before.get("disk")):
                    disk["total"] += max(0, _int(proc.get("disk")) - _int(before.get("disk")))
            disk["count"] += _int(entry.get("epoch")) - _int(previous.get("epoch"))
        previous = entry
    job.update(disk=disk, net=net)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> int:
    return int(value) if _number(value) else 0


def _plain(value: Mapping[Any, Any], text: int) -> Record:
    """At most MAX_FIELDS string keys with plain values (numbers, strings cut to `text`, booleans, null)."""
    out: Record = {}
    for key, item in value.items():
        if len(out) >= MAX_FIELDS:
            break
        if not isinstance(key, str):
            continue
        if isinstance(item, str):
            out[key[:MAX_KEY]] = item[:text]
        elif item is None or isinstance(item, bool) or _number(item):
            out[key[:MAX_KEY]] = item
    return out


def _short(value: Mapping[str, Any], text: int) -> Record:
    return {k: v[:text] if isinstance(v, str) else v for k, v in value.items()}


def _trim(entries: list[Any], most: int, items: int) -> list[Any]:
    """Oldest entries out (returned): at most `most` kept, holding at most `items` processes and connections."""
    gone = entries[:-most]
    del entries[:-most]
    held = sum(_size(e) for e in entries)
    while len(entries) > 1 and held > items:
        gone.append(entries.pop(0))
        held -= _size(gone[-1])
    return gone


def _carry_commands(second: list[Any], gone: list[Any]) -> None:
    """The entries that went held the first sight of some processes: their commands move to the new first one."""
    if not gone or not second or not isinstance(second[0], Mapping) or not isinstance(second[0].get("procs"), dict):
        return
    commands: dict[str, Any] = {}
    for entry in gone:
        procs = entry.get("procs") if isinstance(entry, Mapping) else None
        for pid, proc in procs.items() if isinstance(procs, Mapping) else ():
            if isinstance(proc, Mapping) and "command" in proc:
                commands[pid] = proc["command"]
    for pid, proc in second[0]["procs"].items():
        if isinstance(proc, dict) and "command" not in proc and pid in commands:
            proc["command"] = commands[pid]


def _size(entry: Any) -> int:
    if not isinstance(entry, Mapping):
        return 1
    return len(entry.get("procs") or ()) + len(entry.get("conns") or ())
