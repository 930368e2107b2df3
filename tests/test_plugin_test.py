"""`[test-plugin]`: progress over its duration and each action's ending."""

from __future__ import annotations

from pathlib import Path

from cluster.agent.plugins.test import duration_of
from tests.agentkit import finished, make_runner, output, run_job


async def test_success_reports_progress_data_and_a_table(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "[test-plugin]",
                                         "params": {"duration": "0.3", "action": "Success", "custom": "x"}})
    assert (run.job["code"], run.job["description"]) == (0, "Success!")
    assert run.job["progress"] == 1.0 and run.job["table"]["rows"]
    assert run.output.held["data"]["custom"] == "x"
    assert "Job start!" in output(run) and run.job["pid"] == 0


async def test_each_action_ends_as_it_says(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    expected = {"Error": 999, "Warning": "warning", "Critical": "critical", "Crash": 1}
    for n, (action, code) in enumerate(expected.items()):
        run = await run_job(runner, events, {"id": f"t{n}", "command": "[test-plugin]",
                                             "params": {"duration": "0.1", "action": action}})  # fmt: skip
        assert run.job["code"] == code, action
    assert run.job["description"] == "Child exited with code: 1"  # a crash is an exit without a report


async def test_upload_pushes_a_file_and_abort_stops_it(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "[test-plugin]", "params": {"duration": "0.1", "upload": True}})
    assert run.job["files"] == [{"path": "sample-report-j1.txt", "delete": True}]
    long = runner.launch({"id": "long", "command": "[test-plugin]", "params": {"duration": "300"}}, {}, {}, "")
    assert long is not None
    runner.abort("long", "stop")
    await finished(events, "long")
    assert long.job["code"] == "abort" and long.job["description"] == "stop"


def test_duration_forms() -> None:
    assert duration_of("5") == 5.0
    assert 2 <= duration_of("2-4") <= 4
    assert duration_of("nonsense") == 1.0 and duration_of("0") == 1.0
