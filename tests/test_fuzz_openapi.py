"""Schemathesis against the OpenAPI document of a real `podium serve` node.

Every documented operation is called with generated requests (schema-conforming and not), as an admin key
and as a key with no privileges. No reply may be a crash (`internal`) or leak a traceback, every reply is
JSON with a `code`, the node stays primary at the same epoch, and no upload is left in the spool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.servers import Node, wait_port

# Not fuzzed: echo sleeps on request, test_web_hook sends requests to the URL it is given (only loopback
# traffic is allowed from tests), and a fuzzer that logs the admin out would test nothing further.
SKIP = frozenset({"echo", "test_web_hook", "logout_all", "logout"})
EXAMPLES = 12  # per operation and caller: about 170 operations x 2 callers in one to three minutes
LEAKS = ("Traceback", 'File "/', "bcrypt", "$2b$", "hunter2")
# Calls whose replies are text by contract (a job log, or its refusal as text, as xyOps answers a browser).
TEXT_REPLIES = ("/view_job_log/", "/download_job_log/")
DOWNLOADS = ("/bulk_search_export/",)  # a 200 is a file (CSV, TSV, NDJSON, maybe gzip), not JSON


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("fuzz")
    node = Node(0, root, None, ["--login-ip-limit", "0"]).start(env={"PODIUM_TEST_HOOKS": "0"})
    try:
        wait_port(node.port)
        deadline = time.monotonic() + 60
        while requests.get(node.url + "/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, node.log_text()[-2000:]
            time.sleep(0.2)
        yield node
    finally:
        node.terminate()


def _admin_session(url: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        resp = requests.post(url + "/api/user/login/v1", json={"username": "admin", "password": "admin"}, timeout=10)
        if resp.status_code == 200:
            return str(resp.cookies["session_id"])
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)


def _key(url: str, sid: str, privileges: dict[str, bool]) -> str:
    resp = requests.post(url + "/api/app/create_api_key/v1", json={"title": "fuzz", "privileges": privileges},
                         headers={"X-Session-ID": sid}, timeout=10)  # fmt: skip
    data = resp.json()
    assert data["code"] == 0, data
    return str(data["plain_key"])


def _health(url: str) -> dict[str, Any]:
    data: dict[str, Any] = requests.get(url + "/health", timeout=10).json()
    return data


def check_reply(status: int, text: str, ctype: str, where: str) -> None:
    for leak in LEAKS:
        assert leak not in text, (where, leak, text[:500])
    if status == 400 and ctype.startswith("text/plain"):
        return  # refused by the HTTP parser itself (e.g. a request line over 8 KiB): it never reached the API
    if ctype.startswith("text/plain") and status in (200, 403, 404) and any(p in where for p in TEXT_REPLIES):
        return
    try:
        data = json.loads(text)
    except ValueError:
        raise AssertionError((where, status, text[:300])) from None
    assert isinstance(data, dict) and "code" in data, (where, text[:300])
    assert data["code"] != "internal", (where, status, text[:500])


def fuzz_operation(url: str, strategy: Any, who: str, key: str) -> int:
    """EXAMPLES generated calls of one operation as one caller; returns how many were sent."""
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent
        headers = {**(case.headers or {}), "X-API-Key": key}
        response = case.call(base_url=url, headers=headers, timeout=30)
        sent += 1
        if response.status_code == 200 and any(p in case.path for p in DOWNLOADS):
            body = response.content.decode(errors="replace")
            assert not [leak for leak in LEAKS if leak in body], (who, case.path, body[:300])
            return
        found = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
        ctype = found[0] if isinstance(found, list) and found else str(found)
        check_reply(response.status_code, response.text, ctype, f"{who} {case.method} {case.path}")

    run()
    return sent


@pytest.mark.timeout(900)  # every operation, twice: minutes on a busy 2-core machine
def test_schemathesis_finds_no_crash(node: Node) -> None:
    doc = requests.get(node.url + "/api/openapi.json", timeout=10).json()
    sid = _admin_session(node.url)
    callers = {"admin": _key(node.url, sid, {"admin": True}), "nobody": _key(node.url, sid, {})}
    before = _health(node.url)
    assert before["master"] is True
    schema = schemathesis.openapi.from_dict(doc)
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here, as it should
        name = operation.path.split("/")[3]
        if name in SKIP:
            continue
        strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)
        for who, key in callers.items():
            calls += fuzz_operation(node.url, strategy, who, key)
    after = _health(node.url)
    assert after["master"] is True and after["epoch"] == before["epoch"], (before, after)
    assert calls > 500
    print(f"schemathesis: {calls} requests")
    spool = Path(node.directory) / "data" / "tmp"
    assert not spool.exists() or not any(spool.iterdir()), list(spool.iterdir())
    assert "handler_failed" not in node.log_text()
