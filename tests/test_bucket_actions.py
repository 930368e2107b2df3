"""The `store` and `fetch` job actions between two real jobs: a `podium serve` node with its own agent, real shell
plugin processes. Job A stores its output data and file in a bucket on success; job B fetches them at start, and
its script prints the data it got and the bytes of the file its agent downloaded. Plus the glob matcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.actions.bucket import MAX_GLOB, compile_glob, glob_match
from tests.actionkit import action, bench_on, results

pytestmark = pytest.mark.timeout(300)

SCRIPT_A = """#!/bin/sh
printf 'bytes made by job A\\n' > report.txt
printf 'not for the bucket' > notes.log
echo '{"xy": 1, "data": {"answer": 42, "from": "A"}, "files": ["report.txt", "notes.log"]}'
"""
SCRIPT_B = """#!/bin/sh
echo "answer=$data_answer from=$data_from kept=$data_kept"
echo "file: $(cat report.txt)"
"""


async def test_store_then_fetch_between_two_jobs(tmp_path: Path) -> None:
    async with bench_on(tmp_path) as bench:
        jobs, node = bench.jobs, bench.node
        bucket_id = str((await jobs.ok(node, "create_bucket", {"title": "Handoff", "data": {"kept": "yes"}}))
                        ["bucket"]["id"])  # fmt: skip
        store = action("success", "store", bucket_id=bucket_id, bucket_sync="data_and_files", bucket_glob="*.txt")
        event_a = await jobs.event(node, SCRIPT_A, title="Producer", actions=[store])
        job_a = await bench.done(await jobs.run(node, event_a), recorded=1)
        assert job_a["code"] == 0, job_a
        (stored,) = results(job_a, "store", "success")
        assert stored["code"] == 0 and stored["description"] == "Successfully stored data and files in bucket."

        got = await jobs.ok(node, "get_bucket", {"id": bucket_id}, method="GET")
        assert got["data"] == {"kept": "yes", "answer": 42, "from": "A"}
        (file,) = got["files"]  # notes.log did not match the glob
        assert file["filename"] == "report.txt" and file["job"] == job_a["id"] and file["size"] == 20
        assert file["path"].startswith(f"files/bucket/{bucket_id}/")
        own = [f for f in job_a["files"] if f["filename"] == "report.txt"]
        assert own and own[0]["path"] != file["path"]  # a copy: the job's own file stays the job's

        fetch = action("start", "fetch", bucket_id=bucket_id, bucket_sync="data_and_files")
        event_b = await jobs.event(node, SCRIPT_B, title="Consumer", actions=[fetch])
        job_b = await bench.done(await jobs.run(node, event_b, input={"data": {"kept": "overwritten?"}}), recorded=1)
        assert job_b["code"] == 0, job_b
        (fetched,) = results(job_b, "fetch", "start")
        assert fetched["code"] == 0 and fetched["description"] == "Successfully fetched data and files from bucket."
        assert job_b["input"]["data"] == {"kept": "yes", "answer": 42, "from": "A"}  # bucket keys win
        assert [(f["path"], f["bucket"]) for f in job_b["input"]["files"]] == [(file["path"], bucket_id)]
        log = await jobs.log(node, job_b["id"])
        assert "answer=42 from=A kept=yes" in log, log
        assert "file: bytes made by job A" in log, log

        # A second store replaces the bucket's file in place (same path); deleting both jobs leaves it there.
        again = await bench.done(await jobs.run(node, event_a), recorded=1)
        assert results(again, "store", "success")[0]["code"] == 0
        files = (await jobs.ok(node, "get_bucket", {"id": bucket_id}, method="GET"))["files"]
        assert [(f["path"], f["job"]) for f in files] == [(file["path"], again["id"])]
        for job_id in (job_a["id"], job_b["id"], again["id"]):
            await jobs.ok(node, "delete_job", {"id": job_id})
        assert bench.cluster.http is not None
        async with bench.cluster.http.get(f"{node.url}/{file['path']}", headers=jobs.headers) as resp:
            assert (resp.status, await resp.read()) == (200, b"bytes made by job A\n")

        # A bucket deleted after the event was saved: the action fails with code `bucket`, the job is unharmed.
        await jobs.ok(node, "delete_bucket", {"id": bucket_id})
        orphan = await bench.done(await jobs.run(node, event_a), recorded=1)
        failed = results(orphan, "store", "success")[0]
        assert orphan["code"] == 0 and (failed["code"], failed["description"]) == ("bucket",
                                                                                  f"Bucket not found: {bucket_id}")
        starved = await bench.done(await jobs.run(node, event_b), recorded=1)
        assert results(starved, "fetch", "start")[0]["code"] == "bucket"

        # Saving an action with a bad bucket reference or sync type is refused.
        for bad in ({"bucket_id": "nope"}, {"bucket_id": "x/y"}):
            status, reply = await jobs.call(node, "create_event", {
                "title": "Bad", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
                "params": {"script": "true"}, "actions": [action("start", "fetch", **bad)]})  # fmt: skip
            assert (status, reply["code"]) == (400, "api") and "bucket" in reply["description"], reply
        other = str((await jobs.ok(node, "create_bucket", {"title": "Other"}))["bucket"]["id"])
        status, reply = await jobs.call(node, "create_event", {
            "title": "Bad", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
            "params": {"script": "true"},
            "actions": [action("start", "fetch", bucket_id=other, bucket_sync="everything")]})  # fmt: skip
        assert (status, reply["code"]) == (400, "api") and "bucket_sync" in reply["description"], reply


def test_globs() -> None:
    def matches(pattern: str, *names: str) -> list[str]:
        compiled = compile_glob(pattern)
        return [n for n in names if glob_match(compiled, n)]

    names = ("a.txt", "b.TXT", "report.csv", "dir/a.txt", ".txt", "a.txt.gz", "x")
    assert matches("*", *names) == ["a.txt", "b.TXT", "report.csv", ".txt", "a.txt.gz", "x"]  # no crossing `/`
    assert matches("*.txt", *names) == ["a.txt", ".txt"]
    assert matches("*/*.txt", *names) == ["dir/a.txt"]
    assert matches("?.*", *names) == ["a.txt", "b.TXT", "a.txt.gz"]
    assert matches("*.{csv,TXT}", *names) == ["b.TXT", "report.csv"]
    assert matches("[ab].*", *names) == ["a.txt", "b.TXT", "a.txt.gz"]
    assert matches("[!ab]*", *names) == ["report.csv", ".txt", "x"]
    assert matches("r*o*t.c?v", *names) == ["report.csv"]
    assert matches("a.txt", *names) == ["a.txt"]
    # Linear: many stars against a long name that almost matches.
    assert not glob_match(compile_glob("*a" * 100 + "b"), "a" * 2000)
    with pytest.raises(ValueError):
        compile_glob("x" * (MAX_GLOB + 1))
    with pytest.raises(ValueError):
        compile_glob("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}")  # 128 alternatives
    assert json.dumps(compile_glob("{unclosed")) == json.dumps([[[["=", c] for c in "{unclosed"]]])
