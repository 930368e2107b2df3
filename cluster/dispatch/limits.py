"""Start limits of a job (execution reference 1.3): which limit applies, what counts against it. Pure code.

For the single-instance types (`job`, `retry`, `queue`, `file`) the first enabled limit of the job's list wins;
the list is built at launch as event limits, then category limits, then universal ones, so "first" is the
precedence event > category > universal. Jobs count against each other's concurrency when they are "similar":
the same event and type, or, inside a workflow, the same workflow node of the same parent run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Record = Mapping[str, Any]


def first_limit(job: Record, kind: str) -> Record | None:
    for limit in job.get("limits") or []:
        if isinstance(limit, Mapping) and limit.get("type") == kind and limit.get("enabled", True):
            return limit
    return None


def _positive(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


def concurrency(job: Record) -> int:
    """How many similar jobs may run at once (0 = no limit)."""
    limit = first_limit(job, "job")
    return int(_positive(limit.get("amount"), 0)) if limit else 0


def weight(job: Record) -> float:
    """The job's weight against a server's job budget (its `job` limit's `weight`, default 1)."""
    limit = first_limit(job, "job")
    return _positive(limit.get("weight"), 1.0) if limit else 1.0


def queue_room(job: Record) -> int:
    """How many jobs may wait in the job's queue (0 = no queue). A queue needs a `job` limit (as xyOps)."""
    limit = first_limit(job, "queue")
    if not limit or first_limit(job, "job") is None:
        return 0
    return int(_positive(limit.get("amount"), 0))


def similar_key(job: Record) -> str:
    """Jobs with the same key share a concurrency limit and a queue (xyOps' queue id)."""
    flow = job.get("workflow")
    if isinstance(flow, Mapping) and flow.get("node"):
        return f"{flow.get('node')}-{flow.get('job', '')}-{job.get('type', '')}"
    return f"{job.get('event', '')}--{job.get('type', '')}"


def queue_order(job: Record) -> tuple[int, float, str]:
    """Priority jobs first, then the oldest."""
    return (0 if job.get("priority") else 1, float(job.get("started") or 0), str(job.get("id")))
