"""Definition list reads on a satellite: get_categories / get_plugins with 1,000 categories, next to ping.

Starts a Redis-compatible server and two real nodes (primary + satellite, access log off), creates
1,000 categories on the primary, then measures, on the satellite, GET ping and GET get_categories /
get_plugins with an API key, at the given concurrency, interleaved over rounds. Prints req/s,
p50/p99 and each list read's ratio to ping (target: within 30% of ping).

    python -m tests.bench.bench_lists [--count 1000] [--concurrency 16] [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.servers import Node, RedisServer, wait_port

ENDPOINTS = {"ping": "/api/app/ping/v1", "get_categories": "/api/app/get_categories/v1",
             "get_plugins": "/api/app/get_plugins/v1"}  # fmt: skip


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[dict[str, Any], Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), resp.headers


def wait_health(node: Node, want: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(node.url + "/health", timeout=2) as resp:
                if resp.status == want:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == want:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{node.url} never answered {want}")


def setup(primary: Node, count: int) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            data, headers = post(primary.url + "/api/user/login/v1", {"username": "admin", "password": "admin"})
            if data.get("code") == 0:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("login never succeeded")
        time.sleep(0.2)
    sid = headers["Set-Cookie"].split("session_id=")[1].split(";")[0]
    admin = {"X-Session-ID": sid}
    key, _ = post(primary.url + "/api/app/create_api_key/v1", {"title": "bench", "privileges": {"admin": True}},
                  admin)  # fmt: skip
    for i in range(count):
        post(primary.url + "/api/app/create_category/v1",
             {"id": f"bench_{i:05d}", "title": f"Bench category {i}", "notes": "x" * 40}, admin)  # fmt: skip
    return str(key["plain_key"])


def load_wrk(url: str, conc: int, duration: float, key: str, gzip: bool = False) -> dict[str, Any]:
    """wrk (C) reads large replies far more cheaply than a Python client sharing the same 2 cores."""
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{int(duration)}s", "--latency", "-H", f"X-API-Key: {key}", url]
    if gzip:
        cmd[1:1] = ["-H", "Accept-Encoding: gzip"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {pct: float(value) * scale[unit]
           for pct, value, unit in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", out, re.M)}  # fmt: skip
    return {"rps": rps, "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0)}


def load(url: str, conc: int, duration: float, key: str, server_pid: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.bench.loadgen", "--url", url, "-c", str(conc), "-d", str(duration),
           "-w", "1", "--server-pid", str(server_pid), "--header", f"X-API-Key: {key}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tool", choices=["python", "wrk"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        nodes = [Node(i, root / f"n{i}", redis.url, ["--access-log", "off"]) for i in range(2)]
        try:
            nodes[0].start()
            wait_port(nodes[0].port)
            wait_health(nodes[0], 200)
            nodes[1].start()
            wait_port(nodes[1].port)
            wait_health(nodes[1], 503)
            key = setup(nodes[0], args.count)
            sat = nodes[1]
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in ENDPOINTS}
            for _ in range(args.rounds):
                for name, path in ENDPOINTS.items():
                    if args.tool == "wrk":
                        samples[name].append(load_wrk(sat.url + path, args.concurrency, args.duration, key))
                        if name != "ping":
                            samples.setdefault(name + " (gzip)", []).append(
                                load_wrk(sat.url + path, args.concurrency, args.duration, key, gzip=True))
                    else:
                        samples[name].append(load(sat.url + path, args.concurrency, args.duration, key, sat.pid))
        finally:
            for node in nodes:
                node.terminate()
            redis.stop()
    print(f"Definition list reads on a satellite: {args.count} categories (+ default plugins), API key auth,")
    print(f"concurrency {args.concurrency}, {args.rounds} rounds x {args.duration:.0f} s, median round shown; "
          f"generator ({args.tool}) and servers share 2 cores")  # fmt: skip
    print(f"{'endpoint':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x ping':>8}")
    ping = statistics.median(s["rps"] for s in samples["ping"])
    for name, rows in samples.items():
        med = sorted(rows, key=lambda s: s["rps"])[len(rows) // 2]
        ratio = statistics.median(s["rps"] for s in rows) / ping if ping else 0.0
        print(f"{name:<24}{med['rps']:>9,.0f}{med['p50_ms']:>9.2f}{med['p99_ms']:>9.2f}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
