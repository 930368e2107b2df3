"""The expression check (the real compiler) and its use on event target expressions."""

from __future__ import annotations

import pytest

from cluster.expressions import ExpressionError, check
from tests.authkit import Site

GOOD = [
    'cpu.cores > 2 && hostname in "web1"',
    "memory.available < (memory.total * 0.05)",
    "monitors.load_avg >= (cpu.cores + 1)",
    "a ? b : c",
    "a ?: c",
    'tags|includes(",")',
    "x in [1, 2]",
    "!enabled",
    'a["b"].c',
    "count(a)",
    "min(1, 'two')",
    "[]",
    "{}",
    "-1 + -2",
]
# `=~` and unary `+` are not JEXL 2.3 (jexl refuses them too); unknown functions are refused when saved, where
# jexl would fail each evaluation ("Jexl Function f is not defined").
BAD = ["cpu.cores >> (", "a &&", "(a", "a)", "a b", '"unterminated', "", "   ", "a .", "x ||| y", "()", "f(",
       "a[1", "a]", "a | 1", "#", 'hostname =~ "web"', "-1 + +2", "f()", 'tags|join(",")', "a.b(1)"]  # fmt: skip


@pytest.mark.parametrize("text", GOOD)
def test_valid_expressions_pass(text: str) -> None:
    check(text)


@pytest.mark.parametrize("text", BAD)
def test_invalid_expressions_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        check(text)


async def test_event_expression_is_checked(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    body = {"title": "Targeted", "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
            "algo": "random", "params": {"script": "#!/bin/sh\n"}, "expression": "cpu.cores >"}  # fmt: skip
    status, data = await site.call("create_event", body, headers=admin)
    assert status == 400 and "'expression'" in data["description"]
    status, data = await site.call("create_event", {**body, "expression": "cpu.cores > 2"}, headers=admin)
    assert status == 200 and data["event"]["expression"] == "cpu.cores > 2"
