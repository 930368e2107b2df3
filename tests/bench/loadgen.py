"""A small HTTP load generator, meant to run in its own process (bench_api starts it as a subprocess).

`concurrency` workers share one aiohttp.ClientSession whose TCPConnector allows exactly `concurrency`
keep-alive connections. Each worker sends GET requests back to back: a warm-up whose replies are not
counted, then a timed window. A request counts when it completes inside the window; its latency is the
time from just before the request to the end of reading its body. The whole run is bounded in time and
in total requests. `--header "Name: value"` (repeatable) adds a header to every request, e.g. a
credential. The result is one JSON object on stdout.

    python -m tests.bench.loadgen --url http://127.0.0.1:8080/api/app/ping/v1 -c 16 -d 5 -w 1
    python -m tests.bench.loadgen --url http://127.0.0.1:8080/api/app/get_global_state/v1 --header "X-API-Key: ..."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from yarl import URL

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ERROR_PAUSE = 0.01  # after a failed request, so a dead target does not turn the loop into a spin


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as (name, value); ValueError for anything else."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c.isspace() for c in name) or "\n" in value or "\r" in value:
        raise ValueError(f"{text!r}: expected 'Name: value'")
    return name, value


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None if it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")" closing the command name, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def processes_cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU seconds of some processes together (None if there are none or any cannot be read)."""
    total = 0.0
    for pid in pids:
        value = process_cpu_seconds(pid)
        if value is None:
            return None
        total += value
    return total if pids else None


@dataclass
class Result:
    url: str
    concurrency: int
    requests: int = 0  # successful (HTTP 200) replies completed inside the window
    errors: int = 0  # failed requests or non-200 replies completed inside the window
    seconds: float = 0.0  # length of the window actually measured
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    sent_total: int = 0  # every request sent, warm-up included
    capped: bool = False  # the total-request bound ended the run before the window did
    gen_cpu_pct: float = 0.0  # this process's CPU use during the window (100 = one core)
    server_cpu_pct: float | None = None  # the server's (its processes together), when their pids were given


class Run:
    def __init__(
        self,
        url: str,
        concurrency: int,
        warmup: float,
        duration: float,
        max_requests: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = URL(url, encoded=True)
        self.headers = dict(headers or {})
        self.result = Result(url=url, concurrency=concurrency)
        self.max_requests = max_requests
        now = time.perf_counter()
        self.window_start = now + warmup
        self.window_end = self.window_start + duration
        self.last_done = self.window_start
        self.latencies: list[float] = []

    async def worker(self, session: aiohttp.ClientSession) -> None:
        res = self.result
        while True:
            start = time.perf_counter()
            if start >= self.window_end:
                return
            if res.sent_total >= self.max_requests:
                res.capped = True
                return
            res.sent_total += 1
            ok = False
            try:
                async with session.get(self.url) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (TimeoutError, aiohttp.ClientError):
                pass
            done = time.perf_counter()
            if self.window_start <= start and done <= self.window_end:
                self.last_done = max(self.last_done, done)
                if ok:
                    self.latencies.append(done - start)
                else:
                    res.errors += 1
            if not ok:
                await asyncio.sleep(_ERROR_PAUSE)

    async def sample_at_window_start(self, server_pids: Sequence[int]) -> tuple[float, float | None]:
        await asyncio.sleep(max(0.0, self.window_start - time.perf_counter()))
        return time.process_time(), processes_cpu_seconds(server_pids)

    async def execute(self, server_pids: Sequence[int] = ()) -> Result:
        res = self.result
        connector = aiohttp.TCPConnector(limit=res.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers) as session:
            sampler = asyncio.create_task(self.sample_at_window_start(server_pids))
            await asyncio.gather(*(self.worker(session) for _ in range(res.concurrency)))
            gen_cpu0, srv_cpu0 = await sampler
            gen_cpu1 = time.process_time()
            srv_cpu1 = processes_cpu_seconds(server_pids)
        window = (self.window_end if not res.capped else self.last_done) - self.window_start
        res.seconds = max(window, 1e-9)
        lat = sorted(self.latencies)
        res.requests = len(lat)
        res.rps = res.requests / res.seconds
        res.p50_ms = percentile(lat, 50) * 1000
        res.p99_ms = percentile(lat, 99) * 1000
        res.max_ms = (lat[-1] if lat else 0.0) * 1000
        # The CPU samples span a little more than the window (workers drain after it ends); close enough.
        res.gen_cpu_pct = 100 * (gen_cpu1 - gen_cpu0) / res.seconds
        if srv_cpu0 is not None and srv_cpu1 is not None:
            res.server_cpu_pct = 100 * (srv_cpu1 - srv_cpu0) / res.seconds
        return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keep-alive HTTP GET load at fixed concurrency")
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured window, seconds")
    parser.add_argument("-w", "--warmup", type=float, default=1.0, help="uncounted warm-up, seconds")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="bound on requests sent in all")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="report this process's CPU use during the window (repeatable: their sum)")  # fmt: skip
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="add this header to every request (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    headers: dict[str, str] = {}
    for text in args.header:
        try:
            name, value = parse_header(text)
        except ValueError as exc:
            parser.error(f"--header {exc}")
        headers[name] = value
    host = URL(args.url).host or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        parser.error(f"--url {args.url}: only loopback targets are allowed")
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0 or args.max_requests < 1:
        parser.error("concurrency, duration and max-requests must be positive; warm-up not negative")
    run = Run(args.url, args.concurrency, args.warmup, args.duration, args.max_requests, headers)
    result = asyncio.run(run.execute(args.server_pid))
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
