"""Job limits on real jobs: time, log, cpu and mem limits firing (with and without abort) and not firing, their
tags, web hooks and emails, retries after a limit abort; the day limit on chained launches, the tag limit and the
file limit on a chained job's input files. Real `podium serve` nodes, their own agents, real shell jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.dispatch.limits import LIMIT_TITLES as TITLES
from tests.actionkit import Bench, Record, action, bench_on, fired, limit, meta, results
from tests.sinks import eventually

pytestmark = pytest.mark.timeout(300)
MB = 1024 * 1024


def notices(address: str, **fields: Any) -> dict[str, Any]:
    """The sub-actions of a limit: tags, a web hook and an email."""
    return {"web_hook": "limhook", "email": address, **fields}


async def check_fired(bench: Bench, job: Record, kind: str, address: str, tag: str, *, aborted: bool) -> str:
    """One `kind` limit fired once on the finished `job`: its date, its meta-log line, its tag, one web hook
    request and one email about this job; the job aborted with the limit's message when `aborted`. The message."""
    job_id = str(job["id"])
    hits = fired(job, kind)
    assert len(hits) == 1, job["limits"]
    message = str(hits[0]["msg"])
    assert isinstance(hits[0]["date"], float) and hits[0]["date"] >= job["started"]
    assert message in meta(job, message), job["activity"]  # (once: test_a_limit_abort_logs_its_message_once)
    assert tag in job["tags"]
    if aborted:
        assert (job["code"], job["description"]) == ("abort", message), job
    else:
        assert job["code"] == 0, job
    hook_runs, mail_runs = results(job, "web_hook", "limit"), results(job, "email", "limit")
    assert len(hook_runs) == 1 and hook_runs[0]["code"] == 0, job["actions"]
    assert len(mail_runs) == 1 and mail_runs[0]["code"] == 0, job["actions"]
    requests = await eventually(lambda: bench.hooks_for("/limhook", job_id), 30, f"limit hook of {job_id}")
    assert len(requests) == 1
    text = json.loads(requests[0].body)["text"]
    assert message.rstrip(".") in text and ("(Job aborted)" in text) == aborted, text
    mails = await eventually(lambda: bench.mails_for(address, job_id), 30, f"limit email of {job_id}")
    assert len(mails) == 1 and message in mails[0].text, mails[0].text
    assert f"{TITLES[kind]} limit reached" in mails[0].subject, mails[0].subject
    assert f"**Applied tags:** {tag}" in mails[0].text and ("Aborted the job" in mails[0].text) == aborted
    return message


def untouched(bench: Bench, job: Record) -> None:
    assert job["code"] == 0, job
    assert not [lim for lim in job.get("limits") or [] if lim.get("date") or lim.get("when")], job["limits"]
    assert not results(job, "web_hook", "limit") and not results(job, "email", "limit")
    assert not bench.hooks_for("/limhook", str(job["id"]))


async def test_time_and_log_limits(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        await bench.hook("limhook")
        await bench.tags("slow", "noisy")
        noise = "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 300000\necho\n"
        events = {
            # A time limit that aborts, with one retry: the retry runs into the same limit and is aborted too.
            "time_abort": await jobs.event(node, "#!/bin/sh\nsleep 30\n", limits=[
                limit("time", duration=2, abort=True, tags=["slow"], **notices("time@example.com")),
                limit("retry", amount=1)]),
            "time_warn": await jobs.event(node, "#!/bin/sh\nsleep 4\necho done\n", limits=[
                limit("time", duration=1, tags=["slow"], **notices("timewarn@example.com"))],
                actions=[action("tag:slow", "label", label="Slow one")]),
            "log_abort": await jobs.event(node, f"#!/bin/sh\n{noise}sleep 30\n", limits=[
                limit("log", amount=100_000, abort=True, tags=["noisy"], **notices("log@example.com"))]),
            "log_warn": await jobs.event(node, f"#!/bin/sh\n{noise}sleep 3\n", limits=[
                limit("log", amount=100_000, tags=["noisy"], **notices("logwarn@example.com"))]),
            # Under both thresholds: nothing fires.
            "under": await jobs.event(node, f"#!/bin/sh\n{noise}sleep 2\n", limits=[
                limit("time", duration=60, abort=True, **notices("never@example.com")),
                limit("log", amount=10 * MB, abort=True, **notices("never@example.com"))]),
        }  # fmt: skip
        ids = {name: await jobs.run(node, event_id) for name, event_id in events.items()}

        # An aborted job has three action results: its limit's web hook and email, the universal error snapshot
        # (not the first here: a retried job runs no completion actions).
        first, retry = await bench.chain(ids["time_abort"], 2)
        first, retry = await bench.done(first["id"], recorded=2), await bench.done(retry["id"], recorded=3)
        message = await check_fired(bench, first, "time", "time@example.com", "slow", aborted=True)
        assert message.startswith("Job run time exceeded limit: ") and "> 2 seconds" in message, message
        assert first["retried"] is True and "_retried" in first["tags"]
        # A limit abort is retryable; the retry starts with its limits clean, so the limit fires on it again.
        assert (retry["retry_count"], retry["retry_prev"]) == (1, first["id"])
        await check_fired(bench, retry, "time", "time@example.com", "slow", aborted=True)
        # Its limit's sub-actions are its own: those of the first run's limit were not carried over.
        assert sorted(a["type"] for a in retry["actions"] if a["condition"] == "limit") == ["email", "web_hook"]
        assert "_last" in retry["tags"] and not retry.get("jobs")

        warned = await bench.done(ids["time_warn"], recorded=3)
        await check_fired(bench, warned, "time", "timewarn@example.com", "slow", aborted=False)
        assert warned["label"] == "Slow one"  # the limit's tag fires the tag:slow actions at the finish
        assert "done" in await jobs.log(node, warned["id"])  # not aborted: it ran to its end

        logged = await bench.done(ids["log_abort"], recorded=3)
        message = await check_fired(bench, logged, "log", "log@example.com", "noisy", aborted=True)
        assert message.startswith("Job output size exceeded limit: "), message
        assert "> 97.7 KB" in message or "> 100000 bytes" in message, message  # exact bytes when words read alike
        assert not logged.get("jobs")  # no retry limit: not retried
        noisy = await bench.done(ids["log_warn"], recorded=2)
        await check_fired(bench, noisy, "log", "logwarn@example.com", "noisy", aborted=False)
        assert noisy["log_file_size"] > 100_000

        untouched(bench, await jobs.wait_job(node, ids["under"]))
        assert not [m for m in bench.mail.messages if "never@example.com" in m.to]


def burner(seconds: float) -> str:
    """A job that keeps one core busy for `seconds` (forever with 0), then succeeds."""
    loop = "while True: pass" if not seconds else f"t = time.time()\nwhile time.time() - t < {seconds}: pass"
    return f"#!/bin/sh\npython3 - <<'EOF'\nimport time\n{loop}\nprint('burnt')\nEOF\n"


def holder(megabytes: int, seconds: float) -> str:
    """A job that holds `megabytes` of written memory for `seconds`, then succeeds."""
    return (f"#!/bin/sh\npython3 - <<'EOF'\nimport time\nheld = b'x' * ({megabytes} << 20)\ntime.sleep({seconds})\n"
            f"print('held', len(held))\nEOF\n")  # fmt: skip


async def test_cpu_and_mem_limits(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        await bench.hook("limhook")
        await bench.tags("hot", "fat")
        # The agent reports cpu in percent of one core: a busy loop is far above 20 (also on a loaded machine).
        events = {
            "cpu_abort": await jobs.event(node, burner(0), limits=[
                limit("cpu", amount=20, duration=2, abort=True, tags=["hot"], **notices("cpu@example.com"))]),
            "cpu_warn": await jobs.event(node, burner(7), limits=[
                limit("cpu", amount=20, duration=2, tags=["hot"], **notices("cpuwarn@example.com"))]),
            "mem_abort": await jobs.event(node, holder(200, 60), limits=[
                limit("mem", amount=100 * MB, duration=1, abort=True, tags=["fat"], **notices("mem@example.com"))]),
            "mem_warn": await jobs.event(node, holder(200, 5), limits=[
                limit("mem", amount=100 * MB, duration=1, tags=["fat"], **notices("memwarn@example.com"))]),
            # A sleeping job holding little memory stays under both.
            "under": await jobs.event(node, "#!/bin/sh\nsleep 5\n", limits=[
                limit("cpu", amount=50, duration=1, abort=True, **notices("never@example.com")),
                limit("mem", amount=150 * MB, duration=1, abort=True, **notices("never@example.com"))]),
        }  # fmt: skip
        ids = {name: await jobs.run(node, event_id) for name, event_id in events.items()}

        hot = await bench.done(ids["cpu_abort"], recorded=3)
        message = await check_fired(bench, hot, "cpu", "cpu@example.com", "hot", aborted=True)
        assert message.startswith("Job CPU usage exceeded limit: ") and "> 20% for 2 seconds" in message, message
        assert hot["cpu"]["max"] > 20
        warm = await bench.done(ids["cpu_warn"], recorded=2)
        await check_fired(bench, warm, "cpu", "cpuwarn@example.com", "hot", aborted=False)
        assert "burnt" in await jobs.log(node, warm["id"])

        fat = await bench.done(ids["mem_abort"], recorded=3)
        message = await check_fired(bench, fat, "mem", "mem@example.com", "fat", aborted=True)
        assert message.startswith("Job memory usage exceeded limit: ") and "> 100 MB for 1 second" in message, message
        assert fat["mem"]["max"] > 200 * MB
        full = await bench.done(ids["mem_warn"], recorded=2)
        await check_fired(bench, full, "mem", "memwarn@example.com", "fat", aborted=False)
        assert f"held {200 * MB}" in await jobs.log(node, full["id"])

        calm = await jobs.wait_job(node, ids["under"])
        untouched(bench, calm)
        assert calm["cpu"]["count"] >= 1 and 0 < calm["mem"]["max"] < 150 * MB  # measured, and under


async def test_day_tag_and_file_limits(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        await bench.tags("t1", "t2", "t3")

        # day: a chained launch (source "action") past the day's count is refused; a user's run never is.
        daily = await jobs.event(node, "#!/bin/sh\necho daily\n", title="Daily",
                                 limits=[limit("day", condition="start", amount=2)])  # fmt: skip
        parent = await jobs.event(node, "#!/bin/sh\necho parent\n", actions=[action("complete", "run_event",
                                                                                   event_id=daily)])  # fmt: skip
        outcomes = []
        for _ in range(3):
            done = await bench.done(await jobs.run(node, parent), recorded=1)
            outcomes.append(results(done, "run_event", "complete")[0])
        assert [o["code"] for o in outcomes] == [0, 0, "event"], outcomes
        assert "Daily limit of 2 'start' reached" in outcomes[2]["description"], outcomes[2]
        for done_job in outcomes[:2]:
            child = done_job["description"].rsplit(" ", 1)[1]
            assert (await jobs.wait_job(node, child))["source"] == "action"
        manual = await jobs.wait_job(node, await jobs.run(node, daily))
        assert manual["code"] == 0 and manual["source"] == "user"

        # tag: the job's own tags past the amount are dropped with a warning (unknown ones before that).
        tagged = await jobs.event(node, '#!/bin/sh\necho \'{"xy": 1, "push": {"tags": ["nosuch"]}}\'\n',
                                  tags=["t1", "t2", "t3"], limits=[limit("tag", amount=1)])  # fmt: skip
        job = await jobs.wait_job(node, await jobs.run(node, tagged))
        assert job["tags"] == ["_last", "_success", "t1"], job["tags"]
        assert meta(job, "Ignoring unknown tag: nosuch"), (job["activity"], job.get("push"))
        chopped = meta(job, "tags over the limit")
        assert len(chopped) == 1 and "WARNING" in chopped[0] and "t2, t3" in chopped[0], job["activity"]

        # file: a chained job's input files (the parent's output) pruned by count, then extension, then size.
        by_count = await jobs.event(node, "#!/bin/sh\nls\n", title="By count",
                                    limits=[limit("file", amount=2, accept=".txt, .JSON")])  # fmt: skip
        by_size = await jobs.event(node, "#!/bin/sh\nls\n", title="By size", limits=[limit("file", size=25)])
        maker = ("#!/bin/sh\nprintf 0123456789 > a.txt\nprintf 0123456789 > b.csv\nprintf 0123456789 > c.json\n"
                 'echo \'{"xy": 1, "files": ["a.txt", "b.csv", "c.json"]}\'\n')  # fmt: skip
        source = await jobs.event(node, maker, actions=[action("success", "run_event", event_id=by_count),
                                                        action("success", "run_event", event_id=by_size)])
        made = await bench.done(await jobs.run(node, source), recorded=2)
        assert [f["filename"] for f in made["files"]] == ["a.txt", "b.csv", "c.json"], made["files"]
        children = {}
        for link in made["jobs"]:
            child = await jobs.wait_job(node, link["id"])
            children[child["event"]] = child
        counted, sized = children[by_count], children[by_size]
        assert [f["filename"] for f in counted["input"]["files"]] == ["a.txt"], counted["input"]
        assert meta(counted, "Pruned 1 files from input (file count limit exceeded)")
        assert meta(counted, "Pruned 1 files from input (file extension")
        assert [f["filename"] for f in sized["input"]["files"]] == ["a.txt", "b.csv"], sized["input"]
        assert meta(sized, "Pruned 1 files from input (file size limit exceeded)")
        # Only the kept files reached the jobs' working directories.
        assert (await jobs.log(node, counted["id"])).split() == ["a.txt"]
        assert (await jobs.log(node, sized["id"])).split() == ["a.txt", "b.csv"]
        assert counted["code"] == 0 and sized["code"] == 0


async def test_a_limit_abort_logs_its_message_once(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        event = await jobs.event(node, "#!/bin/sh\nsleep 30\n", limits=[limit("time", duration=1, abort=True)])
        job = await jobs.wait_job(node, await jobs.run(node, event))
        (hit,) = fired(job, "time")
        assert job["code"] == "abort"
        assert [r["msg"] for r in job["activity"]].count(hit["msg"]) == 1, job["activity"]
