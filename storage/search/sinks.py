"""Where index writes go: plain commands (`OpList`) or a packed APPLY_OPS payload (`Payload`)."""

from __future__ import annotations

import abc

from .spec import CHUNK

Arg = str | bytes | int | float
Op = tuple[str, list[str], list[Arg]]

MAX_BITFIELD = 4000  # arguments per BITFIELD: Lua's unpack() stops near 8000

# _BYTE_ONES[k][v]: positions of the 1 bits of byte value v at byte k of a number
_BYTE_ONES = [[tuple(8 * k + b for b in range(8) if v >> b & 1) for v in range(256)] for k in range(7)]


def ones(value: int) -> list[int]:
    """Positions of the 1 bits of a non-negative number below 2^56."""
    out: list[int] = []
    k = 0
    while value:
        out += _BYTE_ONES[k][value & 255]
        value >>= 8
        k += 1
    return out


class Sink(abc.ABC):
    """Where index writes go: a list of plain commands, or a packed payload for APPLY_OPS."""

    slot = -1  # the slot being written

    @abc.abstractmethod
    def setbits(self, keys: list[str], bit: str, on: str) -> None: ...

    @abc.abstractmethod
    def call(self, command: str, key: str, *args: Arg) -> None: ...


class OpList(Sink):
    """Plain one-key commands, for a FencedBatch or a MULTI pipeline."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def setbits(self, keys: list[str], bit: str, on: str) -> None:
        self.ops += [("SETBIT", [key], [bit, on]) for key in keys]

    def call(self, command: str, key: str, *args: Arg) -> None:
        self.ops.append((command, [key], list(args)))


class Payload(Sink):
    """The APPLY_OPS payload, built with far fewer Lua-to-Redis calls than one per command.

    Only SETBIT ever touches a bitmap key, so a key's SETBITs fold into BITFIELD calls. For a bulk
    load, `fresh` is the run of slots just allocated to this batch: every byte wholly inside it is
    still zero and ours alone, so its bits are assembled here and written with one SETRANGE per key.
    """

    def __init__(self, fresh: tuple[int, int] = (0, 0)) -> None:
        self.positions: dict[str, int] = {}
        self.fields: dict[str, list[Arg]] = {}
        self.packed: list[list[Arg]] = []
        self.low, self.high = -(-fresh[0] // 8) * 8, fresh[1] // 8 * 8  # whole bytes of the run
        self.bytes: dict[str, bytearray] = {}

    def position(self, key: str) -> int:
        found = self.positions.get(key)
        if found is None:
            found = self.positions[key] = len(self.positions) + 1
        return found

    def setbits(self, keys: list[str], bit: str, on: str) -> None:
        slot = self.slot
        if on == "1" and self.low <= slot < self.high:
            index, mask = (slot - self.low) >> 3, 0x80 >> (slot & 7)
            for key in keys:
                run = self.bytes.get(key)
                if run is None:
                    run = self.bytes[key] = bytearray((self.high - self.low) >> 3)
                run[index] |= mask
            return
        for key in keys:
            group = self.fields.get(key)
            if group is None or len(group) > MAX_BITFIELD:
                group = self.fields[key] = ["BITFIELD", self.position(key)]
                self.packed.append(group)
            group += ("SET", "u1", bit, on)

    def call(self, command: str, key: str, *args: Arg) -> None:
        self.packed.append([command, self.position(key), *args])

    def flush(self) -> None:
        """Write the assembled bytes; a key belongs to one chunk, so only that chunk's part is set."""
        for key, run in self.bytes.items():
            chunk = int(key.rsplit(":", 1)[1])
            first = max(self.low, chunk * CHUNK)
            last = min(self.high, (chunk + 1) * CHUNK)
            part = run[(first - self.low) >> 3 : (last - self.low) >> 3]
            self.call("SETRANGE", key, str((first - chunk * CHUNK) >> 3), bytes(part))
        self.bytes.clear()
