"""Upload and download MB/s of one big file through a node, on each file store backend.

For each backend (redis, directory, s3) it starts, on free loopback ports, a valkey-server, a `podium serve`
node with `--file-store <backend>` (s3: moto's S3-compatible server in its own process, path-style, a fresh
bucket), seeds a running job as the primary would, then uploads a file of `--mib` MiB of random bytes as that
job's agent (`upload_job_file`, multipart, the agent's job auth) and downloads it back with `GET /files/...`
(the server's token), checking the SHA-256. Each backend gets `--rounds` uploads and downloads; the table shows
the median and the range. MB = 10^6 bytes. Everything it starts it stops, by pid, also on Ctrl-C or SIGTERM.

    python -m tests.bench.bench_files [--mib 100] [--rounds 3] [--backends redis,directory,s3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import aiohttp

from storage.connection import Database, connect
from storage.fence import Fence
from storage.jobs import JobStore
from storage.keyspace import Keyspace
from tests.servers import Node, RedisServer, S3Bucket, S3Server

SECRET = "bench-files-secret"
JOB = "jbenchfiles"
SERVER = "sbench"
BACKENDS = ("redis", "directory", "s3")
PIECE = 1 << 20  # bytes per write of the upload body


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def wait_primary(http: aiohttp.ClientSession, node: Node, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(node.url + "/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if not node.running or time.monotonic() > deadline:
            raise RuntimeError(f"the node did not become primary:\n{node.log_text()[-2000:]}")
        await asyncio.sleep(0.1)


async def seed_job(redis_url: str) -> None:
    """A running job on SERVER, launched under the primary's lease and epoch, so its agent may upload."""
    db = Database(connect(redis_url), Keyspace("podium"))
    try:
        leader, epoch = await db.client.get(db.keys.leader), await db.client.get(db.keys.epoch)
        assert isinstance(leader, bytes) and isinstance(epoch, bytes)
        job = {"id": JOB, "state": "active", "category": "general", "targets": ["main"], "server": SERVER,
               "started": time.time()}  # fmt: skip
        assert await JobStore(db).launch(Fence(db, leader.decode(), int(epoch)), job)
    finally:
        await db.aclose()


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        yield bytes(view[start : start + PIECE])


async def upload(http: aiohttp.ClientSession, node: Node, data: bytes) -> tuple[float, str]:
    """(seconds, key) of one upload; the credentials go first, so the file streams straight to the store."""
    with aiohttp.MultipartWriter("form-data") as form:
        for name, value in (("id", JOB), ("auth", sha(JOB + SECRET))):
            part = form.append(value)
            part.set_content_disposition("form-data", name=name)
        part = form.append(pieces(data), {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="file1", filename="big.bin")
        started = time.perf_counter()
        async with http.post(node.url + "/api/app/upload_job_file/v1", data=form) as resp:
            reply = await resp.json()
        elapsed = time.perf_counter() - started
    if resp.status != 200 or reply.get("code") != 0 or reply.get("size") != len(data):
        raise RuntimeError(f"upload failed: {resp.status} {reply}")
    return elapsed, str(reply["key"])


async def download(http: aiohttp.ClientSession, node: Node, key: str, digest: bytes) -> float:
    check = hashlib.sha256()
    started = time.perf_counter()
    async with http.get(f"{node.url}/{key}", params={"server": SERVER, "auth": sha(SERVER + SECRET)}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"download failed: {resp.status} {await resp.text()}")
        async for chunk in resp.content.iter_chunked(1 << 20):
            check.update(chunk)
    elapsed = time.perf_counter() - started
    if check.digest() != digest:
        raise RuntimeError("the downloaded file differs from the uploaded one")
    return elapsed


async def one_backend(backend: str, root: Path, data: bytes, rounds: int) -> tuple[list[float], list[float]]:
    """Upload and download MB/s of each round on `backend`."""
    mb = len(data) / 1e6
    digest = hashlib.sha256(data).digest()
    redis = RedisServer(root / "redis")
    s3: S3Server | None = None
    node: Node | None = None
    try:
        redis.start()
        limit = str(len(data) + (1 << 20))
        extra = ["--secret-key", SECRET, "--access-log", "off", "--file-max-bytes", limit,
                 "--file-store-max-bytes", str(len(data) * (rounds + 1))]  # fmt: skip
        env: dict[str, str] = {}
        if backend == "s3":
            s3 = S3Server(root / "s3").start()
            bucket = await S3Bucket(s3).create()
            extra += ["--file-store", "s3", "--s3-endpoint", s3.url, "--s3-bucket", bucket.name,
                      "--s3-path-style", "on"]  # fmt: skip
            env = s3.env
        elif backend == "directory":
            extra += ["--file-store", str(root / "shared")]
        node = Node(0, root / "node", redis.url, extra, env=env).start()
        ups, downs = [], []
        timeout = aiohttp.ClientTimeout(total=600, sock_read=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await wait_primary(http, node)
            await seed_job(redis.url)
            for _ in range(rounds):
                up_s, key = await upload(http, node, data)
                down_s = await download(http, node, key, digest)
                ups.append(mb / up_s)
                downs.append(mb / down_s)
                print(f"  {backend:<9} up {mb / up_s:7.1f} MB/s   down {mb / down_s:7.1f} MB/s", file=sys.stderr)
        return ups, downs
    finally:
        if node is not None:
            node.terminate()
        if s3 is not None:
            s3.stop()
        redis.stop()


def row(name: str, ups: Sequence[float], downs: Sequence[float]) -> str:
    return (f"{name:<10} {statistics.median(ups):9.1f} {min(ups):7.1f}-{max(ups):<7.1f} "
            f"{statistics.median(downs):9.1f} {min(downs):7.1f}-{max(downs):<7.1f}")  # fmt: skip


async def run(mib: int, rounds: int, backends: Sequence[str]) -> None:
    data = os.urandom(mib * 1024 * 1024)
    print(f"one file of {mib} MiB ({len(data) / 1e6:.1f} MB), {rounds} rounds per backend, through one node over "
          "loopback HTTP; MB/s median and range")  # fmt: skip
    lines = [f"{'backend':<10} {'up MB/s':>9} {'range':^15} {'down MB/s':>9} {'range':^15}"]
    with tempfile.TemporaryDirectory(prefix="podium-bench-files-") as tmp:
        for backend in backends:
            print(f"{backend} ...", file=sys.stderr, flush=True)
            ups, downs = await one_backend(backend, Path(tmp) / backend, data, rounds)
            lines.append(row(backend, ups, downs))
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100, help="size of the file (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="uploads and downloads per backend (default 3)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default all three)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends) or args.mib < 1 or args.rounds < 1:
        parser.error(f"--backends: some of {', '.join(BACKENDS)}; --mib and --rounds at least 1")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        asyncio.run(run(args.mib, args.rounds, backends))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
