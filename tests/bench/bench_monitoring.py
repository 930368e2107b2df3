"""Monitoring under load: N simulated agents on real WebSockets to one `podium serve` node, each sending `quickmon`
every second and `monitor` every minute with realistic payloads. Prints figures.

Per N (`--agents 100,1000`) it starts one valkey-server and one node on it (tests/servers.py `Cluster`, access log
off), logs in as admin and creates an admin API key, then starts `--procs` generator processes (this module with
`--generate`), which open the agents over `ws://127.0.0.1:PORT/` at `--join-rate` per second in all (at most 64
handshakes in flight per process, below the gateway's MAX_HANDSHAKES). Each agent speaks xySat's handshake
(tests/foreign_agent.py: hello -> hello{nonce, id} -> join{sha256(nonce + secret)} -> joined), has its own server id
and hostname, answers `echo` with `echoback`, and sends, on xySat's schedule (cluster/agent/hostmon.py):

- `quickmon` each second, `hostID % N` ms after the second (staggered over the second), the payload of Podium's
  agent (`{mem, cpu, fs: {rx, wx}, net: {rx, tx}}`) with moving values and counters;
- `monitor` each minute, `1 s + hostID % (N * 29)` ms after the minute (spread over ~30 s): a ServerMonitorData
  built once here by Podium's own agent code (cluster/agent/hostdata.py HostData) from this machine, its process
  list padded to `--processes` entries and its connections to `--conns`, then varied per agent and minute (load,
  cpu, memory, disk use, growing disk/network/io counters, each process's cpu and memory). The stock alerts do not
  hold on these values.

After every agent joined and `--settle` seconds, the steady window of `--duration` seconds (default 180: a whole
number of minutes holds every agent's minute sample equally often) measures the CPU of the node and of its
valkey-server (psutil, % of one core), the node's RSS, the generators' CPU and how late their quickmon sends ran
(the lag: each send's start after its scheduled time). Then, still under load, one client makes `--requests`
calls each of `get_historical_monitor_data` (hourly, 60 rows) and `get_latest_monitor_data` (hourly, 60 rows, with
the last sample) on random servers, and `--group-requests` of `get_quickmon_data` for the group of all N servers,
one at a time with the API key: p50 / p95 / max ms. Then the generators stop and it counts the minute samples the
node stored (the hourly timelines' counts) against those sent, the alerts active and invocations, the warnings in
the node's log, and the store memory: MEMORY USAGE of every timeline key per server and per day (the total over
the minutes covered, which includes each key's fixed overhead, and the growth over the window, which does not),
the QuickMon lists and the last-sample records.

`--profile DIR` records the node with py-spy during the window (raw collapsed stacks in DIR) and prints how busy
its event loop was and its top functions; sampling costs CPU, so take the CPU figures from a run without it.

Everything listens on 127.0.0.1. Bounded: `--agents` at most 5,000, `--duration` at most 1,800 s, each generator
ends by itself after its `--max-s` (and when its stdin closes). Every process started is stopped by pid, also on
Ctrl-C or SIGTERM.

    python -m tests.bench.bench_monitoring                          # 100 then 1,000 agents, 180 s each
    python -m tests.bench.bench_monitoring --agents 1000 --duration 120 --procs 2
    python -m tests.bench.bench_monitoring --agents 1000 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp
import orjson
import psutil

from cluster.agent.hostdata import HostData, QuickData
from cluster.agent.hostmon import host_id, monitor_delay, quick_delay
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from storage.timeseries import SYSTEMS, TimelineStore
from tests.bench.bench_actions import PY_SPY, Profile, start_profile, stop_profile, summarize_profile
from tests.bench.bench_api import busy_cpu_seconds
from tests.bench.loadgen import percentile
from tests.servers import ROOT, Cluster, Node

SECRET = "bench-monitoring-secret"
CLUSTER = "podium"
HANDSHAKES_PER_PROC = 64  # in flight per generator (the gateway refuses above MAX_HANDSHAKES = 256 per node)
DAY_S = 86400
GROWING = ("hourly", "daily")  # systems that gain items during a window of minutes
TARGET_PCT = 50.0  # the target: 1,000 agents on one node under 50 % of one core
# bench_timeseries.py's figure (README, 100 servers x a simulated day of the 15 default monitors).
TIMESERIES_REF_KB = 293
LOG_EVENTS = ("monitor_sample_failed", "quickmon_flush_failed", "agent_socket_failed", "agent_send_timeout",
              "agent_keepalive_failed", "loop_lag", "stepped_down", "alert")  # fmt: skip
_PR_SET_PDEATHSIG = 1
Record = dict[str, Any]


def server_id(n: int) -> str:
    return f"bm{n:05d}"


def hostname(n: int) -> str:
    return f"bench-{n:05d}.example.com"


# -- payloads ----------------------------------------------------------------------------------------------


def real_sample(processes: int, conns: int) -> tuple[Record, Record]:
    """(ServerMonitorData, quickmon payload) of this machine as Podium's agent builds them, the process list padded
    to `processes` rows and the connections to `conns` (copies of real rows under new pids and ports)."""
    host, quick = HostData("bench.example.com"), QuickData()
    time.sleep(1.0)  # the rates and cpu splits measure a second
    data, qm = host.sample(0), quick.sample()
    procs = data["processes"]
    rows: list[Record] = list(procs.get("list") or [])[:processes]
    rng = random.Random(7)
    if not rows:
        raise RuntimeError("the agent's process list came back empty")
    pid = max(int(r.get("pid") or 0) for r in rows)
    while len(rows) < processes:
        pid += rng.randrange(1, 40)
        base = rng.choice(rows)
        rows.append({**base, "pid": pid, "parentPid": 1, "command": f"/usr/sbin/service-{len(rows)} --worker",
                     "memRss": rng.randrange(2, 400) * 1024 * 1024, "threads": rng.randrange(1, 32)})  # fmt: skip
    data["processes"] = {**procs, "all": len(rows), "list": rows}
    links: list[Record] = list(data.get("conns") or [])[:conns]
    while len(links) < conns:
        row = rng.choice(rows)
        links.append({"type": "tcp", "state": rng.choice(["ESTABLISHED"] * 4 + ["TIME_WAIT", "LISTEN"]),
                      "local_addr": f"192.0.2.2:{rng.randrange(1024, 65535)}",
                      "remote_addr": f"203.0.113.{rng.randrange(1, 255)}:{rng.choice([443, 5432, 6379, 80])}",
                      "pid": row["pid"], "bytes_out": rng.randrange(10**3, 10**7),
                      "bytes_in": rng.randrange(10**3, 10**8)})  # fmt: skip
    data["conns"] = links
    net = data["stats"]["network"]
    net.update(conns=len(links), states={"established": sum(1 for c in links if c["state"] == "ESTABLISHED")})
    data["commands"] = {"open_files": "1824\t0\t9223372036854775807\n"}
    if "root" not in data.get("mounts", {}):
        data.setdefault("mounts", {})["root"] = {"fs": "/dev/vda", "type": "ext4", "size": 270 * 10**9,
                                                 "used": 60 * 10**9, "available": 210 * 10**9, "use": 22.2,
                                                 "mount": "/", "rw": True}  # fmt: skip
    return data, qm


class SimHost:
    """One simulated host's moving figures: its counters grow, its gauges wander within realistic bounds (under
    every stock alert: load below cores + 1, memory over 5 % available, iowait and disk use low)."""

    def __init__(self, n: int, template: Record, quick: Record) -> None:
        self.rng = random.Random(n)
        self.t, self.q = template, quick
        self.mem_total = int(template["memory"].get("total") or 16 * 1024**3)
        fs, io, net = template["stats"]["fs"], template["stats"]["io"], template["stats"]["network"]
        r = self.rng
        self.fs = [int(fs["rx"]) + r.randrange(10**9), int(fs["wx"]) + r.randrange(10**9)]
        self.io = [int(io["rIO"]) + r.randrange(10**6), int(io["wIO"]) + r.randrange(10**6)]
        self.net = [int(net["rx_bytes"]) + r.randrange(10**9), int(net["tx_bytes"]) + r.randrange(10**9)]
        self.cores = int(template["cpu"].get("cores") or 2)
        self.disk_use = r.uniform(15, 70)

    def _used(self) -> int:
        return int(self.mem_total * self.rng.uniform(0.2, 0.8))

    def quickmon(self) -> Record:
        r = self.rng
        self.fs[0] += r.randrange(0, 2 * 1024**2)
        self.fs[1] += r.randrange(0, 4 * 1024**2)
        self.net[0] += r.randrange(0, 3 * 1024**2)
        self.net[1] += r.randrange(0, 1024**2)
        used, load = self._used(), round(r.uniform(1, 40), 2)
        return {"mem": {**self.q["mem"], "used": used, "available": self.mem_total - used},
                "cpu": {**self.q["cpu"], "currentLoad": load, "avgLoad": round(r.uniform(0.05, 1.5), 2)},
                "fs": {"rx": self.fs[0], "wx": self.fs[1]}, "net": {"rx": self.net[0], "tx": self.net[1]}}  # fmt: skip

    def monitor(self) -> Record:
        r, t = self.rng, self.t
        self.io[0] += r.randrange(0, 30_000)
        self.io[1] += r.randrange(0, 60_000)
        used, load = self._used(), round(r.uniform(1, 40), 2)
        self.disk_use = min(80.0, max(5.0, self.disk_use + r.uniform(-0.05, 0.1)))
        totals = {**t["cpu"]["totals"], "active": load, "idle": round(100 - load, 2),
                  "iowait": round(r.uniform(0, 2), 2)}  # fmt: skip
        fs, io, net = t["stats"]["fs"], t["stats"]["io"], t["stats"]["network"]
        procs = [{**p, "cpu": round(r.uniform(0, 3), 2) if i % 5 == 0 else 0.0,
                  "memRss": int(p.get("memRss") or 0) + r.randrange(0, 1 << 20)}
                 for i, p in enumerate(t["processes"]["list"])]  # fmt: skip
        return {
            **t, "load": [round(r.uniform(0.05, min(1.5, self.cores)), 2) for _ in range(3)], "jobs": 0,
            "memory": {**t["memory"], "used": used, "available": self.mem_total - used},
            "cpu": {**t["cpu"], "currentLoad": load, "avgLoad": round(r.uniform(0.05, 1.5), 2), "totals": totals},
            "mounts": {**t["mounts"], "root": {**t["mounts"]["root"], "use": round(self.disk_use, 2)}},
            "stats": {**t["stats"],
                      "fs": {**fs, "rx": self.fs[0], "wx": self.fs[1], "tx": self.fs[0] + self.fs[1]},
                      "io": {**io, "rIO": self.io[0], "wIO": self.io[1], "tIO": self.io[0] + self.io[1]},
                      "network": {**net, "rx_bytes": self.net[0], "tx_bytes": self.net[1],
                                  "conns": r.randrange(40, 60)}},
            "processes": {**t["processes"], "list": procs},
            "conns": [{**c, "bytes_in": int(c["bytes_in"]) + r.randrange(10**6)} for c in t["conns"]],
            "commands": {"open_files": f"{r.randrange(1500, 2500)}\t0\t9223372036854775807\n"},
        }  # fmt: skip


# -- the generator process (--generate) --------------------------------------------------------------------


@dataclass
class GenStats:
    """What one generator did (totals since start; lags and sends since the last `mark`)."""

    joined: int = 0
    join_errors: int = 0
    lost: int = 0  # sockets that closed after joining (each reconnects)
    quick_sent: int = 0
    monitor_sent: int = 0
    monitor_bytes: int = 0
    echoes: int = 0
    window_quick: int = 0
    window_monitor: int = 0
    lags: list[float] = field(default_factory=list)  # s late, of the quickmon sends since `mark`

    def report(self) -> Record:
        lags = sorted(self.lags)
        cpu = psutil.Process().cpu_times()
        return {"joined": self.joined, "join_errors": self.join_errors, "lost": self.lost,
                "quick_sent": self.quick_sent, "monitor_sent": self.monitor_sent, "echoes": self.echoes,
                "monitor_bytes": self.monitor_bytes, "window_quick": self.window_quick,
                "window_monitor": self.window_monitor, "lag_n": len(lags),
                "lag_p50": percentile(lags, 50), "lag_p99": percentile(lags, 99), "lag_max": lags[-1] if lags else 0.0,
                "cpu_s": cpu.user + cpu.system}  # fmt: skip


class SimAgent:
    """One simulated agent: its socket (reconnected if lost), its two senders."""

    def __init__(self, n: int, total: int, gen: Generator) -> None:
        self.n, self.gen = n, gen
        self.sid, self.hostname = server_id(n), hostname(n)
        hid = host_id(self.hostname)
        self.quick_delay, self.monitor_delay = quick_delay(hid, total), monitor_delay(hid, total)
        self.host = SimHost(n, gen.template, gen.quick)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.joined = asyncio.Event()

    async def _send(self, cmd: str, data: Any) -> int:
        ws = self.ws
        if ws is None or ws.closed or not self.joined.is_set():
            return 0
        text = orjson.dumps({"cmd": cmd, "data": data}).decode()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(text)
            return len(text)
        return 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        first = True
        while not self.gen.stopping.is_set():
            try:
                async with self.gen.handshakes:
                    ws = await session.ws_connect(self.gen.url, max_msg_size=0, autoping=True)
                    self.ws = ws
                    await self._handshake(ws)
                if first:
                    self.gen.stats.joined += 1
                    first = False
                await self._read(ws)
                self.gen.stats.lost += 1
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError):
                self.gen.stats.join_errors += 1
            self.joined.clear()
            if self.ws is not None:
                await self.ws.close()
            await asyncio.sleep(1.0)

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(orjson.dumps({"cmd": "hello", "data": {
            "hostname": self.hostname, "id": self.sid,
            "info": {"satellite": "1.0.39", "os": {"platform": "linux"}}}}).decode())  # fmt: skip
        async with asyncio.timeout(30):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = orjson.loads(msg.data)
                cmd, data = frame.get("cmd"), frame.get("data") or {}
                if cmd == "hello":
                    token = hashlib.sha256((str(data["nonce"]) + self.gen.secret).encode()).hexdigest()
                    await ws.send_str(orjson.dumps({"cmd": "join", "data": {"token": token}}).decode())
                elif cmd == "joined":
                    self.joined.set()
                    return
                elif cmd in ("auth_failure", "redirect", "retry"):
                    raise RuntimeError(f"{self.sid}: {cmd} {data}")
        raise RuntimeError(f"{self.sid}: closed before joined")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            frame = orjson.loads(msg.data)
            if frame.get("cmd") == "echo":
                self.gen.stats.echoes += 1
                await ws.send_str(orjson.dumps({"cmd": "echoback", "data": frame.get("data")}).decode())

    async def quickmons(self) -> None:
        await self.joined.wait()
        stats = self.gen.stats
        while True:
            due = math.floor(time.time()) + 1 + self.quick_delay
            await asyncio.sleep(due - time.time())
            late = time.time() - due
            if not self.joined.is_set():
                continue
            if await self._send("quickmon", self.host.quickmon()):
                stats.quick_sent += 1
                stats.window_quick += 1
                stats.lags.append(late)

    async def monitors(self) -> None:
        await self.joined.wait()
        stats = self.gen.stats
        while True:
            due = math.floor(time.time() / 60) * 60 + 60 + self.monitor_delay
            await asyncio.sleep(due - time.time())
            date = time.time()
            frame = {"version": "1.0", "date": date, "server": self.sid, "hostname": self.hostname,
                     "data": self.host.monitor()}  # fmt: skip
            sent = await self._send("monitor", frame)
            if sent:
                stats.monitor_sent += 1
                stats.window_monitor += 1
                stats.monitor_bytes = sent


class Generator:
    """One generator process: agents `first` .. `first + count - 1` of `total`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url, self.secret = args.url, args.secret
        self.first, self.count, self.total = args.first, args.count, args.total
        self.join_rate = args.join_rate
        self.template, self.quick = json.loads(Path(args.template).read_text())
        self.stats = GenStats()
        self.stopping = asyncio.Event()
        self.handshakes = asyncio.Semaphore(HANDSHAKES_PER_PROC)

    def emit(self, kind: str, data: Any) -> None:
        sys.stdout.write(json.dumps({"kind": kind, "data": data}) + "\n")
        sys.stdout.flush()

    async def run(self, max_s: float) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        conn = aiohttp.TCPConnector(limit=0)
        tasks: list[asyncio.Task[None]] = []
        agents = [SimAgent(n, self.total, self) for n in range(self.first, self.first + self.count)]
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
            starter = asyncio.create_task(self._start(agents, session, tasks))
            deadline = loop.time() + max_s
            try:
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        line = (await asyncio.wait_for(reader.readline(), left)).decode().strip()
                    except TimeoutError:
                        break
                    if line == "mark":
                        self.stats.lags, self.stats.window_quick, self.stats.window_monitor = [], 0, 0
                        self.emit("marked", {})
                    elif line == "report":
                        self.emit("report", self.stats.report())
                    elif line in ("stop", ""):
                        break
            finally:
                self.stopping.set()
                starter.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(starter, *tasks, return_exceptions=True)
                self.emit("final", self.stats.report())
                for agent in agents:
                    if agent.ws is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(agent.ws.close(), 1.0)

    async def _start(self, agents: Sequence[SimAgent], session: aiohttp.ClientSession,
                     tasks: list[asyncio.Task[None]]) -> None:  # fmt: skip
        for agent in agents:
            tasks += [asyncio.create_task(agent.run(session)), asyncio.create_task(agent.quickmons()),
                      asyncio.create_task(agent.monitors())]  # fmt: skip
            await asyncio.sleep(1.0 / self.join_rate)
        await asyncio.gather(*(a.joined.wait() for a in agents))
        self.emit("joined", {"count": len(agents)})


# -- the controller ----------------------------------------------------------------------------------------


def _child_setup() -> None:
    """In each generator: SIGTERM if this script dies without stopping it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class GenProc:
    """A generator process, spoken to over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.joined = asyncio.Event()
        self.replies: asyncio.Queue[tuple[str, Record]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, first: int, count: int, total: int, rate: float, template: Path,
                    max_s: float) -> GenProc:  # fmt: skip
        cmd = [sys.executable, "-m", "tests.bench.bench_monitoring", "--generate", "--url", url, "--secret", SECRET,
               "--first", str(first), "--count", str(count), "--total", str(total), "--join-rate", str(rate),
               "--template", str(template), "--max-s", str(max_s)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    cwd=ROOT, env=env, preexec_fn=_child_setup)  # fmt: skip
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg["kind"] == "joined":
                    self.joined.set()
                else:
                    await self.replies.put((str(msg["kind"]), dict(msg["data"])))

    async def ask(self, command: str, timeout: float = 30.0) -> Record:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            kind, data = await asyncio.wait_for(self.replies.get(), timeout)
            if kind in ("marked", "report", "final"):
                return data

    async def stop(self) -> Record | None:
        """Ask it to stop and report; by pid, SIGTERM then SIGKILL if it does not end."""
        final: Record | None = None
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                final = await self.ask("stop", 30.0)
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return final


def cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


@dataclass
class Result:
    """One N's figures."""

    agents: int
    procs: int
    join_s: float = 0.0
    window_s: float = 0.0
    idle_pct: float = 0.0  # node CPU before any agent joined
    join_pct: float = 0.0  # node CPU while they joined
    node_pct: float = 0.0
    store_pct: float = 0.0
    gen_pct: float = 0.0
    other_pct: float = 0.0
    node_rss: int = 0
    node_rss_max: int = 0
    store_rss: int = 0
    lag_p50_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    window_quick: int = 0
    window_monitor: int = 0
    api_node_pct: float = 0.0
    api: dict[str, tuple[float, float, float, int, int]] = field(default_factory=dict)  # see Latency
    sent: int = 0
    processed: int = 0
    quick_sent: int = 0
    lost: int = 0
    join_errors: int = 0
    echoes: int = 0
    alerts_active: int = 0
    invocations: int = 0
    log_events: dict[str, str] = field(default_factory=dict)  # phase -> warnings logged
    ts_day: dict[str, float] = field(default_factory=dict)  # system -> B/server/day: MEMORY USAGE / items x items/day
    ts_growth_day: dict[str, float] = field(default_factory=dict)  # system -> B/server/day, growth over the window
    ts_items: dict[str, float] = field(default_factory=dict)  # system -> items per server
    minutes: float = 0.0  # hourly items with a sample, per server
    quick_bytes: float = 0.0  # per server
    host_bytes: float = 0.0  # per server
    profile: list[str] = field(default_factory=list)


async def timeline_usage(db: Database, ids: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """MEMORY USAGE (all samples) and items of every timeline key, per system, summed over `ids`."""
    usage, items = dict.fromkeys(SYSTEMS, 0), dict.fromkeys(SYSTEMS, 0)
    for system in SYSTEMS:
        keys = [db.keys.timeline(sid, system) for sid in ids]
        usage[system] = await key_usage(db, keys)
        for at in range(0, len(keys), 500):
            async with db.client.pipeline(transaction=False) as pipe:
                for key in keys[at : at + 500]:
                    pipe.llen(key)  # type: ignore[unused-awaitable]  # queued
                items[system] += sum(int(v or 0) for v in await pipe.execute())
    return usage, items


async def key_usage(db: Database, keys: Sequence[str]) -> int:
    """MEMORY USAGE (all samples) of `keys` together."""
    total = 0
    for at in range(0, len(keys), 500):
        async with db.client.pipeline(transaction=False) as pipe:
            for key in keys[at : at + 500]:
                pipe.memory_usage(key, samples=0)  # type: ignore[unused-awaitable]  # queued
            total += sum(int(v or 0) for v in await pipe.execute())
    return total


Latency = tuple[float, float, float, int, int]  # p50 ms, p95 ms, max ms, requests, errors


async def api_latency(http: aiohttp.ClientSession, node: Node, key: str, ids: Sequence[str], since: float,
                      requests: int, group_requests: int) -> dict[str, Latency]:  # fmt: skip
    rng = random.Random(11)
    headers = {"X-API-Key": key}
    cases: list[tuple[str, str, int]] = [("get_historical_monitor_data", "historical", requests),
                                         ("get_latest_monitor_data", "latest", requests),
                                         ("get_quickmon_data", "quickmon", group_requests)]  # fmt: skip
    out: dict[str, Latency] = {}
    for api, kind, count in cases:
        times: list[float] = []
        errors = 0
        for _ in range(count):
            if kind == "historical":
                params = {"server": rng.choice(ids), "sys": "hourly", "date": str(int(since)), "limit": "60"}
            elif kind == "latest":
                params = {"server": rng.choice(ids), "sys": "hourly", "limit": "60"}
            else:
                params = {"group": "main"}
            started = time.perf_counter()
            try:
                async with http.get(f"{node.url}/api/app/{api}/v1", params=params, headers=headers) as resp:
                    body = await resp.read()
                ok = resp.status == 200 and orjson.loads(body).get("code") == 0
            except (aiohttp.ClientError, TimeoutError, ValueError):
                ok = False
            times.append((time.perf_counter() - started) * 1000)
            errors += not ok
        times.sort()
        label = api if kind != "quickmon" else f"{api} (group of {len(ids)})"
        out[label] = (percentile(times, 50), percentile(times, 95), times[-1] if times else 0.0, count, errors)
    return out


async def admin_key(http: aiohttp.ClientSession, node: Node) -> str:
    """Log in as admin/admin (retried while the node creates its first-start objects) and create an admin key."""
    deadline, pause = time.monotonic() + 60, 0.2
    session = ""
    while not session:
        async with http.post(f"{node.url}/api/user/login/v1", json={"username": "admin", "password": "admin"}) as r:
            cookie = r.cookies.get("session_id")
            if r.status == 200 and cookie is not None:
                session = cookie.value
        if not session:
            if time.monotonic() > deadline:
                raise RuntimeError("login as admin/admin failed")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
    http.cookie_jar.clear()
    async with http.post(f"{node.url}/api/app/create_api_key/v1", headers={"X-Session-ID": session},
                         json={"title": "bench", "privileges": {"admin": True}}) as r:  # fmt: skip
        reply = await r.json(content_type=None)
    if reply.get("code") != 0 or not reply.get("plain_key"):
        raise RuntimeError(f"create_api_key failed: {reply}")
    return str(reply["plain_key"])


def log_events(node: Node, phases: Sequence[tuple[str, float]]) -> dict[str, str]:
    """Phase -> the warnings of LOG_EVENTS the node logged in it (with the worst loop lag), by their timestamps."""
    counts: dict[str, Counter[str]] = {}
    worst: dict[str, float] = {}
    for line in node.log_text().splitlines():
        try:
            entry = json.loads(line)
            event = str(entry.get("event", ""))
            at = datetime.fromisoformat(str(entry.get("timestamp"))).timestamp()
        except (ValueError, AttributeError, TypeError):
            continue
        name = next((e for e in LOG_EVENTS if event == e or (e == "alert" and event.startswith("alert_"))), None)
        if name is None:
            continue
        phase = [p for p, started in phases if started <= at][-1]
        counts.setdefault(phase, Counter())[name] += 1
        if name == "loop_lag":
            worst[phase] = max(worst.get(phase, 0.0), float(entry.get("worst_ms") or entry.get("lag_ms") or 0))
    out = {}
    for phase, found in counts.items():
        text = ", ".join(f"{k} {v}" for k, v in found.items())
        out[phase] = text + (f" (worst lag {worst[phase]:.0f} ms)" if phase in worst else "")
    return out


async def run_one(root: Path, n: int, args: argparse.Namespace, template: Path) -> Result:
    res = Result(agents=n, procs=min(args.procs, n))
    ids = [server_id(i) for i in range(n)]
    extra = ("--secret-key", SECRET, "--access-log", "off", "--cluster", CLUSTER)
    gens: list[GenProc] = []
    phases: list[tuple[str, float]] = [("start", 0.0)]
    async with Cluster(root, size=1, extra=extra) as c:
        node = c.nodes[0]
        await c.wait_all_up(60)
        await c.wait_single_primary(60)
        assert c.redis.proc is not None
        store_pid = c.redis.proc.pid
        db = Database(connect(c.redis.url, timeout=30), Keyspace(CLUSTER))
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            key = await admin_key(http, node)
            idle0, ti = cpu_s([node.pid]), time.monotonic()
            await asyncio.sleep(args.idle)  # the node's own work with no agent (lease, scheduler, maintenance)
            res.idle_pct = (cpu_s([node.pid]) - idle0) / (time.monotonic() - ti) * 100
            ws_url = f"ws://127.0.0.1:{node.port}/"
            max_s = args.settle + args.duration + n / args.join_rate + 600
            share, t_join = math.ceil(n / res.procs), time.monotonic()
            phases.append(("join", time.time()))
            join0 = cpu_s([node.pid])
            for p in range(res.procs):
                first, count = p * share, min(share, n - p * share)
                if count > 0:
                    gens.append(await GenProc.start(ws_url, first, count, n, args.join_rate / res.procs, template,
                                                    max_s))  # fmt: skip
            join_timeout = n / args.join_rate * 3 + 60
            await asyncio.wait_for(asyncio.gather(*(g.joined.wait() for g in gens)), join_timeout)
            res.join_s = time.monotonic() - t_join
            res.join_pct = (cpu_s([node.pid]) - join0) / res.join_s * 100
            phases.append(("settle", time.time()))
            print(f"  {n} agents joined in {res.join_s:.1f} s; settling {args.settle:.0f} s", file=sys.stderr,
                  flush=True)  # fmt: skip
            await asyncio.sleep(args.settle)
            # -- the steady window --
            spy: Profile | None = await start_profile(args.profile, node.pid) if args.profile else None
            usage0, items0 = await timeline_usage(db, ids)
            for g in gens:
                await g.ask("mark")
            gen_pids = [g.pid for g in gens]
            node0, store0, gen0 = cpu_s([node.pid]), cpu_s([store_pid]), cpu_s(gen_pids)
            busy0, t0 = busy_cpu_seconds(), time.monotonic()
            phases.append(("window", time.time()))
            print(f"  measuring {args.duration:.0f} s ...", file=sys.stderr, flush=True)
            while (left := args.duration - (time.monotonic() - t0)) > 0:
                await asyncio.sleep(min(5.0, left))
                res.node_rss_max = max(res.node_rss_max, rss(node.pid))
            res.window_s = time.monotonic() - t0
            node1, store1, gen1, busy1 = cpu_s([node.pid]), cpu_s([store_pid]), cpu_s(gen_pids), busy_cpu_seconds()
            reports = [await g.ask("report") for g in gens]
            usage1, items1 = await timeline_usage(db, ids)
            if spy is not None:
                await stop_profile(spy)
                res.profile = summarize_profile(spy)
            res.node_pct = (node1 - node0) / res.window_s * 100
            res.store_pct = (store1 - store0) / res.window_s * 100
            res.gen_pct = (gen1 - gen0) / res.window_s * 100
            res.other_pct = max(0.0, (busy1 - busy0) - (node1 - node0) - (store1 - store0) - (gen1 - gen0)) \
                / res.window_s * 100  # fmt: skip
            res.node_rss, res.store_rss = rss(node.pid), rss(store_pid)
            res.lag_p50_ms = max(r["lag_p50"] for r in reports) * 1000
            res.lag_p99_ms = max(r["lag_p99"] for r in reports) * 1000
            res.lag_max_ms = max(r["lag_max"] for r in reports) * 1000
            res.window_quick = sum(int(r["window_quick"]) for r in reports)
            res.window_monitor = sum(int(r["window_monitor"]) for r in reports)
            # -- API reads under the load --
            print("  API reads ...", file=sys.stderr, flush=True)
            api0, ta = cpu_s([node.pid]), time.monotonic()
            phases.append(("API reads", time.time()))
            res.api = await api_latency(http, node, key, ids, time.time() - 3600, args.requests, args.group_requests)
            res.api_node_pct = (cpu_s([node.pid]) - api0) / (time.monotonic() - ta) * 100
            # -- stop the agents, then count --
            phases.append(("stop", time.time()))
            finals = [await g.stop() for g in gens]
            gens = []
            await asyncio.sleep(3.0)  # the last frames processed
            for f in finals:
                if f is not None:
                    res.sent += int(f["monitor_sent"])
                    res.quick_sent += int(f["quick_sent"])
                    res.lost += int(f["lost"])
                    res.join_errors += int(f["join_errors"])
                    res.echoes += int(f["echoes"])
            store = TimelineStore(db)
            minutes = 0
            for sid in ids:
                rows = await store.latest(sid, "hourly", 1000)
                res.processed += sum(int(r.get("count", 0)) for r in rows)
                minutes += sum(1 for r in rows if "count" in r)
            res.minutes = minutes / n
            usage, items = await timeline_usage(db, ids)
            for system, div in SYSTEMS.items():
                res.ts_items[system] = items[system] / n
                per_item = usage[system] / items[system] if items[system] else 0.0
                res.ts_day[system] = per_item * DAY_S / div
                added = items1[system] - items0[system]
                if system in GROWING and added > 0:  # without each key's fixed overhead
                    res.ts_growth_day[system] = (usage1[system] - usage0[system]) / added * DAY_S / div
            res.quick_bytes = await key_usage(db, [db.keys.quickmon(s) for s in ids]) / n
            res.host_bytes = await key_usage(db, [db.keys.host_data(s) for s in ids]) / n
            res.alerts_active = int(await db.client.hlen(db.keys.alerts_active))
            res.invocations = len([k async for k in db.client.scan_iter(match=db.keys.alert_invocation("*"),
                                                                        count=1000)])  # fmt: skip
            res.log_events = log_events(node, phases)
        finally:
            for g in gens:
                await g.stop()
            await http.close()
            await db.aclose()
    return res


def _kb(value: float) -> str:
    return f"{value / 1000:,.1f} KB"


def report(results: Sequence[Result], sizes: tuple[int, int], args: argparse.Namespace) -> list[str]:
    out = [f"payloads: monitor {sizes[0]:,} B of JSON ({args.processes} processes, {args.conns} connections), "
           f"quickmon {sizes[1]:,} B; machine: {psutil.cpu_count()} cores"]  # fmt: skip
    head = (f"{'agents':>6} {'procs':>5} {'join s':>6} {'window s':>8} {'idle CPU%':>9} {'node CPU%':>9} {'per 1k':>7} "
            f"{'store CPU%':>10} {'per 1k':>7} {'gen CPU%':>8} {'other CPU%':>10} {'node RSS MB':>11} "
            f"{'store RSS MB':>12} {'lag p50/p99/max ms':>19} {'quickmon/s':>10} {'monitor/min':>11}")  # fmt: skip
    out += ["", head, "-" * len(head)]
    for r in results:
        per = 1000 / r.agents
        out.append(f"{r.agents:>6} {r.procs:>5} {r.join_s:>6.1f} {r.window_s:>8.0f} {r.idle_pct:>9.1f} "
                   f"{r.node_pct:>9.1f} {(r.node_pct - r.idle_pct) * per:>7.1f} {r.store_pct:>10.1f} "
                   f"{r.store_pct * per:>7.1f} {r.gen_pct:>8.1f} {r.other_pct:>10.1f} "
                   f"{f'{r.node_rss / 2**20:.0f} ({r.node_rss_max / 2**20:.0f})':>11} "
                   f"{r.store_rss / 2**20:>12.0f} "
                   f"{f'{r.lag_p50_ms:.0f}/{r.lag_p99_ms:.0f}/{r.lag_max_ms:.0f}':>19} "
                   f"{r.window_quick / r.window_s:>10.0f} {r.window_monitor / r.window_s * 60:>11.0f}")  # fmt: skip
    out.append("idle CPU%: the node before any agent joined; node CPU% and store CPU%: % of one core over the "
               "window (node per 1k: less the idle figure, scaled to 1,000 agents; store per 1k: scaled); node RSS "
               "at the end (max in the window); lag: how late the generators' quickmon sends ran (worst "
               "generator)")  # fmt: skip
    for r in results:
        scaled = r.node_pct if r.agents == 1000 else r.idle_pct + (r.node_pct - r.idle_pct) * 1000 / r.agents
        verdict = "under" if scaled < TARGET_PCT else "OVER"
        how = "measured" if r.agents == 1000 else f"scaled from {r.agents}: idle + per-agent cost x 1,000"
        out.append(f"target: 1,000 agents on one node under {TARGET_PCT:.0f} % of one core: {verdict} "
                   f"({scaled:.1f} %, {how})")  # fmt: skip
    out.append("")
    out.append("API reads under the load, one at a time with an admin key (p50 / p95 / max ms, requests, errors):")
    for r in results:
        for api, (p50, p95, top, count, errors) in r.api.items():
            out.append(f"  {r.agents:>5} agents  {api:<48} {p50:7.1f} / {p95:7.1f} / {top:7.1f}  {count:>4}  "
                       f"{errors}")  # fmt: skip
        out.append(f"  {r.agents:>5} agents  node CPU during the reads: {r.api_node_pct:.0f} %")
    out.append("")
    out.append("samples: minute samples sent / stored (hourly timeline counts); quickmon frames sent; sockets "
               "lost after joining; failed joins (retried); echoes answered; alerts active / invocations; node "
               "log")  # fmt: skip
    for r in results:
        events = "; ".join(f"{k}: {v}" for k, v in r.log_events.items()) or "none of " + "/".join(LOG_EVENTS)
        out.append(f"  {r.agents:>5} agents: {r.sent:,} / {r.processed:,} ({r.sent - r.processed:+,} not stored); "
                   f"{r.quick_sent:,} quickmon; lost {r.lost}; failed joins {r.join_errors}; echoes {r.echoes:,}; "
                   f"alerts {r.alerts_active} / {r.invocations}; joining: node CPU {r.join_pct:.0f} %; "
                   f"node log: {events}")  # fmt: skip
    out.append("")
    out.append("store memory per server (MEMORY USAGE): time series per day by system, as bytes per item (the "
               "keys' total / their items, so with each key's fixed overhead) x items per day, and for the systems "
               "that grew during the window, from that growth per item added (without the overhead); the QuickMon "
               "list (60 samples) and the last sample")  # fmt: skip
    for r in results:
        total = sum(r.ts_day.values())
        growth = total + sum(r.ts_growth_day.get(s, 0) - r.ts_day[s] for s in GROWING if s in r.ts_day)
        parts = ", ".join(f"{s} {_kb(r.ts_day.get(s, 0))}"
                          + (f" / {_kb(r.ts_growth_day[s])}" if s in r.ts_growth_day else "")
                          + f" ({r.ts_items.get(s, 0):.1f} items)" for s in SYSTEMS)  # fmt: skip
        out.append(f"  {r.agents:>5} agents, {r.minutes:.1f} minutes stored: {_kb(total)} per server per day, "
                   f"{_kb(growth)} by the growth ({parts}); quickmon {_kb(r.quick_bytes)}, last sample "
                   f"{_kb(r.host_bytes)} per server")  # fmt: skip
    out.append(f"  bench_timeseries.py (README, a simulated day of 100 servers): {TIMESERIES_REF_KB} KB per server "
               "per day")  # fmt: skip
    for r in results:
        if r.profile:
            out.append(f"py-spy of the node, {r.agents} agents:")
            out += r.profile
    return out


async def main_async(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="podium-bench-mon-") as tmp:
        data, quick = real_sample(args.processes, args.conns)
        template = Path(tmp) / "template.json"
        template.write_text(json.dumps([data, quick]))
        host = SimHost(0, data, quick)
        sizes = (len(orjson.dumps({"cmd": "monitor", "data": {"version": "1.0", "date": time.time(),
                                   "server": server_id(0), "hostname": hostname(0), "data": host.monitor()}})),
                 len(orjson.dumps({"cmd": "quickmon", "data": host.quickmon()})))  # fmt: skip
        print(f"monitor frame {sizes[0]:,} B, quickmon frame {sizes[1]:,} B", file=sys.stderr, flush=True)
        results = []
        for n in args.agents:
            print(f"{n} agents ...", file=sys.stderr, flush=True)
            results.append(await run_one(Path(tmp) / f"n{n}", n, args, template))
        return report(results, sizes, args)


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="100,1000", help="comma-separated agent counts (default 100,1000)")
    parser.add_argument("--duration", type=float, default=180.0, help="steady window, s (default 180)")
    parser.add_argument("--idle", type=float, default=10.0, help="s of node CPU measured before the agents join")
    parser.add_argument("--settle", type=float, default=10.0, help="s after the last join before the window")
    parser.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    parser.add_argument("--join-rate", type=float, default=200.0, help="agents joining per second, in all")
    parser.add_argument("--processes", type=int, default=150, help="process list entries of a sample")
    parser.add_argument("--conns", type=int, default=50, help="connections of a sample")
    parser.add_argument("--requests", type=int, default=200, help="calls of each per-server read")
    parser.add_argument("--group-requests", type=int, default=20, help="get_quickmon_data calls for the group")
    parser.add_argument("--profile", type=Path, help="py-spy the node during the window, into this folder")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    for name, kind in (("--url", str), ("--secret", str), ("--first", int), ("--count", int), ("--total", int),
                       ("--template", str), ("--max-s", float)):  # fmt: skip
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        asyncio.run(Generator(args).run(args.max_s))
        return 0
    try:
        args.agents = [int(a) for a in str(args.agents).split(",") if a.strip()]
    except ValueError:
        parser.error("--agents: a comma-separated list such as 100,1000")
    if not args.agents or not all(1 <= a <= 5000 for a in args.agents):
        parser.error("--agents: 1-5000 each")
    if not 10 <= args.duration <= 1800 or not 0 <= args.settle <= 600 or not 1 <= args.procs <= 16 \
            or not 1 <= args.idle <= 120:  # fmt: skip
        parser.error("--duration 10-1800, --settle 0-600, --idle 1-120, --procs 1-16")
    if not 1 <= args.join_rate <= 500 or not 1 <= args.processes <= 2000 or not 0 <= args.conns <= 2000:
        parser.error("--join-rate 1-500 (a few hundred per second at most), --processes 1-2000, --conns 0-2000")
    if not 1 <= args.requests <= 10_000 or not 1 <= args.group_requests <= 1000:
        parser.error("--requests 1-10000, --group-requests 1-1000")
    if args.profile:
        if not PY_SPY.exists():
            parser.error(f"--profile needs py-spy next to the interpreter ({PY_SPY})")
        args.profile.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        print("\n".join(asyncio.run(main_async(args))), flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
