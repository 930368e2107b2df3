"""Monitor and alert definitions over the API on a real in-process primary: the stock ones at first start, create /
update / delete / multi_update with every refusal naming its field, group-limited callers refused, and the
monitoring reads' bad input."""

from __future__ import annotations

from typing import Any

from tests.authkit import Site, ok

Headers = dict[str, str]


async def call(site: Site, api: str, body: dict[str, Any], headers: Headers) -> tuple[int, dict[str, Any]]:
    status, data = await site.call(api, body, headers=headers)
    return status, data


async def test_the_stock_monitors_and_alerts_exist(site: Site, admin: Headers) -> None:
    monitors = (await ok(site, "get_monitors", {}, admin))["rows"]
    assert [m["id"] for m in monitors][:3] == ["load_avg", "cpu_usage", "mem_used"] and len(monitors) == 15
    assert [m["sort_order"] for m in monitors] == list(range(15))
    alerts = {a["id"]: a for a in (await ok(site, "get_alerts", {}, admin))["rows"]}
    assert set(alerts) == {"load_avg_high", "mem_free_low", "io_wait_high", "disk_usage_root_high", "active_jobs_high"}
    assert alerts["active_jobs_high"]["limit_jobs"] is True and alerts["mem_free_low"]["monitor_id"] == "mem_free"
    plugin = (await ok(site, "get_plugin", {"id": "open_files"}, admin))["plugin"]
    assert plugin["type"] == "monitor"


async def test_monitor_definitions(site: Site, admin: Headers) -> None:
    made = (await ok(site, "create_monitor", {"title": "Swap", "source": "memory.swapused", "data_type": "bytes",
                                               "groups": ["main"]}, admin))["monitor"]  # fmt: skip
    assert made["id"].startswith("m") and made["sort_order"] == 15 and made["revision"] == 1
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"title": "x", "source": "1 +", "data_type": "integer"}, "monitor", "source"),
        ({"title": "x", "source": "a", "data_type": "percent"}, "api", "data_type"),
        ({"title": "x", "source": "a", "data_type": "float", "data_match": "(?=x)"}, "api", "data_match"),
        ({"title": "x", "source": "a", "data_type": "float", "groups": ["nope"]}, "api", "groups"),
        ({"title": "x", "source": "a", "data_type": "float", "delta_min_value": "0"}, "api", "delta_min_value"),
        ({"title": "x", "data_type": "float"}, "api", "source"),
        ({"title": "x", "source": "a" * 5000, "data_type": "float"}, "api", "source"),
    ]
    for body, code, field in refused:
        status, data = await call(site, "create_monitor", body, admin)
        assert data["code"] == code and field in data["description"], (body, data)
        assert status in (400, 500)
    await ok(site, "update_monitor", {"id": made["id"], "source": "memory.swaptotal - memory.swapfree"}, admin)
    status, data = await call(site, "update_monitor", {"id": made["id"], "source": "((("}, admin)
    assert data["code"] == "monitor", data
    got = (await ok(site, "get_monitor", {"id": made["id"]}, admin))["monitor"]
    assert got["source"] == "memory.swaptotal - memory.swapfree" and got["revision"] == 2
    await ok(site, "multi_update_monitor", {"items": [{"id": made["id"], "sort_order": 0},
                                                      {"id": "load_avg", "sort_order": 15}]}, admin)  # fmt: skip
    orders = {m["id"]: m["sort_order"] for m in (await ok(site, "get_monitors", {}, admin))["rows"]}
    assert orders[made["id"]] == 0 and orders["load_avg"] == 15
    await ok(site, "delete_monitor", {"id": made["id"]}, admin)
    status, data = await call(site, "get_monitor", {"id": made["id"]}, admin)
    assert data["code"] == "notfound"


async def test_alert_definitions(site: Site, admin: Headers) -> None:
    hook = {"id": "h1", "title": "h1", "url": "http://127.0.0.1:9/x", "method": "POST"}
    await ok(site, "create_web_hook", hook, admin)
    action = {"enabled": True, "condition": "alert_new", "type": "web_hook", "web_hook": "h1"}
    made = (await ok(site, "create_alert", {"title": "Hot", "expression": "monitors.cpu_usage > 95", "samples": 3,
                                             "message": "CPU at {{pct(monitors.cpu_usage)}}",
                                             "actions": [action]}, admin))["alert"]  # fmt: skip
    assert made["samples"] == 3 and made["enabled"] is True and made["limit_jobs"] is False
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"expression": "cpu >", "message": "m"}, "alert", "expression"),
        ({"expression": "true", "message": "{{ cpu. }}"}, "api", "message"),
        ({"expression": "true", "message": "m", "samples": 0}, "api", "samples"),
        ({"expression": "true", "message": "m", "samples": 5000}, "api", "samples"),
        ({"expression": "true", "message": "m", "actions": [{**action, "condition": "success"}]}, "api", "actions"),
        ({"expression": "true", "message": "m", "actions": [{**action, "web_hook": "nope"}]}, "api", "web_hook"),
        ({"expression": "true", "message": "m", "monitor_id": "nope"}, "api", "monitor_id"),
        ({"expression": "true"}, "api", "message"),
    ]
    for body, code, field in refused:
        _, data = await call(site, "create_alert", {"title": "x", **body}, admin)
        assert data["code"] == code and field in data["description"], (body, data)
    await ok(site, "update_alert", {"id": made["id"], "enabled": False}, admin)
    assert (await ok(site, "get_alert", {"id": made["id"]}, admin))["alert"]["enabled"] is False
    await ok(site, "delete_alert", {"id": made["id"]}, admin)


async def test_group_limited_callers_may_not_manage_monitors_or_alerts(site: Site, admin: Headers) -> None:
    await ok(site, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
    await ok(site, "create_role", {"id": "webops", "title": "Web ops", "groups": ["web"]}, admin)
    plain, _ = await site.admin_key(admin["X-Session-ID"], roles=["webops"],
                                    privileges={"create_monitors": True, "create_alerts": True,
                                                "edit_monitors": True, "delete_alerts": True})  # fmt: skip
    limited = {"X-API-Key": plain}
    for api, body in (("create_monitor", {"title": "x", "source": "1", "data_type": "integer"}),
                      ("create_alert", {"title": "x", "expression": "true", "message": "m"}),
                      ("delete_alert", {"id": "load_avg_high"}),
                      ("test_monitor", {"server": "s1", "source": "1", "data_type": "integer"})):  # fmt: skip
        status, data = await call(site, api, body, limited)
        assert (status, data["code"]) == (403, "access"), (api, data)
    assert len((await ok(site, "get_monitors", {}, limited))["rows"]) == 15  # reading is for everybody


async def test_monitoring_reads_refuse_bad_input(site: Site, admin: Headers) -> None:
    for api, body, code, field in (
        ("get_latest_monitor_data", {"server": "nope", "sys": "hourly", "limit": 5}, "notfound", "nope"),
        ("get_latest_monitor_data", {"server": "s1", "sys": "hourly", "limit": 0}, "api", "limit"),
        ("get_historical_monitor_data", {"server": "s1", "sys": "hourly", "limit": 5}, "api", "date"),
        ("test_monitor", {"server": "nope", "source": "1", "data_type": "integer"}, "notfound", "nope"),
        ("test_alert", {"server": "nope", "expression": "true", "message": "m"}, "notfound", "nope"),
    ):
        _, data = await call(site, api, body, admin)
        assert data["code"] == code and field in data["description"], (api, data)
