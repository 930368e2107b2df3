"""The agent's host metrics on this machine: ServerMonitorData with every field the default monitors and alerts
read, in xySat's units; the quickmon payload; the dummy record; xySat's staggering; the readers' parsing; and
monitor plugins run as real processes (output, JSON, secrets, timeout, output cap, groups, scripts).

Timings of one quickmon and one minute sample on this box are printed (`-s`), not asserted."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from api.defaults import PLUGINS_DEFAULT
from cluster.agent.hostdata import (
    HostData,
    QuickData,
    bytes_from_text,
    mount_key,
    parse_diskstats,
    parse_meminfo,
    split,
)
from cluster.agent.hostmon import host_id, monitor_delay, quick_delay
from cluster.agent.monitorplugins import MAX_OUTPUT, MAX_PLUGINS, MonitorPlugins, parse_plugins, shape_result
from tests.agentkit import running, until

pytestmark = pytest.mark.timeout(120)
LINUX = sys.platform.startswith("linux")


def at(data: Any, path: str) -> Any:
    """A value by an expression path as the default monitors write them: `load[0]`, `mounts.root.use`."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        data = data[int(part[1:-1])] if part.startswith("[") else data[part]
    return data


# What the 15 default monitors and 5 default alerts read (execution reference 2.5), and of what kind.
PERCENT = ("cpu.currentLoad", "mounts.root.use", "cpu.totals.iowait")
BYTES = ("memory.used", "memory.available", "memory.total")
COUNTERS = ("stats.fs.rx", "stats.fs.wx", "stats.io.tIO", "stats.network.rx_bytes", "stats.network.tx_bytes")
COUNTS = ("stats.network.conns", "processes.all", "jobs", "cpu.cores")


def busy_disk(tmp_path: Path) -> None:
    """Some reads and writes that reach the disk (so the counters have a reason to move)."""
    path = tmp_path / "blob"
    with open(path, "wb") as handle:
        handle.write(os.urandom(1 << 20))
        handle.flush()
        os.fsync(handle.fileno())


def test_every_figure_the_default_monitors_and_alerts_read(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        host = HostData("box1")
        first = host.sample(jobs=2, job_procs={os.getpid(): ("jmine", {"disk": 5, "conns": 1, "net": 7})})
        busy_disk(tmp_path)
        second = host.sample(jobs=0)
    finally:
        listener.close()
    for data in (first, second):
        assert isinstance(at(data, "load[0]"), float) and len(data["load"]) == 3 and data["load"][0] >= 0
        for path in PERCENT:
            value = at(data, path)
            assert isinstance(value, float) and 0 <= value <= 100, (path, value)
        for path in BYTES + COUNTERS + COUNTS:
            value = at(data, path)
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (path, value)
        memory = data["memory"]
        assert memory["used"] <= memory["total"] and memory["available"] <= memory["total"] and memory["total"] > 0
        assert memory["used"] == memory["total"] - memory["available"]  # as Node's os.freemem() has it
        assert memory["swapused"] == memory["swaptotal"] - memory["swapfree"]
        assert at(data, "cpu.cores") == os.cpu_count() and len(data["cpu"]["cpus"]) == os.cpu_count()
        assert data["cpu"]["currentLoad"] == data["cpu"]["totals"]["active"]
        assert set(data["cpu"]["totals"]) >= {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "active"}
        root = data["mounts"]["root"]
        assert root["mount"] == "/" and root["used"] <= root["size"] and isinstance(root["rw"], bool)
        assert data["stats"]["fs"]["tx"] == data["stats"]["fs"]["rx"] + data["stats"]["fs"]["wx"]
        assert data["stats"]["io"]["tIO"] == data["stats"]["io"]["rIO"] + data["stats"]["io"]["wIO"]
        processes = data["processes"]
        states = sum(v for k, v in processes.items() if k not in ("all", "list", "blocked"))
        assert processes["all"] == states >= len(processes["list"]) > 0
        assert data["arch"] and data["platform"] == sys.platform.rstrip("0123456789")
        assert data["os"]["hostname"] == "box1"
        assert data["process"]["pid"] == os.getpid() and data["process"]["mem"] > 0
        assert data["uptime_sec"] > 0 and data["stats"]["uptime_sec"] == data["uptime_sec"]
        json.dumps(data)  # goes on the wire as JSON
    assert first["jobs"] == 2 and second["jobs"] == 0
    for path in COUNTERS:
        assert at(second, path) >= at(first, path), path  # cumulative
    assert second["stats"]["fs"]["wx"] > first["stats"]["fs"]["wx"] or not LINUX
    mine = [p for p in first["processes"]["list"] if p["pid"] == os.getpid()]
    assert mine and mine[0]["job"] == "jmine" and mine[0]["disk"] == 5 and mine[0]["net"] == 7
    assert mine[0]["command"] and mine[0]["user"] and mine[0]["memRss"] > 0 and mine[0]["started"] <= time.time()
    if LINUX:  # the listening socket, with this process as its owner, counted in stats.network
        listening = [c for c in first["conns"] if c["local_addr"] == f"127.0.0.1:{port}"]
        mine_listening = {"type": "tcp", "state": "LISTEN", "local_addr": f"127.0.0.1:{port}",
                          "remote_addr": "0.0.0.0:*", "pid": os.getpid(), "bytes_out": 0, "bytes_in": 0}  # fmt: skip
        assert listening == [mine_listening]
        assert first["stats"]["network"]["conns"] >= 1 and first["stats"]["network"]["states"]["listen"] >= 1
    print(f"\nmonitor sample: {first['metrics']['perf']} ms, {len(json.dumps(first))} bytes")


def test_the_quickmon_payload_is_small_and_reads_what_the_minute_sample_reads() -> None:
    quick, host = QuickData(), HostData("box1")
    start = time.perf_counter()
    rounds = 50
    for _ in range(rounds):
        payload = quick.sample()
    took = (time.perf_counter() - start) / rounds * 1e6
    assert set(payload) == {"mem", "cpu", "fs", "net"}
    assert set(payload["cpu"]) == {"avgLoad", "currentLoad", "cpus", "totals"}
    assert 0 <= payload["cpu"]["currentLoad"] <= 100 and len(payload["cpu"]["cpus"]) == os.cpu_count()
    assert set(payload["fs"]) == {"rx", "wx"} and set(payload["net"]) == {"rx", "tx"}
    assert {"total", "free", "used", "available", "buffers", "cached"} <= set(payload["mem"])
    data = host.sample(jobs=0)
    assert data["stats"]["fs"]["rx"] >= payload["fs"]["rx"] and data["stats"]["fs"]["wx"] >= payload["fs"]["wx"]
    assert data["stats"]["network"]["rx_bytes"] >= payload["net"]["rx"]
    assert data["stats"]["network"]["tx_bytes"] >= payload["net"]["tx"]
    print(f"\nquickmon sample: {took:.0f} us, {len(json.dumps(payload))} bytes")


def test_the_dummy_record_has_the_base_and_empty_sections() -> None:
    data = HostData("box1").dummy(jobs=3)
    assert data["dummy"] is True and data["jobs"] == 3 and len(data["load"]) == 3 and data["process"]["pid"]
    for key in ("os", "memory", "cpu", "mounts", "interfaces", "processes", "commands", "graphics", "docker"):
        assert data[key] == {}, key
    assert data["stats"] == {"io": {}, "fs": {}, "network": {}}


Times = namedtuple("Times", "user nice system idle iowait irq softirq steal")


def test_the_cpu_split_is_in_percent_of_the_time_that_passed() -> None:
    before = Times(100, 0, 50, 1000, 10, 0, 0, 0)
    after = Times(130, 0, 60, 1050, 20, 0, 0, 0)  # 30 + 10 + 50 + 10 = 100 ticks
    assert split(before, after) == {"user": 30.0, "nice": 0.0, "system": 10.0, "idle": 50.0, "iowait": 10.0,
                                    "irq": 0.0, "softirq": 0.0, "active": 50.0}  # fmt: skip
    assert split(after, after)["idle"] == 100.0 and split(after, after)["active"] == 0.0
    backwards = split(after, before)  # a counter that went back (a cpu replugged) counts as nothing
    assert backwards["idle"] == 100.0 and backwards["user"] == 0.0


def test_readers_parse_as_xysat() -> None:
    meminfo = "MemTotal:  2048 kB\nMemFree:   512 kB\nMemAvailable: 1024 kB\nActive(anon): 9 kB\nHugePages_Total: 0\n"
    assert parse_meminfo(meminfo) == {"total": 2048 * 1024, "free": 512 * 1024, "available": 1024 * 1024,
                                      "hugepages_total": 0}  # fmt: skip
    assert bytes_from_text("3 MB") == 3 << 20 and bytes_from_text("7") == 7 and bytes_from_text("x") == 0
    disks = ("   8       0 sda 10 0 100 5\n"  # too short: skipped
             "   8       0 sda 10 0 100 5 20 0 200 7 0 30 40 0 0 0 0\n"
             "   8       1 sda1 9 0 90 4 19 0 190 6 0 30 40 0 0 0 0\n"
             "   7       0 loop0 50 0 500 1 0 0 0 0 0 0 0 0 0 0 0\n"
             " 259       0 nvme0n1 1 0 8 2 3 0 16 4 0 0 0 5 0 0 0 6 9\n")  # fmt: skip
    totals = parse_diskstats(disks)
    assert (totals.reads, totals.rx, totals.writes, totals.wx) == (11, 108 * 512, 23, 216 * 512)
    assert (totals.read_ms, totals.write_ms, totals.other_ms) == (7, 11, 9)
    assert [mount_key(m) for m in ("/", "/boot/firmware", "/mnt/my-disk", "/var//lib")] == [
        "root", "boot_firmware", "mnt_my_disk", "var_lib"]  # fmt: skip


def test_staggering_is_xysats() -> None:
    hid = host_id("satunit1")
    assert hid == int(hashlib.md5(b"satunit1").hexdigest()[:8], 16)
    assert monitor_delay(hid, 0) == monitor_delay(hid, 1) == (1000 + hid % 29) / 1000
    assert monitor_delay(hid, 5000) == monitor_delay(hid, 1000) == (1000 + hid % 29000) / 1000
    assert all(1.0 <= monitor_delay(host_id(f"h{i}"), 1000) < 30.0 for i in range(200))
    assert quick_delay(hid, 1) == 0 and quick_delay(hid, 500) == (hid % 500) / 1000
    assert all(0 <= quick_delay(host_id(f"h{i}"), 10_000) < 1.0 for i in range(200))


# -- monitor plugins, as real processes -----------------------------------------------------------------------------


def plugins_for(tmp_path: Path, *commands: dict[str, Any], environ: dict[str, str] | None = None) -> MonitorPlugins:
    plugins = MonitorPlugins(tmp_path / "data", environ or {"PATH": os.environ.get("PATH", ""),
                                                             "PODIUM_AGENT_TOKEN": "agent-secret"})  # fmt: skip
    plugins.set(list(commands))
    return plugins


async def test_a_plugin_gives_its_output_trimmed_json_parsed_and_sees_its_secrets(tmp_path: Path) -> None:
    plugins = plugins_for(
        tmp_path,
        {"id": "text", "command": "/bin/sh", "script": 'printf "  42 $PROBE_KEY\\n\\n"', "sec": {"PROBE_KEY": "k-1"}},
        {"id": "json", "command": "/bin/sh", "script": 'echo \'{"n": 3, "list": [1]}\'', "format": "json"},
        {"id": "bad_json", "command": "/bin/sh", "script": "echo '{nope'", "format": "json"},
        {"id": "env", "command": "/bin/sh -c 'echo token=${PODIUM_AGENT_TOKEN}.'", "sec": {}},
        {"id": "missing", "command": "/no/such/program"},
    )
    got = await plugins.run_all([])
    assert got["text"] == "42 k-1" and got["json"] == {"n": 3, "list": [1]}
    assert got["bad_json"].startswith("JSON Parser Error:")
    assert got["env"] == "token=."  # the agent's credentials are not in a plugin's environment
    assert got["missing"].startswith("Error: Could not execute command: /no/such/program")
    assert list(got) == ["text", "json", "bad_json", "env", "missing"]


async def test_groups_and_quick_choose_which_plugins_run(tmp_path: Path) -> None:
    plugins = plugins_for(
        tmp_path,
        {"id": "everywhere", "command": "/bin/echo all"},
        {"id": "web_only", "command": "/bin/echo web", "groups": ["web"]},
        {"id": "fast", "command": "/bin/echo fast", "quick": True},
    )
    assert await plugins.run_all(["main"]) == {"everywhere": "all", "fast": "fast"}
    assert await plugins.run_all(["main", "web"]) == {"everywhere": "all", "web_only": "web", "fast": "fast"}
    assert await plugins.run_all(["web"], quick=True) == {"fast": "fast"}


async def test_a_plugin_that_runs_too_long_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    plugins = plugins_for(tmp_path, {"id": "slow", "command": "/bin/sh", "timeout": 0.5,
                                     "script": f"sleep 60 & echo $! > {pid_file}\nsleep 60\n"})  # fmt: skip
    result, _ = await plugins.run(plugins.plugins[0])
    assert result == "Error: Command timed out after 0.5 seconds"
    child = int(pid_file.read_text())
    await until(lambda: not running(child))


async def test_a_plugin_that_exits_leaving_its_output_open_gives_what_it_printed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    plugins = plugins_for(tmp_path, {"id": "leaver", "command": "/bin/sh",
                                     "script": f"sleep 60 & echo $! > {pid_file}\necho done\n"})  # fmt: skip
    result, _ = await plugins.run(plugins.plugins[0])
    assert result == "done"
    child = int(pid_file.read_text())
    await until(lambda: not running(child))  # it held the output open: its group went


async def test_output_past_the_cap_stops_the_plugin(tmp_path: Path) -> None:
    plugins = plugins_for(tmp_path, {"id": "flood", "command": "/usr/bin/env yes", "timeout": 60})
    result, _ = await plugins.run(plugins.plugins[0])
    assert isinstance(result, str) and 0 < len(result) <= MAX_OUTPUT and set(result.split()) == {"y"}


async def test_scripts_follow_the_commands_list(tmp_path: Path) -> None:
    plugins = plugins_for(tmp_path, {"id": "a", "command": "/bin/sh", "script": "echo a"},
                          {"id": "b", "command": "/bin/sh", "script": "echo b"})  # fmt: skip
    folder = tmp_path / "data" / "monitor-plugins"
    assert sorted(p.name for p in folder.iterdir()) == ["a", "b"]
    plugins.set([{"id": "b", "command": "/bin/sh", "script": "echo B"}])
    assert sorted(p.name for p in folder.iterdir()) == ["b"] and (folder / "b").read_text() == "echo B"
    assert await plugins.run_all([]) == {"b": "B"}


def test_commands_are_bounded_and_checked() -> None:
    many = [{"id": f"p{i}", "command": "/bin/true"} for i in range(MAX_PLUGINS + 5)]
    assert len(parse_plugins(many)) == MAX_PLUGINS
    bad = [{"id": "../x", "command": "/bin/true"}, {"id": "ok"}, {"command": "/bin/true"}, "junk",
           {"id": "big", "command": "/bin/sh", "script": "x" * (2 << 20)}, {"id": "t", "command": "/bin/true",
                                                                            "timeout": "soon"}]  # fmt: skip
    assert [p.id for p in parse_plugins(bad)] == ["t"] and parse_plugins(bad)[0].timeout == 10.0
    assert parse_plugins({"not": "a list"}) == []
    assert "sec" not in repr(parse_plugins([{"id": "s", "command": "/bin/true", "sec": {"K": "v"}}]))
    assert shape_result("plain\n", "json") == "plain" and shape_result("[]", "json") == "[]"


@pytest.mark.skipif(not os.path.exists("/proc/sys/fs/file-nr"), reason="Linux only, as the plugin says")
async def test_the_default_open_files_plugin_feeds_the_open_files_monitor(tmp_path: Path) -> None:
    stock = next(p for p in PLUGINS_DEFAULT if p["id"] == "open_files")
    assert (stock["type"], stock["command"], stock["script"]) == ("monitor", "/bin/sh", "cat /proc/sys/fs/file-nr")
    got = await plugins_for(tmp_path, stock).run_all([])
    match = re.search(r"(\d+)", got["open_files"])  # the monitor's data_match
    assert match and int(match.group(1)) > 0
