"""Which server runs a job (execution reference 1.2): pure functions over server records, no I/O.

1. Candidates: each target is a server id (used when that server is online) or a group id (every online
   server in that group), in target order, each server once.
2. Filters, in order: enabled; no active alert that limits jobs; room under the server's job budget
   (`maxJobs`, else the smallest `max_jobs_per_server` of its groups: the job's weight plus the weights of
   the jobs already active there must fit); the event's expression, when one is given (a predicate here:
   the caller evaluates it; an evaluation error keeps the server, as xyOps skips a failing filter).
3. The algorithm picks one of what is left. The round-robin counter is the caller's (kept in Redis).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Server = Mapping[str, Any]
ALGOS = frozenset({"random", "round_robin", "prefer_first", "prefer_last", "prefer_first_natural",
                   "prefer_last_natural", "least_cpu", "least_mem", "fewest_jobs"})  # fmt: skip


class UnknownAlgorithm(ValueError):
    """The event names an algorithm that does not exist (xyOps: "Unknown algorithm or monitor")."""


def target_list(targets: str | Iterable[str] | None) -> list[str]:
    if targets is None:
        return []
    if isinstance(targets, str):
        return [t.strip() for t in targets.split(",") if t.strip()]
    return [str(t) for t in targets]


def candidates(targets: str | Iterable[str] | None, online: Mapping[str, Server]) -> list[Server]:
    """Online servers named by the targets (server ids or group ids), in target order, each once."""
    out: dict[str, Server] = {}
    for target in target_list(targets):
        if target in online:
            out.setdefault(target, online[target])
            continue
        for server_id, server in online.items():
            if target in (server.get("groups") or []):
                out.setdefault(server_id, server)
    return list(out.values())


def job_budget(server: Server, groups: Mapping[str, Mapping[str, Any]]) -> int:
    """How much job weight the server may run at once (0 = no limit)."""
    own = server.get("maxJobs")
    if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
        return int(own)
    limits = [int(g["max_jobs_per_server"]) for gid in server.get("groups") or []
              if isinstance(g := groups.get(gid), Mapping) and isinstance(g.get("max_jobs_per_server"), int)
              and g["max_jobs_per_server"] > 0]  # fmt: skip
    return min(limits, default=0)


def available(
    servers: Sequence[Server],
    *,
    groups: Mapping[str, Mapping[str, Any]],
    load: Mapping[str, float],
    weight: float = 1,
    alert_blocked: Iterable[str] = (),
    expression: Callable[[Server], bool] | None = None,
) -> list[Server]:
    """The candidates that may take the job now. `load`: server id -> weight of its active jobs."""
    blocked = set(alert_blocked)
    out = []
    for server in servers:
        server_id = str(server.get("id"))
        if not server.get("enabled", True) or server_id in blocked:
            continue
        budget = job_budget(server, groups)
        if budget and weight + load.get(server_id, 0) > budget:
            continue
        if expression is not None:
            try:
                if not expression(server):
                    continue
            except Exception:  # a failing filter is skipped, as xyOps does (the caller logs it)
                pass
        out.append(server)
    return out


def _name(server: Server) -> str:
    return str(server.get("title") or server.get("hostname") or "").lower()


def _metric(server: Server, *path: str) -> float:
    value: Any = server.get("info") or {}
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("inf")


def choose(
    servers: Sequence[Server],
    algo: str,
    *,
    robin: int = 0,
    active_counts: Mapping[str, int] | None = None,
    monitors: Mapping[str, Mapping[str, Any]] | None = None,
    rng: random.Random | None = None,
) -> Server | None:
    """One server by the event's algorithm, or None when there are none. `robin` is the round-robin counter
    before this pick; `monitors`: monitor id -> definition, for `monitor:<id>`."""
    if not servers:
        return None
    algo = algo or "random"
    if algo == "random":
        return (rng or random).choice(list(servers))
    if algo == "round_robin":
        return servers[robin % len(servers)]
    if algo in ("prefer_first", "prefer_last"):
        ordered = sorted(servers, key=_name)
        return ordered[0] if algo == "prefer_first" else ordered[-1]
    if algo == "prefer_first_natural":
        return servers[0]
    if algo == "prefer_last_natural":
        return servers[-1]
    if algo == "least_cpu":
        return min(servers, key=lambda s: _metric(s, "cpu", "avgLoad"))
    if algo == "least_mem":
        return min(servers, key=lambda s: _metric(s, "memory", "active"))
    if algo == "fewest_jobs":
        counts = active_counts or {}
        return min(servers, key=lambda s: counts.get(str(s.get("id")), 0))
    monitor_id = algo[len("monitor:") :] if algo.startswith("monitor:") else algo
    monitor = (monitors or {}).get(monitor_id)
    if monitor is None or not re.fullmatch(r"\w+", monitor_id):
        raise UnknownAlgorithm(f"Unknown algorithm or monitor: {algo}")
    where = "deltas" if monitor.get("delta") else "monitors"
    return min(servers, key=lambda s: _metric(s, where, monitor_id))
