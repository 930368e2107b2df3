"""The pure server rules (cluster/servers.py): automatic groups, what a join stores, keywords, bounds, summaries."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from cluster.servers import (
    HOSTNAME_LEN,
    INFO_BYTES,
    MAX_GROUPS,
    HelloError,
    auto_groups,
    bounded_info,
    cpu_combo,
    keywords,
    merge_join,
    regroup,
    regrouped,
    summaries,
)

MAIN = {"id": "main", "hostname_match": ".+"}
WEB = {"id": "web", "hostname_match": "^web\\d+\\."}
DB = {"id": "db", "hostname_match": "db"}
GROUPS = [MAIN, WEB, DB]
INFO = {"os": {"platform": "linux", "distro": "Ubuntu", "release": "22.04", "arch": "x64"},
        "cpu": {"manufacturer": "Intel", "brand": "Xeon", "cores": 4}, "virt": {"vendor": "KVM", "type": "vm"},
        "memory": {"total": 8 << 30}}  # fmt: skip


def hello(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "sabc123", "hostname": "web01.example.com", "info": INFO}
    base.update(changes)
    return base


def test_auto_groups_match_unanchored_in_group_order() -> None:
    assert auto_groups("web01.example.com", GROUPS) == ["main", "web"]
    assert auto_groups("proddb2", GROUPS) == ["main", "db"]  # unanchored: "db" anywhere
    assert auto_groups("", GROUPS) == []  # `.+` needs a character


@pytest.mark.parametrize("pattern", ["(?=web)", "(a)\\1", "[", "a{5000}", "(a+)+$", 42, None])
def test_bad_or_hostile_patterns_match_nothing(pattern: Any) -> None:
    groups = [{"id": "bad", "hostname_match": pattern}, MAIN]
    assert auto_groups("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", groups) == ["main"]


def test_regroup_prunes_deleted_groups_and_falls_back_to_automatic() -> None:
    assert regroup("web01.x", False, ["db", "gone"], GROUPS) == (False, ["db"])
    assert regroup("web01.x", False, ["gone"], GROUPS) == (True, ["main", "web"])
    assert regroup("web01.x", False, [], GROUPS) == (True, ["main", "web"])
    assert regroup("web01.x", True, ["db"], GROUPS) == (True, ["main", "web"])


def test_new_server_from_hello() -> None:
    rec = merge_join(None, hello(), 1700000000.7, GROUPS, ip="10.0.0.5")
    assert rec["id"] == "sabc123" and rec["hostname"] == "web01.example.com" and rec["ip"] == "10.0.0.5"
    assert (rec["created"], rec["modified"], rec["enabled"], rec["autoGroup"]) == (1700000000, 1700000000, True, True)
    assert rec["groups"] == ["main", "web"] and rec["userData"] == {}
    assert rec["info"]["cpu"]["combo"] == "Intel Xeon"
    for section in ("os", "memory", "cpu", "virt", "features", "monitors", "deltas"):
        assert isinstance(rec["info"][section], dict)


def test_initial_fields_for_a_new_server() -> None:
    rec = merge_join(None, hello(title="Front <b>1</b>", icon="server", enabled=False, groups=["db", "nope"]), 1.0,
                     GROUPS)  # fmt: skip
    assert (rec["title"], rec["icon"], rec["enabled"]) == ("Front b1/b", "server", False)
    assert (rec["autoGroup"], rec["groups"]) == (False, ["db"])
    nested = merge_join(None, hello(initial={"groups": "web,db", "icon": "bad icon!"}), 1.0, GROUPS)
    assert (nested["autoGroup"], nested["groups"], nested["icon"]) == (False, ["web", "db"], "")


def test_known_server_keeps_stored_fields_except_reported_ones() -> None:
    stored = merge_join(None, hello(), 100.0, GROUPS, ip="10.0.0.5")
    stored.update(title="Mine", enabled=False, maxJobs=3, userData={"k": 1}, autoGroup=False, groups=["db"])
    again = merge_join(stored, hello(hostname="WEB01.other.com", title="ignored", groups=["web"],
                                     info={"os": {"platform": "darwin"}}), 200.0, GROUPS, ip="10.0.0.9")  # fmt: skip
    assert (again["title"], again["enabled"], again["maxJobs"], again["userData"]) == ("Mine", False, 3, {"k": 1})
    assert (again["created"], again["modified"]) == (100, 200)
    assert (again["hostname"], again["ip"]) == ("web01.other.com", "10.0.0.9")
    assert again["info"]["os"] == {"platform": "darwin"}
    assert (again["autoGroup"], again["groups"]) == (False, ["db"])
    # The manual group was deleted meanwhile: back to automatic groups.
    third = merge_join(again, hello(), 300.0, [MAIN, WEB])
    assert (third["autoGroup"], third["groups"]) == (True, ["main", "web"])


def test_keywords_follow_xyops_order() -> None:
    rec = merge_join(None, hello(title="Front"), 1.0, GROUPS, ip="10.0.0.5")
    assert rec["keywords"] == ("web01.example.com,10.0.0.5,main,web,linux,Ubuntu,22.04,x64,Intel,Xeon,KVM,vm,unknown,"
                               "Front")
    assert keywords({"hostname": "h"}).endswith(",unknown,unknown,unknown,unknown")
    assert cpu_combo({"manufacturer": "-", "vendor": "AMD", "brand": "EPYC"}) == "AMD EPYC"
    assert cpu_combo({}) == "Unknown"


@pytest.mark.parametrize("bad", [{"id": ""}, {"id": "S-UPPER"}, {"id": "x" * 33}, {"id": 5}, {"hostname": ""},
                                 {"hostname": "///"}, {"hostname": None}])  # fmt: skip
def test_a_hello_without_a_valid_id_or_hostname_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(HelloError) as err:
        merge_join(None, hello(**bad), 1.0, GROUPS)
    assert err.value.field in ("id", "hostname")


def test_hello_strings_are_bounded() -> None:
    rec = merge_join(None, hello(hostname="a" * 100_000, title="t" * 100_000, groups=[f"g{i}" for i in range(500)]),
                     1.0, [{"id": f"g{i}", "hostname_match": "x"} for i in range(500)], ip="1" * 10_000)  # fmt: skip
    assert len(rec["hostname"]) == HOSTNAME_LEN and len(rec["title"]) == 256 and len(rec["ip"]) == 64
    assert len(rec["groups"]) == MAX_GROUPS


def _size(value: Any) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("info", [
    {"blob": "x" * (50 << 20)},  # one huge string
    {f"k{i}": "v" * 1000 for i in range(10_000)},  # many keys
    {"list": [[["y" * 500] * 300] * 300]},  # wide and nested
    {"deep": __import__("functools").reduce(lambda acc, _: {"d": acc}, range(500), {})},  # deep
    {"k" * 100_000: 1},  # a huge key
])  # fmt: skip
def test_info_is_copied_within_its_budget(info: dict[str, Any]) -> None:
    rec = merge_join(None, hello(info=info), 1.0, GROUPS)
    assert _size(rec["info"]) < INFO_BYTES + 4096
    assert _size(rec) < INFO_BYTES + 16384


def test_bounded_info_keeps_small_info_as_is_and_drops_non_json() -> None:
    assert bounded_info(INFO) == INFO
    assert bounded_info({"a": float("nan"), "b": 2**80, "c": object(), "d": (1, 2)}) == {
        "a": None, "b": float(2**80), "c": None, "d": [1, 2]}  # fmt: skip
    assert bounded_info("not an object") == {} and bounded_info(None) == {}


def test_summaries_count_facets_in_search_form() -> None:
    recs = [merge_join(None, hello(id=f"s{i}", info=info), 1.0, GROUPS) for i, info in enumerate([
        INFO, INFO, {"os": {"platform": "darwin", "release": "14.1"}, "cpu": {"cores": 8}}])]  # fmt: skip
    out = summaries(recs)
    assert set(out) == {"os_platform", "os_distro", "os_release", "os_arch", "cpu_virt", "cpu_brand", "cpu_cores"}
    assert out["os_platform"] == {"linux": 2, "darwin": 1}
    assert out["os_release"] == {"22_04": 2, "14_1": 1}
    assert out["cpu_brand"] == {"intel_xeon": 2, "unknown": 1}
    assert out["cpu_cores"] == {"4": 2, "8": 1}
    assert out["os_distro"] == {"ubuntu": 2}


def test_regrouped_follows_the_groups_and_says_when_nothing_changes() -> None:
    groups = [{"id": "main", "hostname_match": ".+"}, {"id": "web", "hostname_match": "^web"}]
    record = {"id": "s1", "hostname": "web1", "autoGroup": True, "groups": ["main"], "modified": 1}
    updated = regrouped(record, groups, 5.5)
    assert updated is not None and (updated["groups"], updated["modified"]) == (["main", "web"], 5)
    assert "web" in updated["keywords"].split(",") and record["groups"] == ["main"]
    assert regrouped(updated, groups, 9) is None
    manual = {**record, "autoGroup": False, "groups": ["web", "gone"]}
    assert (regrouped(manual, groups, 1) or {})["groups"] == ["web"]
    assert regrouped({**manual, "groups": ["web"]}, groups, 1) is None
    emptied = regrouped({**manual, "groups": ["gone"]}, groups, 1) or {}
    assert (emptied["autoGroup"], emptied["groups"]) == (True, ["main", "web"])
