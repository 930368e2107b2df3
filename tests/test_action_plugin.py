"""Action plugins as real processes: small Python scripts written by each test, run by run_action_plugin."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from cluster.actions.plugin import MAX_OUTPUT, run_action_plugin
from cluster.actions.result import MAX_DETAILS

PAYLOAD = {"condition": "success", "job": {"id": "jplug1", "code": 0}, "event": {"id": "e1", "title": "Event One"},
           "text": "Podium: job jplug1 succeeded", "env": {"NOT": "sent"}}  # fmt: skip


def _plugin(tmp_path: Path, source: str, **changes: Any) -> dict[str, Any]:
    path = tmp_path / "plugin.py"
    path.write_text(textwrap.dedent(source))
    return {"id": "pact", "title": "Custom action", "type": "action", "enabled": True,
            "command": f"{sys.executable} {path}", **changes}  # fmt: skip


async def test_a_plugin_reads_its_input_and_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_SMTP_PASSWORD", "never-for-plugins")
    monkeypatch.setenv("HOME_REGION", "eu")
    plugin = _plugin(tmp_path, """
        import json, os, sys
        doc = json.loads(sys.stdin.readline())
        print("working on", doc["job"]["id"])
        print(json.dumps({"xy": 1, "progress": 0.5}))  # a record without a code is only log text
        seen = {k: doc.get(k) for k in ("xy", "type", "condition", "params", "secrets", "base_url", "env", "text")}
        env = {k: os.environ.get(k) for k in ("GREETING", "REGION", "DB_PASS", "XYOPS_BASE_URL",
                                              "PODIUM_SMTP_PASSWORD", "nested")}
        print(json.dumps({"xy": 1, "code": 0, "description": "done for " + doc["event"]["title"],
                          "details": "### Seen\\n" + json.dumps({"doc": seen, "env": env})}))
        print("after the result")
    """)
    outcome = await run_action_plugin(plugin, params={"GREETING": "hello $HOME_REGION", "REGION": 3,
                                                      "nested": {"a": 1}},
                                      payload=PAYLOAD, secrets={"DB_PASS": "pw1"},
                                      base_url="http://127.0.0.1:5522")  # fmt: skip
    assert outcome.code == 0 and outcome.description == "done for Event One", outcome
    seen = json.loads(outcome.details.split("### Seen\n", 1)[1].split("\n", 1)[0])
    assert seen["doc"] == {"xy": 1, "type": "action", "condition": "success",
                           "params": {"GREETING": "hello $HOME_REGION", "REGION": 3, "nested": {"a": 1}},
                           "secrets": {"DB_PASS": "pw1"}, "base_url": "http://127.0.0.1:5522", "env": None,
                           "text": "Podium: job jplug1 succeeded"}  # fmt: skip
    assert seen["env"] == {"GREETING": "hello eu", "REGION": "3", "DB_PASS": "pw1",
                           "XYOPS_BASE_URL": "http://127.0.0.1:5522", "PODIUM_SMTP_PASSWORD": None, "nested": None}
    assert "working on jplug1" in outcome.details and '"progress": 0.5' in outcome.details
    assert "after the result" in outcome.details and "- **Exit Code:** 0" in outcome.details
    assert outcome.elapsed_ms > 0


async def test_a_failure_code_and_a_failing_exit(tmp_path: Path) -> None:
    warned = await run_action_plugin(_plugin(tmp_path, """
        import json, sys
        sys.stdin.read()
        print(json.dumps({"xy": 1, "code": "warning", "description": "quota\\nnearly full"}))
        sys.exit(2)
    """), params={}, payload=PAYLOAD)  # fmt: skip
    # The record is the plugin's own word; the exit status is only shown.
    assert (warned.code, warned.description) == ("warning", "quota nearly full")
    assert "- **Exit Code:** 2" in warned.details and "- **Result:** Error" in warned.details
    exited = await run_action_plugin(_plugin(tmp_path, """
        import sys
        print("something went wrong")
        print("trace", file=sys.stderr)
        sys.exit(3)
    """), params={}, payload=PAYLOAD)  # fmt: skip
    assert (exited.code, exited.description) == ("plugin", "Plugin exited with code 3")
    assert "### Plugin Output:" in exited.details and "something went wrong" in exited.details
    assert "### Plugin STDERR:" in exited.details and "trace" in exited.details
    killed = await run_action_plugin(_plugin(tmp_path, """
        import os, signal
        os.kill(os.getpid(), signal.SIGTERM)
    """), params={}, payload=PAYLOAD)  # fmt: skip
    assert (killed.code, killed.description) == ("plugin", "Plugin was killed by SIGTERM")


async def test_garbage_output_and_no_record(tmp_path: Path) -> None:
    outcome = await run_action_plugin(_plugin(tmp_path, """
        import sys
        sys.stdout.write('{"xy": 1, code: broken}\\n{"code": 5}\\n\\x00\\xff binary ``` fence\\n[1, 2]\\n{"xy":1')
    """), params={}, payload=PAYLOAD)  # fmt: skip
    assert (outcome.code, outcome.description) == (0, "Successfully ran the action plugin")
    assert '{"code": 5}' in outcome.details and "code: broken" in outcome.details
    assert "````text" in outcome.details  # a fence longer than any in the output


async def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    plugin = _plugin(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(120)
    """)
    outcome = await run_action_plugin(plugin, params={}, payload=PAYLOAD, timeout_s=1)
    assert (outcome.code, outcome.description) == ("plugin", "Plugin timed out after 1 s (killed)")
    assert "started" in outcome.details and "**Timed out** after 1 s" in outcome.details
    child = int(pid_file.read_text())
    # It held the output pipe, which has ended: it was killed, and is gone or a zombie once its exit completes.
    assert await _ends(child)


async def _ends(pid: int) -> bool:
    for _ in range(200):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_plugin_deaf_to_sigterm_is_killed(tmp_path: Path) -> None:
    outcome = await run_action_plugin(_plugin(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(120)
    """), params={}, payload=PAYLOAD, timeout_s=0.5)  # fmt: skip
    assert (outcome.code, outcome.description) == ("plugin", "Plugin timed out after 0.5 s (killed)")
    assert "- **Signal:** SIGKILL" in outcome.details


async def test_a_result_before_a_hang_stands(tmp_path: Path) -> None:
    outcome = await run_action_plugin(_plugin(tmp_path, """
        import json, time
        print(json.dumps({"xy": 1, "code": 0, "description": "sent"}), flush=True)
        time.sleep(120)
    """), params={}, payload=PAYLOAD, timeout_s=1)  # fmt: skip
    assert (outcome.code, outcome.description) == (0, "sent")
    assert "**Timed out** after 1 s" in outcome.details


async def test_huge_output_is_cut_off(tmp_path: Path) -> None:
    outcome = await run_action_plugin(_plugin(tmp_path, """
        import sys
        line = "y" * 1023 + "\\n"
        while True:
            sys.stdout.write(line)
    """), params={}, payload=PAYLOAD, timeout_s=60)  # fmt: skip
    assert (outcome.code, outcome.description) == ("plugin", f"Plugin output passed {MAX_OUTPUT >> 20} MB (killed)")
    assert len(outcome.details.encode()) <= MAX_DETAILS and "### Plugin Output (cut):" in outcome.details


async def test_a_plugin_that_ignores_a_big_stdin(tmp_path: Path) -> None:
    payload = {**PAYLOAD, "blob": "z" * (4 * 1024 * 1024)}
    outcome = await run_action_plugin(_plugin(tmp_path, "print('not reading')\n"), params={}, payload=payload)
    assert outcome.code == 0 and "not reading" in outcome.details


async def test_a_script_plugin(tmp_path: Path) -> None:
    script = "#!/bin/sh\nread line\necho '{\"xy\":1,\"code\":0,\"description\":\"from the script\"}'\n"
    plugin = {"id": "pscript", "title": "Script", "type": "action", "command": "/bin/sh", "script": script}
    outcome = await run_action_plugin(plugin, params={}, payload=PAYLOAD)
    assert (outcome.code, outcome.description) == (0, "from the script")
    kept = tmp_path / "scripts"
    again = await run_action_plugin(plugin, params={}, payload=PAYLOAD, scripts_dir=kept)
    assert again.code == 0 and (kept / "pscript").read_text() == script
    assert (kept / "pscript").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(("changes", "description"), [
    ({"enabled": False}, "Plugin is disabled: pact"),
    ({"type": "event"}, "Plugin is not an action plugin: pact"),
    ({"command": "  "}, "Plugin has no command: pact"),
    ({"command": "/nonexistent/prog --x"}, "Cannot run the plugin's command: "),
    ({"uid": "no-such-user-here"}, "Plugin Error: User does not exist: no-such-user-here"),
    ({"cwd": "/nonexistent/dir"}, "Cannot run the plugin's command: "),
])  # fmt: skip
async def test_plugins_that_cannot_run(tmp_path: Path, changes: dict[str, Any], description: str) -> None:
    outcome = await run_action_plugin(_plugin(tmp_path, "print('ran')\n", **changes), params={}, payload=PAYLOAD)
    assert outcome.code == "plugin" and outcome.description.startswith(description), outcome
    assert "ran" not in outcome.details

