"""Compiled trigger schedules: which launch seconds of an event fall inside a time window. Pure, no I/O.

`compile_triggers(triggers, default_tz)` turns a list already checked by
`cluster.triggers.validate_triggers` into an immutable `Schedule` (compile once per event revision
and keep it). `Schedule.due(start, end)` lists the `Slot`s whose epoch lies in the half-open window
(start, end], in (epoch, trigger index) order. The scheduler calls `due(t - 1, t)` every second; after
an outage it may pass a window of hours, which gives the same slots as the 1-second calls would have.

What fires (enabled triggers only):

- `schedule`: second 0 of every UTC minute whose wall-clock reading in the trigger's zone (else the
  default zone) matches every present array; `days` matches the day or the reverse day (-1 = last day
  of the month). Each real minute is read once, so a wall-clock time skipped by a forward DST shift
  does not fire that day (xyOps behaves the same; cron would run it late), and one repeated by a
  backward shift fires at each of its two instants (an "every 15 minutes" schedule keeps its cadence
  through the repeated hour; a daily 01:30 job runs twice on that night: use UTC if that matters).
- `single`: its minute, like a schedule minute.
- `interval`: every second start + k*duration (k >= 0), at any second.
- `precision` replaces second 0 of schedule and single minutes with one slot per listed second.
  (xyOps also turns a minute's interval hits into precision seconds for the other triggers matching
  that minute; here every trigger keeps its own seconds.)
- `delay`: `Slot.delay` holds its duration; `Slot.epoch` stays the scheduled second (the run identity)
  and the job starts at `Slot.start`.
- `range` / `blackout` work on whole minutes, like xyOps: a slot is kept when its minute lies inside
  any range (inclusive; no range = no limit) and inside no blackout (inclusive). So a blackout ending
  at 12:00 also removes a 12:00:30 interval slot.

Cost: a 1-second window is a few set lookups unless the second can launch something; calendar work
happens only for minutes that can launch, through `local_minute`, an LRU of wall-clock readings per
(zone, minute) shared by all schedules. Long windows walk minutes and jump over hours and days that
cannot match, so a day of catch-up costs about as much as the slots it returns.

Two triggers matching the same second give two slots (xyOps launches both, each with its own params):
identify a run by (epoch, trigger index) if both are wanted. `nth` and `catchup` need state and are
left to the scheduler: xyOps counts `nth` per scheduled minute (`Slot.minute`), not per slot.
"""

from __future__ import annotations

import calendar
import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

LOCAL_CACHE = 16384  # (zone, minute) readings shared by all schedules; a few MB at most
EARLIEST, LATEST = -(2**63), 2**63  # open ends of a range
MINUTE = 60
# What an omitted schedule array means (years: any, kept as None).
ALL_MINUTES, ALL_HOURS, ALL_WEEKDAYS = frozenset(range(60)), frozenset(range(24)), frozenset(range(7))
ALL_DAYS, ALL_MONTHS = frozenset(range(1, 32)), frozenset(range(1, 13))


@dataclass(frozen=True, slots=True)
class Origin:
    """The trigger a launch comes from. Payload fields are shared read-only views: copy before changing."""

    index: int  # position in the event's `triggers` array
    type: str
    id: str | None  # workflow trigger node id (`workflow.start`)
    params: Mapping[str, Any] = field(compare=False, repr=False)
    data: Mapping[str, Any] | Sequence[Any] | None = field(compare=False, repr=False)
    tags: tuple[str, ...] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Slot:
    """One launch: the scheduled second, the start delay in seconds, and the originating trigger."""

    epoch: int
    delay: int
    origin: Origin

    @property
    def index(self) -> int:
        return self.origin.index

    @property
    def type(self) -> str:
        return self.origin.type

    @property
    def trigger_id(self) -> str | None:
        return self.origin.id

    @property
    def params(self) -> Mapping[str, Any]:
        return self.origin.params

    @property
    def data(self) -> Mapping[str, Any] | Sequence[Any] | None:
        return self.origin.data

    @property
    def tags(self) -> tuple[str, ...]:
        return self.origin.tags

    @property
    def minute(self) -> int:
        return self.epoch - self.epoch % 60

    @property
    def start(self) -> int:
        """When the job should leave `start_delay`."""
        return self.epoch + self.delay


def _order(slot: Slot) -> tuple[int, int]:
    return slot.epoch, slot.origin.index


@functools.lru_cache(maxsize=LOCAL_CACHE)
def local_minute(zone: str, minute: int) -> tuple[int, int, int, int, int, int, int, int]:
    """(year, month, day, reverse day, weekday Sun=0, hour, minute, UTC offset s) of an epoch in `zone`.

    Shared by all schedules: at a minute boundary 10,000 events in a few zones cost a few conversions.
    """
    when = datetime.fromtimestamp(minute, ZoneInfo(zone))
    last = calendar.monthrange(when.year, when.month)[1]
    offset = when.utcoffset()
    return (when.year, when.month, when.day, when.day - last - 1, when.isoweekday() % 7, when.hour, when.minute,
            int(offset.total_seconds()) if offset is not None else 0)


class Cron(NamedTuple):
    """A compiled `schedule` trigger; an omitted array is the full set (years: None) so tests are `in`."""

    zone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    weekdays: frozenset[int]
    days: frozenset[int]  # 1..31 and/or -7..-1
    months: frozenset[int]
    years: frozenset[int] | None
    origin: Origin
    gaps: tuple[int, ...]  # per minute-of-hour: minutes to the next listed minute, or to the next hour

    def date_matches(self, year: int, month: int, day: int, rday: int, weekday: int) -> bool:
        return (
            (day in self.days or rday in self.days)
            and weekday in self.weekdays
            and month in self.months
            and (self.years is None or year in self.years)
        )


class Interval(NamedTuple):
    start: int
    duration: int
    origin: Origin


@dataclass(frozen=True, slots=True, eq=False)
class Schedule:
    """An event's compiled triggers. Build it with `compile_triggers`; immutable, safe to share."""

    crons: tuple[Cron, ...]
    singles: Mapping[int, tuple[Origin, ...]]  # minute -> single triggers on it
    intervals: tuple[Interval, ...]
    offsets: tuple[int, ...]  # seconds of a matching minute that launch: (0,) or the precision seconds
    ranges: tuple[tuple[int, int], ...]
    blackouts: tuple[tuple[int, int], ...]
    delay: int  # seconds, from the first enabled `delay` trigger
    catchup: bool
    nth_every: int | None
    startup: Origin | None
    manual: Origin | None
    magic: Mapping[str, Origin]  # token -> trigger, for enabled magic triggers that carry a token
    keyboard: tuple[Origin, ...]
    plugin: Mapping[str, Any] | None  # the enabled `plugin` trigger (plugin_id, params, timezone)
    invisible: bool
    ephemeral: bool
    hot: frozenset[int] = field(init=False)  # seconds of the minute at which crons/singles can launch

    def __post_init__(self) -> None:
        object.__setattr__(self, "hot", frozenset(self.offsets) if self.crons or self.singles else frozenset())

    @property
    def has_timing(self) -> bool:
        return bool(self.crons or self.singles or self.intervals)

    def due(self, start: int, end: int) -> list[Slot]:
        """Slots with start < epoch <= end, ordered by (epoch, trigger index)."""
        if end - start == 1:
            # The per-second hot path: mostly a second at which nothing of this event can fire.
            sec = end % 60
            if sec in self.hot:
                return self._second(end, sec)
            if self.intervals:
                return self._interval_hits(end)
            return []
        return self._window(start, end) if end > start else []

    def _second(self, epoch: int, sec: int) -> list[Slot]:
        minute = epoch - sec
        fired = self._fired(minute)
        out = [Slot(epoch, self.delay, origin) for origin in fired] if fired else []
        if self.intervals:
            out.extend(self._interval_hits(epoch))
            out.sort(key=_order)
        return out if not out or self._allowed(minute) else []

    def _interval_hits(self, epoch: int) -> list[Slot]:
        out: list[Slot] = []
        for begin, step, origin in self.intervals:  # a plain loop: a comprehension costs a frame on 3.11
            if epoch >= begin and (epoch - begin) % step == 0:
                out.append(Slot(epoch, self.delay, origin))
        return out if not out or self._allowed(epoch - epoch % 60) else []

    def _window(self, start: int, end: int) -> list[Slot]:
        # Minutes, not seconds: a schedule or single minute launches only at its offsets, and only the
        # minutes at the two ends of the window can have offsets outside it.
        first, last = (start + 1) // MINUTE * MINUTE, end // MINUTE * MINUTE
        fired: dict[int, list[Origin]] = {}
        for cron in self.crons:
            for minute in _cron_minutes(cron, first, last):
                fired.setdefault(minute, []).append(cron.origin)
        for minute, singles in self.singles.items():
            if first <= minute <= last:
                fired.setdefault(minute, []).extend(singles)
        out: list[Slot] = []
        for minute, origins in fired.items():
            if self._allowed(minute):
                for sec in self.offsets:
                    if start < minute + sec <= end:
                        out.extend(Slot(minute + sec, self.delay, origin) for origin in origins)
        for interval in self.intervals:
            step = interval.duration
            # First hit after `start`: ceil((start + 1 - begin) / step) steps from the beginning.
            epoch = interval.start + max(0, -(-(start + 1 - interval.start) // step)) * step
            while epoch <= end:
                if self._allowed(epoch - epoch % 60):
                    out.append(Slot(epoch, self.delay, interval.origin))
                epoch += step
        out.sort(key=_order)
        return out

    def _fired(self, minute: int) -> list[Origin]:
        """Schedule and single triggers launching in this UTC minute, in trigger order."""
        fired: list[Origin] = []
        for cron in self.crons:
            if _matches(cron, minute):
                fired.append(cron.origin)
        singles = self.singles.get(minute)
        if singles:
            fired.extend(singles)
            fired.sort(key=lambda origin: origin.index)
        return fired

    def _allowed(self, minute: int) -> bool:
        if not (self.ranges or self.blackouts):
            return True  # the usual case; skips building two generators per slot
        if self.ranges and not any(low <= minute <= high for low, high in self.ranges):
            return False
        return not any(low <= minute <= high for low, high in self.blackouts)


def _matches(cron: Cron, minute: int) -> bool:
    year, month, day, rday, weekday, hour, mins, _ = local_minute(cron.zone, minute)
    return mins in cron.minutes and hour in cron.hours and cron.date_matches(year, month, day, rday, weekday)


def _cron_minutes(cron: Cron, first: int, last: int) -> list[int]:
    """The UTC minutes in [first, last] that `cron` matches, for long windows.

    Jumps over runs that cannot match: to the next local midnight when the date is wrong, to the next
    hour when the hour is, to the next listed minute otherwise. A jump assumes wall-clock time runs
    evenly, so it is taken only when the UTC offset is the same at both ends (no tzdb zone has two
    transitions that cancel out within three days); across a transition it steps one minute.
    """
    out: list[int] = []
    minute = first
    while minute <= last:
        year, month, day, rday, weekday, hour, mins, offset = local_minute(cron.zone, minute)
        if not cron.date_matches(year, month, day, rday, weekday):
            step = (24 - hour) * 60 - mins
        elif hour not in cron.hours:
            step = 60 - mins
        else:
            if mins in cron.minutes:
                out.append(minute)
            step = cron.gaps[mins]
        if step > 1 and local_minute(cron.zone, minute + step * MINUTE)[7] != offset:
            step = 1
        minute += step * MINUTE
    return out


@functools.lru_cache(maxsize=256)
def _gaps(minutes: frozenset[int]) -> tuple[int, ...]:
    gaps = [0] * 60
    following = 60  # the smallest listed minute above `now`, or the next hour
    for now in range(59, -1, -1):
        gaps[now] = following - now
        if now in minutes:
            following = now
    return tuple(gaps)


def _origin(index: int, trigger: Mapping[str, Any]) -> Origin:
    # Deep copies: the caller's event dicts may change later; the compiled schedule must not.
    data = copy.deepcopy(trigger.get("data"))
    return Origin(
        index=index,
        type=trigger["type"],
        id=trigger.get("id"),
        params=MappingProxyType(copy.deepcopy(trigger.get("params") or {})),
        data=MappingProxyType(data) if isinstance(data, dict) else tuple(data) if data is not None else None,
        tags=tuple(trigger.get("tags") or ()),
    )


def _set(trigger: Mapping[str, Any], key: str, full: frozenset[int]) -> frozenset[int]:
    values = trigger.get(key)
    return frozenset(values) if values else full  # [] means "all", as in xyOps


def _cron(index: int, trigger: Mapping[str, Any], default_tz: str) -> Cron:
    zone = trigger.get("timezone") or default_tz
    ZoneInfo(zone)  # fail at compile time, not inside a scheduler tick
    minutes = _set(trigger, "minutes", ALL_MINUTES)
    return Cron(
        zone=zone,
        minutes=minutes,
        hours=_set(trigger, "hours", ALL_HOURS),
        weekdays=_set(trigger, "weekdays", ALL_WEEKDAYS),
        days=_set(trigger, "days", ALL_DAYS),
        months=_set(trigger, "months", ALL_MONTHS),
        years=frozenset(trigger["years"]) if trigger.get("years") else None,
        origin=_origin(index, trigger),
        gaps=_gaps(minutes),
    )


def compile_triggers(triggers: Sequence[Mapping[str, Any]], default_tz: str = "UTC") -> Schedule:
    """Compile validated triggers (disabled ones are ignored); unknown zones raise ZoneInfoNotFoundError.

    Where xyOps takes the first enabled trigger of a kind (delay, precision, nth, quiet, plugin,
    startup, manual), so does this.
    """
    ZoneInfo(default_tz)
    on = [(index, trigger) for index, trigger in enumerate(triggers) if trigger.get("enabled") is True]
    first: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for index, trigger in on:
        first.setdefault(trigger["type"], (index, trigger))
    singles: dict[int, list[Origin]] = {}
    for index, trigger in on:
        if trigger["type"] == "single":
            epoch = int(trigger["epoch"])
            singles.setdefault(epoch - epoch % 60, []).append(_origin(index, trigger))

    def one(kind: str) -> Origin | None:
        return _origin(*first[kind]) if kind in first else None

    def option(kind: str, key: str) -> Any:
        return first[kind][1].get(key) if kind in first else None

    return Schedule(
        crons=tuple(_cron(index, trigger, default_tz) for index, trigger in on if trigger["type"] == "schedule"),
        singles=MappingProxyType({minute: tuple(origins) for minute, origins in singles.items()}),
        intervals=tuple(
            Interval(int(trigger["start"]), int(trigger["duration"]), _origin(index, trigger))
            for index, trigger in on
            if trigger["type"] == "interval"
        ),
        offsets=tuple(sorted(set(option("precision", "seconds") or [0]))),
        ranges=tuple(
            (trigger.get("start") or EARLIEST, trigger.get("end") or LATEST)
            for _, trigger in on
            if trigger["type"] == "range"
        ),
        blackouts=tuple((trigger["start"], trigger["end"]) for _, trigger in on if trigger["type"] == "blackout"),
        delay=int(option("delay", "duration") or 0),
        catchup="catchup" in first,
        nth_every=option("nth", "every"),
        startup=one("startup"),
        manual=one("manual"),
        magic=MappingProxyType(
            {
                trigger["token"]: _origin(index, trigger)
                for index, trigger in reversed(on)  # reversed: the first trigger with a token wins
                if trigger["type"] == "magic" and trigger.get("token")
            }
        ),
        keyboard=tuple(_origin(index, trigger) for index, trigger in on if trigger["type"] == "keyboard"),
        plugin=MappingProxyType(copy.deepcopy(dict(first["plugin"][1]))) if "plugin" in first else None,
        invisible=bool(option("quiet", "invisible")),
        ephemeral=bool(option("quiet", "ephemeral")),
    )
