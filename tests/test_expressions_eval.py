"""The expression language: its API, its bounds (compile time and evaluation), its safety and its speed."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from cluster.dispatch.selection import available
from cluster.expressions import (
    EvaluationError,
    Expression,
    ExpressionError,
    check,
    compile_expression,
    evaluate,
    render_template,
    server_filter,
    to_text,
    truthy,
)
from cluster.expressions.compiler import MAX_STEPS
from cluster.expressions.parser import MAX_DEPTH, MAX_NODES, MAX_SOURCE
from cluster.expressions.values import MAX_ITEMS, MAX_STRING

DATA: dict[str, Any] = {
    "monitors": {"load_avg": 5.5},
    "cpu": {"cores": 4},
    "processes": {"list": [{"command": "nginx", "memRss": 10}, {"command": "ffmpeg", "memRss": 20}]},
}


def test_api() -> None:
    expr = compile_expression("monitors.load_avg >= (cpu.cores + 1)")
    assert isinstance(expr, Expression)
    assert expr.source == "monitors.load_avg >= (cpu.cores + 1)"
    assert expr.evaluate(DATA) is True
    assert expr.evaluate({}) is False  # undefined >= NaN
    assert compile_expression("monitors.load_avg >= (cpu.cores + 1)") is expr  # cached
    assert evaluate("processes.list[.command == 'ffmpeg'].memRss", DATA) == 20
    assert evaluate("processes.list[.command == 'vim'].memRss", DATA) is None
    assert evaluate("{a: missing, b: [missing]}", {}) == {"a": None, "b": [None]}  # undefined comes out as None
    assert render_template("load {{float(monitors.load_avg)}} on {{cpu.cores}} cores", DATA) == "load 5.5 on 4 cores"
    check("a && b")
    with pytest.raises(ExpressionError):
        check("a &&")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, False), (0.0, False), (math.nan, False), ("", False), (None, False), (False, False), (1, True),
     ("0", True), ([], True), ({}, True), (-1.5, True), ("false", True)],
)  # fmt: skip
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, "true"), (3.0, "3"), (3, "3"), (1.5, "1.5"), (None, ""), ("x", "x"), ([1, "a"], '[1,"a"]'),
     ({"a": {"b": None}}, '{"a":{"b":null}}'), (1e21, "1e+21"), (0.0000001, "1e-7"), (math.nan, "NaN"),
     (2**60, "1152921504606847000")],
)  # fmt: skip
def test_to_text(value: Any, expected: str) -> None:
    assert to_text(value) == expected


@pytest.mark.parametrize(
    ("source", "position", "words"),
    [("1 +", 3, "ends where a value is expected"), ("a..b", 2, "a name after '.'"), ("'abc", 0, "unterminated"),
     ("a = 1", 2, "unexpected character '='"), ("f(1)", 0, "unknown function 'f'"), ("(1", 2, "expected ')'"),
     ("", 0, "empty"), ("1 2", 2, "unexpected '2'"), ("a ? b", 5, "':' of the ternary"),
     ("a.min(1)", 2, "called by its name alone"), ("{1: 2}", 1, "an object key")],
)  # fmt: skip
def test_compile_errors_say_where(source: str, position: int, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.position == position and words in str(info.value)
    assert f"at position {position}" in str(info.value)


# -- bounds at compile time ------------------------------------------------------------------------------------------


def test_source_length_bound() -> None:
    compile_expression("1" + " " * (MAX_SOURCE - 1))
    with pytest.raises(ExpressionError, match="longer than 4096"):
        compile_expression("1" + " " * MAX_SOURCE)


def test_node_count_bound() -> None:
    assert evaluate("count([" + "1," * (MAX_NODES - 10) + "])", {}) == MAX_NODES - 10
    with pytest.raises(ExpressionError, match=f"more than {MAX_NODES} parts"):
        compile_expression("[" + "1," * MAX_NODES + "]")


@pytest.mark.parametrize(
    "build",
    [lambda n: "(" * n + "1" + ")" * n, lambda n: "!" * n + "a", lambda n: "+".join(["1"] * n),
     lambda n: "a" + ".b" * n, lambda n: "a" + "[0]" * n, lambda n: "1 ? " * n + "1" + " : 2" * n,
     lambda n: "[" * n + "]" * n, lambda n: "min(" * n + ")" * n],
)  # fmt: skip
def test_depth_bound(build: Any) -> None:
    compile_expression(build(MAX_DEPTH // 2 - 1))
    with pytest.raises(ExpressionError, match=f"deeper than {MAX_DEPTH} levels"):
        compile_expression(build(MAX_DEPTH + 1))
    with pytest.raises(ExpressionError):  # far past the bound, the parser stops early (no RecursionError)
        compile_expression(build(1500)[:MAX_SOURCE])


# -- bounds at evaluation --------------------------------------------------------------------------------------------


def test_step_budget_bounds_filters() -> None:
    items = [{"x": i} for i in range(MAX_STEPS // 4)]  # `.x == 1` costs 3 steps per item
    assert evaluate("count(a[.x == 1])", {"a": items}) == 1
    with pytest.raises(EvaluationError, match="too many steps"):
        evaluate("count(a[.x == 1])", {"a": items * 2})
    few = [{"x": i} for i in range(400)]  # a filter nested in a filter: 400 x 400 x 3 steps
    with pytest.raises(EvaluationError, match="too many steps"):
        evaluate("count(a[.x >= 0 && count(a[.x == 1]) > 0])", {"a": few})


def test_step_budget_bounds_functions() -> None:
    assert evaluate("includes(a, -1)", {"a": list(range(MAX_STEPS - 10))}) is False
    with pytest.raises(EvaluationError, match="too many steps"):
        evaluate("includes(a, -1) || includes(a, -2)", {"a": list(range(MAX_STEPS - 10))})
    with pytest.raises(EvaluationError, match="too many steps"):
        evaluate("count(find(a, 'k', 'v')) + count(find(a, 'k', 'v'))", {"a": [{"k": "w"}] * (MAX_STEPS - 1)})


def test_string_bound() -> None:
    half = "x" * (MAX_STRING // 2)
    assert len(evaluate("s + s", {"s": half})) == MAX_STRING
    for source in ("s + s + 'y'", "stringify(big)", "big + ''", "encode(u)", "t + t", "'' + big"):
        with pytest.raises(EvaluationError, match=f"exceed {MAX_STRING} characters"):
            evaluate(source, {"s": half, "t": "é" * (MAX_STRING // 2 + 1), "big": [half, half], "u": "é" * 12000})


def test_array_bound() -> None:
    items = [{"x": 1}] * (MAX_ITEMS + 1)
    assert evaluate("count(a[.x == 2])", {"a": items}) == 0
    with pytest.raises(EvaluationError, match=f"exceed {MAX_ITEMS} items"):
        evaluate("a[.x == 1]", {"a": items})
    with pytest.raises(EvaluationError, match=f"exceed {MAX_ITEMS} items"):
        evaluate("find(a, 'x', 1)", {"a": items})


def test_nesting_bound_on_data() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(EvaluationError, match="deeper than"):
        evaluate("stringify(d)", {"d": deep})
    with pytest.raises(EvaluationError, match="deeper than"):
        evaluate("d + ''", {"d": deep})
    assert evaluate("count(d[0][0][0][0])", {"d": deep}) == 1


def test_functions_that_fail() -> None:
    with pytest.raises(EvaluationError, match="match\\(\\): the pattern"):
        evaluate("match(s, '(?=x)')", {"s": "x"})
    with pytest.raises(EvaluationError, match="match\\(\\): text is longer"):
        evaluate("match(s, 'x')", {"s": "x" * 70000})

    def broken(server_id: str) -> str:
        raise KeyError(server_id)

    with pytest.raises(EvaluationError, match="server\\(\\) failed \\(KeyError\\)"):
        evaluate("server('s1')", {}, {"server": broken})
    assert evaluate("server('s1') + '/' + event('e1')", {}) == "s1/undefined"  # no lookups given
    assert evaluate("server('s1')", {}, {"server": lambda i: f"host-{i}"}) == "host-s1"
    assert evaluate("event(id)", {"id": None}, {"event": lambda i: i}) is None


def test_data_is_never_an_error() -> None:
    for source in ("a.b.c", "a[0].b", "a[.x == 1].y", "n.x", "n[0]", "count(a.b)", "find(a, 'x', 1)",
                   "a + 1", "a.length", "a ? a.b : n.c", "min(a.b, n)", "bytes(a)", "pct(a)", "number(a)"):  # fmt: skip
        evaluate(source, {"n": None})


class _Secretive:
    secret = "hidden"

    def __getitem__(self, key: str) -> str:
        return "hidden"


@pytest.mark.parametrize(
    "source",
    ["obj.secret", "obj['secret']", "obj.__class__", "obj.__dict__", "text.upper", "text.__class__",
     "text['__len__']", "text.constructor", "arr.append", "arr.__class__", "obj[.secret == 'hidden']",
     "f.__globals__", "stringify(obj) + stringify(f)", "obj + ''", "count(obj)"],
)  # fmt: skip
def test_no_python_attributes(source: str) -> None:
    value = evaluate(source, {"obj": _Secretive(), "text": "abc", "arr": [1], "f": test_api})
    assert "hidden" not in str(value) and "function" not in str(value) and "class" not in str(value)


# -- server filter ---------------------------------------------------------------------------------------------------

SERVERS = [
    {"id": "s1", "hostname": "web1", "enabled": True, "groups": ["web"], "userData": {"rack": 3},
     "info": {"arch": "arm64", "cpu": {"cores": 8}}},
    {"id": "s2", "hostname": "web2", "enabled": True, "groups": ["web"], "userData": {"rack": 4},
     "info": {"arch": "x64", "cpu": {"cores": 2}}},
    {"id": "s3", "hostname": "db1", "enabled": True, "groups": ["db"], "info": {}},
]  # fmt: skip


def _ids(servers: list[Any]) -> list[str]:
    return [s["id"] for s in servers]


def test_server_filter() -> None:
    def chosen(source: str) -> list[str]:
        return _ids(available(SERVERS, groups={}, load={}, expression=server_filter(source)))

    assert chosen('info.arch == "arm64" && info.cpu.cores >= 4') == ["s1"]
    assert chosen("userData.rack > 3 || !userData") == ["s2", "s3"]
    assert chosen("'web' in groups") == ["s1", "s2"]
    assert chosen("match(hostname, '^db')") == ["s3"]
    assert chosen("info.gpu.count > 0") == []  # missing data is falsy, never an error
    assert chosen("userData.rack") == ["s1", "s2"]  # truthiness
    with pytest.raises(ExpressionError):
        server_filter("info.arch ==")
    failing = server_filter("match(hostname, '(?=x)')")
    with pytest.raises(EvaluationError):
        failing(SERVERS[0])
    assert _ids(available(SERVERS, groups={}, load={}, expression=failing)) == ["s1", "s2", "s3"]  # kept


# -- speed -----------------------------------------------------------------------------------------------------------


def test_speed_figures() -> None:
    """Prints how long one evaluation takes (no assertion on time)."""
    context = {"monitors": {"load_avg": 5.5}, "cpu": {"cores": 4},
               "processes": {"list": [{"command": f"p{i}", "memRss": i} for i in range(300)]}}  # fmt: skip
    for source in ("monitors.load_avg >= (cpu.cores + 1)", "processes.list[.command == 'p150'].memRss"):
        expr = compile_expression(source)
        runs = 20000 if "[" not in source else 500
        start = time.perf_counter()
        for _ in range(runs):
            expr.evaluate(context)
        elapsed = (time.perf_counter() - start) / runs * 1e6
        print(f"\n{source}: {elapsed:.2f} us per evaluation")
    start = time.perf_counter()
    for i in range(2000):
        compile_expression.__wrapped__(f"monitors.load_avg >= (cpu.cores + {i})")
    print(f"compile: {(time.perf_counter() - start) / 2000 * 1e6:.1f} us per expression")
    template = "CPU load average is too high: {{float(monitors.load_avg)}} ({{cpu.cores}} CPU cores)"
    start = time.perf_counter()
    for _ in range(20000):
        render_template(template, context)
    print(f"template: {(time.perf_counter() - start) / 20000 * 1e6:.2f} us per render")
