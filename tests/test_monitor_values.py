"""Monitor values from recorded ServerMonitorData samples (cluster/monitoring/values.py): the stock monitors,
deltas and rates, data_match, casts, group scope. Pure, no store."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from api.defaults import MONITORS_DEFAULT
from cluster.monitoring.values import cast, compile_monitors, compute, js_float, js_int

# Two minute samples of one host, 60 s apart, in the shape agents send (our own recording).
SAMPLE_1: dict[str, Any] = {
    "uptime_sec": 86_400, "arch": "x64", "platform": "linux", "release": "6.1.0", "load": [1.25, 0.9, 0.5], "jobs": 3,
    "cpu": {"cores": 4, "currentLoad": 37.512345678, "totals": {"iowait": 2.25, "user": 30.0}},
    "memory": {"total": 16 * 2**30, "used": 6 * 2**30, "available": 10 * 2**30},
    "mounts": {"root": {"use": 71.4, "size": 100 * 2**30}},
    "stats": {"fs": {"rx": 1_000_000, "wx": 2_000_000}, "io": {"tIO": 5000},
              "network": {"conns": 42, "rx_bytes": 10_000_000, "tx_bytes": 4_000_000}},
    "processes": {"all": 187, "list": [{"pid": 1, "command": "init"}]},
    "commands": {"open_files": "2944\t0\t9223372036854775807\n"},
}  # fmt: skip
SAMPLE_2 = copy.deepcopy(SAMPLE_1)
SAMPLE_2["stats"]["fs"].update(rx=1_600_000, wx=1_000_000)  # wx went down (a counter reset): min 0
SAMPLE_2["stats"]["io"]["tIO"] = 5_125
SAMPLE_2["stats"]["network"].update(rx_bytes=16_000_000, tx_bytes=4_000_000)


def test_the_stock_monitors_read_a_sample() -> None:
    monitors = compile_monitors(MONITORS_DEFAULT)
    assert len(monitors) == 15
    values, deltas = compute(monitors, SAMPLE_1, ["main"], None, None)
    assert values == {
        "load_avg": 1.25, "cpu_usage": 37.51235, "mem_used": 6 * 2**30, "mem_free": 10 * 2**30, "net_conns": 42,
        "disk_usage_root": 71.4, "disk_read_sec": 1_000_000, "disk_write_sec": 2_000_000, "disk_iops_sec": 5000,
        "io_wait": 2.25, "open_files": 2944, "os_bytes_in_sec": 10_000_000, "os_bytes_out_sec": 4_000_000,
        "total_procs": 187, "active_jobs": 3,
    }  # fmt: skip
    # the first sample has no previous one: every rate is 0
    assert deltas == dict.fromkeys(["disk_read_sec", "disk_write_sec", "disk_iops_sec", "os_bytes_in_sec",
                                    "os_bytes_out_sec"], 0)  # fmt: skip


def test_rates_against_the_previous_sample() -> None:
    monitors = compile_monitors(MONITORS_DEFAULT)
    first, _ = compute(monitors, SAMPLE_1, ["main"], None, None)
    values, deltas = compute(monitors, SAMPLE_2, ["main"], first, 60.0)
    assert values["disk_read_sec"] == 1_600_000  # the absolute counter stays in `monitors`
    assert deltas == {"disk_read_sec": 10_000, "disk_write_sec": 0, "disk_iops_sec": 2,
                      "os_bytes_in_sec": 100_000, "os_bytes_out_sec": 0}  # fmt: skip
    # elapsed 0 divides by 1 (xyOps `|| 1`); a previous value of 0 gives 0
    _, fast = compute(monitors, SAMPLE_2, ["main"], first, 0.0)
    assert fast["disk_read_sec"] == 600_000
    _, zero = compute(monitors, SAMPLE_2, ["main"], {**first, "disk_read_sec": 0}, 60.0)
    assert zero["disk_read_sec"] == 0


def test_delta_without_minimum_or_division() -> None:
    monitors = compile_monitors([{"id": "d", "source": "n", "data_type": "float", "delta": True},
                                 {"id": "m", "source": "n", "data_type": "integer", "delta": True,
                                  "delta_min_value": 5}])  # fmt: skip
    _, deltas = compute(monitors, {"n": 7.5}, [], {"d": 10, "m": 10}, 30.0)
    assert deltas == {"d": -2.5, "m": 5}  # no minimum: negative kept; minimum 5 lifts -2.5


def test_data_match_and_casts() -> None:
    defs = [
        {"id": "group1", "source": "commands.x", "data_type": "integer", "data_match": r"used=(\d+)"},
        {"id": "whole", "source": "commands.x", "data_type": "integer", "data_match": r"\d+"},
        {"id": "miss", "source": "commands.x", "data_type": "float", "data_match": r"nothing(\d)"},
        {"id": "broken_source", "source": "a.b.c.d", "data_type": "integer"},
        {"id": "text_float", "source": "'3.14159265 volts'", "data_type": "float"},
        {"id": "bytes", "source": "12.9", "data_type": "bytes"},
    ]
    values, _ = compute(compile_monitors(defs), {"commands": {"x": "disk used=512 free=100"}}, [], None, None)
    assert values == {"group1": 512, "whole": 512, "miss": 0, "broken_source": 0, "text_float": 3.14159, "bytes": 12}


def test_group_scope() -> None:
    defs: list[dict[str, Any]] = [{"id": "all", "source": "1", "data_type": "integer"},
            {"id": "db", "source": "2", "data_type": "integer", "groups": ["db"]}]  # fmt: skip
    assert compute(compile_monitors(defs), {}, ["main"], None, None)[0] == {"all": 1}
    assert compute(compile_monitors(defs), {}, ["main", "db"], None, None)[0] == {"all": 1, "db": 2}


def test_a_monitor_that_does_not_compile_is_left_out() -> None:
    assert [m.id for m in compile_monitors([{"id": "bad", "source": "1 +", "data_type": "integer"},
                                            {"id": "ok", "source": "1", "data_type": "integer"}])] == ["ok"]


@pytest.mark.parametrize(("value", "expected"), [
    ("12abc", 12), ("  -7.9", -7), (3.99, 3), (-3.99, -3), ("abc", 0), (None, 0), (True, 0), ("", 0),
    (float("nan"), 0), (float("inf"), 0), ("0x1A", 26), (1e-7, 1), (2.5e21, 2),
])  # fmt: skip
def test_js_int(value: Any, expected: int) -> None:
    assert js_int(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("3.5kg", 3.5), (".5", 0.5), ("1e3x", 1000.0), ("-Infinity", float("-inf")), ("x1", 0.0), (None, 0.0),
    (float("nan"), 0.0), (False, 0.0),
])  # fmt: skip
def test_js_float(value: Any, expected: float) -> None:
    assert js_float(value) == expected


def test_cast_keeps_five_decimals() -> None:
    assert cast("2.123456789", "float") == 2.12346 and cast(-0.000001, "float") == 0.0
    assert cast("99.9", "milliseconds") == 99 and cast("99.9", "seconds") == 99
