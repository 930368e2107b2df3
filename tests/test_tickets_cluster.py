"""Ticket numbers on a real three-node cluster: 200 tickets created by concurrent clients that follow the
primary, with the primary killed (SIGKILL) midway. Every ticket a client was told about exists, no two tickets
share a number, and tickets created after the failover get numbers no earlier ticket had."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.servers import Cluster
from tests.test_pool import admin_key

TICKETS = 200
CLIENTS = 8
KILL_AT = TICKETS // 2


class Creator:
    """Clients creating tickets with ids of their own, so an answer lost with a dying node can be retried safely:
    a repeat of a create that did happen answers that the id exists."""

    def __init__(self, c: Cluster, key: str, url: str) -> None:
        self.c = c
        self.key = key
        self.url = url  # the primary as the clients last knew it
        self.pending = [f"tc{i:04d}" for i in range(TICKETS)]
        self.accepted: dict[str, int | None] = {}  # id -> the number its reply gave (None: learnt from "exists")
        self.order: list[str] = []  # ids in the order their creates were answered
        self.retries = 0

    async def find_primary(self) -> None:
        for node in self.c.nodes:
            if node.running:
                health = await self.c.health(node)
                if health is not None and health[0] == 200:
                    self.url = node.url
                    return
        await asyncio.sleep(0.1)

    async def create(self, http: aiohttp.ClientSession, ticket_id: str) -> None:
        body = {"id": ticket_id, "subject": f"Ticket {ticket_id}", "type": "issue"}
        while True:
            try:
                async with http.post(f"{self.url}/api/app/create_ticket/v1", json=body) as resp:
                    data: dict[str, Any] = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                self.retries += 1
                await self.find_primary()
                continue
            code = data.get("code")
            if code == 0:
                self.accepted[ticket_id] = int(data["ticket"]["num"])
                self.order.append(ticket_id)
                return
            if code == "ticket" and "exists" in data["description"]:  # our earlier try was applied
                self.accepted[ticket_id] = None
                self.order.append(ticket_id)
                return
            self.retries += 1
            if code == "master" and data.get("url"):
                self.url = str(data["url"])
            elif code in ("master", "db", "conflict"):
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"create {ticket_id}: {data}")

    async def worker(self, http: aiohttp.ClientSession) -> None:
        while self.pending:
            await self.create(http, self.pending.pop(0))


async def kill_primary_midway(c: Cluster, creator: Creator) -> int:
    """SIGKILL the primary once KILL_AT tickets were answered; returns how many had been then."""
    await c.wait_for(lambda: asyncio.sleep(0, len(creator.accepted) >= KILL_AT), timeout=60, interval=0.01)
    (primary,) = await c.primaries()
    answered = len(creator.accepted)
    primary.kill9()
    return answered


@pytest.mark.timeout(240)
async def test_ticket_numbers_stay_unique_across_a_primary_kill(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=3) as c:
        first = await c.wait_single_primary()
        await c.wait_all_up()
        key = await admin_key(c, first)
        creator = Creator(c, key, first.url)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, headers={"X-API-Key": key}) as http:
            killer = asyncio.create_task(kill_primary_midway(c, creator))
            await asyncio.gather(*(creator.worker(http) for _ in range(CLIENTS)))
            answered_before_kill = await killer
        assert 0 < answered_before_kill < TICKETS
        survivor = await c.wait_single_primary()
        assert survivor is not first

        async with aiohttp.ClientSession(timeout=timeout, headers={"X-API-Key": key}) as http:
            query = {"query": "*", "limit": "1000", "sort_by": "num", "sort_dir": "1"}
            async with http.get(f"{survivor.url}/api/app/search_tickets/v1", params=query) as resp:
                data = await resp.json()
        assert data["code"] == 0, data
        rows = data["rows"]
        stored = {r["id"]: r["num"] for r in rows}
        # Every ticket a client was told about exists, and nothing else does.
        assert set(creator.accepted) == set(stored) and len(rows) == TICKETS == data["list"]["length"]
        # No two tickets share a number, and every reply named the number that was stored.
        nums = [r["num"] for r in rows]
        assert len(set(nums)) == TICKETS and all(isinstance(n, int) and n >= 1 for n in nums)
        for ticket_id, num in creator.accepted.items():
            assert num is None or stored[ticket_id] == num, ticket_id
        # Numbers are handed out in order: what was answered after the kill came later than all before it.
        before, after = creator.order[:answered_before_kill], creator.order[answered_before_kill:]
        assert after and max(stored[t] for t in before) < max(stored[t] for t in after)
        print(f"\n{TICKETS} tickets by {CLIENTS} clients, primary killed after {answered_before_kill}: "
              f"{creator.retries} retries, numbers {min(nums)}..{max(nums)}")
