"""User-pattern benchmark: what the bounds of cluster/patterns.py cost at their worst.

For a set of patterns (the ReDoS classics, common field checks, and the costliest kinds RE2 still accepts
under MAX_PROGRAM), times one search over a MAX_TEXT_BYTES text of ASCII, of 2-byte and of mixed UTF-8
characters, and says whether the search ran inline or on the pattern pool. Then, for each `max_mem`
given, compiles CACHE_SIZE DFA-heavy patterns, runs each over a 64 KiB text and prints the process RSS
growth, which is what the cache can hold at worst. Also times compile_user on a cache miss and a hit.

    python -m tests.bench.bench_patterns
    python -m tests.bench.bench_patterns --max-mem 1,2,8
"""

from __future__ import annotations

import argparse
import random
import time

import re2

from cluster import patterns
from cluster.patterns import INLINE_COST, MAX_TEXT_BYTES, compile_user

PATTERNS = ["(a+)+$", "^(a|aa)+$", r"(\w+\s?)+$", r"^[a-z0-9._-]+$", r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
            "^.{0,1000}$", ".{0,1000}x", "(.*a.{999})x", "[^x]{1000}y", r"\S{499}x\S{499}y", "(.*){999}x",
            "[ab]*a[ab]{999}x"]  # fmt: skip


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _texts(rng: random.Random) -> dict[str, str]:
    mixed = "".join(rng.choice("aé€😀b") for _ in range(MAX_TEXT_BYTES // 2))
    return {
        "ascii": "".join(rng.choice("ab") for _ in range(MAX_TEXT_BYTES)),
        "2-byte": "é" * (MAX_TEXT_BYTES // 2),
        "mixed": mixed.encode()[:MAX_TEXT_BYTES].decode(errors="ignore"),
    }


def searches(texts: dict[str, str]) -> None:
    print(f"{'pattern':30} {'steps':>6} " + " ".join(f"{name:>14}" for name in texts))
    for source in PATTERNS:
        pattern = compile_user(source, "bench")
        cells = []
        for text in texts.values():
            where = "inline" if len(text.encode()) * pattern.program <= INLINE_COST else "pool"
            started = time.perf_counter()
            pattern._search(text.encode())
            cells.append(f"{(time.perf_counter() - started) * 1000:8.1f} ms {where[0]}")
        print(f"{source:30} {pattern.program:6} " + " ".join(f"{c:>14}" for c in cells))
    print("(i = runs inline on the event loop, p = on the pattern pool)")


def memory(max_mem_mib: int, text: str) -> None:
    options = re2.Options()
    options.max_mem = max_mem_mib << 20
    options.log_errors = False
    held = []
    before, worst, started = _rss_mib(), 0.0, time.perf_counter()
    for n in range(patterns.CACHE_SIZE):
        regex = re2.compile(f"[ab]*a[ab]{{{100 + n}}}x", options)
        held.append(regex)
        t = time.perf_counter()
        regex.search(text)
        worst = max(worst, time.perf_counter() - t)
    total = time.perf_counter() - started
    print(f"max_mem {max_mem_mib} MiB: {patterns.CACHE_SIZE} DFA-heavy patterns grow RSS by "
          f"{_rss_mib() - before:.0f} MiB; slowest search {worst * 1000:.0f} ms, all {total:.1f} s")  # fmt: skip
    re2.purge()


def compile_cost() -> None:
    started = time.perf_counter()
    for n in range(1000):
        compile_user(f"^item-{n}-[a-z]+$", "bench")
    miss = (time.perf_counter() - started) / 1000
    started = time.perf_counter()
    for _ in range(1000):
        compile_user("^item-999-[a-z]+$", "bench")
    hit = (time.perf_counter() - started) / 1000
    print(f"compile_user: {miss * 1e6:.1f} us on a miss, {hit * 1e6:.2f} us on a hit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-mem", default="1,8", help="comma-separated max_mem values in MiB to compare")
    args = parser.parse_args()
    texts = _texts(random.Random(1))
    searches(texts)
    for mib in (int(v) for v in args.max_mem.split(",")):
        memory(mib, texts["ascii"])
    compile_cost()


if __name__ == "__main__":
    main()
