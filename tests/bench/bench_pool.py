"""Many concurrent `search_jobs` against one node: replies that are not 200, and primary step-downs.

Starts one `podium serve` (embedded store, access log as `--access-log`, pool size `--redis-pool` if
given) on a free 127.0.0.1 port, logs in as admin/admin, creates an admin API key and an event with a
manual trigger over HTTP, and runs it `--jobs` times so that `search_jobs` has records to find. Then a
load generator in a separate process (this module with `--generate`) opens `--clients` keep-alive
connections and sends `GET /api/app/search_jobs/v1?query=*&limit=5` on each, back to back, for a warm-up
and a measured window. Meanwhile this process polls the node's `/health` every 100 ms.

Printed: replies in the window by HTTP status and `code`, the share that is not 200, req/s and latency;
from the /health polls, the probes that found the node not primary or not answering within 1 s, the
epochs seen and the longest /health time; from the node's log, `stepped_down`, `elected_primary`,
`redis_unreachable`, `store_unavailable` and `loop_lag` lines; the loop lag the node reports. Every
process it starts it stops, by pid, also on Ctrl-C or SIGTERM, and it removes its temporary directory.

    python -m tests.bench.bench_pool                       # 600 clients, 10 s, pool as configured
    python -m tests.bench.bench_pool --clients 300 --duration 5 --redis-pool 16 --access-log off
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.bench_api import Processes, Target, cleanup_on_exit, login, wait_ready
from tests.bench.loadgen import process_cpu_seconds
from tests.servers import free_port

SEARCH = "/api/app/search_jobs/v1?query=*&limit=5"
HEALTH_EVERY_S = 0.1
LOG_EVENTS = ("stepped_down", "elected_primary", "redis_unreachable", "store_unavailable", "loop_lag")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- the load generator (a child process) ----------------------------------------------------------------


@dataclass
class Load:
    replies: dict[str, int] = field(default_factory=dict)  # "200 0", "500 db", "error TimeoutError", ...
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    sent: int = 0


async def generate(url: str, key: str, clients: int, warmup: float, duration: float) -> Load:
    """`clients` workers on one session with `clients` keep-alive connections, GET back to back."""
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    load = Load()
    window_start = time.perf_counter() + warmup
    window_end = window_start + duration

    async def worker(http: aiohttp.ClientSession) -> None:
        while (start := time.perf_counter()) < window_end:
            load.sent += 1
            try:
                async with http.get(url) as resp:
                    raw = await resp.read()
                    try:
                        code = json.loads(raw).get("code")
                    except ValueError:
                        code = "not-json"
                    outcome = f"{resp.status} {code}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcome = f"error {type(exc).__name__}"
            done = time.perf_counter()
            if window_start <= start and done <= window_end:
                counts[outcome] += 1
                if outcome == "200 0":
                    latencies.append(done - start)
            if not outcome.startswith("200"):
                await asyncio.sleep(0.01)  # a failing node must not turn this into a spin

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"X-API-Key": key}) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    lat = sorted(latencies)
    load.replies = dict(counts)
    load.seconds = duration
    load.p50_ms, load.p99_ms = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    load.max_ms = (lat[-1] if lat else 0.0) * 1000
    return load


# -- set-up over HTTP ------------------------------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    async with http.post(url, json=body, headers=headers) as resp:
        data = await resp.json()
        if resp.status != 200 or data.get("code") != 0:
            raise RuntimeError(f"{url}: HTTP {resp.status} {data}")
        return data


async def prepare(base: str, session: str, jobs: int) -> str:
    """An admin API key, and `jobs` finished jobs for search_jobs to find."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        data = await post(http, f"{base}/api/app/create_api_key/v1",
                          {"title": "bench", "privileges": {"admin": True}}, {"X-Session-ID": session})  # fmt: skip
        key = str(data["plain_key"])
        headers = {"X-API-Key": key}
        data = await post(http, f"{base}/api/app/create_event/v1", {
            "title": "Run by hand", "enabled": True, "category": "general", "plugin": "shellplug",
            "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\ntrue"},
            "triggers": [{"type": "manual", "enabled": True}],
        }, headers)  # fmt: skip
        event = {"id": data["event"]["id"]}
        for _ in range(jobs):
            await post(http, f"{base}/api/app/run_event/v1", event, headers)
    return key


# -- watching the node -----------------------------------------------------------------------------------


@dataclass
class Watch:
    probes: int = 0
    not_primary: int = 0  # answered, but not as primary
    no_answer: int = 0  # no /health reply within 1 s
    epochs: list[int] = field(default_factory=list)  # distinct epochs, in the order seen
    slowest_s: float = 0.0
    lag: dict[str, Any] = field(default_factory=dict)  # the last loop_lag_ms the node reported
    renew_gap_ms: float = 0.0  # the longest renew gap the node reported


async def watch(base: str, until: float) -> Watch:
    seen = Watch()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() < until:
            started = time.perf_counter()
            seen.probes += 1
            try:
                async with http.get(f"{base}/health", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    body = await resp.json()
                if not body.get("master"):
                    seen.not_primary += 1
                epoch = int(body.get("epoch", 0))
                if not seen.epochs or seen.epochs[-1] != epoch:
                    seen.epochs.append(epoch)
                if isinstance(body.get("loop_lag_ms"), dict):
                    seen.lag = body["loop_lag_ms"]
                seen.renew_gap_ms = max(seen.renew_gap_ms, float(body.get("renew_gap_ms", 0.0)))
            except (TimeoutError, aiohttp.ClientError, ValueError):
                seen.no_answer += 1
            took = time.perf_counter() - started
            seen.slowest_s = max(seen.slowest_s, took)
            await asyncio.sleep(max(0.0, HEALTH_EVERY_S - took))
    return seen


def log_counts(path: Path, since: float) -> Counter[str]:
    """How many lines of each LOG_EVENTS event the node logged at or after `since` (unix time)."""
    found: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        event = rec.get("event")
        if event in LOG_EVENTS:
            try:
                when = datetime.fromisoformat(str(rec.get("timestamp"))).timestamp()
            except ValueError:
                when = since
            if when >= since:
                found[event] += 1
    return found


# -- main ------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, procs: Processes, tmp: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "node.log"
    cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(tmp / "data"), "--bind", f"127.0.0.1:{port}",
           "--log-format", "json", "--access-log", args.access_log]  # fmt: skip
    if args.redis_pool:
        cmd += ["--redis-pool", str(args.redis_pool)]
    node = procs.spawn(cmd, log=log)
    wait_ready(node, f"{base}/api/app/ping/v1", log)
    session = login(Target("podium", port, node.pid, ()), node)
    key = await prepare(base, session, args.jobs)
    print(f"node pid {node.pid} port {port}; {args.jobs} jobs stored; key created", file=sys.stderr, flush=True)

    spec = json.dumps({"url": base + SEARCH, "key": key, "clients": args.clients,
                       "warmup": args.warmup, "duration": args.duration})  # fmt: skip
    began_unix = time.time()
    cpu0 = process_cpu_seconds(node.pid)
    gen = procs.spawn([sys.executable, "-m", "tests.bench.bench_pool", "--generate", spec], pipe=True)
    watcher = asyncio.create_task(watch(base, time.perf_counter() + args.warmup + args.duration + 2.0))
    out, err = await asyncio.get_running_loop().run_in_executor(
        None, lambda: gen.communicate(timeout=args.warmup + args.duration + 120)
    )
    cpu1 = process_cpu_seconds(node.pid)
    seen = await watcher
    if gen.returncode != 0:
        raise RuntimeError(f"load generator failed ({gen.returncode}): {err.decode(errors='replace')}")
    load = Load(**json.loads(out))
    await asyncio.sleep(0.5)  # let the last log lines reach the file
    logged = log_counts(log, began_unix)

    total = sum(load.replies.values())
    ok = load.replies.get("200 0", 0)
    share = 100 * (total - ok) / total if total else 0.0
    cpu = f"{100 * (cpu1 - cpu0) / (args.warmup + args.duration):.0f}%" if cpu0 is not None and cpu1 else "-"
    lines = [
        f"bench_pool: python {platform.python_version()}, aiohttp {aiohttp.__version__}; {args.clients} clients on "
        f"GET {SEARCH} for {args.duration:g} s (+{args.warmup:g} s warm-up); pool "
        f"{args.redis_pool or 'default'}, access log {args.access_log}",
        f"replies in the window: {total:,} ({total / load.seconds:,.0f}/s); not 200: {total - ok:,} = {share:.2f} %",
        "  by outcome: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(load.replies.items(), key=lambda kv: -kv[1])),
        f"latency of the 200s: p50 {load.p50_ms:.0f} ms, p99 {load.p99_ms:.0f} ms, max {load.max_ms:.0f} ms; "
        f"node CPU {cpu}",
        f"/health every {HEALTH_EVERY_S * 1000:.0f} ms: {seen.probes} probes, not primary {seen.not_primary}, "
        f"no answer within 1 s {seen.no_answer}, epochs seen {seen.epochs}, slowest {seen.slowest_s * 1000:.0f} ms",
        "node log during the run: " + ", ".join(f"{event} {logged.get(event, 0)}" for event in LOG_EVENTS),
        f"step-downs: {logged.get('stepped_down', 0)} (epoch changes: {max(0, len(seen.epochs) - 1)})",
    ]
    if seen.lag:
        lines.append("loop lag the node reported last (ms): " + ", ".join(f"{k} {v}" for k, v in seen.lag.items()))
        lines.append(f"longest gap between two lease renews: {seen.renew_gap_ms:.0f} ms (renew every lease/3, "
                     "step-down at 0.7 x lease)")  # fmt: skip
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=600, help="concurrent connections (default 600)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds first (default 1)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs to store first (default 200)")
    parser.add_argument("--redis-pool", type=int, default=0, help="the node's --redis-pool (default: its own)")
    parser.add_argument("--access-log", choices=["on", "off"], default="on", help="the node's access log")
    parser.add_argument("--generate", metavar="JSON", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args(argv)
    if args.generate:
        spec = json.loads(args.generate)
        load = asyncio.run(generate(spec["url"], spec["key"], spec["clients"], spec["warmup"], spec["duration"]))
        json.dump(asdict(load), sys.stdout)
        return 0
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.jobs < 0:
        parser.error("clients and duration must be positive; warm-up and jobs not negative")
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="podium-bench-pool-") as tmp, cleanup_on_exit(procs):
            asyncio.run(run(args, procs, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
