"""The search index on a real server: every query form returns what a plain Python filter returns.

Records are indexed out of their id order and spread over three slot chunks (with allocated but
unused slots between them), so chunk borders, holes and the ordering logic are all exercised.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from storage.connection import Database
from storage.fence import Fence, FencedBatch
from storage.lease import LeaseStore
from storage.search import Column, Indexer, IndexSpec, QueryError, order_from_id, parse
from storage.search.spec import CHUNK

SPEC = IndexSpec(
    "jobs",
    [
        Column("event", "word"),
        Column("tags", "word"),
        Column("category", "word"),
        Column("code", "word"),
        Column("tickets", "word", sparse=True),
        Column("keywords", "text"),
        Column("title", "text", sparse=False),
        Column("date", "date", source="completed"),
        Column("elapsed", "number", scale=1000),
    ],
    default_column="keywords",
    sorters=["date", "elapsed"],
)

Job = dict[str, Any]
Check = Callable[[Job], bool]


def day(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=UTC).timestamp()


BASE = day(2024, 3, 1)
D5, D6, D11 = day(2024, 3, 5), day(2024, 3, 6), day(2024, 3, 11)
TAGS = ["_success", "_error", "db", "web", "nightly", "important"]
WORDS = ["quick", "brown", "fox", "lazy", "dog", "jumps", "over", "the"]


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def make_jobs(count: int, seed: int) -> list[Job]:
    """xyOps-like jobs: ids `j` + base36(ms) + counter + padding, some sharing a millisecond."""
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        ms = int(BASE * 1000) + rng.randrange(count * 2) * 400_000
        rid = ("j" + base36(ms) + base36(i % 1296) + "".join(rng.choices("abcdefghijk", k=8)))[:16]
        completed = ms / 1000 + rng.uniform(0, 3600) if rng.random() > 0.08 else None
        elapsed = rng.choice([round(rng.uniform(0, 10), 3), 2.5, 0.0, None])
        jobs.append({
            "id": rid, "event": f"e{rng.randrange(12)}", "tags": rng.sample(TAGS, rng.choice([0, 1, 1, 2, 3])),
            "category": rng.choice(["general", "ops", "dev"]), "code": rng.choice([0, 0, 0, 1, "warning", "abort"]),
            "tickets": rng.sample([f"t{n}" for n in range(30)], rng.choice([0, 0, 0, 1, 2])),
            "keywords": " ".join(rng.choices(WORDS, k=rng.randint(2, 6))),
            "title": " ".join(rng.choices(["alpha", "beta", "gamma", "delta"], k=rng.randint(1, 3))),
            "completed": completed, "elapsed": elapsed,
        })  # fmt: skip
    return jobs


def order(job: Job) -> float:
    return order_from_id(job["id"], "j")


async def load(ix: Indexer, jobs: Sequence[Job], *, seed: int = 7) -> None:
    """Index `jobs` in shuffled order across three chunks; the first few through add(), the rest in bulk."""
    shuffled = list(jobs)
    random.Random(seed).shuffle(shuffled)
    third = -(-len(shuffled) // 3)
    for part in range(3):
        batch = shuffled[part * third : (part + 1) * third]
        if part:  # holes: slots allocated for ids that are never indexed push the next part into a new chunk
            seq = int(await ix.db.client.get(ix.key("seq")) or 0)
            await ix.allocate([f"hole{part}-{n}" for n in range(CHUNK * part - seq + 17)])
        for job in batch[:5]:
            await ix.add(job["id"], job, order=order(job))
        await ix.add_many([(j["id"], j, order(j)) for j in batch[5:]], batch=300)


def words(text: str) -> list[str]:
    return text.split()


def phrase(text: str, a: str, b: str) -> bool:
    w = words(text)
    return any(x == a and y == b for x, y in pairwise(w))


def date_in(job: Job, low: float = -math.inf, high: float = math.inf) -> bool:
    return job["completed"] is not None and low <= job["completed"] < high


def el(job: Job) -> float:
    return math.nan if job["elapsed"] is None else float(job["elapsed"])


def tags(job: Job, *names: str) -> bool:
    return any(n in job["tags"] for n in names)


EPOCH = int(BASE + 7 * 86400 + 1234)

CASES: list[tuple[str, Check]] = [
    ("*", lambda j: True),
    ("event:e3", lambda j: j["event"] == "e3"),
    ("event:E3", lambda j: j["event"] == "e3"),
    ("event:e1|e2", lambda j: j["event"] in ("e1", "e2")),
    ("tags:db", lambda j: tags(j, "db")),
    ("tags:db web", lambda j: tags(j, "db") and tags(j, "web")),
    ("tags:db|web", lambda j: tags(j, "db", "web")),
    ("tags:db -tags:web", lambda j: tags(j, "db") and not tags(j, "web")),
    ("-tags:db", lambda j: not tags(j, "db")),
    ("-tags:db|web", lambda j: not tags(j, "db", "web")),
    ("event:e1 tags:_error", lambda j: j["event"] == "e1" and tags(j, "_error")),
    ("code:0", lambda j: str(j["code"]) == "0"),
    ("code:warning|abort", lambda j: j["code"] in ("warning", "abort")),
    ("category:ops -code:0", lambda j: j["category"] == "ops" and j["code"] != 0),
    ("tickets:t3", lambda j: "t3" in j["tickets"]),
    ("tickets:t3|t4 event:e1", lambda j: bool({"t3", "t4"} & set(j["tickets"])) and j["event"] == "e1"),
    ("-tickets:t3", lambda j: "t3" not in j["tickets"]),
    ("fox", lambda j: "fox" in words(j["keywords"])),
    ("quick fox", lambda j: {"quick", "fox"} <= set(words(j["keywords"]))),
    ('"quick fox"', lambda j: phrase(j["keywords"], "quick", "fox")),
    ('keywords:"lazy dog" -fox', lambda j: phrase(j["keywords"], "lazy", "dog") and "fox" not in words(j["keywords"])),
    ("+quick -dog", lambda j: "quick" in words(j["keywords"]) and "dog" not in words(j["keywords"])),
    ("keywords:fox|dog", lambda j: bool({"fox", "dog"} & set(words(j["keywords"])))),
    ("title:alpha", lambda j: "alpha" in words(j["title"])),
    ('title:"alpha beta"', lambda j: phrase(j["title"], "alpha", "beta")),
    ("title:alpha -title:beta", lambda j: "alpha" in words(j["title"]) and "beta" not in words(j["title"])),
    ("date:2024-03-05", lambda j: date_in(j, D5, D6)),
    ("date:03-05-2024", lambda j: date_in(j, D5, D6)),
    ("date:>=2024-03-05", lambda j: date_in(j, D5)),
    ("date:>2024-03-05", lambda j: date_in(j, D6)),
    ("date:<2024-03-05", lambda j: date_in(j, high=D5)),
    ("date:<=2024-03-05", lambda j: date_in(j, high=D6)),
    ("date:2024-03-05..2024-03-10", lambda j: date_in(j, D5, D11)),
    (f"date:>={EPOCH}", lambda j: date_in(j, EPOCH)),
    (f"date:<{EPOCH}", lambda j: date_in(j, high=EPOCH)),
    ("-date:2024-03-05", lambda j: not date_in(j, D5, D6)),
    ("elapsed:2.5", lambda j: el(j) == 2.5),
    ("elapsed:0", lambda j: el(j) == 0),
    ("elapsed:>=5", lambda j: el(j) >= 5),
    ("elapsed:>5", lambda j: el(j) > 5),
    ("elapsed:<2.5", lambda j: el(j) < 2.5),
    ("elapsed:<=2.5", lambda j: el(j) <= 2.5),
    ("elapsed:1..3", lambda j: 1 <= el(j) <= 3),
    ("elapsed:<1|>9", lambda j: el(j) < 1 or el(j) > 9),
    ("-elapsed:0..1", lambda j: not 0 <= el(j) <= 1),
    ("tags:db date:>=2024-03-05 elapsed:>1", lambda j: tags(j, "db") and date_in(j, D5) and el(j) > 1),
    ('(event = "e1")', lambda j: j["event"] == "e1"),
    ('(event == "e1" || event =~ "e2")', lambda j: j["event"] in ("e1", "e2")),
    ('(tags !~ "db")', lambda j: not tags(j, "db")),
    (
        '(event = "e1" & (tags =~ "db" | tags !~ "web") & date >= "2024-03-05")',
        lambda j: j["event"] == "e1" and (tags(j, "db") or not tags(j, "web")) and date_in(j, D5),
    ),
    ('(elapsed > 5 && code = "0")', lambda j: el(j) > 5 and j["code"] == 0),
    ("(elapsed < 2.5 | elapsed >= 9)", lambda j: el(j) < 2.5 or el(j) >= 9),
    ("(elapsed <= 2.5 & elapsed >= 2.5)", lambda j: el(j) == 2.5),
    ('(date < "2024-03-05 12:00")', lambda j: date_in(j, high=D5 + 43200)),
    ('(keywords =~ "quick fox" & title !~ "gamma")',
     lambda j: phrase(j["keywords"], "quick", "fox") and "gamma" not in words(j["title"])),
    (
        '((event = "e1" | event = "e2") & (tickets = "t1" | tags = "nightly"))',
        lambda j: j["event"] in ("e1", "e2") and ("t1" in j["tickets"] or tags(j, "nightly")),
    ),
    (
        '(category = "dev") | (code !~ "0" && elapsed < 1)',
        lambda j: j["category"] == "dev" or (j["code"] != 0 and el(j) < 1),
    ),
]  # fmt: skip


def id_order(jobs: Sequence[Job], desc: bool = True) -> list[str]:
    return [j["id"] for j in sorted(jobs, key=lambda j: (order(j), j["id"]), reverse=desc)]


async def check_cases(ix: Indexer, jobs: Sequence[Job]) -> None:
    for text, check in CASES:
        matched = [j for j in jobs if check(j)]
        expected = id_order(matched)
        found = await ix.search(text, limit=len(jobs) + 1)
        assert found.total == len(matched), text
        assert found.ids == expected, text
        page = await ix.search(text, offset=7, limit=11)
        assert (page.total, page.ids) == (len(matched), expected[7:18]), text


async def test_every_query_form_matches_a_python_filter(db: Database) -> None:
    jobs = make_jobs(3000, seed=1)
    ix = Indexer(db, SPEC)
    await load(ix, jobs)
    assert int(await db.client.get(ix.key("seq")) or 0) > 2 * CHUNK  # three chunks in use
    await check_cases(ix, jobs)
    interesting = sum(0 < sum(map(check, jobs)) < len(jobs) for _, check in CASES)
    assert interesting >= len(CASES) - 1  # only "*" matches everything; no form matches nothing


def sort_key(job: Job, sort_by: str) -> tuple[Any, ...]:
    """(has value, value at the column's precision, order, id): missing values sort lowest."""
    value = {"date": job["completed"], "elapsed": job["elapsed"], "_id": 0}[sort_by]
    scaled = None if value is None else math.floor(round(value * (1000 if sort_by == "elapsed" else 1), 6))
    return (scaled is not None, scaled or 0, order(job), job["id"])


@pytest.mark.parametrize("sort_by", ["_id", "date", "elapsed"])
@pytest.mark.parametrize("sort_dir", [-1, 1])
async def test_paging_is_exact_in_every_order(db: Database, sort_by: str, sort_dir: int) -> None:
    jobs = make_jobs(1500, seed=2)
    ix = Indexer(db, SPEC)
    await load(ix, jobs)
    cases: list[tuple[str, Check]] = [
        ("*", lambda j: True),
        ("tags:db|web -code:0", lambda j: tags(j, "db", "web") and j["code"] != 0),
    ]
    for text, check in cases:
        matched = sorted((j for j in jobs if check(j)), key=lambda j: sort_key(j, sort_by), reverse=sort_dir < 0)
        expected = [j["id"] for j in matched]
        for offset, limit in [
            (0, 1),
            (0, 25),
            (3, 1),
            (10, 40),
            (len(expected) - 5, 10),
            (len(expected) + 3, 5),
            (0, 0),
        ]:
            found = await ix.search(text, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
            assert found.total == len(expected)
            assert found.ids == expected[offset : offset + limit], (text, offset, limit)
        everything = await ix.search(text, limit=len(jobs), sort_by=sort_by, sort_dir=sort_dir)
        assert everything.ids == expected


async def test_updates_move_records_between_values(db: Database) -> None:
    jobs = make_jobs(1500, seed=3)
    ix = Indexer(db, SPEC)
    await load(ix, jobs)
    rng = random.Random(4)
    fresh = make_jobs(1500, seed=5)
    for i in rng.sample(range(len(jobs)), 400):
        new = {**fresh[i], "id": jobs[i]["id"]}
        await ix.add(new["id"], new, jobs[i], order=order(new))
        jobs[i] = new
    await check_cases(ix, jobs)
    with pytest.raises(ValueError, match="already in index"):
        await ix.add(jobs[0]["id"], jobs[0], order=order(jobs[0]))


async def test_removed_records_leave_every_structure(db: Database) -> None:
    jobs = make_jobs(1500, seed=6)
    ix = Indexer(db, SPEC)
    await load(ix, jobs)
    rng = random.Random(8)
    gone = set(rng.sample(range(len(jobs)), 500))
    for i in gone:
        assert await ix.remove(jobs[i]["id"], jobs[i])
    assert not await ix.remove(jobs[min(gone)]["id"], jobs[min(gone)])
    assert not await ix.remove("jnever", {})
    kept = [j for i, j in enumerate(jobs) if i not in gone]
    await check_cases(ix, kept)
    back = jobs[min(gone)]  # a removed id can come back, in a new slot
    await ix.add(back["id"], back, order=order(back))
    assert back["id"] in (await ix.search(f"event:{back['event']}", limit=len(jobs))).ids


async def test_index_ops_run_in_a_fenced_batch_and_a_transaction(db: Database) -> None:
    jobs = make_jobs(40, seed=9)
    ix = Indexer(db, SPEC)
    state = await LeaseStore(db).acquire("node-a", 10_000)
    fence = Fence(db, "node-a", state.epoch)
    slots = await ix.allocate([j["id"] for j in jobs])
    for job, (slot, had) in zip(jobs[:20], slots, strict=False):
        assert not had
        batch = FencedBatch().add("SET", [db.keys.probe(job["id"])], "record")
        for command, keys, args in ix.index_ops(job["id"], job, slot=slot, order=order(job)):
            batch.add(command, keys, *args)
        await fence.execute(batch)
    async with db.client.pipeline(transaction=True) as pipe:
        for job, (slot, _) in zip(jobs[20:], slots[20:], strict=True):
            for command, keys, args in ix.index_ops(job["id"], job, slot=slot, order=order(job)):
                pipe.execute_command(command, *keys, *args)
        await pipe.execute()
    await check_cases(ix, jobs)


async def test_vacuum_drops_chunks_whose_records_are_all_gone(db: Database) -> None:
    jobs = make_jobs(300, seed=10)
    ix = Indexer(db, SPEC)
    old, new = jobs[:200], jobs[200:]
    await ix.add_many([(j["id"], j, order(j)) for j in old])
    await ix.allocate([f"hole{n}" for n in range(CHUNK)])
    await ix.add_many([(j["id"], j, order(j)) for j in new])
    assert await ix.vacuum() == 0  # chunk 0 still holds records
    for job in old:
        await ix.remove(job["id"], job)
    assert await ix.vacuum() == 1
    chunk0 = [
        ix.key("all", "0"),
        ix.key("rows", "0"),
        ix.key("w", "event", old[0]["event"], "0"),
        ix.key("order", "47", "0"),
    ]
    assert await db.client.exists(*chunk0) == 0
    assert await ix.vacuum() == 0
    await check_cases(ix, new)


async def test_search_errors_and_an_empty_index(db: Database) -> None:
    ix = Indexer(db, SPEC)
    assert await ix.search("*") == await ix.search("event:x", limit=10)
    assert (await ix.search("*")).total == 0
    with pytest.raises(QueryError, match="cannot sort"):
        await ix.search("*", sort_by="event")
    with pytest.raises(QueryError, match="unknown column"):
        await ix.search("nope:1")
    with pytest.raises(QueryError, match="negative"):
        await ix.search("*", offset=-1)
    with pytest.raises(ValueError, match=re.escape("must be 1..32 bytes")):
        ix.index_ops("x" * 33, {}, slot=0, order=0)


async def test_a_parsed_query_with_a_pinned_clock(db: Database) -> None:
    jobs = make_jobs(300, seed=11)
    ix = Indexer(db, SPEC)
    await ix.add_many([(j["id"], j, order(j)) for j in jobs])
    today = parse("date:today", SPEC, now=D5 + 3600)
    found = await ix.search(today, limit=len(jobs))
    assert found.ids == id_order([j for j in jobs if date_in(j, D5, D6)])


@pytest.mark.timeout(120)
async def test_100k_records_answer_indexed_queries_and_pages_exactly(db: Database) -> None:
    count = 100_000
    rng = random.Random(12)
    start = int(BASE * 1000)
    jobs: list[Job] = [
        {"id": f"j{base36(start + i * 1000)}{base36(i % 1296)}", "event": f"e{rng.randrange(100)}",
         "tags": rng.sample(TAGS, rng.randint(0, 2)), "completed": start / 1000 + i + rng.uniform(0, 900),
         "elapsed": rng.randrange(0, 600_000) / 1000, "code": rng.choice([0, 0, 1])}
        for i in range(count)
    ]  # fmt: skip
    ix = Indexer(db, SPEC)
    assert await ix.add_many(((j["id"], j, order(j)) for j in jobs), batch=2000) == count
    cut = start / 1000 + 60_000
    cases: list[tuple[str, Check]] = [
        ("event:e42", lambda j: j["event"] == "e42"),
        (f"tags:db date:>={int(cut)}", lambda j: tags(j, "db") and j["completed"] >= int(cut)),
        ('((event = "e7" | tags = "nightly") & elapsed >= 300 & code !~ "1")',
         lambda j: (j["event"] == "e7" or tags(j, "nightly")) and j["elapsed"] >= 300 and j["code"] != 1),
        ("-tags:db|web", lambda j: not tags(j, "db", "web")),
    ]  # fmt: skip
    for text, check in cases:
        expected = id_order([j for j in jobs if check(j)])
        for offset in (0, 1000, len(expected) - 3):
            found = await ix.search(text, offset=offset, limit=50)
            assert (found.total, found.ids) == (len(expected), expected[offset : offset + 50]), (text, offset)
    slowest = sorted(jobs, key=lambda j: sort_key(j, "elapsed"), reverse=True)
    found = await ix.search("*", offset=20, limit=30, sort_by="elapsed")
    assert found.ids == [j["id"] for j in slowest[20:50]]
