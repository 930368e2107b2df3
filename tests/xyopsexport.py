"""Builds an export file in the xyOps format from its documentation (docs/api.md admin_export_data / import): gzip'd
NDJSON with header comments, lists in pages, users, a secret sealed in the xyOps scheme and database records. The
data is this test suite's own, written to look like what an xyOps system holds."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from typing import Any

import bcrypt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PASSPHRASE = "fixture-secret-key-9f3"
USER_PASSWORD = "correct horse battery"
API_KEY_PLAIN = "xyfixtureplainkey0123456789abcdef"
NOW = 1764000000


def seal(variables: list[dict[str, str]], secret_id: str) -> dict[str, Any]:
    salt, iv = os.urandom(16), os.urandom(12)
    key = Scrypt(salt=salt, length=32, n=16384, r=8, p=1).derive(PASSPHRASE.encode())
    sealed = AESGCM(key).encrypt(iv, json.dumps(variables).encode(), secret_id.encode())
    return {"v": 1, "alg": "aes-256-gcm", "salt": enc(salt), "iv": enc(iv), "tag": enc(sealed[-16:]),
            "ct": enc(sealed[:-16])}  # fmt: skip


def enc(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _list(key: str, items: list[dict[str, Any]], page_size: int = 2) -> list[str]:
    pages = [items[i : i + page_size] for i in range(0, len(items), page_size)]
    out = [json.dumps({"cmd": "listDelete", "args": [key, False]}),
           json.dumps({"key": key, "value": {"type": "list", "length": len(items), "page_size": page_size,
                                             "first_page": 0, "last_page": len(pages) - 1}})]  # fmt: skip
    out += [json.dumps({"key": f"{key}/{n}", "value": {"type": "list_page", "items": p}}) for n, p in enumerate(pages)]
    return out


def definitions() -> dict[str, list[dict[str, Any]]]:
    base = {"username": "admin", "created": NOW, "modified": NOW + 5, "revision": 3}
    return {
        "categories": [
            {**base, "id": "xy_ops", "title": "Ops", "enabled": True, "color": "blue", "sort_order": 0},
            {**base, "id": "xy_misc", "title": "Misc", "enabled": True, "color": "plain", "sort_order": 1},
            {**base, "id": "xy_reports", "title": "Reports", "enabled": True, "color": "green", "sort_order": 2},
        ],
        "tags": [{**base, "id": "xy_nightly", "title": "Nightly", "icon": ""}],
        "secrets": [{**base, "id": "xy_db", "title": "DB creds", "enabled": True, "events": ["xy_backup"],
                     "categories": [], "plugins": [], "web_hooks": [], "names": ["DB_PASS", "DB_USER"]}],
        "api_keys": [{**base, "id": "kxyfixture1", "title": "CI key", "active": 1, "privileges": {"admin": True},
                      "roles": [], "key": hashlib.sha256((API_KEY_PLAIN + "kxyfixture1").encode()).hexdigest(),
                      "mask": "xyfi********cdef"}],
        "events": [{**base, "id": "xy_backup", "title": "Nightly backup", "enabled": True, "category": "xy_ops",
                    "plugin": "shellplug", "targets": ["main"], "tags": ["xy_nightly"], "triggers": [],
                    "params": {"script": "#!/bin/sh\necho backup\n"}, "limits": [], "actions": [],
                    "notes": "from xyOps"}],
    }


JOB = {"id": "jxyfixture01", "event": "xy_backup", "category": "xy_ops", "plugin": "shellplug", "state": "complete",
       "code": 0, "description": "", "started": NOW + 100, "completed": NOW + 160, "elapsed": 60.0,
       "server": "main1", "tags": ["_success", "xy_nightly"], "source": "scheduler", "username": "admin"}  # fmt: skip


TICKET = {"id": "txyfixture01", "num": 7, "subject": "Backup failed twice", "body": "See the job.", "type": "issue",
          "status": "open", "category": "xy_ops", "server": "", "assignees": ["admin"], "cc": [], "notify": [],
          "due": 0, "tags": [], "events": ["xy_backup"], "files": [], "changes": [], "jobs": [], "alerts": [],
          "username": "admin", "created": NOW + 200, "modified": NOW + 200}  # fmt: skip
INVOCATION = {"id": "axyfixture01", "active": True, "alert": "load_avg_high", "server": "main1", "groups": ["main"],
              "date": NOW + 300, "modified": NOW + 300, "message": "Load is high", "actions": [], "jobs": [],
              "tickets": []}  # fmt: skip
ACTIVITY = {"id": "xyactivity01", "action": "event_create", "epoch": NOW + 1, "username": "admin",
            "description": "Created event: Nightly backup", "keywords": ["xy_backup", "admin"]}  # fmt: skip


def build(*, malformed: bool = True) -> bytes:
    """The gzip'd export; with `malformed`, one broken line in the middle (its 1-based number: MALFORMED_LINE)."""
    lines = ["# xyOps Data Export v1.0", "# Hostname: xyops-fixture.local", "# Date/Time: Tue Nov 25 2025",
             "# Format: NDJSON", ""]  # fmt: skip
    for name, items in definitions().items():
        lines += ["", f"# List: global/{name}", *_list(f"global/{name}", items)]
    if malformed:
        lines += ["", '{"key": "global/broken/0", "value": {oops']
    salt = "f1x7"
    user = {"username": "Jane.Doe", "full_name": "Jane Doe", "email": "jane@example.com", "active": 1,
            "privileges": {"create_events": True, "edit_events": True}, "roles": [], "categories": [], "groups": [],
            "salt": salt, "password": bcrypt.hashpw((USER_PASSWORD + salt).encode(), bcrypt.gensalt(10)).decode(),
            "created": NOW, "modified": NOW}  # fmt: skip
    lines += ["", "# User Data:", *_list("global/users", [{"username": "Jane.Doe"}]),
              json.dumps({"key": "users/janedoe", "value": user})]  # fmt: skip
    lines += ["", "# Encrypted Secret Data",
              json.dumps({"key": "secrets/xy_db", "value": seal([{"name": "DB_USER", "value": "backup"},
                                                                   {"name": "DB_PASS", "value": "s3cr3t"}], "xy_db")})]
    for index, record in (("jobs", JOB), ("tickets", TICKET), ("alerts", INVOCATION), ("activity", ACTIVITY)):
        row = {"index": index, "id": record["id"], "record": record}
        lines += ["", f"# Database Index: {index} (*)", json.dumps(row)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def malformed_line() -> int:
    """The 1-based line number of the broken line `build` writes."""
    text = gzip.decompress(build()).decode().splitlines()
    return next(n for n, t in enumerate(text, 1) if "oops" in t)
