"""The `{{ }}` template renderer: paths, expressions, functions, literal braces and the compile check."""

from __future__ import annotations

import pytest

from cluster.expressions.templates import check, render

DATA = {
    "text": "hello world",
    "job": {"id": "jabc", "code": 0, "ok": True, "elapsed": 2.0, "rate": 1.5, "tags": ["a", "b"]},
    "hook": {"headers": [{"name": "X-A", "value": "1"}]},
    "url": "https://example.com/base",
    "secrets": {"TOKEN": "s3cr&t"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{text}}", "hello world"),
        ("id={{ job.id }} code={{job.code}}", "id=jabc code=0"),
        ("{{job.ok}} {{job.elapsed}} {{job.rate}}", "true 2 1.5"),
        ("{{job.tags[1]}}/{{job.tags.0}}/{{hook.headers.0.name}}", "b/a/X-A"),
        ("{{job.tags}}", '["a","b"]'),
        ("[{{missing}}|{{job.missing.deeper}}|{{job.tags[5]}}|{{text.x}}]", "[|||]"),
        ("{{ encode(secrets.TOKEN) }}", "s3cr%26t"),
        ("{{stringify(job.tags)}} {{stringify(nothing)}}", '["a","b"] null'),
        ("{{integer(job.rate)}} {{float(job.elapsed)}} {{integer(text)}}", "1 2 0"),
        ('{"a": {"b": 1}}', '{"a": {"b": 1}}'),  # a stray }} is plain text
        ('{"t": {{stringify(text)}}}', '{"t": "hello world"}'),
        ("no placeholders", "no placeholders"),
        # Full expressions (the former "paths and four helpers only" limitation is lifted).
        ("{{ job.code + 1 }} {{ job.code == 0 ? 'ok' : 'no' }} {{ 'literal' }}", "1 ok literal"),
        ("{{ job.tags[.length > 0] }} {{ count(job.tags) }} {{ 'b' in job.tags }}", '["a","b"] 2 true'),
        ("{{ bytes(1048576) }} {{ pct(0.5, 1) }} {{ number(1234567) }}", "1 MB 50% 1,234,567"),
        ("{{ hook['headers'][0].value }}|{{ {a: job.id} }}|{{ job.none ?: 'dflt' }}", '1|{"a":"jabc"}|dflt'),
    ],
)
def test_render(template: str, expected: str) -> None:
    check(template)
    assert render(template, DATA) == expected


def test_values_are_never_expanded_again() -> None:
    assert render("{{a}}", {"a": "{{b}}", "b": "secret"}) == "{{b}}"


def test_escape_and_raw_start() -> None:
    def enc(s: str) -> str:
        return s.replace(" ", "%20")

    assert render("{{url}}/q?t={{text}}", DATA, enc, raw_start=True) == "https://example.com/base/q?t=hello%20world"
    assert render("x{{text}}", DATA, enc, raw_start=True) == "xhello%20world"
    assert render("{{text}}", DATA, enc) == "hello%20world"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{text", "unclosed '{{' at position 0"),
        ("ok }} then {{ more", "unclosed '{{' at position 11"),
        ("a {{}} b", "empty placeholder"),
        ("{{   }}", "empty placeholder"),
        ("{{ a + }}", "unsupported expression 'a +' at position 0: the expression ends"),
        ("x {{ job.code == 0 ? 'ok' }}", "unsupported expression 'job.code == 0 ? 'ok'' at position 2"),
        ("{{ 'literal }}", "unterminated string"),
        ("{{ __import__('os') }}", "unknown function '__import__'"),
        ("{{ eval(text) }}", "unknown function 'eval'"),
        ("{{{x}}}", "unsupported expression '{x'"),
    ],
)
def test_check_refuses(template: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check(template)
    assert message in str(info.value)


def test_paths_never_reach_attributes() -> None:
    class Thing:
        secret = "hidden"

    assert render("{{obj.secret}}|{{text.upper}}|{{obj.__class__}}", {"obj": Thing(), "text": "x"}) == "||"


def test_evaluation_errors_render_in_place() -> None:
    assert render("a {{ match(text, '(?=x)') }} b", DATA) == (
        "a (error: match(): the pattern is not a supported regular expression (lookahead, lookbehind and "
        "backreferences are not supported): lookahead (?= at position 0) b")


def test_lookups_for_server_and_event() -> None:
    functions = {"server": lambda i: {"s1": "web1"}.get(i, i), "event": lambda i: None}
    assert render("{{ server('s1') }}/{{ server('s2') }}/{{ event('e') }}", DATA, functions=functions,
                  missing="n/a") == "web1/s2/n/a"  # fmt: skip
