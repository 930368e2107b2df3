"""LogStore against a real valkey: offsets (resends skipped, gaps marked), the cap, tail/read, finalize and drop."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from storage.connection import Database
from storage.files import DirectoryFileStore, FileStore, RedisFileStore
from storage.logs import LogStore, log_path

BIG = 1 << 30


@pytest.fixture(params=["redis", "directory"])
def logs(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> LogStore:
    files: FileStore = RedisFileStore(db) if request.param == "redis" else DirectoryFileStore(tmp_path / "files")
    return LogStore(db, files)


async def live(logs: LogStore, job_id: str) -> bytes:
    return await logs.read(job_id, 0, await logs.size(job_id))


async def test_append_without_offsets(logs: LogStore) -> None:
    assert await logs.size("j1") == 0 and await logs.tail("j1", 10) == b""
    assert await logs.append("j1", "line one\n", None, BIG) == 9
    assert await logs.append("j1", "line one\n", None, BIG) == 18  # xySat: no offsets, a resend is appended
    assert await live(logs, "j1") == b"line one\nline one\n"
    assert await logs.received("j1") == 18


async def test_offsets_skip_resends_and_mark_gaps(logs: LogStore) -> None:
    assert await logs.append("j1", "abc\n", 0, BIG) == 4
    assert await logs.append("j1", "abc\n", 0, BIG) == 4  # the same chunk again: stored once
    assert await logs.append("j1", "c\ndef\n", 2, BIG) == 8  # overlaps: only the new part is kept
    assert await live(logs, "j1") == b"abc\ndef\n"
    assert await logs.append("j1", "xyz\n", 20, BIG) == 24  # 12 bytes never arrived
    assert await live(logs, "j1") == b"abc\ndef\n[podium: 12 bytes of output lost]\nxyz\n"
    assert await logs.append("j1", "tail", 18, BIG) == 24  # late duplicate of what the gap skipped: ignored
    # A gap after a partial line starts its marker on a line of its own.
    await logs.append("j2", "partial", 0, BIG)
    await logs.append("j2", "next\n", 10, BIG)
    assert await live(logs, "j2") == b"partial\n[podium: 3 bytes of output lost]\nnext\n"
    with pytest.raises(ValueError, match="out of range"):
        await logs.append("j1", "x", -1, BIG)


async def test_offsets_count_utf8_bytes(logs: LogStore) -> None:
    text = "héllo → wörld ✓\n"
    size = len(text.encode())
    assert await logs.append("j1", text, 0, BIG) == size
    assert await logs.append("j1", text, 0, BIG) == size
    assert await logs.append("j1", "€€\n", size, BIG) == size + 7
    assert (await live(logs, "j1")).decode() == text + "€€\n"
    # Skipping the already-stored part of an overlapping resend works in bytes, not characters.
    assert await logs.append("j1", "€€\nñ\n", size, BIG) == size + 10
    assert (await live(logs, "j1")).decode() == text + "€€\nñ\n"


async def test_cap_keeps_a_prefix_then_one_marker(logs: LogStore) -> None:
    for i in range(5):
        await logs.append("j1", f"{i:09d}\n", i * 10, 25)
    data = await live(logs, "j1")
    assert data == b"000000000\n000000001\n00000\n[podium: log truncated at 25 bytes]\n"
    assert await logs.received("j1") == 50  # recv keeps advancing, so the agent's acks still move
    assert await logs.append("j1", "more\n", 50, 25) == 55
    assert await live(logs, "j1") == data
    # The cut never splits a UTF-8 character.
    await logs.append("j2", "aé€", None, 4)  # a(1) é(2) €(3): the € would straddle the cap
    assert (await live(logs, "j2")).decode() == "aé\n[podium: log truncated at 3 bytes]\n"


async def test_tail_and_read(logs: LogStore) -> None:
    await logs.append("j1", "one\ntwo\nthree\n", 0, BIG)
    assert await logs.tail("j1", 6) == b"three\n"
    assert await logs.tail("j1", 1000) == b"one\ntwo\nthree\n"
    assert await logs.read("j1", 4, 8) == b"two\n"
    assert await logs.read("j1", 8, 4) == b""


async def test_finalize_is_idempotent_and_seals(logs: LogStore) -> None:
    assert await logs.finalize("none") is None
    text = "".join(f"line {i}\n" for i in range(2000))
    await logs.append("j1", text, 0, BIG)
    assert await logs.finalize("j1") == (log_path("j1"), len(text))
    stored = await logs.stored("j1")
    assert stored is not None and gzip.decompress(stored).decode() == text
    assert await logs.size("j1") == 0
    assert await logs.finalize("j1") == (log_path("j1"), len(text))  # again: the stored one
    # Output arriving after the finish is ignored (the stored log stays what was live).
    await logs.append("j1", "late\n", len(text), BIG)
    assert await logs.size("j1") == 0
    assert gzip.decompress(await logs.stored("j1") or b"").decode() == text
    await logs.drop("j1")
    assert await logs.stored("j1") is None and await logs.finalize("j1") is None


async def test_large_log_compressed_in_chunks(logs: LogStore) -> None:
    block = "".join(f"{i:07d} some output that repeats\n" for i in range(40_000))  # about 1.4 MB
    offset = 0
    for start in range(0, len(block), 100_000):
        piece = block[start : start + 100_000]
        await logs.append("j1", piece, offset, BIG)
        offset += len(piece.encode())
    path, size = await logs.finalize("j1") or ("", 0)
    assert path == "logs/jobs/j1/log.txt.gz" and size == len(block)
    assert gzip.decompress(await logs.stored("j1") or b"").decode() == block
