"""User-supplied regular expressions, compiled and run in bounded time and memory.

Every pattern a user writes (event `fields[].regex`, plugin `params[].regex`, group `hostname_match`, and
later monitor `data_match` and log searches) goes through `compile_user()`. The engine is RE2
(`google-re2`): matching is linear in the text, so no pattern can backtrack for seconds, whatever
it is. On top of that:

- a pattern is at most MAX_PATTERN_CHARS characters, and compiles to at most MAX_PROGRAM instructions
  (RE2 itself refuses repetitions above {1000} and programs above its MAX_MEM budget);
- a text is at most MAX_TEXT_BYTES of UTF-8; a longer one is refused (`TextTooLong`), never truncated,
  so a check never passes on a part of a value;
- `search_async()` runs a match on the calling thread only when it is cheap (UTF-8 bytes x program
  instructions <= INLINE_COST, a few milliseconds at worst) and otherwise on a one-thread pool: RE2
  releases the GIL, so the event loop keeps serving while a large match runs. The costliest match allowed
  (a 10,000-step pattern over 64 KiB) takes about 3 s of that thread (tests/bench/bench_patterns.py);
- compiled patterns (and refusals) are kept in a bounded LRU cache (CACHE_SIZE), each RE2 object
  within MAX_MEM.

JavaScript compatibility (xyOps compiles these with `new RegExp(source)`, no flags). Translated:
`\\uXXXX` and `\\u{X...}` (surrogate pairs joined) become `\\x{...}`; `\\cX` becomes its control
character; `[\\b]` is a backspace; `[^]` (any character) and `[]` (nothing) keep their JavaScript meaning;
a `[` inside a class is a literal. `(?<name>...)` named groups work as they are. Refused, with an error
naming the field: lookahead `(?=` `(?!`, lookbehind `(?<=` `(?<!`, backreferences `\\1`..`\\9` and
`\\k<name>`, repetition counts above 1000, and letter escapes without a meaning (`\\e`, `\\i`, ...).
Different from JavaScript, not translated: `\\s` and `\\w`/`\\b` are ASCII-only in RE2; `.` excludes only
`\\n` (JavaScript also excludes `\\r`, U+2028 and U+2029); `\\a`, `\\A`, `\\z`, `\\C`, `\\Q...\\E` and
`\\p{...}` (Unicode classes) have RE2 meanings, where JavaScript without the `u` flag reads the letter;
RE2 accepts inline flags such as `(?i)`, which JavaScript refuses.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import re2

MAX_PATTERN_CHARS = 1000
MAX_PROGRAM = 10_000  # RE2 instructions; `^.{0,1000}$` is about 9,000
MAX_TEXT_BYTES = 65536
MAX_MEM = 1 << 20  # per compiled pattern; speed barely changes from 1 to 8 MiB, memory does (see the bench)
CACHE_SIZE = 128
INLINE_COST = 1 << 20  # text bytes x program instructions: a few ms at worst
SYNC_COST = 8 << 20  # the most `Pattern.search` does on the calling thread (tens of ms at worst)
POOL_THREADS = 1  # matches never take more than one core from the node
UNSUPPORTED = "lookahead, lookbehind and backreferences are not supported"


class PatternError(ValueError):
    """A pattern that is refused; `field` names where it came from, `problem` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"Parameter '{field}' {problem}.")
        self.field = field
        self.problem = problem


class TextTooLong(ValueError):
    """A text longer than MAX_TEXT_BYTES: refused rather than matched in part."""


class _Refused(Exception):
    """A JavaScript construct RE2 cannot run (raised by the translator, worded for the user)."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled user pattern. `source` is what the user wrote; `translated` what RE2 runs."""

    source: str
    translated: str
    program: int
    _regex: Any

    def _encoded(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > MAX_TEXT_BYTES:
            raise TextTooLong(f"text is longer than {MAX_TEXT_BYTES} bytes")
        return data

    def _search(self, data: bytes) -> bool:
        return self._regex.search(data) is not None

    def search(self, text: str) -> bool:
        """Match anywhere (JavaScript `test`), on the calling thread: for short texts (host names, tags)."""
        data = self._encoded(text)
        if len(data) * self.program > SYNC_COST:
            raise TextTooLong("text is too long to match on this thread; use search_async")
        return self._search(data)

    def groups(self, text: str) -> tuple[str, ...] | None:
        """The first match anywhere as (whole match, group 1, ...) with "" for a group that took no part
        (JavaScript `String.match` without the g flag), on the calling thread; None when nothing matches."""
        data = self._encoded(text)
        if len(data) * self.program > SYNC_COST:
            raise TextTooLong("text is too long to match on this thread")
        found = self._regex.search(data)
        if found is None:
            return None
        return tuple((g or b"").decode("utf-8", "surrogatepass") for g in (found.group(0), *found.groups()))

    async def search_async(self, text: str) -> bool:
        """Match anywhere; a costly match runs on the pattern pool so the event loop stays free."""
        data = self._encoded(text)
        if len(data) * self.program <= INLINE_COST:
            return self._search(data)
        return await asyncio.get_running_loop().run_in_executor(_pool(), self._search, data)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="patterns")
    return _POOL


# -- JavaScript source -> RE2 source ---------------------------------------------------------------------------

_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_HEX_BRACED = re.compile(r"\{([0-9A-Fa-f]{1,6})\}")
_LOOKAROUND = {"(?=": "lookahead (?=", "(?!": "lookahead (?!", "(?<=": "lookbehind (?<=", "(?<!": "lookbehind (?<!"}
_ANY = r"[\x{0}-\x{10FFFF}]"
_NOTHING = r"[^\x{0}-\x{10FFFF}]"


def _code_point(source: str, i: int) -> tuple[int, int] | None:
    """The code point of a `\\u` escape starting at `i` (the backslash) and the index after it."""
    if m := _HEX_BRACED.match(source, i + 2):
        return int(m.group(1), 16), m.end()
    if m := _HEX4.match(source, i + 2):
        value, end = int(m.group(), 16), m.end()
        if 0xD800 <= value <= 0xDBFF and source.startswith("\\u", end) and (low := _HEX4.match(source, end + 2)):
            low_value = int(low.group(), 16)
            if 0xDC00 <= low_value <= 0xDFFF:  # a surrogate pair written as two escapes
                return 0x10000 + ((value - 0xD800) << 10) + (low_value - 0xDC00), low.end()
        return value, end
    return None


def _escape(source: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape at `i` (a backslash); returns RE2 text and the index after the escape."""
    if i + 1 >= len(source):
        raise _Refused("it ends with a lone backslash")
    char = source[i + 1]
    if char == "u" and (found := _code_point(source, i)) is not None:
        value, end = found
        if 0xD800 <= value <= 0xDFFF:
            raise _Refused(f"\\u{value:04X} is a lone surrogate")
        return f"\\x{{{value:X}}}", end
    if char == "c" and i + 2 < len(source) and source[i + 2].isascii() and source[i + 2].isalpha():
        return f"\\x{{{ord(source[i + 2]) % 32:X}}}", i + 3
    if char == "b" and in_class:
        return "\\x{8}", i + 2
    if char in "123456789" and not in_class:
        raise _Refused(f"backreference \\{char} at position {i}")
    if char == "k" and source.startswith("<", i + 2):
        raise _Refused(f"backreference \\k<...> at position {i}")
    return source[i : i + 2], i + 2


def translate(source: str) -> str:
    """RE2 source for a JavaScript `RegExp` source; raises _Refused for what RE2 cannot run."""
    out: list[str] = []
    i, n, in_class = 0, len(source), False
    while i < n:
        char = source[i]
        if char == "\\":
            text, i = _escape(source, i, in_class)
            out.append(text)
            continue
        if in_class:
            out.append("\\[" if char == "[" else char)  # JavaScript has no [:alpha:] classes
            in_class = char != "]"
            i += 1
            continue
        if char == "[":
            if source.startswith("[^]", i):
                out.append(_ANY)
                i += 3
                continue
            if source.startswith("[]", i):
                out.append(_NOTHING)
                i += 2
                continue
            start = "[^" if source.startswith("[^", i) else "["
            out.append(start)
            i += len(start)
            in_class = True
            continue
        if char == "(":
            for opener, what in _LOOKAROUND.items():
                if source.startswith(opener, i):
                    raise _Refused(f"{what} at position {i}")
        out.append(char)
        i += 1
    return "".join(out)


# -- compiling, with a cache ----------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, bool], Pattern | str] = OrderedDict()


def _options(ignore_case: bool) -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.case_sensitive = not ignore_case
    return options


def _build(source: str, ignore_case: bool) -> Pattern | str:
    """The compiled pattern, or the problem (worded to follow "Parameter 'x' ...")."""
    if len(source) > MAX_PATTERN_CHARS:
        return f"is too long for a regular expression (at most {MAX_PATTERN_CHARS} characters)"
    try:
        translated = translate(source)
        regex = re2.compile(translated, _options(ignore_case))
    except _Refused as exc:
        return f"is not a supported regular expression ({UNSUPPORTED}): {exc}"
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"is not a supported regular expression ({UNSUPPORTED}): {reason}"
    if regex.programsize > MAX_PROGRAM:
        return (f"is too complex a regular expression (it compiles to {regex.programsize} steps; "
                f"at most {MAX_PROGRAM})")  # fmt: skip
    return Pattern(source, translated, int(regex.programsize), regex)


def compile_user(pattern: str, field: str, *, ignore_case: bool = False) -> Pattern:
    """Compile a user's pattern (JavaScript syntax); PatternError names `field` when it is refused."""
    if not isinstance(pattern, str):
        raise PatternError(field, "must be a string")
    key = (pattern, ignore_case)
    found = _CACHE.get(key)
    if found is None:
        found = _build(pattern, ignore_case)
        _CACHE[key] = found
        if len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    if isinstance(found, str):
        raise PatternError(field, found)
    return found


def hostname_matches(hostname_match: str, hostname: str) -> bool:
    """Does a group's `hostname_match` match a server's host name? A pattern stored before it was checked
    with these rules (so refused now), or an over-long host name, matches nothing."""
    try:
        return compile_user(hostname_match, "hostname_match").search(hostname)
    except (PatternError, TextTooLong):
        return False
