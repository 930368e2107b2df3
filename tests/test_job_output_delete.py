"""Deleting a job takes its log (live and stored) and its uploaded files with it, whichever way it goes:
delete_job, retention, or an event deleted with its history; on both file store backends, and without touching
another job's files (even one whose id starts with the same characters)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.maintenance import Maintenance
from storage.files import DirectoryFileStore, FileStore, RedisFileStore
from storage.logs import LogStore, log_path
from storage.stores import Stores
from tests.authkit import Site, ok
from tests.test_event_history_delete import event_body
from tests.test_maintenance import add_jobs, config


@pytest.fixture(params=["redis", "directory"])
def files(request: pytest.FixtureRequest, site: Site, tmp_path: Path) -> Iterator[FileStore]:
    stores = site.node.stores
    live = stores.files, stores.logs
    if request.param == "directory":
        stores.files = DirectoryFileStore(tmp_path / "files")
        stores.logs = LogStore(stores.db, stores.files)
    yield stores.files
    stores.files, stores.logs = live


async def stored_paths(files: FileStore) -> list[str]:
    if isinstance(files, RedisFileStore):
        found = await files.db.client.zrange(files.db.keys.files_index, 0, -1)
        return sorted(p.decode() if isinstance(p, bytes) else str(p) for p in found)
    assert isinstance(files, DirectoryFileStore)
    return sorted(p.relative_to(files.root).as_posix() for p in files.root.rglob("*") if p.is_file())


async def give_output(stores: Stores, job_id: str) -> list[str]:
    """A stored log and two uploaded files, as a finished job has them; returns their paths."""
    await stores.logs.append(job_id, f"output of {job_id}\n", 0, 1 << 20)
    assert await stores.logs.finalize(job_id) is not None
    paths = [f"files/jobs/{job_id}/k1/out.txt", f"files/jobs/{job_id}/k2/sub/data.bin"]
    for path in paths:
        await stores.files.put(path, b"x" * 100)
    return [log_path(job_id), *paths]


async def test_delete_job_drops_its_log_and_files(site: Site, admin: dict[str, str], files: FileStore) -> None:
    stores = site.node.stores
    doomed, kept = await add_jobs(site.node, 2, days_ago=1, event="ev")
    other = await give_output(stores, kept)
    await stores.files.put(f"files/jobs/{doomed}x/k/near.txt", b"not this job's")  # same leading characters
    await give_output(stores, doomed)
    await stores.logs.append(doomed, "a late chunk", None, 1 << 20)  # live keys too
    await ok(site, "delete_job", {"id": doomed}, admin)
    assert await stored_paths(files) == sorted([*other, f"files/jobs/{doomed}x/k/near.txt"])
    assert await stores.db.client.exists(stores.db.keys.job_log(doomed), stores.db.keys.job_log_meta(doomed)) == 0
    assert (await ok(site, "get_job", {"id": kept}, admin))["job"]["id"] == kept


async def test_retention_drops_the_logs_and_files_of_the_jobs_it_deletes(site: Site, files: FileStore) -> None:
    stores = site.node.stores
    old = await add_jobs(site.node, 3, days_ago=10, event="old")
    (recent,) = await add_jobs(site.node, 1, days_ago=1, event="new")
    for job_id in old:
        await give_output(stores, job_id)
    kept = await give_output(stores, recent)
    removed = await Maintenance(site.node, config(job_expire_days=7)).run_once()
    assert removed.jobs == 3
    assert await stored_paths(files) == sorted(kept)


async def test_deleting_an_event_with_its_history_drops_the_jobs_output(
    site: Site, admin: dict[str, str], files: FileStore
) -> None:
    stores = site.node.stores
    event_id = (await ok(site, "create_event", event_body("doomed"), admin))["event"]["id"]
    ran = [(await ok(site, "run_event", {"id": event_id}, admin))["id"] for _ in range(2)]
    deadline = time.monotonic() + 30
    while any(j.get("event") == event_id for j in await stores.jobs.active()):  # the test plugin is quick
        assert time.monotonic() < deadline, "the event's jobs did not finish"
        await asyncio.sleep(0.05)
    for job_id in ran:
        await stores.files.put(f"files/jobs/{job_id}/k/out.txt", b"y")
    await ok(site, "delete_event", {"id": event_id, "delete_jobs": True}, admin)
    while await stored_paths(files):
        assert time.monotonic() < deadline, "the deleted event's job files are still there"
        await asyncio.sleep(0.05)
