"""Throughput of this tree next to an older checkout: what a change costs per request.

Starts two `podium serve` nodes (embedded store, access log off) on free loopback ports: one from
`--before DIR` (a checkout of an earlier commit, e.g. `git worktree add /tmp/base <commit>`) and one from
this tree. On each it logs in as admin and makes an admin API key, stores a few jobs' worth of nothing, and
then loads, interleaved over `--rounds`, GET ping, get_global_state, search_jobs?query=*&limit=5 and get_plugins with
the key, using wrk (one thread, `--concurrency` connections) in its own process. Prints req/s per round and
the median ratio after/before per endpoint. Everything it starts it stops.

    python -m tests.bench.bench_ab --before /tmp/base [--rounds 5] [--duration 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.bench.bench_api import parse_wrk
from tests.servers import ROOT, free_port, wait_port

PATHS = {
    "ping": "/api/app/ping/v1",
    "get_global_state": "/api/app/get_global_state/v1",
    "search_jobs": "/api/app/search_jobs/v1?query=*&limit=5",
    "get_plugins": "/api/app/get_plugins/v1",
}


def start(tree: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PODIUM_TEST_HOOKS", None)
    log = (data.parent / f"{data.name}.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--data-dir", str(data), "--bind",
                             f"127.0.0.1:{port}", "--access-log", "off", "--log-format", "json"],
                            cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    log.close()
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[dict[str, Any], Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), resp.headers


def admin_key(base: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            data, headers = post(base + "/api/user/login/v1", {"username": "admin", "password": "admin"})
            if data.get("code") == 0:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}: login did not succeed")
        time.sleep(0.3)
    sid = headers["Set-Cookie"].split("session_id=")[1].split(";")[0]
    data, _ = post(base + "/api/app/create_api_key/v1", {"title": "bench", "privileges": {"admin": True}},
                   {"X-Session-ID": sid})  # fmt: skip
    return str(data["plain_key"])


def wrk(url: str, key: str, conc: int, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-H", f"X-API-Key: {key}", url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout  # fmt: skip
    rps, _, _, errors = parse_wrk(out)
    if errors:
        raise RuntimeError(f"{url}: {errors} errors")
    return rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the earlier commit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nodes: dict[str, tuple[str, str]] = {}
        for label, tree in (("before", args.before.resolve()), ("after", ROOT)):
            proc, base = start(tree, tmp / label)
            procs.append(proc)
            nodes[label] = (base, admin_key(base))
        results: dict[tuple[str, str], list[float]] = {}
        for rnd in range(args.rounds):
            for name, path in PATHS.items():
                for label in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                    base, key = nodes[label]
                    rps = wrk(base + path, key, args.concurrency, args.duration)
                    results.setdefault((name, label), []).append(rps)
            cells = [f"{n} {results[(n, 'before')][-1]:.0f}/{results[(n, 'after')][-1]:.0f}" for n in PATHS]
            print(f"round {rnd + 1} (before/after req/s): " + ", ".join(cells))
        print(f"\nreq/s, median of {args.rounds} rounds (wrk -t1 -c{args.concurrency}, {args.duration} s):")
        for name in PATHS:
            before = statistics.median(results[(name, "before")])
            after = statistics.median(results[(name, "after")])
            ratios = [a / b for a, b in zip(results[(name, "after")], results[(name, "before")], strict=True)]
            print(f"  {name:18} before {before:8.0f}  after {after:8.0f}  after/before {statistics.median(ratios):.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
