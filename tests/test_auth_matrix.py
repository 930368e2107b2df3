"""Every handler that declares a privilege refuses bad credentials, on the primary and on a satellite.

The cases are generated from the handler registry itself, so a new handler is covered (or the
test fails) without editing this file.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.principal import privilege_title
from api.registry import AUTH, HANDLERS, SESSION, Handler
from api.settings import Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from tests.authkit import Client, NodeTestServer, Site, open_site, wait_until

GUARDED = [h for h in HANDLERS if h.privilege is not None]


@dataclass
class Keys:
    bad: str
    disabled: str
    expired: str
    bare: str  # valid, active, no privileges


@dataclass
class Pair:
    primary: Site
    satellite: Client
    keys: Keys


@pytest.fixture(scope="module")
def handlers() -> list[Handler]:
    assert len(GUARDED) >= 20, "the registry lost its guarded handlers"
    return GUARDED


@pytest.fixture
async def pair(db: Database, tmp_path: Path) -> AsyncIterator[Pair]:
    async for site in open_site(db, tmp_path / "p", login_ip_limit=0):
        sid, _ = await site.login()
        disabled, _ = await site.admin_key(sid, active=0, privileges={"admin": True})
        expired, _ = await site.admin_key(sid, expires=int(time.time()) - 60, privileges={"admin": True})
        bare, _ = await site.admin_key(sid)
        keys = Keys(bad="x" * 43, disabled=disabled, expired=expired, bare=bare)
        node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000)
        sat = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "s"), node), **RUNNER_OPTIONS))
        await sat.start_server()
        await node.start()
        try:
            await wait_until(lambda n=node: n.stores.bus.healthy and n.election.primary_id == "n1", "satellite")  # type: ignore[misc]
            yield Pair(site, sat, keys)
        finally:
            await node.stop()
            await sat.close()


async def _post(client: Client, h: Handler, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    resp = await client.post(f"/api/{h.ns}/{h.name}/v1", json={}, headers=headers)
    return resp.status, await resp.json()


async def _expect_refusals(client: Client, h: Handler, keys: Keys, *, satellite: bool) -> list[str]:
    problems: list[str] = []
    where = "satellite" if satellite else "primary"
    if satellite and h.write:
        status, body = await _post(client, h, {})
        if (status, body.get("code")) != (500, "master"):
            problems.append(f"{where} {h.name}: write answered {status} {body.get('code')} instead of master")
        return problems
    cases = {"no credentials": {}, "bad key": {"X-API-Key": keys.bad}, "disabled key": {"X-API-Key": keys.disabled},
             "expired key": {"X-API-Key": keys.expired}}  # fmt: skip
    for label, headers in cases.items():
        status, body = await _post(client, h, headers)
        if (status, body.get("code")) != (401, "session"):
            problems.append(f"{where} {h.ns}/{h.name} with {label}: {status} {body.get('code')}")
    status, body = await _post(client, h, {"X-API-Key": keys.bare})
    if h.privilege == SESSION:
        expected: tuple[int, str] | None = (401, "session")
    elif h.privilege == AUTH:
        expected = None  # any valid caller passes auth; what happens next is the handler's business
    else:
        expected = (403, "access")
        if f'"{privilege_title(str(h.privilege))}" privilege' not in str(body.get("description")):
            problems.append(f"{where} {h.name}: refusal does not name the privilege: {body.get('description')}")
    if expected is not None and (status, body.get("code")) != expected:
        problems.append(f"{where} {h.ns}/{h.name} with an unprivileged key: {status} {body.get('code')}")
    if expected is None and status in (401, 403):
        problems.append(f"{where} {h.ns}/{h.name}: a valid key was refused ({status} {body.get('code')})")
    return problems


async def test_every_guarded_handler_refuses(pair: Pair, handlers: list[Handler]) -> None:
    problems: list[str] = []
    for h in handlers:
        problems += await _expect_refusals(pair.primary.client, h, pair.keys, satellite=False)
        problems += await _expect_refusals(pair.satellite, h, pair.keys, satellite=True)
    assert not problems, "\n".join(problems)


def test_matrix_covers_the_registry() -> None:
    names = {h.name for h in GUARDED}
    unguarded = {h.name for h in HANDLERS if h.privilege is None}
    # magic links and agent enrolment (satellite/config?t=) carry their own credential (a token in the URL), so do
    # the job log links (get_job's `token`), stream_job (a session or key, or a magic link's stream token:
    # tests/test_logs_api.py), agents' uploads and finishes (a hash of the job or server id with the secret;
    # tests/test_files_api.py).
    assert unguarded <= {"ping", "echo", "error", "login", "logout", "resume_session", "create", "magic", "satellite",
                         "view_job_log", "download_job_log", "upload_job_file", "stream_job", "finish_job"}, unguarded
    assert {"get_global_state", "create_api_key", "search_activity", "admin_get_users", "update_role"} <= names
