"""The plugin environment (cluster/agent/environ.py): layers in xySat's order, names and values as it writes them."""

from __future__ import annotations

from cluster.agent.environ import clean_env, nice_string, plugin_env


def test_values_are_written_as_javascript_would() -> None:
    cases: list[tuple[object, str]] = [(True, "true"), (False, "false"), (3.0, "3"), (1.5, "1.5"), (7, "7"),
                                       (None, "null"), ("x", "x"), ({"a": [1, 2]}, '{"a":[1,2]}'),
                                       ([1, "b"], '[1,"b"]')]  # fmt: skip
    for value, text in cases:
        assert nice_string(value) == text, value


def test_agent_credentials_never_reach_a_plugin_and_path_has_the_bin_dirs() -> None:
    env = clean_env({"PATH": "/opt/x:/usr/bin", "HOME": "/home/a", "XYOPS_KEY": "s", "XYSAT_X": "s",
                     "SATELLITE_Y": "s", "PODIUM_SECRET_KEY": "s", "LANG": "C"}, "/srv/agent")  # fmt: skip
    assert not any(k.startswith(("XYOPS_", "XYSAT_", "SATELLITE_", "PODIUM_")) for k in env)
    assert env["LANG"] == "C"
    paths = env["PATH"].split(":")
    assert paths[:4] == ["/srv/agent/bin", "/home/a/.local/bin", "/opt/x", "/usr/bin"]
    assert len(paths) == len(set(paths)) and "/usr/local/sbin" in paths


def test_layers_win_in_order_and_job_variables_come_last() -> None:
    job = {"id": "j1", "now": 1700000000, "cwd": "/tmp/jobs/j1", "env": {"A": "job", "B": 2},
           "params": {"my-param": {"k": 1}, "count": 5, "flag": True, "A": "param"},
           "workflow": {"params": {"w.x": "wf"}}}  # fmt: skip
    details = {"workflowData": {"d": [1]}, "serverData": {"s-1": "srv"}, "input": {"data": {"in put": 9}}}
    env = plugin_env({"A": "agent", "JOB_ID": "spoofed", "KEEP": "1"}, job, details=details,
                     secrets={"A": "secret", "TOKEN": "t"}, job_env={"A": "config", "C": "config"},
                     version="1.0", log_file="/var/log/job-j1.log", base_url="http://c:5522",
                     account={"username": "ops", "home": "/home/ops", "shell": "/bin/sh"})  # fmt: skip
    assert env["KEEP"] == "1" and env["C"] == "config" and env["B"] == "2" and env["TOKEN"] == "t"
    assert env["A"] == "param"  # params are added after the secrets, as xySat does
    assert (env["JOB_ID"], env["JOB_NOW"], env["PWD"], env["XYOPS"]) == ("j1", "1700000000", "/tmp/jobs/j1", "1.0")
    assert (env["JOB_LOG"], env["JOB_BASE_URL"]) == ("/var/log/job-j1.log", "http://c:5522")
    assert (env["USER"], env["USERNAME"], env["HOME"], env["SHELL"]) == ("ops", "ops", "/home/ops", "/bin/sh")
    assert (env["my_param"], env["count"], env["flag"]) == ('{"k":1}', "5", "true")
    assert env["workflow_w_x"] == "wf" and env["workflow_data_d"] == "[1]"
    assert env["server_data_s_1"] == "srv" and env["data_in_put"] == "9"
    assert all(isinstance(v, str) for v in env.values())
