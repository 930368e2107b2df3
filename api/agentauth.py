"""Agent credentials (digest 3.2 finish_job, 5.1): one place for the tokens and how they are compared.

- the per-server token an agent holds instead of the cluster secret: sha256_hex(server id + secret key);
- for one job: sha256_hex(job id + secret key) (an agent holding the secret), or, with `server`, that server's
  token or sha256_hex(job id + token) (a runner's per-job token), from the server the job runs on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a credential (as bytes: any text a caller sends is comparable)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def server_token(server_id: str, secret_key: str) -> str:
    """The agent's own token (digest 5.1 `auth_token`)."""
    return sha256_hex(server_id + secret_key)


def agent_may_act(job: Mapping[str, Any], job_id: str, auth: str, server: str, secret_key: str) -> bool:
    """May the caller finish this job or upload its files? ⚠ xyOps also wants the server online; Podium takes a
    finish while the agent's socket is down (it comes over HTTP, to any node)."""
    if not auth:
        return False
    if not server:
        return same(auth, sha256_hex(job_id + secret_key))
    token = server_token(server, secret_key)
    return job.get("server") == server and (same(auth, token) or same(auth, sha256_hex(job_id + token)))
