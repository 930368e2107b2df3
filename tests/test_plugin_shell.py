"""`[shell-plugin]`: the script as the job's process, progress lines, annotate, exit codes, records."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.agentkit import finished, make_runner, output, run_job, running, until


def shell(script: str, **params: Any) -> dict[str, Any]:
    return {"command": "[shell-plugin]", "params": {"script": script, **params}}


async def test_progress_lines_and_success(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, shell("#!/bin/sh\necho start\necho 40%\necho done\n"))
    assert (run.job["code"], run.job["description"]) == (0, "")
    assert run.job["progress"] == 0.4
    assert output(run) == "start\ndone\n"
    assert run.job["pid"] > 0


async def test_exit_code_and_first_stderr_line(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, shell("echo bad thing >&2\necho more >&2\nexit 4\n"))  # no shebang: /bin/sh
    assert run.job["code"] == 4
    assert run.job["description"] == "Script exited with code: 4: bad thing"
    assert run.job["html"]["title"] == "Error Output" and "bad thing" in run.job["html"]["content"]
    assert output(run) == "bad thing\nmore\n"


async def test_annotate_puts_a_timestamp_before_lines(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, shell("echo hello\n", annotate=True))
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] hello\n", output(run))


async def test_records_from_the_script_and_data_passthrough(tmp_path: Path) -> None:
    script = '#!/bin/sh\necho \'{"xy":1,"data":{"b":2},"status":"half"}\'\n'
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {**shell(script, **{"pass": True}), "input": {"data": {"a": 1}}})
    assert run.output.held == {"data": {"a": 1, "b": 2}}
    assert run.job["status"] == "half" and run.job["code"] == 0


async def test_the_script_reads_the_job_on_stdin_and_params_in_env(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, shell('read line; echo "$color ${#line}"\n', color="blue"))
    text = output(run)
    assert text.startswith("blue ") and int(text.split()[1]) > 20
    assert not list((tmp_path / "agent" / "scripts").iterdir())  # the script file is removed


async def test_no_script_fails_cleanly(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "[shell-plugin]", "params": {}})
    assert run.job["code"] == 1 and "No script" in run.job["description"]


async def test_abort_kills_the_script(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = runner.launch({"id": "s", **shell("echo 10%\nsleep 300\n")}, {}, {}, "")
    assert run is not None
    await until(lambda: "progress" in run.job)
    runner.abort("s", "enough")
    await finished(events, "s")
    assert run.job["code"] == "abort" and not running(run.job["pid"])
