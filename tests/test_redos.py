"""Regular expressions from users cannot stall a node: the ReDoS repro of the reliability report, run through a
real in-process primary, and the refusals (lookaround, backreferences, length) at every place a pattern is
stored. Also the search query bounds, through the API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster.patterns import MAX_PATTERN_CHARS, MAX_TEXT_BYTES
from storage.families import EVENTS
from tests.authkit import Site, ok

Headers = dict[str, str]
UNSUPPORTED = "is not a supported regular expression (lookahead, lookbehind and backreferences are not supported)"


def event_body(**changes: Any) -> dict[str, Any]:
    body = {"title": "redos", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
            "algo": "random", "params": {"script": "#!/bin/sh\n"},
            "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
    body.update(changes)
    return body


async def default_user(site: Site, admin: Headers) -> Headers:
    """A user with only the privileges a new user gets (create/edit events, run jobs)."""
    body = {"username": "mallory", "email": "m@example.com", "full_name": "M", "password": "pw-mallory",
            "privileges": {"create_events": True, "edit_events": True, "run_jobs": True}}  # fmt: skip
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login("mallory", "pw-mallory")
    return {"X-Session-ID": sid}


def refused(status: int, data: dict[str, Any], *fragments: str) -> None:
    assert (status, data.get("code")) == (400, "api"), (status, data)
    for fragment in fragments:
        assert fragment in data["description"], (fragment, data["description"])


async def test_redos_value_is_answered_at_once_and_the_node_keeps_serving(site: Site, admin: Headers) -> None:
    user = await default_user(site, admin)
    field = {"id": "x", "type": "text", "title": "X", "regex": "(a+)+$"}
    event = (await ok(site, "create_event", event_body(id="redos", fields=[field]), user))["event"]
    # 64 a's: exponential backtracking would never finish (25 took 3.6 s and deposed the primary).
    evil = {"id": event["id"], "params": {"x": "a" * 64 + "!"}}
    started = time.perf_counter()
    (status, data), (ping_status, _) = await asyncio.gather(site.call("run_event", evil, headers=user),
                                                            site.call("ping", method="GET"))  # fmt: skip
    elapsed = time.perf_counter() - started
    print(f"run_event with the ReDoS value and a concurrent ping answered in {elapsed * 1000:.1f} ms")
    refused(status, data, "Event fields: parameter 'x' value is invalid.")
    assert ping_status == 200
    assert site.node.is_primary
    # A value the pattern accepts still runs.
    assert (await ok(site, "run_event", {"id": event["id"], "params": {"x": "aaa"}}, user))["id"]


async def test_a_costly_match_runs_off_the_event_loop(site: Site, admin: Headers) -> None:
    """The most expensive pattern allowed against the largest value allowed: pings answer meanwhile."""
    field = {"id": "x", "type": "text", "title": "X", "regex": ".{0,1000}x"}
    event = (await ok(site, "create_event", event_body(fields=[field]), admin))["event"]
    run = asyncio.create_task(site.call("run_event", {"id": event["id"], "params": {"x": "é" * (MAX_TEXT_BYTES // 2)}},
                                        headers=admin))  # fmt: skip
    pings: list[float] = []
    while not run.done():
        started = time.perf_counter()
        assert (await site.call("ping", method="GET"))[0] == 200
        pings.append(time.perf_counter() - started)
    status, data = await run
    refused(status, data, "parameter 'x' value is invalid")
    print(f"{len(pings)} pings during the match, slowest {max(pings, default=0) * 1000:.1f} ms")
    assert pings  # the node answered while the match ran
    # One byte more than the bound is refused with a reason, not matched in part.
    too_long = {"id": event["id"], "params": {"x": "a" * (MAX_TEXT_BYTES + 1)}}
    refused(*await site.call("run_event", too_long, headers=admin),
            f"parameter 'x' value is too long to check against its pattern (at most {MAX_TEXT_BYTES} bytes)",
            )  # fmt: skip


async def test_refused_patterns_name_the_field(site: Site, admin: Headers) -> None:
    user = await default_user(site, admin)
    cases = (("^(?=.*\\d)\\w+$", "lookahead (?="), ("(?<!x)y", "lookbehind (?<!"), ("(a)\\1", "backreference \\1"),
             ("((a{1000}){1000}){1000}", "invalid repetition size"))  # fmt: skip
    for regex, reason in cases:
        fields = [{"id": "ok", "type": "text", "title": "Fine", "regex": "^\\w+$"},
                  {"id": "bad", "type": "text", "title": "Bad", "regex": regex}]  # fmt: skip
        refused(*await site.call("create_event", event_body(fields=fields), headers=user),
                f"Parameter 'fields[1].regex' {UNSUPPORTED}: ", reason)  # fmt: skip
    long_field = [{"id": "x", "type": "text", "title": "X", "regex": "a" * (MAX_PATTERN_CHARS + 1)}]
    status, data = await site.call("create_event", event_body(fields=long_field), headers=user)
    too_long = f"Parameter 'fields[0].regex' is too long for a regular expression (at most {MAX_PATTERN_CHARS} "
    refused(status, data, too_long)
    # Updates are checked the same way and leave the event as it was.
    event = (await ok(site, "create_event", event_body(), user))["event"]
    bad = [{"id": "x", "type": "text", "title": "X", "regex": "(?=a)"}]
    refused(*await site.call("update_event", {"id": event["id"], "fields": bad}, headers=user), "'fields[0].regex'")
    assert (await ok(site, "get_event", {"id": event["id"]}, user))["event"]["fields"] == []
    # JavaScript syntax that RE2 runs once translated is accepted.
    js = [{"id": "code", "type": "text", "title": "Code", "regex": "^\\u0041(?<n>\\d+)$"}]
    translated = (await ok(site, "create_event", event_body(fields=js), user))["event"]
    assert await ok(site, "run_event", {"id": translated["id"], "params": {"code": "A12"}}, user)
    refused(*await site.call("run_event", {"id": translated["id"], "params": {"code": "B12"}}, headers=user),
            "parameter 'code' value is invalid")  # fmt: skip


async def test_plugin_params_and_group_patterns_are_checked(site: Site, admin: Headers) -> None:
    plugin = {"id": "probe", "title": "Probe", "type": "event", "command": "/bin/true",
              "params": [{"id": "host", "title": "Host", "type": "text", "regex": "^(?!localhost)"}]}  # fmt: skip
    refused(*await site.call("create_plugin", plugin, headers=admin), f"Parameter 'params[0].regex' {UNSUPPORTED}")
    plugin["params"][0]["regex"] = "^[a-z.]+$"  # type: ignore[index]
    await ok(site, "create_plugin", plugin, admin)
    group = {"id": "web", "title": "Web", "hostname_match": "^web(?=\\d)"}
    refused(*await site.call("create_group", group, headers=admin), f"Parameter 'hostname_match' {UNSUPPORTED}")
    await ok(site, "create_group", {**group, "hostname_match": "^web\\d"}, admin)
    refused(*await site.call("update_group", {"id": "web", "hostname_match": "(a)\\1"}, headers=admin),
            "'hostname_match'", "backreference")  # fmt: skip


async def test_a_stored_pattern_that_is_no_longer_accepted_is_a_clear_error(site: Site, admin: Headers) -> None:
    event = (await ok(site, "create_event", event_body(), admin))["event"]
    legacy = {**event, "fields": [{"id": "x", "type": "text", "title": "X", "regex": "^(?=a)"}]}
    await site.node.stores.defs.replace(site.node.fence(), EVENTS, legacy, event["revision"])
    refused(*await site.call("run_event", {"id": event["id"], "params": {"x": "a"}}, headers=admin),
            "Event fields: parameter 'x' has a pattern that cannot be used: it is not a supported regular "
            "expression")  # fmt: skip


async def test_search_queries_are_bounded(site: Site, admin: Headers) -> None:
    for api in ("search_jobs", "search_activity"):
        status, data = await site.call(api, {"query": "(" * 2000 + "a" + ")" * 2000}, headers=admin)
        refused(status, data, "query is nested too deeply")
        status, data = await site.call(api, {"query": "(" * 3000 + "a" + ")" * 3000}, headers=admin)
        refused(status, data, "'query' must be at most 4096 characters")  # the declared bound
    assert site.node.is_primary
