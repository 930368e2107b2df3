"""Requests/s and latency of one Podium node next to a bare aiohttp app, on loopback.

Starts, as real processes on free 127.0.0.1 ports: a bare aiohttp hello-world (tests/bench/bare_app.py),
a `podium serve` node with the embedded store and `--access-log off`, and a second node with the access
log on (written to a file in the temp dir). On each node it logs in as admin/admin and creates an admin
API key over HTTP. Then, for each concurrency, it loads every target with the same generator in a separate
process: GET /api/app/ping/v1 on all three; GET /api/app/echo/v1 and GET /api/app/get_global_state/v1
(once with the API key, once with the session) on the Podium nodes. Each cell is a warm-up plus a timed
window; `--rounds` repeats the whole grid, interleaved, and the table shows the median round. Everything
it starts it stops, by pid, also on Ctrl-C.

    python -m tests.bench.bench_api [--duration 5] [--concurrency 16,64] [--rounds 3] [--tool python|wrk]
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

from tests.bench.loadgen import process_cpu_seconds
from tests.servers import ROOT, free_port


@dataclass(frozen=True)
class Endpoint:
    path: str
    title: str  # how the ratio lines name it
    credential: str = ""  # "" (none), "key" (X-API-Key) or "session" (X-Session-ID)


STATE_PATH = "/api/app/get_global_state/v1"
# Table label -> endpoint, in the order the table lists them.
ENDPOINTS = {
    "ping": Endpoint("/api/app/ping/v1", "ping"),
    "echo": Endpoint("/api/app/echo/v1", "echo"),
    "state key": Endpoint(STATE_PATH, "get_global_state (key)", "key"),
    "state ses": Endpoint(STATE_PATH, "get_global_state (session)", "session"),
}
AUTH_READS = ("state key", "state ses")
CREDENTIAL_HEADERS = {"key": "X-API-Key", "session": "X-Session-ID"}
AUTH_TARGET = 1.25  # the target: an authenticated read costs at most 25 % more CPU than ping
BARE = "bare aiohttp"
PODIUM_OFF = "podium, log off"
PODIUM_ON = "podium, log on"
PODIUMS = (PODIUM_OFF, PODIUM_ON)
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
    name: str
    port: int
    pid: int
    endpoints: tuple[str, ...]
    log: Path | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)  # "key" / "session" -> secret

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.port}{ENDPOINTS[endpoint].path}"

    def headers(self, endpoint: str) -> list[str]:
        """The generator's `Name: value` header lines for this endpoint (its credential, if any)."""
        kind = ENDPOINTS[endpoint].credential
        return [f"{CREDENTIAL_HEADERS[kind]}: {self.credentials[kind]}"] if kind else []


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (the node's embedded store), from /proc; empty if unreadable."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU seconds of some processes together (None if any cannot be read)."""
    total = 0.0
    for pid in pids:
        value = process_cpu_seconds(pid)
        if value is None:
            return None
        total += value
    return total


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


def start_targets(procs: Processes, tmp: Path) -> list[Target]:
    port = free_port()
    log = tmp / "bare.log"
    bare = procs.spawn([sys.executable, "-m", "tests.bench.bare_app", "--port", str(port)], log=log)
    started = [(Target(BARE, port, bare.pid, ("ping",), log), bare)]
    for name, access in ((PODIUM_OFF, "off"), (PODIUM_ON, "on")):
        port = free_port()
        directory = tmp / f"podium-log-{access}"
        directory.mkdir()
        cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(directory / "data"),
               "--bind", f"127.0.0.1:{port}", "--log-format", "json", "--access-log", access]  # fmt: skip
        log = directory / "node.log"
        proc = procs.spawn(cmd, log=log)
        started.append((Target(name, port, proc.pid, tuple(ENDPOINTS), log), proc))
    for target, proc in started:
        wait_ready(proc, target.url("ping"), target.log)
    return [
        replace(target, credentials=credentials(target, proc)) if target.name in PODIUMS else target
        for target, proc in started
    ]


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
    store_cpu_pct: float | None = None  # CPU used meanwhile by the node's embedded store (its children)


@dataclass
class Options:
    duration: float
    warmup: float
    max_requests: int
    tool: str
    rounds: int


def run_python(procs: Processes, opts: Options, url: str, conc: int, server_pid: int, headers: Sequence[str]) -> Sample:
    cmd = [sys.executable, "-m", "tests.bench.loadgen", "--url", url, "-c", str(conc),
           "-d", str(opts.duration), "-w", str(opts.warmup), "--max-requests", str(opts.max_requests),
           "--server-pid", str(server_pid), *(a for h in headers for a in ("--header", h))]  # fmt: skip
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


def _wrk(procs: Processes, url: str, conc: int, seconds: int, latency: bool, headers: Sequence[str]) -> str:
    cmd = [
        "wrk",
        "-t1",
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


Runner = Callable[[Processes, Options, str, int, int, Sequence[str]], Sample]


def run_wrk(procs: Processes, opts: Options, url: str, conc: int, server_pid: int, headers: Sequence[str]) -> Sample:
    """wrk with one thread (2 cores in all); the run is bounded by its duration, not a request count."""
    if opts.warmup > 0:
        _wrk(procs, url, conc, max(1, round(opts.warmup)), latency=False, headers=headers)
    seconds = max(1, round(opts.duration))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv0 = process_cpu_seconds(server_pid)
    start = time.perf_counter()
    text = _wrk(procs, url, conc, seconds, latency=True, headers=headers)
    wall = time.perf_counter() - start
    srv1 = process_cpu_seconds(server_pid)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps, p50, p99, errors = parse_wrk(text)
    gen = 100 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
    srv = 100 * (srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None
    return Sample(rps, p50, p99, errors, srv, gen)


# -- the grid --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    target: str
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
    """One cell, plus the CPU used during it by the node's store and by everything else (others' load)."""
    store = child_pids(target.pid)
    busy0, srv0, gen0, sto0, wall0 = (
        busy_cpu_seconds(),
        process_cpu_seconds(target.pid),
        children_cpu_seconds(),
        tree_cpu_seconds(store),
        time.perf_counter(),
    )
    sample = runner(procs, opts, target.url(endpoint), conc, target.pid, target.headers(endpoint))
    busy1, srv1, gen1, sto1, wall1 = (
        busy_cpu_seconds(),
        process_cpu_seconds(target.pid),
        children_cpu_seconds(),
        tree_cpu_seconds(store),
        time.perf_counter(),
    )
    wall = wall1 - wall0
    stored = 0.0
    if store and sto0 is not None and sto1 is not None:
        stored = sto1 - sto0
        sample.store_cpu_pct = 100 * stored / wall
    if srv0 is not None and srv1 is not None:
        other = (busy1 - busy0) - (srv1 - srv0) - (gen1 - gen0) - stored
        sample.other_cpu_pct = max(0.0, 100 * other / wall)
    return sample


def run_grid(procs: Processes, opts: Options, targets: list[Target], concs: list[int]) -> list[Cell]:
    cells = {(t.name, ep, c): Cell(t.name, ep, c) for c in concs for t in targets for ep in t.endpoints}
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
                    line = f"{target.name:<16} {ep:<9} c={conc:<4} {sample.rps:>9,.0f} req/s"
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


COLUMNS = [
    ("target", 17), ("endpoint", 10), ("conc", 5), ("req/s", 9), ("min-max req/s", 15), ("p50 ms", 8),
    ("p99 ms", 8), ("errors", 7), ("srv CPU%", 9), ("gen CPU%", 9), ("store CPU%", 11), ("other CPU%", 11),
    ("srv us/req", 11), ("x bare", 7),
]  # fmt: skip


def _row(values: Sequence[str]) -> str:
    """Target and endpoint left-aligned, figures right-aligned."""
    cols = zip(COLUMNS, values, strict=True)
    return "".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, ((_, w), v) in enumerate(cols))


def paired_ratio(cell: Cell, bare: Cell, metric: Callable[[Sample], float | None]) -> float | None:
    """Median over rounds of cell/bare, each round against the bare run next to it in time."""
    ratios = []
    for mine, base in zip(cell.samples, bare.samples, strict=True):
        a, b = metric(mine), metric(base)
        if a is not None and b:
            ratios.append(a / b)
    return statistics.median(ratios) if ratios else None


def _rps(sample: Sample) -> float:
    return sample.rps


def table(cells: list[Cell], rounds: int) -> list[str]:
    bare = {c.conc: c for c in cells if c.target == BARE and c.endpoint == "ping"}
    head = _row([name for name, _ in COLUMNS])
    lines = [head, "-" * len(head)]
    order = list(ENDPOINTS)
    for cell in sorted(cells, key=lambda c: (c.conc, c.target != BARE, c.target, order.index(c.endpoint))):
        med = cell.median()
        rps = [s.rps for s in cell.samples]
        spread = f"{min(rps):,.0f}-{max(rps):,.0f}" if rounds > 1 else ""
        base = bare.get(cell.conc)
        ratio = paired_ratio(cell, base, _rps) if base is not None and cell is not base else None
        us = cpu_per_request_us(med)
        values = [cell.target, cell.endpoint, str(cell.conc), f"{med.rps:,.0f}", spread, f"{med.p50_ms:.2f}",
                  f"{med.p99_ms:.2f}", str(sum(s.errors for s in cell.samples)), _pct(med.server_cpu_pct),
                  _pct(med.gen_cpu_pct), _pct(med.store_cpu_pct), _pct(med.other_cpu_pct),
                  "-" if us is None else f"{us:.0f}",
                  "" if ratio is None else f"{ratio:.2f}"]  # fmt: skip
        lines.append(_row(values))
    return lines


def ping_ratios(cells: list[Cell], concs: list[int]) -> list[str]:
    """podium/bare for ping, paired by round: req/s (higher is better), server CPU per request (lower is)."""
    by_key = {(c.target, c.endpoint, c.conc): c for c in cells}
    out = []
    for conc in concs:
        bare = by_key.get((BARE, "ping", conc))
        if bare is None:
            continue
        rps_parts, cpu_parts = [], []
        for name in PODIUMS:
            cell = by_key[(name, "ping", conc)]
            label = name.split(", ")[1]
            rps, cpu = paired_ratio(cell, bare, _rps), paired_ratio(cell, bare, cpu_per_request_us)
            rps_parts.append(f"{label} {rps:.2f}x" if rps is not None else f"{label} -")
            cpu_parts.append(f"{label} {cpu:.2f}x" if cpu is not None else f"{label} -")
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
    for name in PODIUMS:
        for conc in concs:
            ping = by_key.get((name, "ping", conc))
            for ep in AUTH_READS:
                cell = by_key.get((name, ep, conc))
                if ping is None or cell is None:
                    continue
                rps, cpu = paired_ratio(cell, ping, _rps), paired_ratio(cell, ping, cpu_per_request_us)
                rps_text = "-" if rps is None else f"{rps:.2f}x"
                cpu_text = "-" if cpu is None else f"{cpu:.2f}x"
                label = f"{name}: {ENDPOINTS[ep].title} / ping at c={conc}:"
                out.append(f"{label:<62} req/s {rps_text}, CPU/req {cpu_text}")
                if cpu is not None and cpu > AUTH_TARGET:
                    over.append(f"{name} {ENDPOINTS[ep].title} c={conc} ({cpu:.2f}x)")
    if out:
        goal = f"target: an authenticated read costs at most {AUTH_TARGET:.2f}x ping's server CPU per request:"
        out.append(f"{goal} {'over it in ' + str(len(over)) + ' cell(s)' if over else 'met in every cell'}")
        out += [f"  over: {cell}" for cell in over]
    return ["", *out] if out else out


def header(opts: Options, concs: list[int]) -> list[str]:
    if opts.tool == "wrk":
        gen = "wrk -t1 (one thread), keep-alive, --latency"
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
        "figures: the median round by req/s (its p50/p99/CPU); errors summed over rounds; CPU% 100 = one",
        "  core; 'other CPU%' = CPU used meanwhile by processes outside the benchmark; 'srv us/req' = server",
        "  CPU time per request; 'x bare' = req/s divided by bare aiohttp ping in the same round (median of",
        "  the rounds); 'store CPU%' = the node's embedded store (valkey) during the cell",
        f"endpoints: 'state key' / 'state ses' = GET {STATE_PATH} with an admin API key (X-API-Key) /",
        "  with the admin session (X-Session-ID), both created over HTTP after start-up",
        f"fairness: the generator and the server under test share {cpus} cores; the same generator, settings",
        "  and requests are used for every target, so the ratios compare like with like; absolute req/s are",
        "  lower than the servers could do on a machine of their own",
    ]


def access_log_note(targets: list[Target]) -> str:
    for target in targets:
        if target.name == PODIUM_ON and target.log is not None and target.log.exists():
            with target.log.open("rb") as fh:
                lines = sum(1 for _ in fh)
            size = target.log.stat().st_size
            return f"access log ('{PODIUM_ON}'): {lines:,} JSON lines, {size / 1e6:.1f} MB written to a file"
    return ""


# -- main ------------------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[int]]:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per cell (default 1)")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated list (default 16,64)")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the grid, interleaved (default 3)")
    parser.add_argument("--tool", choices=["python", "wrk"], default="python", help="load generator")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="per cell, python generator")
    args = parser.parse_args(argv)
    try:
        concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency!r}: use a comma-separated list of integers")
    if not concs or min(concs) < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("concurrency, duration and rounds must be positive; warm-up not negative")
    if args.tool == "wrk" and shutil.which("wrk") is None:
        parser.error("--tool wrk: wrk is not installed (apt-get install wrk), or use --tool python")
    return args, concs


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
    args, concs = parse_args(argv)
    opts = Options(args.duration, args.warmup, args.max_requests, args.tool, args.rounds)
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmpdir, cleanup_on_exit(procs):
            print("\n".join(header(opts, concs)), flush=True)
            print("starting targets ...", file=sys.stderr, flush=True)
            targets = start_targets(procs, Path(tmpdir))
            for target in targets:
                print(f"  {target.name:<16} pid {target.pid:<7} port {target.port}", file=sys.stderr)
            cells = run_grid(procs, opts, targets, concs)
            note = access_log_note(targets)
            print()
            lines = [*table(cells, opts.rounds), "", *ping_ratios(cells, concs), *auth_ratios(cells, concs), note]
            print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
