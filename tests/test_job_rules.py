"""The pure rules of issue 10: resource and launch limits, retries, and which actions run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cluster.actions.plan import (
    MAX_PUSHED_ACTIONS,
    action_key,
    completion_conditions,
    matching_actions,
    validate_pushed,
)
from cluster.dispatch import limits
from cluster.dispatch.limits import day_counted, day_limit, file_limit, resource_breaches, tag_limit
from cluster.dispatch.retry import (
    RETRY_CARRIED,
    RETRY_COPIED,
    RETRY_RULES,
    mark_retried,
    retry_job,
    retry_note,
    should_retry,
)


def running(*rows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": "j1",
        "event": "e1",
        "state": "active",
        "started": 1000.0,
        "updated": 1000.0,
        "tags": ["a"],
        "limits": [dict(r, enabled=r.get("enabled", True)) for r in rows],
    }
    job.update(extra)
    return job


# -- resource limits --------------------------------------------------------------------------------------------


def test_time_limit_fires_once_after_its_duration() -> None:
    job = running({"type": "time", "duration": 60})
    assert resource_breaches(job, 1060.0).breaches == ()  # exactly the duration: not over yet (xyOps: >)
    check = resource_breaches(job, 1061.0)
    assert check.changed and len(check.breaches) == 1
    breach = check.breaches[0]
    assert breach.kind == "time" and breach.index == 0 and not breach.abort and breach.actions == ()
    assert breach.message == "Job run time exceeded limit: 1 minute 1 second > 1 minute."
    assert job["limits"][0]["date"] == 1061.0 and breach.limit is job["limits"][0]
    again = resource_breaches(job, 2000.0)
    assert again.breaches == () and not again.changed


def test_log_limit_reads_the_conductors_log_size() -> None:
    job = running({"type": "log", "amount": 10 * 1024 * 1024, "abort": True})
    assert resource_breaches(job, 1001.0).breaches == ()  # no size known yet
    job["log_file_size"] = 10 * 1024 * 1024
    assert resource_breaches(job, 1002.0).breaches == ()
    job["log_file_size"] = 15 * 1024 * 1024
    (breach,) = resource_breaches(job, 1003.0).breaches
    assert breach.abort and breach.message == "Job output size exceeded limit: 15 MB > 10 MB."
    job["log_file_size"] = 10 * 1024 * 1024 + 1  # the words would read the same: the exact figures
    job["limits"][0].pop("date")
    (breach,) = resource_breaches(job, 1004.0).breaches
    assert breach.message == "Job output size exceeded limit: 10485761 bytes > 10485760 bytes."


def test_memory_must_stay_over_the_limit_for_its_duration() -> None:
    gb = 1024**3
    job = running({"type": "mem", "amount": gb, "duration": 10})
    job["mem"] = {"current": 2 * gb, "max": 2 * gb}
    first = resource_breaches(job, 1000.0)
    assert first.breaches == () and first.changed and job["limits"][0]["when"] == 1000.0
    still = resource_breaches(job, 1005.0)
    assert still.breaches == () and not still.changed  # nothing to write
    job["mem"]["current"] = gb  # back under (not over: equal)
    dropped = resource_breaches(job, 1006.0)
    assert dropped.changed and "when" not in job["limits"][0]
    job["mem"]["current"] = 3 * gb
    assert resource_breaches(job, 1007.0).breaches == ()
    assert resource_breaches(job, 1016.9).breaches == ()  # sustained 9.9 s of 10
    (breach,) = resource_breaches(job, 1017.0).breaches
    assert breach.kind == "mem" and breach.message == "Job memory usage exceeded limit: 3 GB > 1 GB for 10 seconds."
    assert job["limits"][0]["date"] == 1017.0
    assert resource_breaches(job, 1100.0).breaches == ()  # once only, however long it stays over


def test_cpu_limit_without_duration_fires_at_the_first_check_over() -> None:
    job = running({"type": "cpu", "amount": 100})
    job["cpu"] = {"current": 80}
    assert resource_breaches(job, 1001.0).breaches == ()
    job["cpu"]["current"] = 150
    (breach,) = resource_breaches(job, 1002.0).breaches
    assert breach.message == "Job CPU usage exceeded limit: 150% > 100%."
    job2 = running({"type": "cpu", "amount": 100, "duration": 10})
    job2["cpu"] = {"current": 150.5}
    resource_breaches(job2, 1000.0)
    (breach,) = resource_breaches(job2, 1010.0).breaches
    assert breach.message == "Job CPU usage exceeded limit: 150.5% > 100% for 10 seconds."


def test_no_figures_no_breach_and_no_change() -> None:
    job = running({"type": "cpu", "amount": 100, "duration": 5}, {"type": "mem", "amount": 5})
    check = resource_breaches(job, 5000.0)
    assert check.breaches == () and not check.changed and "when" not in job["limits"][0]


def test_sub_actions_tags_and_abort() -> None:
    job = running(
        {
            "type": "time",
            "duration": 10,
            "tags": ["slow", "a"],
            "users": ["ops"],
            "email": "x@y.z",
            "web_hook": "wh1",
            "text": "Runaway!",
            "snapshot": True,
            "abort": True,
            "source": "category",
        }
    )
    (breach,) = resource_breaches(job, 1020.0).breaches
    assert breach.abort and breach.tags == ("slow", "a")
    assert job["tags"] == ["a", "slow"]
    email, hook, snap = breach.actions
    assert email == {
        "enabled": True,
        "condition": "limit",
        "source": "category",
        "type": "email",
        "template": "job_limited",
        "users": ["ops"],
        "email": "x@y.z",
        "msg": breach.message,
        "title": "Max Run Time",
        "summary": "- **Sent this email.**\n- **Applied tags:** slow, a\n- **Fired web hook:** wh1\n"
        "- **Requested a server snapshot.**\n- **Aborted the job.**",
    }
    assert hook["type"] == "web_hook" and hook["web_hook"] == "wh1" and hook["text"] == "Runaway!"
    assert hook["msg"] == breach.message.rstrip(".") + " (Job aborted)"
    assert snap == {"enabled": True, "condition": "limit", "source": "category", "type": "snapshot",
                    "title": "Max Run Time", "summary": email["summary"]}


def test_every_resource_limit_applies_but_an_abort_ends_the_check() -> None:
    mb = 1024**2
    job = running(
        {"type": "mem", "amount": 500 * mb, "users": ["ops"]},
        {"type": "mem", "amount": 900 * mb},
        {"type": "mem", "amount": 1000 * mb, "abort": True},
        {"type": "mem", "amount": 1000 * mb},
        {"type": "time", "duration": 5000},
        {"type": "cpu", "amount": 10},
    )
    job["mem"] = {"current": 600 * mb}
    job["cpu"] = {"current": 50}
    check = resource_breaches(job, 1001.0)
    assert [(b.kind, b.index) for b in check.breaches] == [("mem", 0), ("cpu", 5)]  # both apply (time not due)
    job["mem"]["current"] = 2000 * mb
    check = resource_breaches(job, 1002.0)
    assert [(b.index, b.abort) for b in check.breaches] == [(1, False), (2, True)]  # stops at the abort
    assert "date" not in job["limits"][3]


def test_only_an_active_job_not_being_aborted_is_checked() -> None:
    rows = ({"type": "time", "duration": 1}, {"type": "time", "duration": 1, "enabled": False})
    for extra in ({"state": "queued"}, {"state": "finishing"}, {"aborting": {"reason": "x"}}):
        assert resource_breaches(running(*rows, **extra), 9999.0) == limits.ResourceCheck()
    job = running(*rows)
    assert [b.index for b in resource_breaches(job, 9999.0).breaches] == [0]  # the disabled one never fires


# -- launch limits ----------------------------------------------------------------------------------------------


def test_day_limit() -> None:
    job = running(
        {"type": "day", "condition": "complete", "amount": 0},
        {"type": "day", "condition": "error", "amount": 3},
        source="scheduler",
    )
    assert day_limit(job, {"complete": 1000, "error": 2}) is None
    refusal = day_limit(job, {"error": 3})
    assert refusal == "Daily limit of 3 'error' reached for event e1 (3 today)."
    assert day_limit({**job, "source": "user"}, {"error": 99}) is None  # manual runs skip it
    assert day_limit({**job, "source": "key"}, {"error": 99}) is None
    assert day_limit({**job, "source": "magic"}, {"error": 99}) is not None
    assert day_counted(["complete", "error", "user", "tag:x", "success"]) == ["complete", "error", "user", "success"]


def test_tag_limit_keeps_the_first_own_tags_and_every_system_tag() -> None:
    job = running({"type": "tag", "amount": 2}, tags=["_error", "a", "b", "c", "d", "_test"])
    assert tag_limit(job) == ["WARNING: Dropped 2 tags over the limit of 2: c, d"]
    assert job["tags"] == ["_error", "a", "b", "_test"]
    assert tag_limit(job) == []
    none = running({"type": "tag", "amount": 0}, tags=["a", "_files"])
    tag_limit(none)
    assert none["tags"] == ["_files"]
    free = running({"type": "tag", "amount": 0, "enabled": False}, {"type": "tag"}, tags=["a"])
    assert tag_limit(free) == [] and free["tags"] == ["a"]


def files(*sizes: int, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"id": f"f{i}", "filename": names[i] if names else f"f{i}.json", "size": s} for i, s in enumerate(sizes)]


def test_file_limit_prunes_count_then_size_then_type() -> None:
    job = running(
        {"type": "file", "amount": 4, "size": 250, "accept": ".JSON, .csv,"},
        input={"files": files(100, 100, 100, 100, 100, names=("a.json", "b.CSV", "c.txt", "d", "e"))},
    )
    notes = file_limit(job)
    assert notes == [
        "Pruned 1 files from input (file count limit exceeded)",
        "Pruned 2 files from input (file size limit exceeded)",
    ]
    assert [f["filename"] for f in job["input"]["files"]] == ["a.json", "b.CSV"]
    job2 = running({"type": "file", "accept": ".csv"}, input={"files": files(1, 2, names=("x.csv", "y.json"))})
    assert file_limit(job2) == ["Pruned 1 files from input (file extension not accepted)"]
    assert [f["filename"] for f in job2["input"]["files"]] == ["x.csv"]  # no amount: no count cap


def test_file_limit_zero_allows_none_and_only_the_first_limit_counts() -> None:
    job = running({"type": "file", "amount": 0}, {"type": "file", "amount": 10}, input={"files": files(1, 2)})
    assert file_limit(job) == ["Pruned 2 files from input (file count limit exceeded)"]
    assert job["input"]["files"] == []
    unsized = running({"type": "file", "size": 10}, input={"files": [{"filename": "a"}, {"filename": "b", "size": 11}]})
    file_limit(unsized)
    assert [f["filename"] for f in unsized["input"]["files"]] == ["a"]
    assert file_limit(running({"type": "file", "amount": 0})) == []  # no input


# -- retries ----------------------------------------------------------------------------------------------------


def finished(code: Any, *rows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    job = running(*rows, **extra)
    job.update(
        state="complete",
        code=code,
        completed=1100.0,
        final=True,
        server="s1",
        description="bad",
        activity=[{"msg": "x"}],
        output="log",
        tags=["a", "_error"],
        params={"p": 1},
        input={"files": files(1)},
        command="run.sh",
        event_title="E",
        expression="x > 1",
    )
    return job


RETRY = {"type": "retry", "amount": 2}


def test_which_codes_are_retried() -> None:
    assert not should_retry(finished(0, RETRY))
    assert should_retry(finished(1, RETRY)) and should_retry(finished("timeout", RETRY))
    assert should_retry(finished("warning", RETRY)) and should_retry(finished("critical", RETRY))
    assert not should_retry(finished("abort", RETRY))  # a user's abort
    assert should_retry(finished("abort", RETRY, retry_ok=True))  # dead job, no server, limit
    assert not should_retry(finished(1))  # no retry limit
    assert not should_retry(finished(1, RETRY, retry_count=2)) and should_retry(finished(1, RETRY, retry_count=1))
    assert not should_retry(finished(1, RETRY, retried=True))
    first_wins = ({"type": "retry", "amount": 9, "enabled": False}, {"type": "retry", "amount": 0}, RETRY)
    assert not should_retry(finished(1, *first_wins))


def test_the_retry_clone() -> None:
    final = finished(
        1,
        {"type": "retry", "amount": 3, "duration": 30, "date": 5},
        retry_count=1,
        workflow={"job": "wp", "node": "n1", "state": {"n1": {}}, "jobs": ["x"]},
        actions=[
            {"type": "email", "condition": "start", "enabled": True, "code": 0, "date": 1.0},
            {"type": "snapshot", "condition": "error", "enabled": True, "source": "universal"},
        ],
    )
    final["limits"].append({"type": "time", "duration": 5, "enabled": True, "date": 1.0, "msg": "m", "when": 2})
    before = copy.deepcopy(final)
    clone = retry_job(final, 2000.0, "j2")
    assert clone is not None and final == before
    assert clone["id"] == "j2" and clone["retry_prev"] == "j1" and clone["retry_count"] == 2
    assert clone["state"] == "retry_delay" and clone["until"] == 2030.0
    assert clone["started"] == clone["updated"] == clone["now"] == 2000.0
    assert clone["tags"] == ["a"] and clone["params"] == {"p": 1} and clone["input"] == final["input"]
    assert clone["workflow"] == {"job": "wp", "node": "n1"}
    assert clone["actions"][0] == {"type": "email", "condition": "start", "enabled": True}
    assert clone["limits"][1] == {"type": "time", "duration": 5, "enabled": True}
    assert clone["command"] == "run.sh" and clone["expression"] == "x > 1" and clone["event_title"] == "E"
    allowed = {*RETRY_COPIED, *RETRY_CARRIED, "id", "retry_prev", "state", "until", "started", "updated", "now"}
    assert set(clone) <= allowed
    for gone in ("server", "code", "description", "activity", "output", "completed", "final"):
        assert gone not in clone
    clone["input"]["files"].append({"x": 1})
    assert len(final["input"]["files"]) == 1  # a deep copy
    plain = retry_job(finished(1, RETRY), 3000.0, "j3")
    assert plain is not None and plain["state"] == "ready" and "until" not in plain and plain["retry_count"] == 1
    assert retry_job(finished(0, RETRY), 1.0, "j4") is None


def test_whitelist_is_xyops_and_the_original_is_marked() -> None:
    assert RETRY_COPIED == (
        "type",
        "event",
        "category",
        "plugin",
        "targets",
        "algo",
        "workflow",
        "input",
        "params",
        "parent",
        "source",
        "username",
        "api_key",
        "actions",
        "limits",
        "icon",
        "label",
        "test",
        "retry_count",
        "tags",
        "invisible",
        "ephemeral",
    )
    final = finished("abort", RETRY, retry_ok=True, jobs=[{"id": "jx", "reason": "other"}])
    assert completion_conditions(final)[:3] == ["complete", "error", "abort"]
    assert mark_retried(final, "j2") == "Launched retry #1 of 2: #j2"
    assert final["jobs"] == [{"id": "jx", "reason": "other"}, {"id": "j2", "reason": "retry"}]
    assert final["retried"] is True and "retry_ok" not in final
    assert completion_conditions(final) == []  # a retried job fires no completion actions
    assert not should_retry(final)


def test_retry_note_and_rules_table() -> None:
    assert retry_note(finished(1, RETRY, retry_count=2)) == "Reached the retry limit (2), the job is not retried."
    assert retry_note(finished(1, RETRY)) is None and retry_note(finished(0, RETRY, retry_count=5)) is None
    assert retry_note(finished("abort", RETRY, retry_count=5)) is None  # not retryable anyway
    rules = {what: retried for what, retried, _ in RETRY_RULES}
    assert all(why.endswith(".") for _, _, why in RETRY_RULES)
    assert rules["Aborted by a user or API key (abort_job)"] is False
    assert rules["Aborted: no updates for the dead-job timeout (server or agent lost)"] is True
    assert rules["Aborted: concurrency limit reached (queue full or no queue)"] is False
    assert rules["warning"] is True and rules["Code 0 (success)"] is False


# -- actions ----------------------------------------------------------------------------------------------------


def test_completion_conditions_per_code() -> None:
    def conds(code: Any, tags: list[str] | None = None) -> list[str]:
        return completion_conditions({"code": code, "tags": tags or []})

    assert conds(0) == ["complete", "success"] and conds(None) == ["complete", "success"]
    assert conds(1) == ["complete", "error", "user"] and conds("Bad Thing!") == ["complete", "error", "user"]
    assert conds("warning") == ["complete", "error", "warning"]
    assert conds("CRITICAL") == ["complete", "error", "critical"]
    assert conds("abort") == ["complete", "error", "abort"]
    assert conds(0, ["b", "_success", "a", "_last"]) == ["complete", "success", "tag:b", "tag:a"]


def email(condition: str, recips: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "condition": condition, "type": "email", "email": recips, "source": source, **extra}


def test_matching_actions_order_and_dedupe() -> None:
    job = {
        "actions": [
            email("error", "ops@x.io, dev@x.io", "event"),
            {"enabled": True, "condition": "complete", "type": "web_hook", "web_hook": "h1"},
            email("complete", "DEV@x.io,ops@x.io ", "category"),
            {"enabled": True, "condition": "error", "type": "snapshot", "source": "universal"},
            {"enabled": False, "condition": "error", "type": "web_hook", "web_hook": "h2"},
            {"enabled": True, "condition": "error", "type": "web_hook", "web_hook": "h1", "source": "job"},
            {"enabled": True, "condition": "tag:t", "type": "run_event", "event_id": "e9", "source": "job"},
            {"enabled": True, "condition": "start", "type": "email", "users": ["bob"]},
        ]
    }
    got = matching_actions(job, completion_conditions({"code": 1, "tags": ["t"]}))
    # conditions first (complete, error, user, tag:t), list order within each; the first of a key wins
    assert [(a["type"], a["condition"], a.get("source")) for a in got] == [
        ("web_hook", "complete", None),
        ("email", "complete", "category"),
        ("snapshot", "error", "universal"),
        ("run_event", "tag:t", "job"),
    ]
    assert got[1] is job["actions"][2]  # the job's own dict, for the result
    assert [a["condition"] for a in matching_actions(job, ["start"])] == ["start"]
    assert matching_actions(job, ["instant"]) == []


def test_actions_that_ran_are_skipped_with_their_duplicates() -> None:
    ran = email("complete", "a@b.c", "event", code=0, date=5.0)
    job = {"actions": [ran, email("error", "a@b.c", "category"), email("error", "z@b.c", "job")]}
    assert [a["email"] for a in matching_actions(job, ["complete", "error"])] == ["z@b.c"]


def test_test_runs_fire_only_their_test_conditions() -> None:
    job = {
        "test": True,
        "test_conditions": ["error"],
        "actions": [email("complete", "a@b.c", "event"), email("error", "b@b.c", "event")],
    }
    assert [a["email"] for a in matching_actions(job, ["complete", "error"])] == ["b@b.c"]
    job["test"] = False
    assert len(matching_actions(job, ["complete", "error"])) == 2


def test_action_keys() -> None:
    assert (
        action_key({"type": "email", "users": ["Bob", "amy"], "email": "X@y.z, ,w@y.z"}) == "email:amy,bob,w@y.z,x@y.z"
    )
    assert action_key({"type": "email", "email": "w@y.z,x@y.z"}) != action_key({"type": "email", "email": "w@y.z"})
    assert action_key({"type": "web_hook", "web_hook": "h1", "text": "x"}) == "web_hook:h1"
    assert action_key({"type": "run_event", "event_id": "e1", "params": {"a": 1}}) == "run_event:e1"
    assert action_key({"type": "channel", "channel_id": "c1"}) == "channel:c1"
    assert action_key({"type": "plugin", "plugin_id": "p1"}) == "plugin:p1"
    assert (
        action_key({"type": "store", "bucket_id": "b1"})
        == "store:b1"
        != action_key({"type": "fetch", "bucket_id": "b1"})
    )
    assert action_key({"type": "tag", "tags": ["b", "a", "b"]}) == "tag:a,b"
    assert action_key({"type": "label", "label": "L"}) == "label:L"
    for kind in ("suspend", "disable", "delete", "snapshot", "ticket"):
        assert action_key({"type": kind, "users": ["x"], "ticket_type": "issue"}) == kind


def test_validate_pushed_keeps_what_each_type_reads() -> None:
    pushed = validate_pushed(
        [
            {"condition": "success", "type": "email", "email": "you@x.io", "code": 0, "template": "../../etc/passwd"},
            {
                "enabled": True,
                "condition": "instant",
                "type": "run_event",
                "event_id": "e2",
                "params": {"a": [1]},
                "overrides": {"parent": {"job": "forged"}},
                "start_delay": 5,
            },
            {"enabled": True, "condition": "tag:hot", "type": "tag", "tags": ["x"], "id": "node1", "conn": "c1"},
        ]
    )
    assert pushed == [
        {"enabled": True, "condition": "success", "type": "email", "email": "you@x.io", "source": "job"},
        {
            "enabled": True,
            "condition": "instant",
            "type": "run_event",
            "event_id": "e2",
            "params": {"a": [1]},
            "start_delay": 5.0,
            "source": "job",
        },
        {"enabled": True, "condition": "tag:hot", "type": "tag", "tags": ["x"], "source": "job"},
    ]


def test_validate_pushed_drops_the_malformed() -> None:
    bad: list[Any] = [
        "not an object",
        {"condition": "success", "type": "shell", "command": "rm -rf /"},
        {"condition": "alert_new", "type": "email", "email": "a@b.c"},
        {"condition": "continue", "type": "snapshot"},
        {"condition": "tag:", "type": "snapshot"},
        {"type": "snapshot"},
        {"condition": 1, "type": "snapshot"},
        {"condition": "error", "type": "snapshot", "enabled": False},
        {"condition": "error", "type": "email"},
        {"condition": "error", "type": "email", "users": [], "email": " "},
        {"condition": "error", "type": "email", "users": "bob"},
        {"condition": "error", "type": "email", "users": [1]},
        {"condition": "error", "type": "web_hook"},
        {"condition": "error", "type": "web_hook", "web_hook": "a b"},
        {"condition": "error", "type": "run_event", "event_id": "x" * 101},
        {"condition": "error", "type": "plugin", "plugin_id": "p", "params": {"big": "x" * 20000}},
        {"condition": "error", "type": "plugin", "plugin_id": "p", "params": {"nan": float("nan")}},
        {"condition": "error", "type": "run_event", "event_id": "e", "start_delay": -1},
        {"condition": "error", "type": "tag", "tags": []},
        {"condition": "error", "type": "tag", "tags": ["x"] * 101},
        {"condition": "error", "type": "label", "label": "x" * 9000},
        {"condition": "error", "type": "store", "bucket_id": "b", "bucket_sync": "all"},
    ]
    assert validate_pushed(bad) == []
    assert validate_pushed({"type": "email"}) == [] and validate_pushed(None) == []
    many = [{"condition": "error", "type": "snapshot"}] * (MAX_PUSHED_ACTIONS + 5)
    assert len(validate_pushed(many)) == MAX_PUSHED_ACTIONS
    assert validate_pushed(
        [
            {"condition": "error", "type": "ticket", "ticket_due": "3 days", "ticket_tags": ["a"]},
            {"condition": "start", "type": "suspend", "users": ["ops"], "sources": ["user"]},
        ]
    ) == [
        {
            "enabled": True,
            "condition": "error",
            "type": "ticket",
            "ticket_tags": ["a"],
            "ticket_due": "3 days",
            "source": "job",
        },
        {
            "enabled": True,
            "condition": "start",
            "type": "suspend",
            "users": ["ops"],
            "sources": ["user"],
            "source": "job",
        },
    ]


def test_the_readme_states_every_retry_rule() -> None:
    """The README's table of retries is RETRY_RULES, row for row (one source for the rule)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for how, retried, why in RETRY_RULES:
        assert f"| {how} | {'yes' if retried else 'no'} | {why} |" in readme, how
