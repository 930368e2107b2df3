"""Requests/s, latency and server CPU of Podium nodes next to a bare aiohttp app, on loopback.

Starts, as real processes on free 127.0.0.1 ports: a bare aiohttp hello-world (tests/bench/bare_app.py)
and, for each worker count N of `--workers` (default 1,2), two `podium serve --workers N` nodes with the
embedded store, one with `--access-log off` and one with the access log on (written to a file in the temp
dir). Before any load it waits until every HTTP process of each node (worker index 0 .. N-1) has answered
GET /health as the primary on a fresh connection, and those are the node process and its `api.cli serve`
children; it logs in as admin/admin, creates an admin API key and one event over HTTP, and checks that
get_global_state and get_events answer with both credentials (get_events listing the event).

Then, for each concurrency, it loads every target with the same generator in a separate process (wrk
`-t2` by default): GET /api/app/ping/v1 on all; GET /api/app/echo/v1, /api/app/get_global_state/v1 and
/api/app/get_events/v1 (each read once with the API key, once with the session) on the nodes. Each cell is
a warm-up plus a timed window; `--rounds` repeats the whole grid, interleaved, and the table shows the
median round: req/s, p50/p99 ms, server CPU (the node process and its HTTP workers; the node's agent and
its store are not the server, the store has a column of its own) per request and the capacity per core
that gives (1e6 / CPU us per request). Ratio lines follow: podium / bare for ping, each authenticated
read / ping on the same node, and each worker count / the smallest. Everything it starts it stops, by
pid, also on Ctrl-C.

    python -m tests.bench.bench_api [--duration 8] [--concurrency 16] [--workers 1,2] [--rounds 3]
                                    [--tool wrk|python] [--wrk-threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp

from tests.bench.loadgen import processes_cpu_seconds
from tests.servers import ROOT, free_port


@dataclass(frozen=True)
class Endpoint:
    path: str
    title: str  # how the ratio lines name it
    credential: str = ""  # "" (none), "key" (X-API-Key) or "session" (X-Session-ID)


STATE_PATH = "/api/app/get_global_state/v1"
EVENTS_PATH = "/api/app/get_events/v1"
# Table label -> endpoint, in the order the table lists them.
ENDPOINTS = {
    "ping": Endpoint("/api/app/ping/v1", "ping"),
    "echo": Endpoint("/api/app/echo/v1", "echo"),
    "state key": Endpoint(STATE_PATH, "get_global_state (key)", "key"),
    "state ses": Endpoint(STATE_PATH, "get_global_state (session)", "session"),
    "events key": Endpoint(EVENTS_PATH, "get_events (key)", "key"),
    "events ses": Endpoint(EVENTS_PATH, "get_events (session)", "session"),
}
AUTH_READS = ("state key", "state ses", "events key", "events ses")
TARGET_READS = ("state key", "state ses")  # the reads the CPU target below is about
CREDENTIAL_HEADERS = {"key": "X-API-Key", "session": "X-Session-ID"}
AUTH_TARGET = 1.25  # an earlier issue's target: get_global_state costs at most 25 % more CPU than ping
BARE = "bare aiohttp"
PODIUM_OFF = "podium, log off"
PODIUM_ON = "podium, log on"
PODIUMS = (PODIUM_OFF, PODIUM_ON)
# The event each node gets at setup, so get_events lists one (created over HTTP with the session).
BENCH_EVENT = {
    "title": "bench", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
    "triggers": [{"type": "manual", "enabled": True}], "params": {"script": "true"},
}  # fmt: skip
_PR_SET_PDEATHSIG = 1


# -- processes ---------------------------------------------------------------------------------------


def _child_setup() -> None:
    """In each child: a session of its own (Ctrl-C reaches only this script, which then stops the
    children in order) and SIGTERM if this script dies without cleaning up (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


Proc = subprocess.Popen[bytes]


class Processes:
    """Every process this script starts; `close` stops the ones still running, newest first, by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: Sequence[str], *, log: Path | None = None, pipe: bool = False) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        env["PYTHONPATH"] = str(ROOT)
        out: Any = subprocess.PIPE if pipe else subprocess.DEVNULL
        handle = log.open("ab") if log is not None else None
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=handle if handle is not None else out,
                stderr=subprocess.STDOUT if handle is not None else subprocess.PIPE,
                cwd=ROOT,
                env=env,
                preexec_fn=_child_setup,  # no threads run in this script
            )
        finally:
            if handle is not None:
                handle.close()
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        while self.procs:
            self.stop(self.procs.pop())


@dataclass(frozen=True)
class Target:
    kind: str  # BARE, PODIUM_OFF or PODIUM_ON
    port: int
    pid: int
    endpoints: tuple[str, ...]
    log: Path | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)  # "key" / "session" -> secret
    workers: int = 0  # a node's HTTP processes (`podium serve --workers N`); 0 for the bare app

    @property
    def name(self) -> str:
        """How the table and the ratio lines name it: the kind and, for a node, its worker count."""
        return f"{self.kind}, w{self.workers}" if self.workers else self.kind

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.port}{ENDPOINTS[endpoint].path}"

    def headers(self, endpoint: str) -> list[str]:
        """The generator's `Name: value` header lines for this endpoint (its credential, if any)."""
        kind = ENDPOINTS[endpoint].credential
        return [f"{CREDENTIAL_HEADERS[kind]}: {self.credentials[kind]}"] if kind else []


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from /proc; empty if unreadable."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> list[str]:
    """A process's arguments, from /proc; empty if it is gone."""
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _runs(args: Sequence[str], words: Sequence[str]) -> bool:
    return any(list(args[i : i + len(words)]) == list(words) for i in range(len(args)))


@dataclass(frozen=True)
class NodeProcesses:
    """A target's processes by role: `server` answers HTTP (for a node: the node process and its HTTP
    workers, the children running `api.cli serve`), `store` the embedded valkey-server, `other` the rest
    (the node's own agent, `api.cli agent`)."""

    server: tuple[int, ...]
    store: tuple[int, ...] = ()
    other: tuple[int, ...] = ()


def node_processes(target: Target) -> NodeProcesses:
    if target.kind == BARE:
        return NodeProcesses((target.pid,))
    server, store, other = [target.pid], [], []
    for pid in child_pids(target.pid):
        args = command_line(pid)
        if _runs(args, ("api.cli", "serve")):
            server.append(pid)
        elif args and Path(args[0].split(" ", 1)[0]).name == "valkey-server":  # it rewrites its title
            store.append(pid)
        else:
            other.append(pid)
    return NodeProcesses(tuple(server), tuple(store), tuple(other))


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path | None, timeout: float = 30.0) -> None:
    """Until `url` answers 200; a target that exits or never answers ends the run with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=0.5) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-10:] if log is not None and log.exists() else []
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"no answer in {timeout:.0f} s"
    raise RuntimeError(f"{url}: {state}\n" + "\n".join(tail))


def wait_workers(target: Target, proc: Proc, timeout: float = 60.0) -> None:
    """Until every HTTP process of a node (worker 0 .. N-1) has answered GET /health as the primary, each
    on a fresh connection (the kernel spreads new connections over the processes), and the processes that
    answered are the node process and its `api.cli serve` children."""
    url = f"http://127.0.0.1:{target.port}/health"
    seen: dict[int, int] = {}  # worker index -> pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            status, reply, _ = _request(url)
            index, pid = reply.get("worker"), reply.get("pid")
            if status == 200 and isinstance(index, int) and isinstance(pid, int) and 0 <= index < target.workers:
                seen[index] = pid
        if len(seen) == target.workers:
            expected = set(node_processes(target).server)
            if set(seen.values()) == expected:
                return
            seen.clear()  # a worker was started again meanwhile: ask anew
        time.sleep(0.05)
    missing = sorted(set(range(target.workers)) - set(seen))
    raise RuntimeError(f"{target.name}: HTTP workers {missing} did not answer /health as primary in {timeout:.0f} s")


def start_targets(procs: Processes, tmp: Path, workers: Sequence[int]) -> list[Target]:
    port = free_port()
    log = tmp / "bare.log"
    bare = procs.spawn([sys.executable, "-m", "tests.bench.bare_app", "--port", str(port)], log=log)
    started = [(Target(BARE, port, bare.pid, ("ping",), log), bare)]
    for count in workers:
        for kind, access in ((PODIUM_OFF, "off"), (PODIUM_ON, "on")):
            port = free_port()
            directory = tmp / f"podium-log-{access}-w{count}"
            directory.mkdir()
            cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(directory / "data"),
                   "--bind", f"127.0.0.1:{port}", "--log-format", "json", "--access-log", access,
                   "--workers", str(count)]  # fmt: skip
            log = directory / "node.log"
            proc = procs.spawn(cmd, log=log)
            started.append((Target(kind, port, proc.pid, tuple(ENDPOINTS), log, workers=count), proc))
    for target, proc in started:
        wait_ready(proc, target.url("ping"), target.log)
    ready = []
    for target, proc in started:
        if target.kind != BARE:
            wait_workers(target, proc)
            target = replace(target, credentials=credentials(target, proc))
            check_events(target)
        ready.append(target)
    return ready


# -- credentials -----------------------------------------------------------------------------------------


def _request(
    url: str, body: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any], Message]:
    """(HTTP status, JSON reply, reply headers) of a GET (no body) or a JSON POST; also for 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}), method="POST" if data else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {"code": "http", "description": raw[:200].decode(errors="replace")}
        return exc.code, reply if isinstance(reply, dict) else {}, exc.headers


_SESSION_COOKIE = re.compile(r"(?:^|[;,]\s*)session_id=([0-9a-f]{64})(?:;|$)")


def login(target: Target, proc: Proc, timeout: float = 30.0) -> str:
    """The session id of admin/admin, once the node has created its first-start objects.

    The node answers before the admin user exists, so a refused login is retried, with a growing pause:
    each refusal before then counts towards the node's failed-login limit per address."""
    url = f"http://127.0.0.1:{target.port}/api/user/login/v1"
    deadline = time.monotonic() + timeout
    pause, last = 0.1, "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, reply, headers = _request(url, {"username": "admin", "password": "admin"})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = repr(exc)
        else:
            if status == 200 and reply.get("code") == 0:
                for value in headers.get_all("Set-Cookie") or []:
                    if match := _SESSION_COOKIE.search(value):
                        return match.group(1)
                raise RuntimeError(f"{target.name}: login answered without a session_id cookie")
            last = f"HTTP {status} {reply}"
            if reply.get("code") == "rate":
                break
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    raise RuntimeError(f"{target.name}: login as admin/admin failed: {last}")


def credentials(target: Target, proc: Proc) -> dict[str, str]:
    """Log in, create an admin API key with the session, and check that both open get_global_state."""
    session = login(target, proc)
    url = f"http://127.0.0.1:{target.port}/api/app/create_api_key/v1"
    status, reply, _ = _request(url, {"title": "bench", "privileges": {"admin": True}}, {"X-Session-ID": session})
    plain = reply.get("plain_key")
    if status != 200 or reply.get("code") != 0 or not isinstance(plain, str) or not plain:
        raise RuntimeError(f"{target.name}: create_api_key failed: HTTP {status} {reply}")
    creds = {"key": plain, "session": session}
    state_url = f"http://127.0.0.1:{target.port}{STATE_PATH}"
    for kind, secret in creds.items():
        status, reply, _ = _request(state_url, headers={CREDENTIAL_HEADERS[kind]: secret})
        if status != 200 or reply.get("code") != 0:
            raise RuntimeError(f"{target.name}: get_global_state with the {kind} failed: HTTP {status} {reply}")
    return creds


def check_events(target: Target, timeout: float = 30.0) -> None:
    """Create the bench event with the session, then wait until get_events lists it with each credential;
    then ask again on fresh connections, enough times to reach every HTTP process in all likelihood, and
    require it in every reply."""
    session = {"X-Session-ID": target.credentials["session"]}
    url = f"http://127.0.0.1:{target.port}"
    status, reply, _ = _request(f"{url}/api/app/create_event/v1", BENCH_EVENT, session)
    event = reply.get("event")
    if status != 200 or reply.get("code") != 0 or not isinstance(event, dict) or not event.get("id"):
        raise RuntimeError(f"{target.name}: create_event failed: HTTP {status} {reply}")

    def listed(kind: str) -> tuple[bool, str]:
        status, reply, _ = _request(url + EVENTS_PATH, headers={CREDENTIAL_HEADERS[kind]: target.credentials[kind]})
        rows = reply.get("rows")
        found = isinstance(rows, list) and any(isinstance(r, dict) and r.get("id") == event["id"] for r in rows)
        return status == 200 and reply.get("code") == 0 and found, f"HTTP {status} {str(reply)[:200]}"

    for kind in CREDENTIAL_HEADERS:
        deadline = time.monotonic() + timeout
        while not (answer := listed(kind))[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: get_events with the {kind} does not list the event: {answer[1]}")
            time.sleep(0.1)
        for _ in range(8 * target.workers):
            ok, text = listed(kind)
            if not ok:
                raise RuntimeError(f"{target.name}: get_events with the {kind} missed the event once: {text}")


# -- load generators -----------------------------------------------------------------------------------


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_pct: float | None
    gen_cpu_pct: float | None
    other_cpu_pct: float | None = None  # CPU used meanwhile by processes outside the benchmark
    store_cpu_pct: float | None = None  # CPU used meanwhile by the node's embedded store (its valkey child)


@dataclass
class Options:
    duration: float
    warmup: float
    max_requests: int
    tool: str
    rounds: int
    wrk_threads: int = 2


def run_python(
    procs: Processes, opts: Options, url: str, conc: int, server_pids: Sequence[int], headers: Sequence[str]
) -> Sample:
    cmd = [sys.executable, "-m", "tests.bench.loadgen", "--url", url, "-c", str(conc),
           "-d", str(opts.duration), "-w", str(opts.warmup), "--max-requests", str(opts.max_requests),
           *(a for pid in server_pids for a in ("--server-pid", str(pid))),
           *(a for h in headers for a in ("--header", h))]  # fmt: skip
    proc = procs.spawn(cmd, pipe=True)
    try:
        out, err = proc.communicate(timeout=opts.duration + opts.warmup + 60)
    finally:
        procs.stop(proc)
        procs.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode(errors='replace')}")
    r = json.loads(out)
    return Sample(r["rps"], r["p50_ms"], r["p99_ms"], r["errors"], r["server_cpu_pct"], r["gen_cpu_pct"])


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> tuple[float, float, float, int]:
    """req/s, p50 ms, p99 ms and errors (non-2xx/3xx replies + socket errors) from `wrk --latency`."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    pcts: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE):
        pcts[pct] = float(value) * _WRK_UNITS[unit]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return float(rps.group(1)), pcts.get("50", 0.0), pcts.get("99", 0.0), errors


def _wrk(
    procs: Processes, url: str, conc: int, threads: int, seconds: int, latency: bool, headers: Sequence[str]
) -> str:
    cmd = [
        "wrk",
        f"-t{min(threads, conc)}",  # wrk needs a connection per thread at least
        f"-c{conc}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        *(["--latency"] if latency else []),
        *(a for h in headers for a in ("-H", h)),
        url,
    ]
    proc = procs.spawn(cmd, pipe=True)
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        procs.stop(proc)
        procs.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}")
    return out.decode(errors="replace")


Runner = Callable[[Processes, Options, str, int, Sequence[int], Sequence[str]], Sample]


def run_wrk(
    procs: Processes, opts: Options, url: str, conc: int, server_pids: Sequence[int], headers: Sequence[str]
) -> Sample:
    """wrk with `--wrk-threads` threads; the run is bounded by its duration, not a request count."""
    threads = opts.wrk_threads
    if opts.warmup > 0:
        _wrk(procs, url, conc, threads, max(1, round(opts.warmup)), latency=False, headers=headers)
    seconds = max(1, round(opts.duration))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv0 = processes_cpu_seconds(server_pids)
    start = time.perf_counter()
    text = _wrk(procs, url, conc, threads, seconds, latency=True, headers=headers)
    wall = time.perf_counter() - start
    srv1 = processes_cpu_seconds(server_pids)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps, p50, p99, errors = parse_wrk(text)
    gen = 100 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
    srv = 100 * (srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None
    return Sample(rps, p50, p99, errors, srv, gen)


# -- the grid --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    target: str  # Target.name
    kind: str
    workers: int
    endpoint: str
    conc: int
    samples: list[Sample] = field(default_factory=list)

    def median(self) -> Sample:
        """The round with the median req/s (the lower middle one for an even count)."""
        ordered = sorted(self.samples, key=lambda s: s.rps)
        return ordered[(len(ordered) - 1) // 2]


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runner: Runner, procs: Processes, opts: Options, endpoint: str, conc: int, target: Target) -> Sample:
    """One cell, plus the CPU used during it by the node's store and by everything else (others' load).

    The server's CPU is that of all its HTTP processes (the node process and its workers); the node's
    agent is neither server nor store nor other load, so it is left out of all three."""
    before = node_processes(target)
    if target.workers and len(before.server) != target.workers:
        raise RuntimeError(f"{target.name}: {len(before.server)} HTTP processes, expected {target.workers}")
    busy0, srv0, gen0, sto0, aux0, wall0 = (
        busy_cpu_seconds(),
        processes_cpu_seconds(before.server),
        children_cpu_seconds(),
        processes_cpu_seconds(before.store),
        processes_cpu_seconds(before.other),
        time.perf_counter(),
    )
    sample = runner(procs, opts, target.url(endpoint), conc, before.server, target.headers(endpoint))
    busy1, srv1, gen1, sto1, aux1, wall1 = (
        busy_cpu_seconds(),
        processes_cpu_seconds(before.server),
        children_cpu_seconds(),
        processes_cpu_seconds(before.store),
        processes_cpu_seconds(before.other),
        time.perf_counter(),
    )
    if node_processes(target) != before:  # a process died or was started again: its CPU is partly unseen
        print(f"  warning: {target.name}: its processes changed during the cell; no CPU figures", file=sys.stderr)
        sample.server_cpu_pct = None
        return sample
    wall = wall1 - wall0
    stored = aux = 0.0
    if sto0 is not None and sto1 is not None:
        stored = sto1 - sto0
        sample.store_cpu_pct = 100 * stored / wall
    if aux0 is not None and aux1 is not None:
        aux = aux1 - aux0
    if srv0 is not None and srv1 is not None:
        other = (busy1 - busy0) - (srv1 - srv0) - (gen1 - gen0) - stored - aux
        sample.other_cpu_pct = max(0.0, 100 * other / wall)
    return sample


def run_grid(procs: Processes, opts: Options, targets: list[Target], concs: list[int]) -> list[Cell]:
    cells = {
        (t.name, ep, c): Cell(t.name, t.kind, t.workers, ep, c) for c in concs for t in targets for ep in t.endpoints
    }
    runner = run_wrk if opts.tool == "wrk" else run_python
    total = len(cells) * opts.rounds
    done = 0
    for rnd in range(1, opts.rounds + 1):
        for conc in concs:
            for target in targets:
                for ep in target.endpoints:
                    done += 1
                    sample = measure(runner, procs, opts, ep, conc, target)
                    cells[(target.name, ep, conc)].samples.append(sample)
                    line = f"{target.name:<20} {ep:<10} c={conc:<4} {sample.rps:>9,.0f} req/s"
                    extra = f"p99 {sample.p99_ms:.2f} ms, other CPU {_pct(sample.other_cpu_pct)}%"
                    print(f"  [{done}/{total}] round {rnd}  {line}  {extra}", file=sys.stderr)
    return list(cells.values())


# -- output ----------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def cpu_per_request_us(sample: Sample) -> float | None:
    """Server CPU microseconds per request: steadier than req/s when the two cores are contended."""
    if sample.server_cpu_pct is None or sample.rps <= 0:
        return None
    return sample.server_cpu_pct * 1e4 / sample.rps


def capacity_per_core(sample: Sample) -> float | None:
    """Requests per second one fully used core would answer at this cost: 1e6 / server CPU us per request."""
    us = cpu_per_request_us(sample)
    return 1e6 / us if us else None


COLUMNS = [
    ("target", 21), ("endpoint", 11), ("conc", 5), ("req/s", 9), ("min-max req/s", 15), ("p50 ms", 8),
    ("p99 ms", 8), ("errors", 7), ("srv CPU%", 9), ("gen CPU%", 9), ("store CPU%", 11), ("other CPU%", 11),
    ("srv us/req", 11), ("req/s/core", 11), ("x bare", 7),
]  # fmt: skip


def _row(values: Sequence[str]) -> str:
    """Target and endpoint left-aligned, figures right-aligned."""
    cols = zip(COLUMNS, values, strict=True)
    return "".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, ((_, w), v) in enumerate(cols))


def paired_ratio(cell: Cell, base: Cell, metric: Callable[[Sample], float | None]) -> float | None:
    """Median over rounds of cell/base, each round against the base run next to it in time."""
    ratios = []
    for mine, theirs in zip(cell.samples, base.samples, strict=True):
        a, b = metric(mine), metric(theirs)
        if a is not None and b:
            ratios.append(a / b)
    return statistics.median(ratios) if ratios else None


def _rps(sample: Sample) -> float:
    return sample.rps


def _order(cell: Cell) -> tuple[int, int, int]:
    """Bare first, then the nodes by worker count, log off before log on; endpoints as ENDPOINTS lists them."""
    return cell.workers, (BARE, *PODIUMS).index(cell.kind), list(ENDPOINTS).index(cell.endpoint)


def table(cells: list[Cell], rounds: int) -> list[str]:
    bare = {c.conc: c for c in cells if c.kind == BARE and c.endpoint == "ping"}
    head = _row([name for name, _ in COLUMNS])
    lines = [head, "-" * len(head)]
    for cell in sorted(cells, key=lambda c: (c.conc, *_order(c))):
        med = cell.median()
        rps = [s.rps for s in cell.samples]
        spread = f"{min(rps):,.0f}-{max(rps):,.0f}" if rounds > 1 else ""
        base = bare.get(cell.conc)
        ratio = paired_ratio(cell, base, _rps) if base is not None and cell is not base else None
        us, cap = cpu_per_request_us(med), capacity_per_core(med)
        values = [cell.target, cell.endpoint, str(cell.conc), f"{med.rps:,.0f}", spread, f"{med.p50_ms:.2f}",
                  f"{med.p99_ms:.2f}", str(sum(s.errors for s in cell.samples)), _pct(med.server_cpu_pct),
                  _pct(med.gen_cpu_pct), _pct(med.store_cpu_pct), _pct(med.other_cpu_pct),
                  "-" if us is None else f"{us:.0f}", "-" if cap is None else f"{cap:,.0f}",
                  "" if ratio is None else f"{ratio:.2f}"]  # fmt: skip
        lines.append(_row(values))
    return lines


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _nodes(cells: list[Cell]) -> list[tuple[str, str, int]]:
    """(name, kind, workers) of each node measured, in table order."""
    found = {(c.target, c.kind, c.workers): _order(c)[:2] for c in cells if c.kind != BARE}
    return sorted(found, key=lambda k: found[k])


def ping_ratios(cells: list[Cell], concs: list[int]) -> list[str]:
    """podium/bare for ping, paired by round: req/s (higher is better), server CPU per request (lower is)."""
    by_key = {(c.target, c.endpoint, c.conc): c for c in cells}
    out = []
    for conc in concs:
        bare = by_key.get((BARE, "ping", conc))
        if bare is None:
            continue
        rps_parts, cpu_parts = [], []
        for name, _, _ in _nodes(cells):
            cell = by_key[(name, "ping", conc)]
            label = name.removeprefix("podium, ").replace(",", "")  # e.g. "log off w2"
            rps_parts.append(f"{label} {_times(paired_ratio(cell, bare, _rps))}")
            cpu_parts.append(f"{label} {_times(paired_ratio(cell, bare, cpu_per_request_us))}")
        out.append(f"ping at c={conc}, podium/bare: req/s " + ", ".join(rps_parts))
        out.append(f"ping at c={conc}, podium/bare: server CPU per request " + ", ".join(cpu_parts))
    busy = [s.other_cpu_pct for c in cells for s in c.samples if s.other_cpu_pct is not None]
    if busy and statistics.median(busy) > 15:
        used = f"{statistics.median(busy):.0f}%"
        out.append(f"warning: other processes used {used} CPU (median) during the cells; the machine was")
        out.append("  not quiet, so req/s are low and noisy; CPU per request is less affected")
    return out


def auth_ratios(cells: list[Cell], concs: list[int]) -> list[str]:
    """Each authenticated read / ping on the same node, paired by round: req/s and server CPU per request."""
    by_key = {(c.target, c.endpoint, c.conc): c for c in cells}
    out = []
    over = []
    for name, _, _ in _nodes(cells):
        for conc in concs:
            ping = by_key.get((name, "ping", conc))
            for ep in AUTH_READS:
                cell = by_key.get((name, ep, conc))
                if ping is None or cell is None:
                    continue
                rps, cpu = paired_ratio(cell, ping, _rps), paired_ratio(cell, ping, cpu_per_request_us)
                label = f"{name}: {ENDPOINTS[ep].title} / ping at c={conc}:"
                out.append(f"{label:<66} req/s {_times(rps)}, CPU/req {_times(cpu)}")
                if ep in TARGET_READS and cpu is not None and cpu > AUTH_TARGET:
                    over.append(f"{name} {ENDPOINTS[ep].title} c={conc} ({cpu:.2f}x)")
    if out:
        goal = f"target: get_global_state costs at most {AUTH_TARGET:.2f}x ping's server CPU per request:"
        out.append(f"{goal} {'over it in ' + str(len(over)) + ' cell(s)' if over else 'met in every cell'}")
        out += [f"  over: {cell}" for cell in over]
    return ["", *out] if out else out


def worker_ratios(cells: list[Cell], concs: list[int]) -> list[str]:
    """Each worker count against the smallest one, same node kind, endpoint and concurrency, paired by round:
    req/s (how the node scales out on the machine's cores) and server CPU per request (what a worker costs)."""
    by_key = {(c.kind, c.workers, c.endpoint, c.conc): c for c in cells}
    counts = sorted({c.workers for c in cells if c.kind != BARE})
    out = []
    for kind in PODIUMS:
        for count in counts[1:]:
            for conc in concs:
                rps_parts, cpu_parts = [], []
                for ep in ENDPOINTS:
                    cell, base = by_key.get((kind, count, ep, conc)), by_key.get((kind, counts[0], ep, conc))
                    if cell is None or base is None:
                        continue
                    rps_parts.append(f"{ep} {_times(paired_ratio(cell, base, _rps))}")
                    cpu_parts.append(f"{ep} {_times(paired_ratio(cell, base, cpu_per_request_us))}")
                label = f"{kind}: w{count} / w{counts[0]} at c={conc}:"
                out.append(f"{label} req/s " + ", ".join(rps_parts))
                out.append(f"{' ' * len(label)} CPU/req " + ", ".join(cpu_parts))
    return ["", *out] if out else out


def header(opts: Options, concs: list[int], workers: list[int]) -> list[str]:
    if opts.tool == "wrk":
        gen = f"wrk -t{opts.wrk_threads} (at most one thread per connection), keep-alive, --latency"
        bound = f"{max(1, round(opts.warmup))} s warm-up + {max(1, round(opts.duration))} s measured"
    else:
        gen = "python tests/bench/loadgen.py: aiohttp.ClientSession, TCPConnector(limit=conc), keep-alive"
        limit = f"at most {opts.max_requests:,} requests"
        bound = f"{opts.warmup:g} s warm-up + {opts.duration:g} s measured, {limit}"
    cpus = os.cpu_count()
    return [
        f"Podium API benchmark: python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{cpus} CPUs, {platform.system()} {platform.release()}",
        f"generator: {gen}; one process, separate from the servers",
        f"each cell: {bound}; {opts.rounds} round(s) interleaved over targets; concurrency {concs}",
        f"nodes: `podium serve --workers N` for N in {workers} ('w<N>'), each with the access log off and on",
        "figures: the median round by req/s (its p50/p99/CPU); errors summed over rounds; CPU% 100 = one",
        "  core; 'srv CPU%' = the node process and its HTTP workers (not its agent, not its store);",
        "  'store CPU%' = the node's embedded store (valkey) during the cell; 'other CPU%' = CPU used",
        "  meanwhile by processes outside the target under test (the idle other targets included);",
        "  'srv us/req' = server CPU time per request; 'req/s/core' = 1e6 / srv us/req, the req/s one fully",
        "  used core would answer; 'x bare' = req/s divided by bare aiohttp ping in the same round (median of",
        "  the rounds)",
        f"endpoints: 'state key' / 'state ses' = GET {STATE_PATH}, 'events key' / 'events ses' = GET",
        f"  {EVENTS_PATH} (one event, created at setup), with an admin API key (X-API-Key) / with the admin",
        "  session (X-Session-ID), both created over HTTP after start-up",
        f"fairness: the generator and the servers under test share {cpus} cores; the same generator, settings",
        "  and requests are used for every target, so the ratios compare like with like; absolute req/s are",
        "  lower than the servers could do on a machine of their own",
    ]


def access_log_note(targets: list[Target]) -> list[str]:
    notes = []
    for target in targets:
        if target.kind == PODIUM_ON and target.log is not None and target.log.exists():
            with target.log.open("rb") as fh:
                lines = sum(1 for _ in fh)
            size = target.log.stat().st_size
            notes.append(f"access log ('{target.name}'): {lines:,} JSON lines, {size / 1e6:.1f} MB written to a file")
    return notes


# -- main ------------------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def _counts(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    """A comma-separated list of positive integers, duplicates dropped, in the order given."""
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        parser.error(f"{flag} {text!r}: use a comma-separated list of integers")
    if not values or min(values) < 1:
        parser.error(f"{flag} {text!r}: every value must be positive")
    return list(dict.fromkeys(values))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[int], list[int]]:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per cell (default 1)")
    parser.add_argument("--concurrency", default="16", help="comma-separated list (default 16)")
    parser.add_argument("--workers", default="1,2", help="node HTTP processes, comma-separated list (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the grid, interleaved (default 3)")
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk", help="load generator (default wrk)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="per cell, python generator")
    args = parser.parse_args(argv)
    concs = _counts(parser, "--concurrency", args.concurrency)
    workers = sorted(_counts(parser, "--workers", args.workers))
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or args.wrk_threads < 1:
        parser.error("duration, rounds and wrk threads must be positive; warm-up not negative")
    if args.tool == "wrk" and shutil.which("wrk") is None:
        parser.error("--tool wrk: wrk is not installed (apt-get install wrk), or use --tool python")
    return args, concs, workers


@contextlib.contextmanager
def cleanup_on_exit(procs: Processes) -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        procs.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args, concs, workers = parse_args(argv)
    opts = Options(args.duration, args.warmup, args.max_requests, args.tool, args.rounds, args.wrk_threads)
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmpdir, cleanup_on_exit(procs):
            print("\n".join(header(opts, concs, workers)), flush=True)
            print("starting targets ...", file=sys.stderr, flush=True)
            targets = start_targets(procs, Path(tmpdir), workers)
            for target in targets:
                pids = ", ".join(str(pid) for pid in node_processes(target).server)
                print(f"  {target.name:<20} port {target.port:<6} HTTP pids {pids}", file=sys.stderr)
            cells = run_grid(procs, opts, targets, concs)
            notes = access_log_note(targets)
            print()
            lines = [*table(cells, opts.rounds), "", *ping_ratios(cells, concs), *auth_ratios(cells, concs),
                     *worker_ratios(cells, concs), "", *notes]  # fmt: skip
            print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
