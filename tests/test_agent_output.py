"""The plugin stdout protocol (cluster/agent/output.py): which lines are records, and how they merge."""

from __future__ import annotations

import json

from cluster.agent.output import JobOutput, LineSplitter, parse_record


def lines(splitter: LineSplitter, *chunks: bytes) -> list[tuple[bytes, bool]]:
    out = [piece for chunk in chunks for piece in splitter.feed(chunk)]
    return out + list(splitter.close())


def test_lines_are_joined_across_chunks_and_the_last_one_is_kept() -> None:
    got = lines(LineSplitter(), b'{"xy":1,', b'"progress":0.5}\nhel', b"lo\nlast")
    assert got == [(b'{"xy":1,"progress":0.5}\n', True), (b"hello\n", True), (b"last", True)]


def test_an_overlong_line_comes_out_in_pieces_that_are_never_records() -> None:
    record = b'{"xy":1,"code":0,"pad":"' + b"x" * 100 + b'"}\n'
    got = lines(LineSplitter(max_line=40), record[:30], record[30:], b"ok\n")
    assert b"".join(p for p, _ in got[:-1]) == record
    assert all(not whole and len(piece) <= 40 for piece, whole in got[:-2])
    assert got[-1] == (b"ok\n", True)


def test_which_lines_are_records() -> None:
    assert parse_record(b'  {"xy": 1, "progress": 0.25}  \n') == {"xy": 1, "progress": 0.25}
    for text in (b'{"progress": 1}\n', b'{"xy": 0}\n', b"[1, 2]\n", b"plain text\n", b'{"xy": 1\n', b"{}\n"):
        assert parse_record(text) is None, text
    assert parse_record(b"{" * 5000 + b"}" * 5000) is None  # too deep to parse: log text, not a crash


def test_complete_and_code_imply_each_other() -> None:
    out = JobOutput()
    assert out.apply({"xy": 1, "complete": True})
    assert (out.job["complete"], out.job["code"]) == (True, 0)
    out = JobOutput()
    out.apply({"xy": 1, "code": "warning", "description": "careful"})
    assert out.job["complete"] is True and out.job["description"] == "careful"
    assert not out.apply({"xy": 1, "progress": 0.9})  # a complete job is not changed any more
    assert "progress" not in out.job


def test_an_echoed_job_and_an_aborting_job_are_left_alone() -> None:
    out = JobOutput()
    assert not out.apply({"xy": 1, "type": "event", "id": "j1", "code": 0})
    assert out.job == {}
    out.job["code"] = "abort"
    assert not out.apply({"xy": 1, "code": 0})
    assert out.job == {"code": "abort"}


def test_data_is_held_and_merged_with_array_concatenation() -> None:
    out = JobOutput()
    out.apply({"xy": 1, "data": {"rows": [1], "n": 1}, "serverData": {"a": 1}})
    out.apply({"xy": 1, "data": {"rows": [2, 3], "n": 2}, "workflowData": "not an object"})
    assert out.held == {"data": {"rows": [1, 2, 3], "n": 2}, "serverData": {"a": 1}}
    assert "data" not in out.job and "workflowData" not in out.job
    assert out.warnings == ["Invalid syntax: Not an object: workflowData"]


def test_pushes_are_checked_and_concatenated_and_files_join_the_job() -> None:
    out = JobOutput()
    out.apply({"xy": 1, "push": {"tags": ["a"], "files": ["out.txt"]}})
    out.apply({"xy": 1, "push": {"tags": ["b"], "actions": [{"type": "email"}]}})
    assert out.job["push"] == {"tags": ["a", "b"], "actions": [{"type": "email"}]}
    assert out.job["files"] == ["out.txt"]
    bad_pushes: list[tuple[object, str]] = [
        ({"bad-key": []}, "Invalid key"), ({"tags": "a"}, "not an array: tags"), ([1], "Not an object"),
    ]
    for bad, warning in bad_pushes:
        out.apply({"xy": 1, "push": bad})
        assert warning in out.warnings[-1]
    assert out.job["push"]["tags"] == ["a", "b"]  # a bad push changes nothing


def test_the_rest_merges_shallowly_and_redraw_marks_visible_changes() -> None:
    out = JobOutput()
    out.apply({"xy": 1, "progress": 0.1})
    assert "redraw" not in out.job
    out.apply({"xy": 1, "table": {"title": "T", "rows": [[1]]}, "progress": 0.5})
    first = out.job["redraw"]
    out.apply({"xy": 1, "status": "working"})
    assert out.job["progress"] == 0.5 and out.job["table"]["title"] == "T" and out.job["redraw"] != first


def test_a_mixed_stream_end_to_end() -> None:
    splitter, out, log = LineSplitter(), JobOutput(), []
    stream = b"starting\n" + json.dumps({"xy": 1, "progress": 0.5}).encode() + b'\n{"note": 1}\n'
    stream += json.dumps({"xy": 1, "code": 0, "description": "done"}).encode() + b"\n"
    for piece, whole in [*splitter.feed(stream), *splitter.close()]:
        record = parse_record(piece) if whole else None
        if record is None or not out.apply(record):
            log.append(piece)
    assert log == [b"starting\n", b'{"note": 1}\n']
    assert (out.job["progress"], out.job["code"], out.job["complete"]) == (0.5, 0, True)
