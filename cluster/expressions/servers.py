"""Event target expressions: which candidate servers may run a job.

As in xyOps (lib/job.js, docs/events.md "Target Expressions"), the expression is evaluated against the server
record itself, so it reads its fields directly: `id`, `hostname`, `ip`, `title`, `enabled`, `groups` (ids),
`maxJobs`, `userData` (the user's free-form data, e.g. `userData.rack == 3`), and `info` (what the agent
reported: `info.arch`, `info.platform`, `info.os.distro`, `info.cpu.cores`, `info.memory.total`, ..., and the
per-minute `info.monitors` / `info.deltas`). A server is kept when the value is truthy (JavaScript truthiness).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .compiler import compile_expression
from .values import truthy


def server_filter(source: str, functions: Mapping[str, Callable[..., Any]] | None = None
                  ) -> Callable[[Mapping[str, Any]], bool]:  # fmt: skip
    """A predicate over server records for an event's `expression` (compiled once; ExpressionError if it does
    not compile). Calling it raises EvaluationError when a bound is exceeded; selection.available() then keeps
    the server, as xyOps skips a failing filter."""
    expression = compile_expression(source)

    def keeps(server: Mapping[str, Any]) -> bool:
        return truthy(expression.evaluate_raw(server, functions))

    return keeps
