"""The handler registry (one place decides read vs write) and the transport's parameter assembly."""

from __future__ import annotations

import inspect

import pytest

from api import handlers  # noqa: F401 - importing registers every handler
from api.call import Call
from api.registry import ADMIN, AUTH, HANDLERS, NONE, TEST_HANDLERS, Handler, Params, Registry, Reply
from api.transport import RESERVED, assemble, split_reserved


async def _noop(call: Call) -> Reply:
    return {}


async def _other(call: Call) -> Reply:
    return {"other": True}


# -- Registry ----------------------------------------------------------------------------------------


def test_add_and_get() -> None:
    reg = Registry()
    assert reg.add("thing", write=False, privilege=NONE)(_noop) is _noop
    handler = reg.get("app", "thing")
    assert handler is not None
    assert (handler.ns, handler.name, handler.func) == ("app", "thing", _noop)
    assert reg.get("user", "thing") is None
    assert reg.get("app", "missing") is None
    assert len(reg) == 1


def test_duplicate_declaration_raises() -> None:
    reg = Registry()
    reg.add("thing", write=False, privilege=NONE)(_noop)
    with pytest.raises(ValueError, match="app/thing declared twice"):
        reg.add("thing", write=True, privilege=ADMIN)(_other)
    # The first declaration stands.
    handler = reg.get("app", "thing")
    assert handler is not None and handler.func is _noop and handler.write is False


def test_same_name_in_other_namespace_is_distinct() -> None:
    reg = Registry()
    reg.add("login", write=False, privilege=NONE)(_noop)
    reg.add("login", write=False, privilege=NONE, ns="user")(_other)
    app_h, user_h = reg.get("app", "login"), reg.get("user", "login")
    assert app_h is not None and user_h is not None
    assert app_h.func is _noop and user_h.func is _other


def test_param_style_defaults() -> None:
    reg = Registry()
    reg.add("r", write=False, privilege=NONE)(_noop)
    reg.add("w", write=True, privilege=ADMIN)(_noop)
    reg.add("run", write=True, privilege="run_jobs", params=Params.RUN)(_noop)
    reg.add("rw", write=False, privilege=AUTH, params=Params.WRITE)(_noop)
    styles = {h.name: h.params for h in reg}
    assert styles == {"r": Params.READ, "w": Params.WRITE, "run": Params.RUN, "rw": Params.WRITE}


def test_iteration_is_sorted() -> None:
    reg = Registry()
    for ns, name in [("user", "b"), ("app", "z"), ("app", "a"), ("user", "a")]:
        reg.add(name, write=False, privilege=NONE, ns=ns)(_noop)
    assert [(h.ns, h.name) for h in reg] == [("app", "a"), ("app", "z"), ("user", "a"), ("user", "b")]


def test_merged_combines_without_mutating() -> None:
    before_main, before_test = len(HANDLERS), len(TEST_HANDLERS)
    merged = HANDLERS.merged(TEST_HANDLERS)
    assert len(merged) == before_main + before_test
    assert {(h.ns, h.name) for h in merged} == {(h.ns, h.name) for h in HANDLERS} | {
        (h.ns, h.name) for h in TEST_HANDLERS
    }
    assert merged.get("app", "test_crash") is not None and merged.get("app", "ping") is not None
    # The sources are untouched.
    assert (len(HANDLERS), len(TEST_HANDLERS)) == (before_main, before_test)
    assert HANDLERS.get("app", "test_crash") is None
    assert TEST_HANDLERS.get("app", "ping") is None
    # Same Handler objects, not copies with other flags.
    for handler in HANDLERS:
        assert merged.get(handler.ns, handler.name) is handler


def test_merged_refuses_overlap() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        HANDLERS.merged(HANDLERS)
    a, b = Registry(), Registry()
    a.add("x", write=False, privilege=NONE)(_noop)
    b.add("x", write=True, privilege=ADMIN)(_other)
    with pytest.raises(ValueError, match="app/x declared twice"):
        a.merged(b)


def test_test_hooks_are_not_production_handlers() -> None:
    production = {(h.ns, h.name) for h in HANDLERS}
    # xyOps' own API has a few `test_*` calls (they exercise a stored object); no test hook may leak in.
    xyops_tests = {"test_web_hook", "test_monitor", "test_alert", "test_monitor_plugin", "test_scheduler_plugin",
                   "test_internal_job"}  # fmt: skip
    assert all(not h.name.startswith("test_") or h.name in xyops_tests for h in HANDLERS)
    assert {(h.ns, h.name) for h in TEST_HANDLERS}.isdisjoint(production)


# -- the production declarations -------------------------------------------------------------------------


def _every_handler() -> list[Handler]:
    return [*HANDLERS, *TEST_HANDLERS]


def _handler_id(handler: Handler) -> str:
    return f"{handler.ns}/{handler.name}"


@pytest.mark.parametrize("handler", _every_handler(), ids=_handler_id)
def test_every_handler_is_fully_declared(handler: Handler) -> None:
    assert handler.ns in ("app", "user")
    assert handler.name.isidentifier()
    assert type(handler.write) is bool
    privilege = handler.privilege
    assert privilege is None or privilege in (AUTH, ADMIN) or privilege.isidentifier(), privilege
    assert isinstance(handler.params, Params)
    assert inspect.iscoroutinefunction(handler.func)


def test_registry_is_not_empty() -> None:
    assert len(HANDLERS) >= 3
    assert len(TEST_HANDLERS) >= 2


@pytest.mark.parametrize("name", ["ping", "echo", "error"])
def test_liveness_calls_are_open_reads(name: str) -> None:
    handler = HANDLERS.get("app", name)
    assert handler is not None
    assert handler.write is False
    assert handler.privilege is None
    assert handler.params is Params.READ


def test_test_hooks_declarations() -> None:
    write = TEST_HANDLERS.get("app", "test_fenced_write")
    crash = TEST_HANDLERS.get("app", "test_crash")
    assert write is not None and crash is not None
    assert write.write is True and write.params is Params.WRITE and write.privilege is None
    assert crash.write is False and crash.params is Params.READ


# -- assemble / split_reserved -------------------------------------------------------------------------


BODY = {"a": "body", "b": 1, "nested": {"k": "v"}}
QUERY = {"a": "query", "q": "2"}


def test_assemble_read_query_wins() -> None:
    assert assemble(Params.READ, dict(BODY), dict(QUERY)) == {"a": "query", "b": 1, "nested": {"k": "v"}, "q": "2"}


def test_assemble_write_body_only() -> None:
    assert assemble(Params.WRITE, dict(BODY), dict(QUERY)) == BODY


def test_assemble_run_body_wins() -> None:
    assert assemble(Params.RUN, dict(BODY), dict(QUERY)) == {"a": "body", "b": 1, "nested": {"k": "v"}, "q": "2"}


@pytest.mark.parametrize("style", list(Params))
def test_assemble_does_not_mutate_inputs(style: Params) -> None:
    body, query = dict(BODY), dict(QUERY)
    assemble(style, body, query)
    assert body == BODY and query == QUERY


@pytest.mark.parametrize("style", list(Params))
def test_assemble_empty(style: Params) -> None:
    assert assemble(style, {}, {}) == {}


def test_split_reserved() -> None:
    pairs = [
        ("api_key", "k"), ("keep", 1), ("session_id", "s"), ("csrf_token", "c"),
        ("cachebust", "9"), ("pretty", "1"), ("other", None),
    ]  # fmt: skip
    params, reserved = split_reserved(pairs)
    assert params == {"keep": 1, "other": None}
    assert reserved == {"api_key": "k", "session_id": "s", "csrf_token": "c", "cachebust": "9", "pretty": "1"}


def test_reserved_set() -> None:
    assert frozenset({"api_key", "session_id", "csrf_token", "cachebust", "pretty"}) == RESERVED


def test_split_reserved_is_exact_match() -> None:
    params, reserved = split_reserved([("API_KEY", "x"), ("api_key_id", "y"), ("pretty_name", "z")])
    assert params == {"API_KEY": "x", "api_key_id": "y", "pretty_name": "z"}
    assert reserved == {}


def test_split_reserved_empty() -> None:
    assert split_reserved([]) == ({}, {})


# -- calls of the node process's primary services (an HTTP worker hands them on: api/workers.py) ---------------

_SERVICE_USES = ("_dispatcher(call)", "internal_jobs(call)", "_launch(call", "call.node.dispatcher",
                 "call.node.internal",
                 "call.node.maintenance", "call.node.actions", "call.node.alerting")  # fmt: skip


def test_every_call_of_a_primary_service_is_marked_service() -> None:
    """A handler that reaches a service held in the node process's memory must say so, or a worker would run it
    without the service (and answer as if the node had none)."""
    uses, marked = set(), set()
    for handler in HANDLERS.merged(TEST_HANDLERS):
        source = inspect.getsource(handler.func)
        if any(use in source for use in _SERVICE_USES):
            uses.add(handler.name)
        if handler.service:
            marked.add(handler.name)
            assert handler.write, f"{handler.name}: a service call changes something, so it is a write"
    assert uses, "the check found no service call at all: its patterns are out of date"
    assert uses == marked
