"""The evaluator's cost bounds on pathological inputs: conversions, `in`, templates, long digit strings, wide
objects, long strings and per-item patterns. Each input ran for seconds before these bounds; now it either
finishes with the right result or stops with EvaluationError (the figures are printed, never asserted)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from cluster.actions.webhook import run_web_hook
from cluster.expressions import EvaluationError, compile_expression, evaluate, render_template
from cluster.expressions.functions import COMPILE_STEPS
from cluster.expressions.templates import MAX_OUTPUT
from cluster.expressions.values import MAX_STRING
from cluster.monitoring.alerting import Alert

PROCS = [{"pid": i, "command": f"/usr/bin/some-long-command-name-{i} --flag --other-flag", "memRss": i}
         for i in range(1000)]  # fmt: skip
DATA: dict[str, Any] = {
    "processes": {"list": PROCS},
    "names": [f"conn-{i}-" + "x" * 20 for i in range(2000)],
    "conns": [{"pid": i} for i in range(2000)],
    "pids": list(range(2000)),
}


def timed(label: str, run: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return run()
    finally:
        print(f"{label}: {(time.perf_counter() - started) * 1000:.1f} ms")


def fails(source: str, data: Mapping[str, Any], words: str = "") -> None:
    with pytest.raises(EvaluationError, match=words):
        timed(source[:60], lambda: compile_expression(source).evaluate(data))


# -- 1: conversions and `in` are charged -------------------------------------------------------------------------


def test_array_conversion_per_item_is_charged() -> None:
    fails("count(processes.list[.command == names])", DATA, "too many steps")  # joins `names` per item
    fails("count(processes.list[.command < names])", DATA, "too many steps")
    fails("count(processes.list[.command + names])", DATA, "too many steps")
    assert evaluate("names == names[0]", {"names": ["a"]}) is True  # a small conversion is still exact
    assert evaluate("count(processes.list[.command == names[0]])", DATA) == 0


def test_in_scans_are_charged() -> None:
    fails("count(conns[.pid in pids])", DATA, "too many steps")  # 2,000 x 2,000 comparisons
    fails("count(conns[.pid in big])", {**DATA, "big": "y" * 1_000_000}, "too many steps")
    assert evaluate("count(conns[.pid in [1, 2, 3, '4']])", DATA) == 3
    assert evaluate("count(processes.list[.pid in few])", {**DATA, "few": list(range(40))}) == 40
    assert evaluate("count(processes.list['name-99 ' in .command])", DATA) == 1


# -- 2: one budget and an output cap per template render ---------------------------------------------------------


def test_template_shares_one_budget() -> None:
    message = "{{stringify(processes.list[0])}}" + "{{stringify(processes.list)}}" * 130  # a 4 KB alert message
    text = timed("4 KB message", lambda: render_template(message, DATA))
    assert text.startswith('{"pid":0,"command":"/usr/bin/some-long-command-name-0 --flag --other-flag","memRss":0}')
    assert text.endswith("(error: the expression takes too many steps)")  # the budget ran out part way


def test_template_output_is_capped() -> None:
    body = "{{stringify(hundred)}}" * (256 * 1024 // 22)  # a 256 KB web hook body
    with pytest.raises(EvaluationError, match="more than 262144 characters"):
        timed("256 KB body", lambda: render_template(body, {"hundred": PROCS[:100]}))
    half = {"text": "x" * (MAX_OUTPUT // 2)}
    assert len(render_template("{{text}}-{{text}}", half)) == MAX_OUTPUT + 1  # the literal text is not counted
    with pytest.raises(EvaluationError):
        render_template("{{text}}{{text}}{{text}}", half)
    escaped: list[int] = []

    def escape(text: str) -> str:
        escaped.append(len(text))
        return text

    with pytest.raises(EvaluationError):
        render_template("{{text}}{{text}}{{text}}", {"text": "x" * (MAX_OUTPUT // 2 + 1)}, escape)
    assert escaped == [MAX_OUTPUT // 2 + 1]  # the second value was refused before escaping it


def test_many_cheap_placeholders_still_render() -> None:
    template = "{{processes.list[0].pid}}," * 2000
    assert render_template(template, DATA) == "0," * 2000


def test_callers_take_their_error_path() -> None:
    alert = Alert.of({"id": "a1", "expression": "true", "message": "{{text}}{{text}}{{text}}"})
    assert alert.check({"text": "x" * (MAX_OUTPUT // 2)}) == "{{text}}{{text}}{{text}}"  # the raw message
    hook = {"id": "h1", "url": "http://127.0.0.1:9/x", "body": "{{text}}{{text}}{{text}}"}
    outcome = asyncio.run(run_web_hook(hook, {"text": "x" * (MAX_OUTPUT // 2)}, None))
    assert outcome.code == "webhook"
    assert "cannot be prepared" in outcome.description and "more than 262144 characters" in outcome.description


# -- 3: no exception but EvaluationError -------------------------------------------------------------------------

DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("source", "expected"),
    [("digits == 1", False), ("digits > 1", True), ("digits + 1", DIGITS + "1"), ("digits * 1", float("inf")),
     ("integer(digits)", float("inf")), ("float(digits)", float("inf")), ("number(digits)", "∞"),
     ("-digits", float("-inf")), ("zeros * 1", 5), ("list[digits]", None), ("list['²']", None),
     ("text[digits]", None), ("list['1']", 2)],
)  # fmt: skip
def test_long_digit_strings(source: str, expected: Any) -> None:
    data = {"digits": DIGITS, "zeros": "0" * 5000 + "5", "list": [1, 2], "text": "ab"}
    assert evaluate(source, data) == expected


class Hostile(Mapping[str, Any]):
    """A context whose reads fail: the evaluator must still raise only EvaluationError."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("secret data in the message")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("secret data in the message")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_stray_exceptions_become_evaluation_errors() -> None:
    with pytest.raises(EvaluationError, match=r"failed \(RuntimeError\)") as caught:
        compile_expression("a + 1").evaluate(Hostile())
    assert "secret" not in str(caught.value)
    assert render_template("[{{a}}]", Hostile()) == "[(error: the expression failed (RuntimeError))]"


# -- 4: wide objects -----------------------------------------------------------------------------------------------


def test_wide_objects() -> None:
    fails("stringify(obj)", {"obj": {str(i): i for i in range(20_000)}}, f"exceed {MAX_STRING} characters")
    fails("stringify(obj)", {"obj": {f"k{i}": i for i in range(20_000)}}, f"exceed {MAX_STRING} characters")
    obj = {"b": 1, "10": 2, "a": 3, "2": 4, "4294967295": 5, "01": 6}
    assert evaluate("stringify(obj)", {"obj": obj}) == '{"2":4,"10":2,"b":1,"a":3,"4294967295":5,"01":6}'
    wide = {str(i): i for i in range(3000, 0, -1)}
    assert evaluate("stringify(obj)", {"obj": wide}) == "{" + ",".join(f'"{i}":{i}' for i in range(1, 3001)) + "}"


# -- 5: long strings -----------------------------------------------------------------------------------------------


def test_long_strings() -> None:
    big = "é" * 5_000_000 + "😀" * 10
    assert timed("count(5M chars)", lambda: evaluate("count(big)", {"big": big})) == 5_000_020
    assert evaluate("big.length", {"big": big}) == 5_000_020
    fails("encode(big)", {"big": big}, f"exceed {MAX_STRING} characters")
    assert evaluate("encode(s)", {"s": "é 😀"}) == "%C3%A9%20%F0%9F%98%80"
    assert evaluate("a < b", {"a": "😀", "b": "\uffff"}) is True  # UTF-16 order: a surrogate sorts below U+FFFF
    assert evaluate("a < b", {"a": big[:100_000], "b": big[:100_000] + "x"}) is True
    fails("a < b", {"a": big, "b": big + "x"}, "too many steps")  # 10M characters to compare


# -- 6: a pattern per item -----------------------------------------------------------------------------------------


def test_match_compiles_are_charged() -> None:
    pats = [{"p": f"^a{i}b+$", "t": f"a{i}bb"} for i in range(1000)]
    fails("count(pats[match(.t, .p)])", {"pats": pats}, "too many steps")
    few = pats[: 100_000 // COMPILE_STEPS // 2]
    assert evaluate("count(pats[match(.t, .p)])", {"pats": few}) == len(few)
    assert evaluate("count(processes.list[match(.command, 'name-99 ')])", DATA) == 1  # one pattern, 1,000 items
