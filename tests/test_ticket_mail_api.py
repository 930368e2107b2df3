"""Ticket mail end to end: tickets created and changed through the API of a real node reach a local SMTP sink, the
new ticket at once, a burst of changes as one debounced message, a draft never."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.actionkit import bench_on
from tests.sinks import eventually


async def test_ticket_mail_through_the_api(tmp_path: Path) -> None:
    async with bench_on(tmp_path, "--ticket-debounce-s", "2") as bench:
        jobs, node, sink = bench.jobs, bench.cluster.nodes[0], bench.mail
        created = (await jobs.ok(node, "create_ticket", {"subject": "Disk <b>full</b>", "type": "issue",
                                                         "notify": ["ops@example.com", "ops@example.com"]}))["ticket"]
        num = created["num"]
        mail = await eventually(lambda: sink.messages, what="the new ticket's mail")
        assert len(mail) == 1 and mail[0].to == ["ops@example.com"]  # once, though listed twice
        assert f"Ticket #{num} Created: Disk full" in mail[0].subject

        ticket_id = created["id"]
        await jobs.ok(node, "update_ticket", {"id": ticket_id, "subject": "Disk full on db1"})
        await jobs.ok(node, "update_ticket", {"id": ticket_id, "status": "closed"})
        comment = {"type": "comment", "body": "Cleaned /var/log."}
        await jobs.ok(node, "add_ticket_change", {"id": ticket_id, "change": comment})
        updated = await eventually(lambda: sink.messages[1:], timeout=60, what="the debounced mail")
        await asyncio.sleep(3.0)  # past another debounce window: still one message for the burst
        assert len(sink.messages) == 2 and len(updated) == 1
        assert f"Ticket #{num} Updated: Disk full on db1" in updated[0].subject
        assert "Cleaned /var/log." in updated[0].text and "closed" in updated[0].text.lower()

        await jobs.ok(node, "create_ticket", {"subject": "Just an idea", "status": "draft",
                                              "notify": ["ops@example.com"]})  # fmt: skip
        await asyncio.sleep(4.0)
        assert len(sink.messages) == 2  # a draft mails nobody
