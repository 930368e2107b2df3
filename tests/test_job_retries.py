"""Retries on real jobs: `retry {amount}` and `retry {amount, duration}` on failing jobs, the links between the
attempts, completion actions and event state on the last attempt only; which ends are retried: a failure, a limit
abort and a dead-job abort are, a user's abort and a success are not. Real `podium serve` nodes, their own agents,
real shell jobs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.actionkit import Record, action, agent_process, bench_on, limit, meta, results
from tests.sinks import eventually

pytestmark = pytest.mark.timeout(300)


def retry_links(job: Record) -> list[str]:
    return [str(j["id"]) for j in job.get("jobs") or [] if j.get("reason") == "retry"]


async def test_retries_of_failing_and_other_jobs(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        err_hook = await bench.hook("errhook")
        failing = await jobs.event(node, "#!/bin/sh\necho attempt\nexit 3\n", limits=[limit("retry", amount=2)],
                                   actions=[action("error", "web_hook", web_hook=err_hook),
                                            action("complete", "email", email="ops@example.com")])  # fmt: skip
        delayed = await jobs.event(node, "#!/bin/sh\nexit 1\n", limits=[limit("retry", amount=1, duration=3)])
        fine = await jobs.event(node, "#!/bin/sh\necho fine\n", limits=[limit("retry", amount=2)])
        stopped = await jobs.event(node, "#!/bin/sh\nsleep 30\n", limits=[limit("retry", amount=2)])
        abort_hook = await bench.hook("aborthook")
        limited = await jobs.event(node, "#!/bin/sh\nsleep 30\n", limits=[limit("time", duration=1, abort=True),
                                                                         limit("retry", amount=1)],
                                   actions=[action("abort", "web_hook", web_hook=abort_hook)])  # fmt: skip
        # The event's retry limit comes before its category's (the first enabled `retry` limit wins).
        category = (await jobs.ok(node, "create_category", {"title": "Retrying", "limits": [
            limit("retry", amount=3)]}))["category"]["id"]  # fmt: skip
        ruled = await jobs.event(node, "#!/bin/sh\nexit 2\n", category=category, limits=[limit("retry", amount=1)])
        first_ruled = await jobs.run(node, ruled)
        first_fail, first_delayed, first_fine = (await jobs.run(node, failing), await jobs.run(node, delayed),
                                                 await jobs.run(node, fine))  # fmt: skip
        first_stopped, first_limited = await jobs.run(node, stopped), await jobs.run(node, limited)

        # A delayed retry waits in retry_delay until `duration` seconds after the failure.
        (waiting_id,) = retry_links(await jobs.wait_job(node, first_delayed))
        waiting = await jobs.wait_job(node, waiting_id, "retry_delay", "ready", "active", "complete")
        assert waiting["state"] == "retry_delay" and waiting["until"] == waiting["started"] + 3, waiting

        # A user's abort is never retried.
        await jobs.wait_job(node, first_stopped, "active")
        await jobs.ok(node, "abort_job", {"id": first_stopped})
        aborted = await jobs.wait_job(node, first_stopped)
        assert aborted["code"] == "abort" and aborted["description"].startswith("Manually aborted by user")
        assert not retry_links(aborted) and not aborted.get("retried") and "_last" in aborted["tags"]

        # amount 2: three attempts in all, each linked to the next.
        attempts = await bench.chain(first_fail, 3)
        assert [a["code"] for a in attempts] == [3, 3, 3]
        assert [a.get("retry_count", 0) for a in attempts] == [0, 1, 2]
        assert [a.get("retry_prev") for a in attempts] == [None, first_fail, attempts[1]["id"]]
        for earlier, later in itertools.pairwise(attempts):
            assert earlier["retried"] is True and retry_links(earlier) == [later["id"]]
            assert "_retried" in earlier["tags"] and "_last" not in earlier["tags"]
            assert meta(earlier, f"Launched retry #{later['retry_count']} of 2: #{later['id']}")
        last = attempts[-1]
        assert not retry_links(last) and "_last" in last["tags"] and "_retried" not in last["tags"]
        assert meta(last, "Reached the retry limit (2)")
        # Completion actions run on the last attempt only: one web hook, one email, for it.
        last = await bench.done(last["id"], recorded=3)  # with the universal snapshot
        assert len(results(last, "web_hook", "error")) == 1 and len(results(last, "email", "complete")) == 1
        for earlier in attempts[:-1]:
            assert not [a for a in earlier.get("actions") or [] if "code" in a], earlier["actions"]
        await eventually(lambda: bench.mails_for("ops@example.com", last["id"]), 30, "the last attempt's email")
        assert [json.loads(r.body)["job"] for r in bench.hooks.to("/errhook")] == [last["id"]]
        assert [m for m in bench.mail.messages if "ops@example.com" in m.to] == \
            bench.mails_for("ops@example.com", last["id"])  # fmt: skip
        # The event's state counts the last attempt only.
        state = (await jobs.ok(node, "get_global_state", method="GET"))["state"]["events"][failing]
        assert state["total_count"] == 1 and state["last_job"] == last["id"] and state["last_code"] == 3

        # A job that succeeds is not retried.
        ok = await jobs.wait_job(node, first_fine)
        assert ok["code"] == 0 and not retry_links(ok) and "_last" in ok["tags"] and not meta(ok, "retry")

        # A limit's abort is retried (the retry meets the same limit and is not retried again: amount 1).
        cut, again = await bench.chain(first_limited, 2)
        assert cut["code"] == "abort" and cut["retried"] is True and again["retry_prev"] == cut["id"]
        assert again["code"] == "abort" and not retry_links(again)
        again = await bench.done(again["id"], recorded=2)
        assert len(results(again, "web_hook", "abort")) == 1 and not results(cut, "web_hook", "abort")
        assert [json.loads(r.body)["job"] for r in bench.hooks.to("/aborthook")] == [again["id"]]

        _, ruled_last = await bench.chain(first_ruled, 2)
        assert ruled_last["retry_count"] == 1 and not retry_links(ruled_last) and meta(ruled_last, "limit (1)")

        retried = await jobs.wait_job(node, waiting_id)
        assert retried["code"] == 1 and retried["retry_count"] == 1 and retried["retry_prev"] == first_delayed
        assert float(retried["started"]) >= waiting["until"]  # it left the delay when the delay was over


async def test_a_dead_job_abort_is_retried(tmp_path: Path) -> None:
    async with bench_on(tmp_path, "--dead-job-timeout", "4") as bench:
        jobs, node = bench.jobs, bench.node
        event = await jobs.event(node, "#!/bin/sh\nsleep 3\necho survived\n", limits=[limit("retry", amount=1)])
        first = await jobs.run(node, event)
        await jobs.wait_job(node, first, "active")
        agent = agent_process(node)
        agent.suspend()  # the agent goes silent; its connection stays up
        try:
            dead = await jobs.wait_job(node, first, timeout=30)
        finally:
            agent.resume()
        assert dead["code"] == "abort" and "assuming job is dead" in dead["description"], dead
        assert dead["retried"] is True and "_retried" in dead["tags"]
        (retry_id,) = retry_links(dead)
        retry = await jobs.wait_job(node, retry_id, timeout=60)
        assert retry["code"] == 0 and retry["retry_count"] == 1 and retry["retry_prev"] == first, retry
        assert "survived" in await jobs.log(node, retry_id)
