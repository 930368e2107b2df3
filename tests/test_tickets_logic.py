"""The ticket rules without Redis: due dates (text, offsets to midnight, absolute epochs, refusals), change
detection per key, the draft rule, the same-key collapse by calendar minute, field cleaning and Markdown
sanitizing, and the generated bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cluster.tickets.bodies import SNIP, alert_subject, job_body, job_subject, log_excerpt
from cluster.tickets.changes import collapse, detect, is_quiet
from cluster.tickets.due import MONTH_S, DueError, normalize_due, seconds_from_text
from cluster.tickets.fields import TicketError, clean, sanitize_markdown, strip_html

NOW = datetime(2026, 3, 10, 15, 30, 12, tzinfo=UTC).timestamp()
DAY = 86400


@pytest.mark.parametrize(("text", "seconds"), [
    ("7 days", 7 * DAY), ("1d", DAY), ("3 days", 3 * DAY), ("1 day 12 hours", DAY + 12 * 3600),
    ("2 weeks, 1 day", 15 * DAY), ("90 minutes", 5400), ("30 sec", 30), ("1h30m", 5400), ("1 year", 365 * DAY),
    ("1 month", MONTH_S), ("2 months", 2 * MONTH_S), ("1 mo", MONTH_S), ("1767225600", 1_767_225_600),
    ("0", 0), ("1.5 days", int(1.5 * DAY)), ("1 day and 2 hours", DAY + 7200),
])  # fmt: skip
def test_seconds_from_text(text: str, seconds: int) -> None:
    assert seconds_from_text(text) == seconds


@pytest.mark.parametrize("text", ["2026-01-01", "soon", "7 parsecs", "days", "1 ms", "", "7 days ago!", "x" * 300])
def test_unreadable_text_is_refused(text: str) -> None:
    assert seconds_from_text(text) is None


def test_offsets_move_to_midnight_of_their_day() -> None:
    midnight_tomorrow = datetime(2026, 3, 11, tzinfo=UTC).timestamp()
    assert normalize_due("1 day", NOW, UTC) == midnight_tomorrow
    assert normalize_due(DAY, NOW, UTC) == midnight_tomorrow
    assert normalize_due("7 days", NOW, UTC) == midnight_tomorrow + 6 * DAY
    assert normalize_due("1 month", NOW, UTC) == datetime(2026, 4, 9, tzinfo=UTC).timestamp()  # not 60 s
    # The midnight is the zone's: 15:30 UTC is already the 11th in UTC+10.
    plus10 = timezone(timedelta(hours=10))
    assert normalize_due("1 day", NOW, plus10) == datetime(2026, 3, 12, tzinfo=plus10).timestamp()
    # The server's own zone when none is given (as xyOps).
    local = datetime.fromtimestamp(NOW + DAY).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    assert normalize_due("1 day", NOW) == int(local)


def test_absolute_epochs_and_none() -> None:
    assert normalize_due(1_767_225_600, NOW) == 1_767_225_600
    assert normalize_due("1767225600", NOW) == 1_767_225_600
    for nothing in (None, "", 0, "0"):
        assert normalize_due(nothing, NOW) == 0
    for bad in ("2026-01-01", "next week", -5, True, [1], {"d": 1}, float("inf"), 2**60):
        with pytest.raises(DueError):
            normalize_due(bad, NOW)


STORED = {"id": "t1", "subject": "Disk full", "body": "text", "type": "issue", "status": "open", "category": "",
          "server": "", "assignees": ["ann", "bob"], "cc": [], "notify": [], "due": 0, "tags": ["a", "b"]}  # fmt: skip


def test_detect_one_change_per_changed_key() -> None:
    update = {"subject": "Disk full", "body": "new text", "status": "closed", "assignees": ["bob", "ann"],
              "tags": ["b", "c"], "due": 0, "cc": ["carl"], "category": ""}  # fmt: skip
    found = detect(STORED, update, username="ann", date=100)
    assert [c["key"] for c in found] == ["body", "status", "cc", "tags"]  # TRACKED order; reordering is no change
    assert found[0] == {"type": "change", "username": "ann", "date": 100, "key": "body"}  # body: no value
    assert found[1]["value"] == "closed" and found[3]["value"] == ["b", "c"]
    assert detect(STORED, {"subject": "Other"}, username="x", date=1)[0]["value"] == "Other"
    assert detect(STORED, {"due": None, "server": None}, username="x", date=1) == []  # 0, None, "" are alike


def test_drafts_stay_quiet() -> None:
    draft = {**STORED, "status": "draft"}
    assert detect(draft, {"subject": "Changed"}, username="x", date=1) == []  # ⚠ xyOps records this one
    assert detect(STORED, {"status": "draft", "subject": "Changed"}, username="x", date=1) == []
    assert is_quiet(draft, {}) and not is_quiet(draft, {"status": "open"})
    opened = detect(draft, {"status": "open", "subject": "Changed"}, username="x", date=1)
    assert [c["key"] for c in opened] == ["subject", "status"]


def _at(minute: int, second: int) -> float:
    return datetime(2026, 3, 10, 12, minute, second, tzinfo=UTC).timestamp()


def test_collapse_keeps_the_last_entry_per_key_and_calendar_minute() -> None:
    changes = [
        {"type": "change", "key": "created", "date": _at(0, 0)},
        {"type": "change", "key": "subject", "value": "a", "date": _at(0, 1)},
        {"type": "comment", "id": "c1", "body": "hi", "date": _at(0, 2)},
        {"type": "change", "key": "subject", "value": "b", "date": _at(0, 59)},
        {"type": "change", "key": "status", "value": "closed", "date": _at(0, 30)},
        {"type": "change", "key": "subject", "value": "c", "date": _at(1, 0)},  # the next calendar minute
        {"type": "change", "key": "delete", "date": _at(1, 5)},
        {"type": "change", "key": "delete", "date": _at(1, 6)},
        {"type": "comment", "id": "c2", "body": "again", "date": _at(1, 7)},
    ]
    kept = collapse(changes, UTC)
    assert [(c.get("key"), c.get("value"), c.get("id")) for c in kept] == [
        ("created", None, None), (None, None, "c1"), ("subject", "b", None), ("status", "closed", None),
        ("subject", "c", None), ("delete", None, None), ("delete", None, None), (None, None, "c2"),
    ]  # fmt: skip
    assert collapse(kept, UTC) == kept  # idempotent: applied to the whole history on every update
    assert collapse([], UTC) == []


def test_collapse_uses_the_minute_of_the_zone() -> None:
    a = {"key": "subject", "date": _at(0, 10)}
    b = {"key": "subject", "date": _at(0, 50)}
    assert collapse([a, b], timezone(timedelta(minutes=30))) == [b]
    assert collapse([a, b], timezone(timedelta(seconds=30))) == [a, b]  # 12:00:40 and 12:01:20 there


def test_clean_checks_every_field() -> None:
    got = clean({"subject": "A <b>bold</b>\n claim", "body": "x<script>y</script>z", "type": "feature",
                 "status": "draft", "assignees": ["ann", "ann", "bob"], "due": "1 day", "num": 5, "username": "eve",
                 "changes": [], "files": [{"path": "users/x"}], "jobs": ["j1"], "category": " cat "},
                NOW)  # fmt: skip
    assert got == {"subject": "A bold claim", "body": "xz", "type": "feature", "status": "draft",
                   "category": "cat", "assignees": ["ann", "bob"],
                   "due": normalize_due("1 day", NOW)}  # fmt: skip
    refusals: list[tuple[dict[str, Any], str]] = [
                ({"type": "bug"}, "Unknown ticket type: bug"), ({"status": "gone"}, "Unknown ticket status: gone"),
                ({"assignees": "ann"}, "Malformed ticket parameter: assignees"),
                ({"cc": [1]}, "Malformed ticket parameter: cc"), ({"tags": [""]}, "Malformed ticket parameter: tags"),
                ({"notify": ["a" * 300]}, "Malformed ticket parameter: notify"),
                ({"events": [{"x": 1}]}, "Malformed ticket parameter: events"),
                ({"due": "someday"}, "Malformed ticket parameter: due"),
                ({"body": "x" * (256 * 1024 + 1)}, "Malformed ticket parameter: body"),
                ({"subject": ["a"]}, "Malformed ticket parameter: subject"),
                ({"tags": [f"t{i}" for i in range(101)]}, "Malformed ticket parameter: tags")]  # fmt: skip
    for params, message in refusals:
        with pytest.raises(TicketError) as caught:
            clean(params, NOW)
        assert (caught.value.code, caught.value.message) == ("ticket", message)


@pytest.mark.parametrize(("markdown", "safe"), [
    ("a < b && c > d", "a < b && c > d"),
    ("**bold** <b>x</b> `code`", "**bold** x `code`"),
    ("before<script>alert(1)</script>after", "beforeafter"),
    ("&lt;script&gt;alert(1)&lt;/script&gt;", ""),
    ("<img src=x onerror=alert(1)>text", "text"),
    ("<<script>script>alert(1)<</script>/script>", ""),
    ("ok<!-- hidden --> <style>p{}</style>", "ok "),
    ("<iframe src=//evil></iframe>[link](https://example.com)", "[link](https://example.com)"),
])  # fmt: skip
def test_sanitize_markdown(markdown: str, safe: str) -> None:
    assert sanitize_markdown(markdown) == safe
    assert sanitize_markdown(safe) == safe
    assert "<" not in sanitize_markdown(markdown).replace("a < b", "")


def test_strip_html_subject() -> None:
    assert strip_html("Disk <i>full</i> on <host>") == "Disk full on"


def test_log_excerpt_keeps_first_and_last_ten_lines() -> None:
    output = "\x1b[31mred\x1b[0m\n```\n" + "\n".join(f"line {i}" for i in range(30))
    lines = log_excerpt(output).split("\n")
    assert lines[0] == "red" and SNIP in lines and len(lines) == 21 and lines[-1] == "line 29"
    assert log_excerpt("one\ntwo") == "one\ntwo"


def test_generated_bodies_and_subjects() -> None:
    job = {"id": "jx1", "code": 3, "description": "<b>bad</b> exit", "event": "e1"}
    data = {"job": job, "event": {"title": "Nightly"}, "category": {"title": "Ops"}, "plugin": {"title": "Shell"},
            "nice_server": "host1", "display": {}, "links": {"job_details": "http://x/#Job?id=jx1"},
            "log_excerpt": "boom"}  # fmt: skip
    body = job_body(job, data)
    assert "Nightly" in body and "boom" in body and "<b>" not in body and "Subject:" not in body
    assert "n/a" in body  # missing values, as xyOps shows them
    assert job_subject(job, {"title": "Nightly"}) == "Job #jx1 failed with code: 3 (Nightly)"
    assert job_subject({"id": "j2", "code": 0}, None) == "Job #j2 succeeded (n/a)"
    assert alert_subject({"def": {"title": "High load"}, "nice_server": "web1"}) == "Alert: High load on web1"
