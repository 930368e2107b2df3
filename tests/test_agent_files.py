"""Which files a finished job uploads: the forms of `files`, globs in the job's directory, the legacy log."""

from __future__ import annotations

from pathlib import Path

from cluster.agent.agent import collect_files


def test_the_forms_of_files_and_globs(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt", "c.csv", ".job.log"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    files = ["*.txt", ["c.csv", "report.csv", True], {"path": "missing.bin"}, {"path": "sub"}, 42,
             {"path": "c.csv", "filename": "again.csv"}]  # fmt: skip
    got = [(p.name, name, delete) for p, name, delete in collect_files(files, tmp_path)]
    assert got == [("a.txt", "a.txt", False), ("b.txt", "b.txt", False), ("c.csv", "report.csv", True),
                   ("c.csv", "again.csv", False), (".job.log", "job.log", True)]  # fmt: skip


def test_nothing_to_upload(tmp_path: Path) -> None:
    assert collect_files(None, tmp_path) == [] and collect_files("*.txt", tmp_path) == []
