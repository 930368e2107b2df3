"""The log chunker and ack buffer: offsets, chunk limits on character boundaries, resend, spill, drop."""

from __future__ import annotations

from pathlib import Path

from cluster.agent.logbuf import LogBuffer, Spool


def drain(buf: LogBuffer, limit: int = 1024 * 1024) -> list[tuple[int, str]]:
    out = []
    while (chunk := buf.next_chunk(limit)) is not None:
        out.append(chunk)
    return out


def test_offsets_count_utf8_bytes_and_chunks_never_split_a_character(tmp_path: Path) -> None:
    buf = LogBuffer(Spool(tmp_path), "j")
    buf.write("héllo ")
    buf.write("wörld €\n")
    chunks = drain(buf, limit=4)
    assert "".join(text for _, text in chunks) == "héllo wörld €\n"
    offset = 0
    for start, text in chunks:
        assert start == offset and 0 < len(text.encode()) <= 4
        offset += len(text.encode())
    assert offset == buf.size == len("héllo wörld €\n".encode())


def test_ack_drops_and_rewind_resends_only_what_is_not_acknowledged(tmp_path: Path) -> None:
    buf = LogBuffer(Spool(tmp_path), "j")
    buf.write("one\n")
    buf.write("two\n")
    assert drain(buf) == [(0, "one\ntwo\n")]
    assert drain(buf) == []
    buf.ack(4)
    buf.write("three\n")
    buf.rewind()  # a reconnect
    assert drain(buf) == [(4, "two\nthree\n")]
    assert not buf.complete
    buf.ack(buf.size)
    assert buf.complete and drain(buf) == []
    buf.ack(2)  # an old ack changes nothing
    assert buf.acked == buf.size


def test_spill_to_disk_then_read_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=10_000)
    buf = LogBuffer(spool, "j", mem_limit=100)
    lines = [f"line {n:04}\n" for n in range(300)]  # 3000 bytes: most of it goes to the spool file
    for line in lines:
        buf.write(line)
    assert buf.path.exists() and spool.used > 0
    assert "".join(text for _, text in drain(buf, limit=256)) == "".join(lines)
    buf.ack(1000)
    buf.rewind()
    assert "".join(text for _, text in drain(buf)) == "".join(lines)[1000:]
    buf.ack(buf.size)
    assert not buf.path.exists() and spool.used == 0


def test_past_the_spool_budget_output_is_dropped_with_one_marker(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=200)
    buf = LogBuffer(spool, "j", mem_limit=100)
    for _ in range(50):
        buf.write("x" * 10)
    buf.close()
    text = "".join(t for _, t in drain(buf))
    assert text.startswith("x" * 300)
    assert text.count("bytes of output dropped]") == 1
    assert text.endswith("[podium-agent: 200 bytes of output dropped]\n")
    assert buf.size == len(text.encode())


def test_two_jobs_share_one_spool_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=150)
    a, b = LogBuffer(spool, "a", mem_limit=100), LogBuffer(spool, "b", mem_limit=100)
    for buf in (a, b):
        for _ in range(20):
            buf.write("y" * 10)
        buf.close()
    assert spool.used <= 150
    assert "dropped" in "".join(t for _, t in drain(b))
    a.discard()
    b.discard()
    assert spool.used == 0
