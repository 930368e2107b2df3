"""User patterns (cluster/patterns.py): JavaScript sources translated for RE2, refusals that name the field,
the length and complexity bounds, the cache, and matches that never backtrack."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import patterns
from cluster.patterns import (
    MAX_PATTERN_CHARS,
    MAX_PROGRAM,
    MAX_TEXT_BYTES,
    PatternError,
    TextTooLong,
    compile_user,
    hostname_matches,
)


def matches(pattern: str, text: str) -> bool:
    return compile_user(pattern, "f").search(text)


# -- JavaScript sources --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"^[a-z.]+$", "db.local", True),
        (r"^[a-z.]+$", "DB_01", False),
        (r"^\d{1,5}$", "5432", True),
        (r"^\u0041\d$", "A1", True),  # \uXXXX
        (r"^\u{1F600}$", "\U0001f600", True),  # \u{...}
        (r"^\uD83D\uDE00$", "\U0001f600", True),  # a surrogate pair written as two escapes
        (r"^\cJ$", "\n", True),  # control character
        (r"^[\b]$", "\b", True),  # backspace inside a class
        (r"^[^]$", "\n", True),  # [^] is any character, newline included
        (r"[]", "anything", False),  # [] matches nothing
        (r"^[[]$", "[", True),  # '[' inside a class is a literal
        (r"[[:alpha:]]", "b", False),  # no POSIX classes in JavaScript: this is '[[:alph]' then ']'
        (r"[[:alpha:]]", ":]", True),
        (r"^(?<year>\d{4})-(?<month>\d\d)$", "2025-03", True),  # named groups
        (r"^a\/b$", "a/b", True),
        (r"^abc$", "abc\n", False),  # `$` is the end of the text, as in JavaScript (Python's re would match)
        (r"(a+)+$", "a" * 64 + "!", False),  # the ReDoS classic, answered at once
        (r"^(a|aa)+$", "a" * 5000, True),
    ],
)
def test_javascript_sources(pattern: str, text: str, expected: bool) -> None:
    assert matches(pattern, text) is expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("(?=a)b", "lookahead (?= at position 0"),
        ("a(?!b)", "lookahead (?! at position 1"),
        ("(?<=a)b", "lookbehind (?<= at position 0"),
        ("(?<!a)b", "lookbehind (?<! at position 0"),
        (r"(a)\1", r"backreference \1 at position 3"),
        (r"(?<n>a)\k<n>", r"backreference \k<...> at position 7"),
        ("a{1001}", "invalid repetition size"),
        ("(", "missing )"),
        (r"\e", "invalid escape sequence"),
        ("\\", "lone backslash"),
        (r"\uD800", "lone surrogate"),
    ],
)
def test_refusals_name_the_field_and_the_reason(pattern: str, fragment: str) -> None:
    with pytest.raises(PatternError) as caught:
        compile_user(pattern, "fields[0].regex")
    error = caught.value
    assert error.field == "fields[0].regex"
    message = str(error)
    assert message.startswith("Parameter 'fields[0].regex' is not a supported regular expression (lookahead, "
                              "lookbehind and backreferences are not supported): ")  # fmt: skip
    assert fragment in message, message


def test_a_lookahead_inside_a_class_is_only_characters() -> None:
    assert matches("^[(?=]+$", "(?=")


def test_length_and_complexity_bounds() -> None:
    compile_user("a" * MAX_PATTERN_CHARS, "f")
    with pytest.raises(PatternError, match=f"is too long for a regular expression \\(at most {MAX_PATTERN_CHARS}"):
        compile_user("a" * (MAX_PATTERN_CHARS + 1), "f")
    assert compile_user("^.{0,1000}$", "f").program <= MAX_PROGRAM  # a common length check stays allowed
    with pytest.raises(PatternError, match=f"is too complex a regular expression .* at most {MAX_PROGRAM}"):
        compile_user("(.*){1000}x", "f")
    # Nested repetitions that other engines expand at compile time (and run out of memory on) are refused at once.
    started = time.perf_counter()
    with pytest.raises(PatternError):
        compile_user("((a{1000}){1000}){1000}", "f")
    print(f"nested repetition refused in {(time.perf_counter() - started) * 1000:.2f} ms")
    with pytest.raises(PatternError, match="must be a string"):
        compile_user(5, "f")  # type: ignore[arg-type]


def test_texts_are_bounded_not_truncated() -> None:
    pattern = compile_user("x$", "f")
    assert pattern.search("a" * (MAX_TEXT_BYTES - 1) + "x")
    with pytest.raises(TextTooLong):
        pattern.search("a" * MAX_TEXT_BYTES + "x")  # refused: a truncated text would be checked in part only
    with pytest.raises(TextTooLong):
        pattern.search("é" * (MAX_TEXT_BYTES // 2 + 1))  # the bound is in UTF-8 bytes
    costly = compile_user(".{0,1000}x", "f")
    with pytest.raises(TextTooLong, match="search_async"):  # too costly for the calling thread
        costly.search("a" * 10_000)


def test_ignore_case_is_an_option_of_its_own() -> None:
    assert not compile_user("^abc$", "f").search("ABC")
    assert compile_user("^abc$", "f", ignore_case=True).search("ABC")


def test_the_cache_is_bounded_and_remembers_refusals() -> None:
    first = compile_user("^cached$", "f")
    assert compile_user("^cached$", "other") is first
    for n in range(patterns.CACHE_SIZE + 10):
        compile_user(f"^p{n}$", "f")
    assert len(patterns._CACHE) <= patterns.CACHE_SIZE
    assert compile_user("^cached$", "f") is not first  # evicted, compiled again
    for field in ("a", "b"):  # a refusal is cached too, and still names each caller's field
        with pytest.raises(PatternError, match=f"'{field}'"):
            compile_user("(?=x)", field)


def test_hostname_matches() -> None:
    assert hostname_matches(".+", "web-01.example.com")
    assert hostname_matches(r"^web-\d+\.", "web-01.example.com")
    assert not hostname_matches(r"^db-", "web-01.example.com")
    assert not hostname_matches("(?=web)", "web-01")  # a pattern stored before these rules matches nothing
    assert not hostname_matches(".", "a" * (MAX_TEXT_BYTES + 1))


async def test_a_costly_match_leaves_the_event_loop_free() -> None:
    """The worst kind of pattern on the largest text runs on the pattern pool; the loop keeps ticking."""
    pattern = compile_user(".{0,1000}x", "f")
    text = "é" * (MAX_TEXT_BYTES // 2)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    assert await pattern.search_async(text) is False
    elapsed = time.perf_counter() - started
    done.set()
    await task
    print(f"64 KiB match of a {pattern.program}-step pattern: {elapsed * 1000:.0f} ms, loop ticked {ticks} times")
    assert ticks >= 1  # the loop ran while the match did (inline, the ticker could not have started)
    assert await compile_user("x$", "f").search_async("a" * 100 + "x")  # cheap ones run inline
