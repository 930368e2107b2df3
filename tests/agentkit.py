"""Helpers for the agent tests: a runner whose events are recorded, and checks on real processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from cluster.agent.runner import JobRun, Runner, RunnerSettings


class Recorder:
    """Events from a runner, kept for the test to read."""

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.metas: list[tuple[str, str]] = []
        self.finished: dict[str, asyncio.Event] = {}

    def changed(self, run: JobRun) -> None:
        self.changes.append(run.id)

    def logged(self, run: JobRun) -> None:
        pass

    def meta(self, run: JobRun, text: str) -> None:
        self.metas.append((run.id, text))

    def exited(self, run: JobRun) -> None:
        self.finished.setdefault(run.id, asyncio.Event()).set()


def make_runner(tmp_path: Path, **settings: Any) -> tuple[Runner, Recorder]:
    events = Recorder()
    return Runner(RunnerSettings(data_dir=tmp_path / "agent", **settings), events), events


async def run_job(runner: Runner, events: Recorder, job: dict[str, Any],
                  details: dict[str, Any] | None = None) -> JobRun:  # fmt: skip
    run = runner.launch({"id": "j1", "now": 1, **job}, details or {}, {}, "http://127.0.0.1:9")
    assert run is not None
    await finished(events, run.id)
    return run


async def finished(events: Recorder, job_id: str) -> None:
    await asyncio.wait_for(events.finished.setdefault(job_id, asyncio.Event()).wait(), 60)


def output(run: JobRun) -> str:
    """Every byte of the job's output still held."""
    run.log.rewind()
    parts = []
    while chunk := run.log.next_chunk():
        parts.append(chunk[1])
    return "".join(parts)


def running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def text_of(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


async def appears(path: Path) -> str:
    """The file's text once a process has written it."""
    while not (text := text_of(path)):  # noqa: ASYNC110 (another process writes it)
        await asyncio.sleep(0.02)
    return text


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for something a job's process makes true."""
    while not predicate():  # noqa: ASYNC110 (set by another process's output)
        await asyncio.sleep(0.02)


def size_of(path: str | Path) -> int:
    return os.path.getsize(path)
