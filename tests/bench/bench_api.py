"""Requests/s and latency of one Podium node next to a bare aiohttp app, on loopback.

Starts, as real processes on free 127.0.0.1 ports: a bare aiohttp hello-world (tests/bench/bare_app.py),
a `podium serve` node with the embedded store and `--access-log off`, and a second node with the access
log on (written to a file in the temp dir). Then, for each concurrency, it loads every target with the
same generator in a separate process: GET /api/app/ping/v1 on all three, GET /api/app/echo/v1 on the
Podium nodes. Each cell is a warm-up plus a timed window; `--rounds` repeats the whole grid, interleaved,
and the table shows the median round. Everything it starts it stops, by pid, also on Ctrl-C.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp

from tests.bench.loadgen import process_cpu_seconds
from tests.servers import ROOT, free_port

ENDPOINTS = {"ping": "/api/app/ping/v1", "echo": "/api/app/echo/v1"}
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

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.port}{ENDPOINTS[endpoint]}"


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
        started.append((Target(name, port, proc.pid, ("ping", "echo"), log), proc))
    for target, proc in started:
        wait_ready(proc, target.url("ping"), target.log)
    return [target for target, _ in started]


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


@dataclass
class Options:
    duration: float
    warmup: float
    max_requests: int
    tool: str
    rounds: int


def run_python(procs: Processes, opts: Options, url: str, conc: int, server_pid: int) -> Sample:
    cmd = [sys.executable, "-m", "tests.bench.loadgen", "--url", url, "-c", str(conc),
           "-d", str(opts.duration), "-w", str(opts.warmup), "--max-requests", str(opts.max_requests),
           "--server-pid", str(server_pid)]  # fmt: skip
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


def _wrk(procs: Processes, url: str, conc: int, seconds: int, latency: bool) -> str:
    cmd = [
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        *(["--latency"] if latency else []),
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


Runner = Callable[[Processes, Options, str, int, int], Sample]


def run_wrk(procs: Processes, opts: Options, url: str, conc: int, server_pid: int) -> Sample:
    """wrk with one thread (2 cores in all); the run is bounded by its duration, not a request count."""
    if opts.warmup > 0:
        _wrk(procs, url, conc, max(1, round(opts.warmup)), latency=False)
    seconds = max(1, round(opts.duration))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv0 = process_cpu_seconds(server_pid)
    start = time.perf_counter()
    text = _wrk(procs, url, conc, seconds, latency=True)
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


def measure(runner: Runner, procs: Processes, opts: Options, url: str, conc: int, target: Target) -> Sample:
    """One cell, plus the CPU that neither the server nor the generator used during it (others' load)."""
    busy0, srv0, gen0, wall0 = (
        busy_cpu_seconds(),
        process_cpu_seconds(target.pid),
        children_cpu_seconds(),
        time.perf_counter(),
    )
    sample = runner(procs, opts, url, conc, target.pid)
    busy1, srv1, gen1, wall1 = (
        busy_cpu_seconds(),
        process_cpu_seconds(target.pid),
        children_cpu_seconds(),
        time.perf_counter(),
    )
    if srv0 is not None and srv1 is not None:
        other = (busy1 - busy0) - (srv1 - srv0) - (gen1 - gen0)
        sample.other_cpu_pct = max(0.0, 100 * other / (wall1 - wall0))
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
                    sample = measure(runner, procs, opts, target.url(ep), conc, target)
                    cells[(target.name, ep, conc)].samples.append(sample)
                    line = f"{target.name:<16} {ep:<5} c={conc:<4} {sample.rps:>9,.0f} req/s"
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
    ("target", 17), ("endpoint", 9), ("conc", 5), ("req/s", 9), ("min-max req/s", 15), ("p50 ms", 8),
    ("p99 ms", 8), ("errors", 7), ("srv CPU%", 9), ("gen CPU%", 9), ("other CPU%", 11), ("srv us/req", 11),
    ("x bare", 7),
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
    for cell in sorted(cells, key=lambda c: (c.conc, c.target != BARE, c.target, c.endpoint != "ping")):
        med = cell.median()
        rps = [s.rps for s in cell.samples]
        spread = f"{min(rps):,.0f}-{max(rps):,.0f}" if rounds > 1 else ""
        base = bare.get(cell.conc)
        ratio = paired_ratio(cell, base, _rps) if base is not None and cell is not base else None
        us = cpu_per_request_us(med)
        values = [cell.target, cell.endpoint, str(cell.conc), f"{med.rps:,.0f}", spread, f"{med.p50_ms:.2f}",
                  f"{med.p99_ms:.2f}", str(sum(s.errors for s in cell.samples)), _pct(med.server_cpu_pct),
                  _pct(med.gen_cpu_pct), _pct(med.other_cpu_pct), "-" if us is None else f"{us:.0f}",
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
        "  the rounds)",
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
            print("\n".join([*table(cells, opts.rounds), "", *ping_ratios(cells, concs), note]), flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
