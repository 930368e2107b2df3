"""The dispatcher's pure rules: how an agent report changes a job, the final record, and start limits."""

from __future__ import annotations

from typing import Any

from cluster.dispatch import limits
from cluster.dispatch.updates import PROTECTED, add_meta, apply_update, final_record, normal_code


def live(**extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"id": "j1", "event": "e1", "state": "active", "server": "s1", "started": 100.0,
                           "tags": ["a"], "actions": [{"type": "email"}], "limits": [], "updated": 100.0}
    job.update(extra)
    return job


def test_agent_cannot_replace_what_the_conductor_owns() -> None:
    job = live()
    hostile = {k: "x" for k in PROTECTED}
    apply_update(job, {**hostile, "progress": 0.5}, now=200.0)
    assert job["id"] == "j1" and job["server"] == "s1" and job["state"] == "active"
    assert job["tags"] == ["a"] and job["actions"] == [{"type": "email"}] and job["started"] == 100.0
    assert job["progress"] == 0.5 and job["updated"] == 200.0 and job["remote"] is True


def test_push_is_appended_and_pushed_actions_are_marked_as_the_jobs() -> None:
    job = live()
    apply_update(job, {"push": {"tags": ["b", "a"], "actions": [{"type": "web_hook"}], "bogus": ["x"],
                                "limits": "not a list"}}, now=1.0)  # fmt: skip
    assert job["tags"] == ["a", "b"]
    assert job["actions"] == [{"type": "email"}, {"type": "web_hook", "source": "job"}]
    assert "bogus" not in job and job["limits"] == []
    apply_update(job, {"push": {"tags": ["c"]}}, now=2.0)
    assert job["tags"] == ["a", "b", "c"]


def test_markdown_text_and_html_become_sanitized_html() -> None:
    job = live()
    apply_update(job, {"markdown": {"title": "T", "content": "# Hi <script>x</script>"}}, now=1.0)
    assert "<h1>" in job["html"]["content"] and "<script>" not in job["html"]["content"]
    apply_update(job, {"html": {"content": '<b onclick="x()">b</b><script>alert(1)</script>'}}, now=1.0)
    assert job["html"]["content"] == "<b>b</b>"
    apply_update(job, {"text": {"content": "<i>raw</i>"}}, now=1.0)
    assert job["html"]["content"] == "<pre>&lt;i&gt;raw&lt;/i&gt;</pre>"
    assert "markdown" not in job and "text" not in job


def test_state_from_an_agent_only_moves_active_to_finishing() -> None:
    job = live()
    apply_update(job, {"state": "queued"}, now=5.0)
    assert job["state"] == "active"
    apply_update(job, {"state": "finishing"}, now=6.0)
    assert job["state"] == "finishing" and job["finishing_since"] == 6.0


def test_code_normalisation() -> None:
    assert normal_code(None) == 0 and normal_code("") == 0 and normal_code(0) == 0
    assert normal_code(3) == 3 and normal_code(2.0) == 2
    assert normal_code("Bad Thing!") == "bad_thing_"
    assert normal_code({"x": 1}) == "unknown" and normal_code(True) == 1


def test_final_record() -> None:
    job = live(status="working", remote=True, test=True)
    final = final_record(job, {"code": "warning", "data": {"k": 1}, "files": [{"id": "f1"}]}, now=130.0,
                         log_size=42)  # fmt: skip
    assert final["state"] == "complete" and final["final"] is True and final["completed"] == 130.0
    assert final["elapsed"] == 30.0 and final["code"] == "warning" and final["log_file_size"] == 42
    assert final["description"] == "Unknown Error (no description provided)"
    assert final["data"] == {"k": 1} and "status" not in final and "remote" not in final
    assert final["tags"] == ["_error", "_files", "_test", "a"]
    assert job["state"] == "active"  # the live view is not changed
    ok = final_record(live(), {"code": 0}, now=101.0)
    assert ok["code"] == 0 and "_success" in ok["tags"] and "description" not in ok


def test_an_abort_always_wins_over_a_late_success() -> None:
    job = live(aborting={"reason": "Manually aborted by user: admin", "deadline": 1.0})
    final = final_record(job, {"code": 0}, now=101.0)
    assert final["code"] == "abort" and final["description"] == "Manually aborted by user: admin"
    assert "aborting" not in final


def test_meta_rows_are_capped() -> None:
    job = live()
    for i in range(1005):
        add_meta(job, f"row {i}", float(i), "m:n1", f"m{i}")
    assert len(job["activity"]) == 1000 and job["activity"][-1]["msg"] == "row 1004"


def test_limits_precedence_and_keys() -> None:
    job = {"event": "e1", "type": "", "limits": [
        {"type": "job", "enabled": False, "amount": 9},
        {"type": "job", "enabled": True, "amount": 2, "weight": 3},
        {"type": "job", "enabled": True, "amount": 5, "source": "category"},
        {"type": "queue", "enabled": True, "amount": 4},
    ]}  # fmt: skip
    assert limits.concurrency(job) == 2 and limits.weight(job) == 3 and limits.queue_room(job) == 4
    assert limits.queue_room({"limits": [{"type": "queue", "amount": 4}]}) == 0  # a queue needs a job limit
    assert limits.weight({}) == 1 and limits.concurrency({}) == 0
    flow = {"event": "e1", "workflow": {"node": "n1", "job": "jp"}}
    assert limits.similar_key(flow) != limits.similar_key({"event": "e1"})
    jobs = [{"id": "a", "started": 3}, {"id": "b", "started": 1}, {"id": "c", "started": 5, "priority": True}]
    assert [j["id"] for j in sorted(jobs, key=limits.queue_order)] == ["c", "b", "a"]
