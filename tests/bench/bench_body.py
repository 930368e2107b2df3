"""How long a big request body blocks a node's event loop.

Starts one `podium serve` node (embedded store) on a free loopback port, then sends 32 MiB JSON bodies to
`ping` and `get_global_state`: without credentials (declared length, then chunked) and with an admin API key
in the headers. Meanwhile a probe asks `/health` every 10 ms; the longest probe round trip while a body is in
flight is how long the loop was blocked. Prints one line per case. Everything it starts it stops.

    python -m tests.bench.bench_body [--mib 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.servers import Node, wait_port


async def probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url + "/health") as resp:
            await resp.read()
        worst.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


def body_bytes(mib: int) -> bytes:
    # Many small arrays: the shape that is slowest to parse per byte.
    count = (mib * 1024 * 1024 - 16) // 3
    return b'{"x":[' + b"[],".join([b""] * count) + b"[]]}"


def worst_accepted() -> bytes:
    """Close to the most expensive JSON a known caller may send: just under the JSON size, container and
    item limits (api/transport.py)."""
    return b'{"x":[' + b"[]," * 99_000 + b"1," * 900_000 + b"1]}"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]


async def one_case(url: str, data: bytes, api: str, headers: dict[str, str], chunked: bool) -> tuple[float, float, int]:
    """(seconds to the reply, longest /health round trip meanwhile, HTTP status)."""
    worst: list[float] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        task = asyncio.create_task(probe(session, url, stop, worst))
        await asyncio.sleep(0.2)
        worst.clear()
        started = time.perf_counter()
        payload = chunks(data) if chunked else data
        try:
            async with session.post(f"{url}/api/app/{api}/v1", data=payload,
                                    headers={"Content-Type": "application/json", **headers}) as resp:  # fmt: skip
                status = resp.status
                await resp.read()
        except aiohttp.ClientError:
            status = -1  # the node closed the connection mid-upload after refusing the body
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.2)
        stop.set()
        await task
    return elapsed, max(worst, default=0.0), status


async def admin_key(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.post(url + "/api/user/login/v1", json={"username": "admin", "password": "admin"}) as r:
                if r.status == 200:
                    sid = r.cookies["session_id"].value
                    break
            await asyncio.sleep(0.2)
        async with session.post(url + "/api/app/create_api_key/v1", json={"title": "bench", "privileges":
                                {"admin": True}}, headers={"X-Session-ID": sid}) as r:  # fmt: skip
            return str((await r.json())["plain_key"])


async def run(mib: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(0, Path(tmp), None, ["--access-log", "off"]).start()
        try:
            wait_port(node.port)
            key = await admin_key(node.url)
            data = body_bytes(mib)
            print(f"body: {len(data) / 1048576:.1f} MiB JSON; /health probed every 10 ms; median of {repeat}")
            cases = [
                ("no credentials, Content-Length", "ping", {}, False),
                ("no credentials, chunked", "ping", {}, True),
                ("admin key in X-API-Key", "get_global_state", {"X-API-Key": key}, False),
            ]
            worst = worst_accepted()
            cases.append((f"admin key, {len(worst) / 1048576:.1f} MiB worst accepted", "get_global_state",
                          {"X-API-Key": key}, False))  # fmt: skip
            for title, api, headers, chunked in cases:
                body = worst if "worst" in title else data
                results = [await one_case(node.url, body, api, headers, chunked) for _ in range(repeat)]
                reply = statistics.median(r[0] for r in results)
                blocked = statistics.median(r[1] for r in results)
                statuses = sorted({r[2] for r in results})
                print(f"{title:38} status {statuses}  reply after {reply * 1000:7.1f} ms  "
                      f"longest /health {blocked * 1000:6.1f} ms")  # fmt: skip
        finally:
            node.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.mib, args.repeat))


if __name__ == "__main__":
    main()
