"""The access log of a real `podium serve`: one JSON line per request (buffered, written within a fraction of a
second and at shutdown), with the request id the reply carried and never the query string."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers import Node, RedisServer, wait_port


def access_lines(node: Node) -> list[dict[str, Any]]:
    found = []
    for line in node.log_text().splitlines():
        if '"access"' in line:
            record = json.loads(line)
            if record.get("event") == "access":
                found.append(record)
    return found


async def test_access_lines_are_json_with_the_request_id_and_no_query(tmp_path: Path,
                                                                     redis_server: RedisServer) -> None:
    node = Node(0, tmp_path / "n", redis_server.url, extra=("--cluster", "accesslog")).start()
    try:
        wait_port(node.port, 30)
        async with aiohttp.ClientSession() as http:
            ids = []
            for n in range(20):
                async with http.get(f"{node.url}/api/app/ping/v1", params={"api_key": f"SECRET{n}"}) as resp:
                    assert resp.status == 200
                    ids.append(resp.headers["X-Request-ID"])
        deadline = time.monotonic() + 10  # written within a fraction of a second, with the node still running
        while len([r for r in access_lines(node) if r["path"] == "/api/app/ping/v1"]) < 20:
            assert time.monotonic() < deadline, "the access lines were not written while the node ran"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/api/app/echo/v1") as resp:
            last_id = resp.headers["X-Request-ID"]
    finally:
        node.terminate()
    lines = access_lines(node)
    pings = [r for r in lines if r["path"] == "/api/app/ping/v1"]
    assert [r["request_id"] for r in pings] == ids
    assert all(r["status"] == 200 and r["method"] == "GET" and r["ms"] >= 0 and r["bytes"] > 0 for r in pings)
    assert all(r["level"] == "info" and r["logger"] == "aiohttp.access" and r["timestamp"].endswith("Z")
               for r in pings)  # fmt: skip
    assert "SECRET" not in node.log_text()
    assert [r["request_id"] for r in lines if r["path"] == "/api/app/echo/v1"] == [last_id]  # flushed at shutdown


def test_buffered_lines_are_written_in_whole_lines_of_at_most_a_pipe_write() -> None:
    """The HTTP workers of a node share its stdout: each write is at most PIPE_BUF bytes (never interleaved with
    another process's) and ends at a line end, except a single line longer than that, written whole."""
    import random

    from api.logs import pieces

    rng = random.Random(7)
    for _ in range(500):
        lines = [b"x" * rng.choice([0, 9, 300, 4095, 4096, 5000, 9000]) + b"\n" for _ in range(rng.randint(0, 40))]
        data = b"".join(lines)
        written = list(pieces(data, 4096))
        assert b"".join(written) == data
        for piece in written:
            assert piece.endswith(b"\n")
            assert len(piece) <= 4096 or piece.count(b"\n") == 1
