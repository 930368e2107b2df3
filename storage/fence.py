"""The fenced-write primitive: primary-only mutations that a deposed primary cannot make."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from . import codec
from .connection import Database
from .errors import FencedError
from .scripts import FENCE_ERROR, FENCED_EXEC

Arg = str | bytes | int | float


def _encoded(arg: Arg) -> str | bytes:
    """Numbers spelled as redis-py sends them; as Lua numbers (doubles) big ints would lose digits."""
    return arg if isinstance(arg, str | bytes) else repr(arg)


@dataclass(slots=True)
class FencedBatch:
    """Commands collected for one atomic fenced call. Keys go through KEYS, never inline."""

    keys: list[str] = field(default_factory=list)
    ops: list[list[Any]] = field(default_factory=list)

    def add(self, command: str, keys: Sequence[str], *args: Arg) -> FencedBatch:
        positions = []
        for key in keys:
            try:
                positions.append(self.keys.index(key) + 1)
            except ValueError:
                self.keys.append(key)
                positions.append(len(self.keys))
        self.ops.append([command, positions, [_encoded(a) for a in args]])
        return self


@dataclass(frozen=True, slots=True)
class Fence:
    """The caller's claim to be primary: node id + epoch. Every fenced write presents it."""

    db: Database
    node_id: str
    epoch: int

    def fence_keys(self) -> list[str]:
        return [self.db.keys.leader, self.db.keys.epoch]

    def fence_args(self) -> list[Arg]:
        return [self.node_id, self.epoch]

    async def run(self, source: str, keys: Sequence[str], args: Sequence[Arg], *, durable: bool = False) -> Any:
        """Run a script built with `scripts.fenced()`; FencedError if the fence refuses. `durable`: a claim
        that precedes an outside effect (a launch, an action run, a mail); under Sentinel it returns only
        once a replica holds it (Database.run_confirmed), elsewhere it changes nothing."""
        all_keys, all_args = [*self.fence_keys(), *keys], [*self.fence_args(), *args]
        try:
            if durable and self.db.confirm_ms:
                return await self.db.run_confirmed(source, all_keys, all_args)
            return await self.db.script(source)(keys=all_keys, args=all_args)
        except ResponseError as exc:
            if str(exc).startswith(FENCE_ERROR):
                raise FencedError(str(exc)) from None
            raise

    async def execute(self, batch: FencedBatch, *, durable: bool = False) -> list[Any]:
        """Apply a batch atomically; FencedError (and nothing written) if the fence refuses."""
        result = await self.run(FENCED_EXEC, batch.keys, [codec.pack_for_lua(batch.ops)], durable=durable)
        return list(result)
