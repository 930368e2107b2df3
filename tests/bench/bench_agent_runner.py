"""Jobs per second through the agent's runner (no conductor): a bare process and the shell built-in.

    python -m tests.bench.bench_agent_runner [--jobs 500] [--concurrency 50]

Prints figures; asserts nothing. Each job is launched, run to exit, and forgotten (its directory removed).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster.agent.main import fast_child_watcher
from cluster.agent.runner import JobRun, Runner, RunnerSettings


class _Done:
    def __init__(self) -> None:
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.runner: Runner | None = None

    def changed(self, run: JobRun) -> None:
        pass

    def logged(self, run: JobRun) -> None:
        pass

    def meta(self, run: JobRun, text: str) -> None:
        pass

    def exited(self, run: JobRun) -> None:
        assert self.runner is not None
        self.runner.forget(run)
        self.waiters.pop(run.id).set_result(None)


async def _round(name: str, job: dict[str, Any], jobs: int, concurrency: int, data_dir: Path) -> None:
    done = _Done()
    runner = Runner(RunnerSettings(data_dir=data_dir), done)
    done.runner = runner
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(n: int) -> None:
        async with gate:
            job_id = f"{name}-{n}"
            done.waiters[job_id] = loop.create_future()
            runner.launch({"id": job_id, **job}, {}, {}, "http://127.0.0.1:9")
            await done.waiters[job_id]

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(jobs)))
    elapsed = time.perf_counter() - start
    print(f"{name:14} {jobs} jobs, concurrency {concurrency}: {jobs / elapsed:8.1f} jobs/s")
    await runner.close()


async def main(jobs: int, concurrency: int) -> None:
    fast_child_watcher()
    with tempfile.TemporaryDirectory() as tmp:
        await _round("process", {"command": "/bin/true"}, jobs, concurrency, Path(tmp))
        await _round("shell-plugin", {"command": "[shell-plugin]", "params": {"script": "echo hi\n"}}, jobs,
                     concurrency, Path(tmp))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.concurrency))
