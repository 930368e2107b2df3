"""Handlers that exist only when a node runs with test hooks on (PODIUM_TEST_HOOKS=1).

They let the cluster tests drive a real primary-only write and a handler crash from outside, without
credentials (a node never registers them unless started with test hooks on).
"""

from __future__ import annotations

from storage.fence import FencedBatch

from ..call import Call
from ..errors import bad_param
from ..registry import NONE, TEST_HANDLERS, Reply


@TEST_HANDLERS.add("test_fenced_write", write=True, privilege=NONE, args=())
async def test_fenced_write(call: Call) -> Reply:
    """SET probe:<name> <value> through the fence; answers the epoch it was written under."""
    name = str(call.params.get("name", ""))
    if not name.isidentifier():
        raise bad_param("name", "must be a word")
    fence = call.node.fence()
    key = call.node.db.keys.probe(name)
    await fence.execute(FencedBatch().add("SET", [key], str(call.params.get("value", ""))))
    return {"epoch": fence.epoch, "node": fence.node_id}


@TEST_HANDLERS.add("test_crash", write=False, privilege=NONE, args=())
async def test_crash(call: Call) -> Reply:
    raise RuntimeError("deliberate failure with secret-looking text: hunter2")
