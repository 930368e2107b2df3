"""The job runner with real processes: exit codes, records, stderr, kill modes, accounts, bounded output."""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
from pathlib import Path

import pytest

from cluster.agent.runner import JobRun, Runner
from tests.agentkit import appears, exists, finished, make_runner, output, run_job, running, until


def sh(script: str) -> dict[str, str]:
    """A job that runs this shell script (as a plugin script file, so no quoting)."""
    return {"command": "/bin/sh", "plugin": "sh", "script": script}


async def test_exit_zero_without_a_code_is_a_warning(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/bin/sh -c 'echo hello'"})
    assert run.job["code"] == "warning" and run.job["unknown"] == 1
    assert run.job["description"] == "Process exited without reporting job completion."
    assert output(run) == "hello\n"
    assert run.job["complete"] is True and run.job["pid"] > 0


async def test_a_nonzero_exit_is_the_code(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/bin/sh -c 'echo oops >&2; exit 3'"})
    assert (run.job["code"], run.job["description"]) == (3, "Child exited with code: 3")
    assert output(run) == "oops\n"  # stderr is log text


async def test_records_on_stdout_set_progress_and_code(tmp_path: Path) -> None:
    script = 'echo \'{"xy":1,"progress":0.5}\'; echo text; echo \'{"xy":1,"code":0,"data":{"a":1}}\'; exit 1'
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, sh(script))
    assert run.job["code"] == 0 and run.job["progress"] == 0.5  # the reported code wins over the exit status
    assert run.output.held == {"data": {"a": 1}}
    assert output(run) == "text\n"


async def test_stdin_has_the_job_and_env_has_its_params(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    script = "import json,os,sys; j=json.loads(sys.stdin.readline()); print(j['type'], j['id'], os.environ['color'])"
    run = await run_job(runner, events, {"command": f'{sys.executable} -c "{script}"', "params": {"color": "red"}})
    assert output(run) == "event j1 red\n"
    assert exists(run.job["cwd"])  # the caller removes it with forget(), once the job is reported
    runner.forget(run)
    assert not exists(run.job["cwd"])


async def test_a_plugin_script_is_written_and_appended(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/bin/sh", "plugin": "p1", "script": "echo from-script $1\n"})
    assert output(run) == "from-script\n"
    assert (tmp_path / "agent" / "plugins" / "p1").stat().st_mode & 0o777 == 0o700


async def test_a_duplicate_launch_is_ignored(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    first = runner.launch({"id": "dup", "command": "/bin/true"}, {}, {}, "")
    assert first is not None
    assert runner.launch({"id": "dup", "command": "/bin/true"}, {}, {}, "") is None
    await finished(events, "dup")


Started = tuple[int, int, JobRun, Runner]  # the job's pid, its child's pid, the run, the runner


async def _abort_when_started(kill: str, tmp_path: Path, script: str, **settings: float) -> Started:
    runner, events = make_runner(tmp_path, **settings)
    marker = tmp_path / "child.pid"
    run = runner.launch({"id": "k", "kill": kill, **sh(script)}, {}, {}, "")
    assert run is not None
    await appears(marker)
    await asyncio.sleep(0.05)
    assert runner.abort("k", "stop it")
    await finished(events, "k")
    return run.job["pid"], int(await appears(marker)), run, runner


async def test_kill_all_ends_the_whole_process_group(tmp_path: Path) -> None:
    script = f"sleep 300 & echo $! > {tmp_path}/child.pid; wait"
    parent, child, run, _ = await _abort_when_started("all", tmp_path, script)
    assert not running(parent) and not running(child)
    assert run.job["code"] == "abort" and run.job["description"] == "stop it"


async def test_kill_parent_leaves_the_other_processes(tmp_path: Path) -> None:
    script = f"sleep 300 >/dev/null 2>&1 & echo $! > {tmp_path}/child.pid; wait"
    parent, child, _, runner = await _abort_when_started("parent", tmp_path, script)
    try:
        assert not running(parent) and running(child)
    finally:
        os.kill(child, 9)
        await runner.close()


async def test_kill_none_leaves_the_process_and_finishes_now(tmp_path: Path) -> None:
    script = f"echo $$ > {tmp_path}/child.pid; sleep 300"
    parent, _, run, runner = await _abort_when_started("none", tmp_path, script)
    try:
        assert running(parent) and run.job["code"] == "abort"
    finally:
        os.killpg(parent, 9)
        await runner.close()


async def test_sigkill_after_the_timeout_for_a_process_ignoring_sigterm(tmp_path: Path) -> None:
    script = f'trap "" TERM; echo $$ > {tmp_path}/child.pid; while :; do sleep 0.05; done'
    parent, _, run, _ = await _abort_when_started("all", tmp_path, script, kill_timeout=0.5)
    assert not running(parent)
    assert ("k", f"Child did not exit, killing harder: {parent}") in run.events.metas  # type: ignore[attr-defined]


async def test_the_current_user_by_name_and_an_unknown_user(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/bin/sh -c 'echo $USER; exit 0'", "uid": me})
    assert output(run) == f"{me}\n"
    run = await run_job(runner, events, {"id": "j2", "command": "/bin/true", "uid": "no-such-user-podium"})
    assert run.job["code"] == 1 and "User does not exist" in run.job["description"]
    assert run.job["pid"] == 0


@pytest.mark.skipif(os.getuid() != 0, reason="switching accounts needs root")
async def test_a_job_runs_as_another_account_without_the_agents_groups(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/bin/sh -c 'id -u; id -G; echo $HOME'", "uid": "nobody"})
    uid, groups, home = output(run).split("\n")[:3]
    assert int(uid) == nobody.pw_uid and "0" not in groups.split() and home == nobody.pw_dir


async def test_a_missing_program_fails_with_code_1(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "/no/such/program"})
    assert run.job["code"] == 1 and run.job["description"].startswith("Child spawn error: /no/such/program")


async def test_output_spills_to_disk_and_past_the_spool_it_is_dropped(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path, mem_limit=64 * 1024, spool_limit=256 * 1024)
    script = "yes aaaaaaa | head -c 1000000; echo '{\"xy\":1,\"code\":0}'"
    run = await run_job(runner, events, sh(script))
    assert run.job["code"] == 0
    text = output(run)
    assert len(text.encode()) <= 256 * 1024 + 64 * 1024 + 100
    assert text.startswith("aaaaaaa\n" * 1000) and "bytes of output dropped]" in text
    assert run.log.path.exists()
    runner.forget(run)
    assert not run.log.path.exists() and runner.spool.used == 0


async def test_past_max_jobs_a_launch_fails_with_code_1(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path, max_jobs=1)
    first = runner.launch({"id": "m1", "command": "/bin/sleep 30"}, {}, {}, "")
    assert first is not None
    await until(lambda: bool(first.job.get("pid")))
    second = await run_job(runner, events, {"id": "m2", "command": "/bin/true"})
    assert second.job["code"] == 1 and "already running 1 jobs" in second.job["description"]
    runner.abort("m1", "done")
    await finished(events, "m1")
