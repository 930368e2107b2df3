"""Warm-up, firing, cool-down and clearing of alerts on one server (cluster/monitoring/alerting.py), and which
actions an invocation runs (cluster/monitoring/alertservice.py alert_actions): pure, no store."""

from __future__ import annotations

import itertools
from typing import Any

from cluster.monitoring.alerting import advance, compile_alerts, evaluate
from cluster.monitoring.alertservice import alert_actions

Record = dict[str, Any]
_ids = itertools.count(1)


def new_id() -> str:
    return f"a{next(_ids)}"


def run(samples: int, results: list[bool]) -> list[tuple[int, list[str], list[str]]]:
    """Feed one alert a sequence of results; per step: (count after it, fired ids, cleared ids)."""
    warm: dict[str, Record] = {}
    out = []
    for i, holds in enumerate(results):
        step = advance(warm, {"hot": "msg" if holds else None}, {"hot": samples}, "s1", 1000.0 + 60 * i, new_id)
        warm = step.warm
        out.append((int(warm["hot"]["count"]) if "hot" in warm else 0, [e["id"] for e in step.fired],
                    [e["id"] for e in step.cleared]))  # fmt: skip
    return out


def test_one_sample_fires_at_once_and_clears_on_the_next_false() -> None:
    steps = run(1, [True, True, False, False])
    assert [s[0] for s in steps] == [1, 1, 0, 0]
    fired = [f for s in steps for f in s[1]]
    cleared = [c for s in steps for c in s[2]]
    assert len(fired) == 1 and cleared == fired  # fires once, the same invocation clears, once
    assert steps[0][1] and steps[2][2]


def test_warm_up_needs_samples_in_a_row_and_cool_down_counts_back() -> None:
    steps = run(3, [True, True, False, True, True, True, True, False, False, True, False, False])
    counts = [s[0] for s in steps]
    assert counts == [1, 2, 1, 2, 3, 3, 3, 2, 1, 2, 1, 0]
    fired_at = [i for i, s in enumerate(steps) if s[1]]
    cleared_at = [i for i, s in enumerate(steps) if s[2]]
    assert fired_at == [4]  # the third true in a row after the dip
    assert cleared_at == [11]  # only back at zero


def test_a_warm_entry_that_never_fired_leaves_quietly() -> None:
    steps = run(2, [True, False, False])
    assert not any(s[1] or s[2] for s in steps) and steps[-1][0] == 0


def test_the_entry_keeps_the_first_date_and_the_latest_message() -> None:
    step1 = advance({}, {"hot": "first"}, {"hot": 2}, "s1", 100.0, new_id)
    step2 = advance(step1.warm, {"hot": "second"}, {"hot": 2}, "s1", 160.0, new_id)
    entry = step2.warm["hot"]
    assert entry["date"] == 100.0 and entry["modified"] == 160.0 and entry["message"] == "second"
    assert step2.fired and step2.fired[0]["id"] == step1.warm["hot"]["id"] and entry["notified"] is True


def test_an_alert_that_is_gone_clears_silently() -> None:
    fired = advance({}, {"hot": "x"}, {"hot": 1}, "s1", 100.0, new_id)
    assert fired.fired
    gone = advance(fired.warm, {}, {}, "s1", 160.0, new_id)  # disabled, deleted or out of scope now
    assert gone.warm == {} and len(gone.cleared) == 1 and gone.silent == gone.cleared


def test_evaluation_renders_messages_only_for_true_results_and_respects_groups() -> None:
    alerts = compile_alerts([
        {"id": "load", "expression": "monitors.load_avg >= (cpu.cores + 1)", "message": "load {{monitors.load_avg}}"},
        {"id": "db_only", "expression": "true", "message": "x", "groups": ["db"]},
        {"id": "off", "expression": "true", "message": "x", "enabled": False},
        {"id": "broken", "expression": "a.b.c > 1", "message": "x"},
    ])  # fmt: skip
    assert [a.id for a in alerts] == ["load", "db_only", "broken"]
    data = {"monitors": {"load_avg": 5.5}, "cpu": {"cores": 4}}
    assert evaluate(alerts, data, ["main"]) == {"load": "load 5.5", "broken": None}
    assert evaluate(alerts, {**data, "monitors": {"load_avg": 1}}, ["main", "db"]) == {
        "load": None, "db_only": "x", "broken": None}  # fmt: skip
    assert alerts[0].samples == 1


def test_actions_are_the_alerts_own_then_groups_then_universal_once_each() -> None:
    hook = {"enabled": True, "condition": "alert_new", "type": "web_hook", "web_hook": "h1"}
    alert = {"actions": [hook, {**hook, "condition": "alert_cleared"},
                         {"enabled": False, "condition": "alert_new", "type": "email", "email": "x@y"}]}  # fmt: skip
    groups = [{"alert_actions": [hook, {"enabled": True, "condition": "alert_new", "type": "email", "email": "o@p"}]}]
    universal = [{"enabled": True, "condition": "alert_new", "type": "snapshot"}]
    found = alert_actions(alert, groups, "alert_new", universal)
    assert [(a["type"], a.get("source")) for a in found] == [("web_hook", None), ("email", "group"),
                                                             ("snapshot", "universal")]  # fmt: skip
    only = alert_actions({**alert, "exclusive_actions": True}, groups, "alert_new", universal)
    assert [a["type"] for a in only] == ["web_hook"]
    assert [a["condition"] for a in alert_actions(alert, groups, "alert_cleared")] == ["alert_cleared"]
