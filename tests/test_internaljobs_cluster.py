"""Internal jobs across a failover, with two real node processes: a job whose primary is killed (kill -9) is marked
aborted by the next primary, and none stays running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.servers import Cluster, Node


async def test_orphaned_internal_job_is_aborted_by_the_next_primary(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2) as c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        admin = await c.admin_session(primary)
        other = next(n for n in c.nodes if n is not primary)

        status, data = await c.post(primary, "test_internal_job", {"duration": 600}, headers=admin)
        assert (status, data["code"]) == (200, 0), data
        job_id = data["id"]

        async def running_with_progress(node: Node) -> dict[str, Any] | None:
            status, data = await c.post(node, "get_internal_jobs", headers=admin)
            rows = [r for r in data.get("rows", []) if r["id"] == job_id] if status == 200 else []
            return rows[0] if rows and rows[0]["progress"] > 0 else None

        # Seen from the satellite while it runs on the primary.
        row = await c.wait_for(lambda: running_with_progress(other), timeout=30, interval=0.2)
        assert row["title"] == "Test job that does nothing" and row["node"] == primary.node_id

        primary.kill9()
        assert await c.wait_single_primary(timeout=30, nodes=[other]) is other

        async def settled() -> dict[str, Any] | None:
            status, data = await c.post(other, "get_internal_jobs", {"all": True}, headers=admin)
            rows = [r for r in data.get("rows", []) if r["id"] == job_id] if status == 200 else []
            return rows[0] if rows and rows[0].get("complete") else None

        final = await c.wait_for(settled, timeout=30, interval=0.2)
        assert final["code"] == "abort" and "stopped" in final["description"], final
        status, data = await c.post(other, "get_internal_jobs", headers=admin)
        assert status == 200 and [r["id"] for r in data["rows"]] == [], data
