"""The expression corpus (tests/expressions_corpus.json): every expression of xyOps' docs, default monitors, alerts
and messages and its test suites, plus edge cases, with the value jexl 2.3.0 and xyOps' functions give it.

The expected values were recorded by evaluating each entry with the real thing (`npm install jexl@2.3.0 pixl-tools`
and a node script defining xyOps' functions); an entry with `ours` is a deliberate difference, `why` says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cluster.expressions import ExpressionError, compile_expression, render_template

CORPUS = json.loads((Path(__file__).parent / "expressions_corpus.json").read_text())
SPECIAL = {"undefined": None, "NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _server(server_id: str) -> str:
    found = CORPUS["lookups"]["servers"].get(server_id)
    return str(found.get("title") or found["hostname"]) if found else server_id


def _event(event_id: str) -> str | None:
    title = CORPUS["lookups"]["events"].get(event_id)
    return str(title) if title is not None else None


FUNCTIONS = {"server": _server, "event": _event}


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$"}:
        return SPECIAL[value["$"]]
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _same(got: Any, want: Any) -> bool:
    """Equal as JavaScript values: numbers by value (2 == 2.0, NaN == NaN), booleans only to booleans."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float) and isinstance(got, int | float):
        return (math.isnan(want) and math.isnan(got)) or float(got) == float(want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, Mapping) and isinstance(got, Mapping):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def _label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("expression", entry.get("template")))[:60]


@pytest.mark.parametrize("entry", CORPUS["entries"], ids=_label)
def test_corpus(entry: Mapping[str, Any]) -> None:
    context = CORPUS["contexts"][entry["context"]]
    want = entry.get("ours", entry["expected"])
    if isinstance(want, dict) and want.get("$") == "error":
        with pytest.raises(ValueError):  # ExpressionError, or the template check's ValueError
            if "template" in entry:
                render_template(entry["template"], context, functions=FUNCTIONS)
            else:
                compile_expression(entry["expression"]).evaluate(context, FUNCTIONS)
        return
    if "template" in entry:
        got = render_template(entry["template"], context, functions=FUNCTIONS)
    else:
        got = compile_expression(entry["expression"]).evaluate(context, FUNCTIONS)
    assert _same(got, _decode(want)), f"{_label(entry)!r}: got {got!r}, want {want!r}"


def test_corpus_covers_the_defaults_and_every_kind() -> None:
    entries = CORPUS["entries"]
    origins = {e["origin"] for e in entries}
    assert {"default monitors", "default alerts", "default alert messages", "event target expressions",
            "workflow docs", "monitor docs", "web hook docs"} <= origins  # fmt: skip
    assert len(entries) >= 500
    errors = [e for e in entries if isinstance(e.get("ours", e["expected"]), dict)
              and e.get("ours", e["expected"]).get("$") == "error"]  # fmt: skip
    assert 20 <= len(errors) < 60  # refusals are tested, but most of the corpus evaluates
    for entry in errors:
        if "expression" in entry:
            with pytest.raises(ExpressionError):
                compile_expression(entry["expression"]).evaluate(CORPUS["contexts"][entry["context"]], FUNCTIONS)
