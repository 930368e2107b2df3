"""The search query parser: every simple-syntax form, every PxQL operator, dates, ranges and errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from storage.search.query import MAX_DEPTH, MAX_QUERY_CHARS, And, Everything, Not, Or, QueryError, Range, Term, parse
from storage.search.spec import Column, IndexSpec, order_from_id

SPEC = IndexSpec(
    "jobs",
    [
        Column("event", "word"),
        Column("tags", "word"),
        Column("keywords", "text"),
        Column("date", "date", source="completed"),
        Column("elapsed", "number", scale=1000),
    ],
    default_column="keywords",
    sorters=["date", "elapsed"],
)
NO_DEFAULT = IndexSpec("plain", [Column("event", "word")])
NOW = datetime(2025, 3, 4, 15, 30, 45, tzinfo=UTC).timestamp()


def day(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=UTC).timestamp()


def q(text: str, spec: IndexSpec = SPEC) -> object:
    return parse(text, spec, now=NOW).root


# -- simple syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["*", "", "   ", "* *"])
def test_star_and_nothing_mean_everything(text: str) -> None:
    assert q(text) == Everything()


def test_column_value_is_lower_cased() -> None:
    assert q("event:Nightly_Backup") == Term("event", ("nightly_backup",))


def test_terms_are_and_ed() -> None:
    assert q("event:a tags:b") == And((Term("event", ("a",)), Term("tags", ("b",))))


def test_a_column_prefix_carries_to_the_next_words() -> None:
    assert q("tags:a b") == And((Term("tags", ("a",)), Term("tags", ("b",))))


def test_bare_words_go_to_the_default_column() -> None:
    assert q("foo event:x bar") == And((Term("keywords", ("foo",)), Term("event", ("x",)), Term("event", ("bar",))))


def test_pipe_is_or_within_a_column() -> None:
    assert q("tags:a|b|c") == Or(tuple(Term("tags", (v,)) for v in "abc"))


@pytest.mark.parametrize("text", ["tags:a | b", "tags: a|b", "tags:  a  |  b"])
def test_spaces_around_pipe_and_colon_are_tidied(text: str) -> None:
    assert q(text) == Or((Term("tags", ("a",)), Term("tags", ("b",))))


def test_minus_excludes_and_plus_requires() -> None:
    assert q("quick -lazy +fox") == And(
        (Term("keywords", ("quick",)), Not(Term("keywords", ("lazy",))), Term("keywords", ("fox",)))
    )


@pytest.mark.parametrize("text", ["-tags:x", "tags:-x"])
def test_minus_before_or_after_the_column(text: str) -> None:
    assert q(text) == Not(Term("tags", ("x",)))


def test_minus_applies_to_a_whole_pipe_group() -> None:
    assert q("tags:-a|b") == Not(Or((Term("tags", ("a",)), Term("tags", ("b",)))))


def test_quoted_phrase_keeps_word_order() -> None:
    assert q('keywords:"Big Cats" -"lazy dog"') == And(
        (Term("keywords", ("big", "cats")), Not(Term("keywords", ("lazy", "dog"))))
    )


def test_quoted_word_value_keeps_spaces() -> None:
    assert q('event:"My Event"') == Term("event", ("my event",))


def test_text_values_are_tokenised_like_the_indexer() -> None:
    assert q("keywords:10.0.0.1") == Term("keywords", ("10_0_0_1",))
    assert q("keywords:Nancy's") == Term("keywords", ("nancys",))
    assert q("keywords:foo-bar") == Term("keywords", ("foo", "bar"))


def test_quoted_phrases_in_an_or_group() -> None:
    assert q('"big cats"|"small dogs"') == Or((Term("keywords", ("big", "cats")), Term("keywords", ("small", "dogs"))))
    assert q('event:"a|b"|c') == Or((Term("event", ("a|b",)), Term("event", ("c",))))


# -- numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("elapsed:5", Range("elapsed", low=5, high=5)),
        ("elapsed:=5", Range("elapsed", low=5, high=5)),
        ("elapsed:>5", Range("elapsed", low=5, low_open=True)),
        ("elapsed:>=5", Range("elapsed", low=5)),
        ("elapsed:<5", Range("elapsed", high=5, high_open=True)),
        ("elapsed:<=5", Range("elapsed", high=5)),
        ("elapsed:>= 5", Range("elapsed", low=5)),
        ("elapsed:1.5..10", Range("elapsed", low=1.5, high=10)),
        ("elapsed:1 .. 10", Range("elapsed", low=1, high=10)),
        ("elapsed:-5", Range("elapsed", low=-5, high=-5)),
        ("elapsed:>=-5", Range("elapsed", low=-5)),
        ("elapsed:-5..-1", Range("elapsed", low=-5, high=-1)),
        ("-elapsed:5", Not(Range("elapsed", low=5, high=5))),
        ("elapsed:<1|>10", Or((Range("elapsed", high=1, high_open=True), Range("elapsed", low=10, low_open=True)))),
    ],
)
def test_number_forms(text: str, expected: object) -> None:
    assert q(text) == expected


# -- dates -------------------------------------------------------------------------------------------

MARCH_5 = day(2025, 3, 5)
MARCH_6 = day(2025, 3, 6)


@pytest.mark.parametrize("value", ["2025-03-05", "2025/03/05", "2025_03_05", "03-05-2025", "03/05/2025", "3/5/2025"])
def test_every_date_format_is_the_same_utc_day(value: str) -> None:
    assert q(f"date:{value}") == Range("date", low=MARCH_5, high=MARCH_6, high_open=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date:>=2025-03-05", Range("date", low=MARCH_5)),
        ("date:>2025-03-05", Range("date", low=MARCH_6)),  # after the whole day
        ("date:<2025-03-05", Range("date", high=MARCH_5, high_open=True)),
        ("date:<=2025-03-05", Range("date", high=MARCH_6, high_open=True)),  # up to the day's end
        ("date:2025-03-05..2025-03-07", Range("date", low=MARCH_5, high=day(2025, 3, 8), high_open=True)),
        ("date:2025-03", Range("date", low=day(2025, 3, 1), high=day(2025, 4, 1), high_open=True)),
        ("date:2025-12", Range("date", low=day(2025, 12, 1), high=day(2026, 1, 1), high_open=True)),
        ("date:1741132800", Range("date", low=1741132800, high=1741132801, high_open=True)),
        ("date:>1741132800", Range("date", low=1741132801)),
        ("date:today", Range("date", low=day(2025, 3, 4), high=MARCH_5, high_open=True)),
        ("date:<now", Range("date", high=int(NOW), high_open=True)),
        ("date:>=today", Range("date", low=day(2025, 3, 4))),
        ("date:2025-03-05T10:20", Range("date", low=MARCH_5 + 37200, high=MARCH_5 + 37260, high_open=True)),
        ("date:2025-03-05T10:20:30", Range("date", low=MARCH_5 + 37230, high=MARCH_5 + 37231, high_open=True)),
    ],
)
def test_date_forms(text: str, expected: object) -> None:
    assert q(text) == expected


def test_now_is_injectable() -> None:
    later = parse("date:today", SPEC, now=NOW + 86400).root
    assert later == Range("date", low=MARCH_5, high=MARCH_6, high_open=True)


# -- PxQL ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["=", "==", "=~"])
def test_pxql_contains_operators(op: str) -> None:
    assert q(f'(event {op} "Backup")') == Term("event", ("backup",))


def test_pxql_not_contains() -> None:
    assert q('(tags !~ "x")') == Not(Term("tags", ("x",)))


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (">", Range("elapsed", low=5, low_open=True)),
        (">=", Range("elapsed", low=5)),
        ("<", Range("elapsed", high=5, high_open=True)),
        ("<=", Range("elapsed", high=5)),
        ("=", Range("elapsed", low=5, high=5)),
        ("!~", Not(Range("elapsed", low=5, high=5))),
    ],
)
def test_pxql_number_operators(op: str, expected: object) -> None:
    assert q(f"(elapsed {op} 5)") == expected
    assert q(f'(elapsed {op} "5")') == expected


def test_pxql_dates() -> None:
    assert q('(date >= "2025-03-05")') == Range("date", low=MARCH_5)
    assert q('(date < "2025-03-05 10:20")') == Range("date", high=MARCH_5 + 37200, high_open=True)


@pytest.mark.parametrize("sep", ["&", "&&"])
def test_pxql_and(sep: str) -> None:
    assert q(f'(event = "a" {sep} tags = "b")') == And((Term("event", ("a",)), Term("tags", ("b",))))


@pytest.mark.parametrize("sep", ["|", "||"])
def test_pxql_or(sep: str) -> None:
    assert q(f'(event = "a" {sep} event = "b")') == Or((Term("event", ("a",)), Term("event", ("b",))))


def test_pxql_nesting_as_in_the_digest() -> None:
    text = '(event = "v" & (tags =~ "x" | tags !~ "y") & date >= "2025-01-01")'
    assert q(text) == And(
        (
            Term("event", ("v",)),
            Or((Term("tags", ("x",)), Not(Term("tags", ("y",))))),
            Range("date", low=day(2025, 1, 1)),
        )
    )


def test_pxql_deep_nesting_and_newlines() -> None:
    text = '(\n  ((event = "a" | event = "b") & elapsed <= 3)\n  | (tags = "c" && ((keywords =~ "x")))\n)'
    assert q(text) == Or(
        (
            And((Or((Term("event", ("a",)), Term("event", ("b",)))), Range("elapsed", high=3))),
            And((Term("tags", ("c",)), Term("keywords", ("x",)))),
        )
    )


def test_pxql_phrase_and_escapes() -> None:
    assert q('(keywords =~ "Released to \\"Prod\\"")') == Term("keywords", ("released", "to", "prod"))


def test_pxql_groups_side_by_side() -> None:
    assert q('(event = "a") | (event = "b")') == Or((Term("event", ("a",)), Term("event", ("b",))))


# -- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope:1", "unknown column 'nope'"),
        ('(nope = "1")', "unknown column 'nope'"),
        ("date:2025-13-01", "bad date '2025-13-01'"),
        ("date:2025-02-30", "bad date '2025-02-30'"),
        ("date:yesterday", "bad date 'yesterday'"),
        ('(date > "soon")', "bad date 'soon'"),
        ("elapsed:fast", "bad number 'fast'"),
        ("elapsed:1..x", "bad number 'x'"),
        ('(event = "a"', "unbalanced parentheses: missing ')'"),
        ('((event = "a")', "unbalanced parentheses: missing ')'"),
        ('(event = "a"))', "unbalanced parentheses: ')' without '('"),
        ("event:a)", "unbalanced parentheses"),
        ('(event = "a" & tags = "b" | tags = "c")', "ambiguous"),
        ("()", "empty parentheses"),
        ('(event > "a")', "operator > needs a number or date column"),
        ("(event = )", 'expected a "quoted value"'),
        ('(event "a")', "expected an operator"),
        ('(event = "a" & )', "expected a column name"),
        ('(event = "a" $ tags = "b")', "unexpected '$'"),
        ('(event = "a)', "unterminated string"),
        ('event:"a', "unterminated quote"),
        ("event:", "column 'event' needs a value"),
        ("keywords:---", "no searchable words"),
    ],
)
def test_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=re.escape(message)):
        parse(text, SPEC, now=NOW)


def test_nesting_and_length_are_bounded() -> None:
    deep = "(" * (MAX_DEPTH + 1) + 'event = "a"' + ")" * (MAX_DEPTH + 1)
    with pytest.raises(QueryError, match="query is nested too deeply"):
        parse(deep, SPEC, now=NOW)
    with pytest.raises(QueryError, match="query is nested too deeply"):  # was a RecursionError
        parse("(" * 2000 + "a" + ")" * 2000, SPEC, now=NOW)
    with pytest.raises(QueryError, match="query is too long"):  # the fuzzer's query
        parse("(" * 3000 + "a" + ")" * 3000, SPEC, now=NOW)
    at_limit = "(" * MAX_DEPTH + 'event = "a"' + ")" * MAX_DEPTH
    assert q(at_limit) == Term("event", ("a",))
    with pytest.raises(QueryError, match=f"query is too long \\(at most {MAX_QUERY_CHARS} characters\\)"):
        parse("a " * MAX_QUERY_CHARS, SPEC, now=NOW)
    longest = "x" * (MAX_QUERY_CHARS - len("event:"))
    assert q("event:" + longest) == Term("event", (longest,))


def test_bare_word_without_a_default_column() -> None:
    with pytest.raises(QueryError, match="has no default column"):
        parse("backup", NO_DEFAULT)


# -- ids ----------------------------------------------------------------------------------------------------


def test_order_from_id_decodes_the_creation_time() -> None:
    assert order_from_id("jmjgok2xeb5ufrcl", "j") == 1766379181010  # the digest's sample job id
    assert order_from_id("jmdzer6zrju", "j") < order_from_id("jmjgok2xeb5ufrcl", "j")
    assert order_from_id("snmjgok2xeb5ufr", "sn") == 1766379181010
    with pytest.raises(ValueError, match="not a time-sortable id"):
        order_from_id("x12", "j")
