"""The xyOps export format helpers (pure): the secret scheme, list paging and line reading."""

from __future__ import annotations

import json

import pytest

from api import xyformat
from tests import xyopsexport


def test_secrets_round_trip_and_open_what_the_fixture_sealed_independently() -> None:
    variables = [{"name": "A", "value": "1"}, {"name": "B", "value": "ünïcode"}]
    sealed = xyformat.seal_secret(variables, "pass", "sec1")
    assert set(sealed) == {"v", "alg", "salt", "iv", "tag", "ct"} and sealed["alg"] == "aes-256-gcm"
    assert xyformat.open_secret(sealed, "pass", "sec1") == variables
    with pytest.raises(xyformat.FormatError, match="cannot be decrypted"):
        xyformat.open_secret(sealed, "wrong", "sec1")
    with pytest.raises(xyformat.FormatError, match="cannot be decrypted"):  # the id is the associated data
        xyformat.open_secret(sealed, "pass", "sec2")
    with pytest.raises(xyformat.FormatError, match="base64"):
        xyformat.open_secret({**sealed, "iv": "@@"}, "pass", "sec1")
    other = xyopsexport.seal(variables, "sec1")  # written by the test's own code, from the documented scheme
    assert xyformat.open_secret(other, xyopsexport.PASSPHRASE, "sec1") == variables


def test_lists_are_paged_as_xyops_pages_them() -> None:
    lines = [json.loads(t) for t in xyformat.list_lines("global/tags", [{"id": str(n)} for n in range(120)])]
    assert lines[0] == {"cmd": "listDelete", "args": ["global/tags", False]}
    assert lines[1]["value"] == {"type": "list", "length": 120, "page_size": 50, "first_page": 0, "last_page": 2}
    assert [len(x["value"]["items"]) for x in lines[2:]] == [50, 50, 20]
    empty = [json.loads(t) for t in xyformat.list_lines("global/tags", [])]
    assert empty[1]["value"]["last_page"] == 0 and empty[2]["value"]["items"] == []


def test_rows_skip_comments_and_report_bad_lines_by_number() -> None:
    bad: list[tuple[int, str]] = []
    text = '# header\n\n{"key": "a", "value": 1}\n[1, 2]\n{broken\n  {"cmd": "listDelete", "args": []}\n'
    rows = list(xyformat.rows(text, report_error=lambda n, m: bad.append((n, m))))
    assert [r.number for r in rows] == [3, 6]
    assert [n for n, _ in bad] == [4, 5] and bad[0][1] == "not a JSON object"
    assert xyformat.user_key("Jane.Doe-2") == "users/janedoe2"
