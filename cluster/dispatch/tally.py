"""What the placing rules count, kept per job so that a change costs O(1), not a pass over every job."""

from __future__ import annotations

from typing import Any

from . import limits

Record = dict[str, Any]

DELAYED = ("start_delay", "retry_delay")
WAITING = ("ready", "queued", *DELAYED)
RUNNING = ("active", "starting")  # what counts against concurrency limits
LOADING = (*RUNNING, "finishing")  # what counts against a server's job budget (still on the machine)


class Tally:
    """Counts the placing rules need, kept per job so a change is O(1): running jobs per similar key, job weight
    and count per server, queued ids per queue key."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.load: dict[str, float] = {}
        self.on_server: dict[str, int] = {}
        self.queued: dict[str, set[str]] = {}
        self.waiting: set[str] = set()  # ids in a WAITING state: what a step looks at, not every job
        self.states: dict[str, int] = {}  # jobs of the view per state (the node's metrics read it)
        self._seen: dict[str, tuple[str, str, str, float]] = {}

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def count(self, job: Record) -> None:
        self.forget(str(job["id"]))
        state, key, server = str(job.get("state")), limits.similar_key(job), str(job.get("server") or "")
        weight = limits.weight(job)
        self._seen[str(job["id"])] = (state, key, server, weight)
        self.states[state] = self.states.get(state, 0) + 1
        if state in RUNNING:
            self.running[key] = self.running.get(key, 0) + 1
        if state in LOADING and server:
            self.load[server] = self.load.get(server, 0.0) + weight
            self.on_server[server] = self.on_server.get(server, 0) + 1
        if state == "queued":
            self.queued.setdefault(key, set()).add(str(job["id"]))
        if state in WAITING:
            self.waiting.add(str(job["id"]))

    def forget(self, job_id: str) -> None:
        seen = self._seen.pop(job_id, None)
        if seen is None:
            return
        state, key, server, weight = seen
        self.states[state] -= 1
        if state in RUNNING:
            self.running[key] -= 1
        if state in LOADING and server:
            self.load[server] -= weight
            self.on_server[server] -= 1
        if state == "queued":
            self.queued.get(key, set()).discard(job_id)
        self.waiting.discard(job_id)
