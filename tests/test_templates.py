"""The `{{ }}` template renderer: paths, helpers, literal braces and the compile check."""

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
        ("{{ a + b }}", "unsupported expression 'a + b'"),
        ("{{ job.code == 0 ? 'ok' : 'no' }}", "unsupported expression"),
        ("{{ 'literal' }}", "unsupported expression"),
        ("{{ __import__('os') }}", "unsupported expression"),
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
