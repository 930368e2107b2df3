"""Trigger validation and compiled schedules: pure functions, so the clock is just the numbers passed in.

Expected epochs are written out with `calendar.timegm` / `datetime` (or worked out by hand for the DST
days), never taken from the code under test.
"""

from __future__ import annotations

import calendar
import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cluster.triggers import Schedule, Slot, TriggerError, compile_triggers, validate_triggers

MIN = 60
HOUR = 3600
DAY = 86400


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second))


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold).timestamp())


def on(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "enabled": True, **fields}


def compiled(*triggers: dict[str, Any], tz: str = "UTC") -> Schedule:
    return compile_triggers(validate_triggers(list(triggers)), tz)


def epochs(schedule: Schedule, start: int, end: int) -> list[int]:
    return [slot.epoch for slot in schedule.due(start, end)]


def per_second(schedule: Schedule, start: int, end: int) -> list[Slot]:
    """What a scheduler ticking every second would have seen over (start, end]."""
    return [slot for t in range(start + 1, end + 1) for slot in schedule.due(t - 1, t)]


def error_of(triggers: Any, workflow: bool = False) -> str:
    with pytest.raises(TriggerError) as caught:
        validate_triggers(triggers, workflow=workflow)
    return str(caught.value)


# --- validation: accepted input and normalisation ---------------------------------------------------

GOOD = [
    on("schedule"),
    on("schedule", years=[1, 2030], months=[1, 12], days=[-7, -1, 1, 31], weekdays=[0, 6], hours=[0, 23],
       minutes=[0, 59], timezone="America/New_York"),
    on("interval", start=0, duration=1),
    on("interval", start=1_700_000_000, duration=90),
    on("single", epoch=1_700_000_000),
    on("manual"),
    on("magic"),
    on("magic", key="secret", body="Hello"),
    on("startup"),
    on("catchup"),
    on("nth", every=2),
    on("range"),
    on("range", start=1_700_000_000),
    on("range", end=1_700_000_000),
    on("range", start=1_700_000_000, end=1_700_000_000),
    on("blackout", start=1_700_000_000, end=1_700_086_400),
    on("delay", duration=1),
    on("precision", seconds=[0, 59]),
    on("precision", seconds=[]),
    on("quiet", invisible=True),
    on("quiet", ephemeral=True, invisible=False),
    on("plugin", plugin_id="gate", params={"a": 1}, timezone="Europe/London"),
    on("keyboard", keys=["Control+KeyA"]),
    on("schedule", params={"x": 1}, data={"k": "v"}, tags=["t1"]),
    on("single", epoch=1_700_000_000, data=[1, 2]),
    {"type": "manual", "enabled": False},
]


@pytest.mark.parametrize("trigger", GOOD, ids=lambda t: str(t["type"]))
def test_accepts(trigger: dict[str, Any]) -> None:
    assert validate_triggers([trigger])[0]["type"] == trigger["type"]


def test_normalises_a_copy() -> None:
    raw = [
        on("schedule", minutes=[30, 5, 30, 5.0], hours=[], timezone=""),
        {"type": "single", "enabled": "true", "epoch": utc(2025, 1, 1, 12, 34, 37)},
        {"type": "range", "enabled": 1, "start": utc(2025, 1, 1, 0, 0, 59), "end": 0},
        {"type": "blackout", "enabled": "false", "start": utc(2025, 1, 1, 1, 0, 1), "end": utc(2025, 1, 1, 2, 0, 30)},
        on("precision", seconds=[50, 5, 5]),
        {"type": "interval", "enabled": 0, "start": 100.0, "duration": 7.0},
    ]
    before = repr(raw)
    out = validate_triggers(raw)
    assert repr(raw) == before  # the input is untouched
    assert out[0] == {"type": "schedule", "enabled": True, "minutes": [5, 30], "hours": []}
    assert out[1] == {"type": "single", "enabled": True, "epoch": utc(2025, 1, 1, 12, 34)}
    assert out[2] == {"type": "range", "enabled": True, "start": utc(2025, 1, 1)}
    assert out[3] == {"type": "blackout", "enabled": False, "start": utc(2025, 1, 1, 1), "end": utc(2025, 1, 1, 2)}
    assert out[4]["seconds"] == [5, 50]
    assert out[5]["start"] == 100 and type(out[5]["start"]) is int and type(out[5]["duration"]) is int


# --- validation: refusals ----------------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    ({"enabled": True}, "triggers[0]: 'type' is required"),
    ({"type": "cron", "enabled": True}, "triggers[0]: unknown type 'cron'"),
    ({"type": 5, "enabled": True}, "triggers[0]: unknown type 5"),
    ({"type": "manual"}, "triggers[0] (manual): 'enabled' is required"),
    ({"type": "manual", "enabled": "yes"}, "(manual): 'enabled' must be a boolean"),
    ({"type": "manual", "enabled": 2}, "(manual): 'enabled' must be a boolean"),
    (on("schedule", years=[0]), "triggers[0] (schedule): 'years' values must be >= 1"),
    (on("schedule", months=[0]), "'months' values must be 1-12"),
    (on("schedule", months=[13]), "'months' values must be 1-12"),
    (on("schedule", days=[0]), "'days' values must be 1-31 or -7..-1"),
    (on("schedule", days=[32]), "'days' values must be 1-31 or -7..-1"),
    (on("schedule", days=[-8]), "'days' values must be 1-31 or -7..-1"),
    (on("schedule", weekdays=[-1]), "'weekdays' values must be 0-6"),
    (on("schedule", weekdays=[7]), "'weekdays' values must be 0-6"),
    (on("schedule", hours=[-1]), "'hours' values must be 0-23"),
    (on("schedule", hours=[24]), "'hours' values must be 0-23"),
    (on("schedule", minutes=[-1]), "'minutes' values must be 0-59"),
    (on("schedule", minutes=[60]), "'minutes' values must be 0-59"),
    (on("schedule", minutes=5), "'minutes' must be an array of integers"),
    (on("schedule", minutes=["5"]), "'minutes' must be an array of integers"),
    (on("schedule", minutes=[1.5]), "'minutes' must be an array of integers"),
    (on("schedule", minutes=[True]), "'minutes' must be an array of integers"),
    (on("schedule", timezone="Mars/Olympus"), "'timezone' must be a known IANA time zone"),
    (on("schedule", timezone="../../etc/passwd"), "'timezone' must be a known IANA time zone"),
    (on("schedule", timezone=5), "'timezone' must be a known IANA time zone"),
    (on("interval", duration=60), "(interval): 'start' is required"),
    (on("interval", start="1700000000", duration=60), "(interval): 'start' must be an integer"),
    (on("interval", start=-1, duration=60), "(interval): 'start' must be >= 0"),
    (on("interval", start=1), "(interval): 'duration' is required"),
    (on("interval", start=1, duration=0), "(interval): 'duration' must be >= 1"),
    (on("interval", start=1, duration=1.5), "(interval): 'duration' must be an integer"),
    (on("single"), "(single): 'epoch' is required"),
    (on("single", epoch="soon"), "(single): 'epoch' must be an integer"),
    (on("nth"), "(nth): 'every' is required"),
    (on("nth", every=1), "(nth): 'every' must be >= 2"),
    (on("range", start=200, end=100), "(range): 'start' must not be after 'end'"),
    (on("range", start="x"), "(range): 'start' must be an integer"),
    (on("blackout", start=100), "(blackout): 'end' is required"),
    (on("blackout", end=100), "(blackout): 'start' is required"),
    (on("blackout", start=0, end=100), "(blackout): 'start' is required"),
    (on("blackout", start=200, end=100), "(blackout): 'start' must not be after 'end'"),
    (on("delay"), "(delay): 'duration' is required"),
    (on("delay", duration=0), "(delay): 'duration' must be >= 1"),
    (on("precision"), "(precision): 'seconds' is required"),
    (on("precision", seconds=[60]), "(precision): 'seconds' values must be 0-59"),
    (on("precision", seconds=[-1]), "(precision): 'seconds' values must be 0-59"),
    (on("precision", seconds=5), "(precision): 'seconds' must be an array of integers"),
    (on("quiet"), "(quiet): at least one of 'invisible' and 'ephemeral' must be true"),
    (on("quiet", invisible=False, ephemeral=False), "at least one of 'invisible' and 'ephemeral' must be true"),
    (on("quiet", invisible="yes"), "(quiet): 'invisible' must be a boolean"),
    (on("plugin"), "(plugin): 'plugin_id' must be a non-empty string"),
    (on("plugin", plugin_id=""), "(plugin): 'plugin_id' must be a non-empty string"),
    (on("plugin", plugin_id="p", params=[1]), "(plugin): 'params' must be an object"),
    (on("plugin", plugin_id="p", timezone="Nowhere"), "(plugin): 'timezone' must be a known IANA time zone"),
    (on("keyboard"), "(keyboard): 'keys' must be a non-empty array"),
    (on("keyboard", keys=[]), "(keyboard): 'keys' must be a non-empty array"),
    (on("keyboard", keys=[""]), "(keyboard): 'keys' must be a non-empty array"),
    (on("magic", token=5), "(magic): 'token' must be a string"),
    (on("manual", params="x"), "(manual): 'params' must be an object"),
    (on("schedule", data="x"), "(schedule): 'data' must be an object or an array"),
    (on("schedule", tags="t"), "(schedule): 'tags' must be an array of strings"),
    (on("schedule", tags=[1]), "(schedule): 'tags' must be an array of strings"),
    (on("schedule", id=""), "(schedule): 'id' must be a non-empty string"),
]


@pytest.mark.parametrize(("trigger", "message"), BAD, ids=lambda v: v if isinstance(v, str) else "")
def test_refuses(trigger: dict[str, Any], message: str) -> None:
    assert message in error_of([trigger])


def test_error_names_position_type_and_field() -> None:
    triggers = [on("manual"), on("schedule", hours=[1]), on("schedule", hours=[3, 24])]
    assert error_of(triggers) == "triggers[2] (schedule): 'hours' values must be 0-23"


@pytest.mark.parametrize("value", [None, {}, "[]", 5])
def test_refuses_a_non_array(value: Any) -> None:
    assert error_of(value) == "triggers: must be an array"


def test_refuses_a_non_object_entry() -> None:
    assert error_of([on("manual"), "schedule"]) == "triggers[1]: must be an object"


def test_workflow_triggers_need_unique_ids() -> None:
    assert "triggers[0] (manual): 'id' must be a non-empty string" in error_of([on("manual")], workflow=True)
    message = error_of([on("manual", id="n1"), on("schedule", id="n1")], workflow=True)
    assert message == "triggers[1] (schedule): 'id' 'n1' repeats triggers[0]"
    assert len(validate_triggers([on("manual", id="n1"), on("schedule", id="n2")], workflow=True)) == 2
    assert len(validate_triggers([on("manual", id="n1"), on("schedule", id="n1")])) == 2  # events: no rule


UNIQUE = {
    "startup": on("startup"),
    "catchup": on("catchup"),
    "nth": on("nth", every=3),
    "manual": on("manual"),
    "precision": on("precision", seconds=[1]),
    "quiet": on("quiet", invisible=True),
    "plugin": on("plugin", plugin_id="p"),
}


@pytest.mark.parametrize("kind", sorted(UNIQUE))
def test_at_most_one_enabled(kind: str) -> None:
    trigger = UNIQUE[kind]
    message = error_of([trigger, on("schedule"), dict(trigger)])
    assert message == f"triggers[2] ({kind}): only one enabled {kind} trigger is allowed"
    assert len(validate_triggers([trigger, {**trigger, "enabled": False}, {**trigger, "enabled": False}])) == 3


@pytest.mark.parametrize(
    "trigger",
    [on("schedule"), on("interval", start=1, duration=5), on("single", epoch=60), on("range"),
     on("blackout", start=60, end=120), on("delay", duration=5), on("magic"), on("keyboard", keys=["KeyA"])],
    ids=lambda t: str(t["type"]),
)
def test_may_repeat(trigger: dict[str, Any]) -> None:
    assert len(validate_triggers([trigger, dict(trigger)])) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [(on("interval", start=1, duration=5), on("precision", seconds=[1])),
     (on("interval", start=1, duration=5), on("delay", duration=5)),
     (on("precision", seconds=[1]), on("delay", duration=5))],
    ids=["interval+precision", "interval+delay", "precision+delay"],
)
def test_mutually_exclusive(first: dict[str, Any], second: dict[str, Any]) -> None:
    message = error_of([first, on("manual"), second])
    assert message == (f"triggers[2] ({second['type']}): cannot be combined with the enabled {first['type']}"
                       " trigger at triggers[0]")
    assert f"enabled {second['type']} trigger at triggers[0]" in error_of([second, first])
    assert len(validate_triggers([first, {**second, "enabled": False}])) == 2
    assert len(validate_triggers([{**first, "enabled": False}, second])) == 2


# --- schedule matching -------------------------------------------------------------------------------

def test_every_minute_and_the_half_open_window() -> None:
    schedule = compiled(on("schedule"))
    start = utc(2025, 6, 1, 10)
    assert epochs(schedule, start, start + HOUR) == list(range(start + MIN, start + HOUR + 1, MIN))
    assert epochs(schedule, start - 1, start) == [start]  # the end is inside
    assert epochs(schedule, start, start + 1) == []  # the start is outside
    assert epochs(schedule, start + 1, start + 59) == []  # second 0 only
    assert schedule.due(start, start) == [] and schedule.due(start, start - 100) == []


def test_minutes_and_hours() -> None:
    schedule = compiled(on("schedule", minutes=[0, 30]))
    start = utc(2025, 6, 1)
    assert epochs(schedule, start, start + 3 * HOUR) == [start + k * 30 * MIN for k in range(1, 7)]
    daily = compiled(on("schedule", hours=[4, 16], minutes=[30]))
    expected = [utc(2025, 6, d, h, 30) for d in (1, 2, 3) for h in (4, 16)]
    assert epochs(daily, utc(2025, 6, 1), utc(2025, 6, 4)) == expected


def test_weekdays_count_from_sunday() -> None:
    # January 2024 starts on a Monday.
    mondays = compiled(on("schedule", weekdays=[1], hours=[9], minutes=[0]))
    assert epochs(mondays, utc(2024, 1, 1), utc(2024, 2, 1)) == [utc(2024, 1, d, 9) for d in (1, 8, 15, 22, 29)]
    weekend = compiled(on("schedule", weekdays=[0, 6], hours=[12], minutes=[0]))
    assert epochs(weekend, utc(2024, 1, 1), utc(2024, 1, 15)) == [utc(2024, 1, d, 12) for d in (6, 7, 13, 14)]


def test_weekday_and_hour_are_read_in_the_trigger_zone() -> None:
    # Monday 08:00 in Tokyo (UTC+9, no DST) is Sunday 23:00 UTC.
    schedule = compiled(on("schedule", weekdays=[1], hours=[8], minutes=[0], timezone="Asia/Tokyo"))
    assert epochs(schedule, utc(2024, 1, 1), utc(2024, 1, 16)) == [utc(2024, 1, 7, 23), utc(2024, 1, 14, 23)]
    # Kathmandu is UTC+5:45: its 00:00 is 18:15 UTC the day before.
    nepal = compiled(on("schedule", hours=[0], minutes=[0], timezone="Asia/Kathmandu"))
    assert epochs(nepal, utc(2024, 1, 1), utc(2024, 1, 3)) == [utc(2024, 1, 1, 18, 15), utc(2024, 1, 2, 18, 15)]


def test_default_zone_and_override() -> None:
    winter = utc(2025, 1, 15)
    plain = compiled(on("schedule", hours=[9], minutes=[0]), tz="America/New_York")
    assert epochs(plain, winter, winter + DAY) == [utc(2025, 1, 15, 14)]  # 09:00 EST
    own = compiled(on("schedule", hours=[9], minutes=[0], timezone="UTC"), tz="America/New_York")
    assert epochs(own, winter, winter + DAY) == [utc(2025, 1, 15, 9)]
    with pytest.raises(Exception, match="Nowhere"):
        compile_triggers([], "Nowhere/Land")


def test_days_months_and_years() -> None:
    schedule = compiled(on("schedule", months=[2, 11], days=[1, 15], hours=[0], minutes=[0]))
    for year in (2024, 2025):
        expected = [utc(year, m, d) for m in (2, 11) for d in (1, 15)]
        assert epochs(schedule, utc(year, 1, 1) - 1, utc(year, 12, 31)) == expected
    only_2025 = compiled(on("schedule", years=[2025], months=[1], days=[1], hours=[0], minutes=[0]))
    for year in (2024, 2025, 2026):
        got = epochs(only_2025, utc(year, 1, 1) - HOUR, utc(year, 1, 1) + HOUR)
        assert got == ([utc(2025, 1, 1)] if year == 2025 else [])


@pytest.mark.parametrize(("year", "last"), [(2024, 29), (2023, 28), (2100, 28), (2000, 29)])
def test_reverse_days_in_february(year: int, last: int) -> None:
    schedule = compiled(on("schedule", months=[2], days=[-1], hours=[12], minutes=[0]))
    assert epochs(schedule, utc(year, 2, 1), utc(year, 3, 1)) == [utc(year, 2, last, 12)]
    seventh = compiled(on("schedule", months=[2], days=[-7], hours=[12], minutes=[0]))
    assert epochs(seventh, utc(year, 2, 1), utc(year, 3, 1)) == [utc(year, 2, last - 6, 12)]


def test_last_day_across_30_and_31_day_months() -> None:
    lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # 2023
    schedule = compiled(on("schedule", days=[-1], hours=[23], minutes=[55]))
    day31 = compiled(on("schedule", days=[31], hours=[23], minutes=[55]))
    both = compiled(on("schedule", days=[-2, 31], hours=[23], minutes=[55]))
    for month, length in enumerate(lengths, start=1):
        window = (utc(2023, month, 25), utc(2023, month, length) + DAY)  # to the next month's 00:00
        assert epochs(schedule, *window) == [utc(2023, month, length, 23, 55)]
        assert epochs(day31, *window) == ([utc(2023, month, 31, 23, 55)] if length == 31 else [])
        expected = [utc(2023, month, length - 1, 23, 55)] + ([utc(2023, month, 31, 23, 55)] if length == 31 else [])
        assert epochs(both, *window) == expected


def test_leap_day_fires_only_in_leap_years() -> None:
    schedule = compiled(on("schedule", months=[2], days=[29], hours=[6], minutes=[0]))
    for year in range(2023, 2030):
        got = epochs(schedule, utc(year, 2, 27), utc(year, 3, 2))
        assert got == ([utc(year, 2, 29, 6)] if year in (2024, 2028) else [])


def test_windows_crossing_midnight_month_and_year() -> None:
    new_year = compiled(on("schedule", months=[1], days=[1], hours=[0], minutes=[0]))
    boundary = utc(2025, 1, 1)
    assert epochs(new_year, boundary - 30, boundary + 30) == [boundary]
    assert [s.epoch for s in per_second(new_year, boundary - 30, boundary + 30)] == [boundary]
    every = compiled(on("schedule"))
    for edge in (utc(2025, 3, 1), utc(2025, 3, 2), utc(2026, 1, 1)):  # month, midnight, year
        assert epochs(every, edge - 90, edge + 90) == [edge - 60, edge, edge + 60]


# --- DST: each real minute is evaluated once, by its wall-clock reading ---------------------------------

def test_new_york_spring_forward_skips_the_missing_time() -> None:
    # 2024-03-10: 02:00 EST (07:00 UTC) jumps to 03:00 EDT, so 02:30 does not exist that day.
    schedule = compiled(on("schedule", hours=[2], minutes=[30], timezone="America/New_York"))
    got = epochs(schedule, utc(2024, 3, 9), utc(2024, 3, 12))
    assert got == [utc(2024, 3, 9, 7, 30), utc(2024, 3, 11, 6, 30)]  # 02:30 EST, (none), 02:30 EDT
    three = compiled(on("schedule", hours=[3], minutes=[0], timezone="America/New_York"))
    assert epochs(three, utc(2024, 3, 10), utc(2024, 3, 11)) == [utc(2024, 3, 10, 7)]  # 03:00 EDT
    quarter = compiled(on("schedule", minutes=[0, 15, 30, 45], timezone="America/New_York"))
    start = utc(2024, 3, 10, 6)
    assert epochs(quarter, start - 1, start + 2 * HOUR) == list(range(start, start + 2 * HOUR + 1, 15 * MIN))


def test_new_york_fall_back_fires_at_both_instants() -> None:
    # 2024-11-03: 02:00 EDT (06:00 UTC) falls back to 01:00 EST; 01:30 is 05:30 UTC and again 06:30 UTC.
    schedule = compiled(on("schedule", hours=[1], minutes=[30], timezone="America/New_York"))
    got = epochs(schedule, utc(2024, 11, 2), utc(2024, 11, 5))
    assert got == [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30), utc(2024, 11, 4, 6, 30)]
    assert got[1:3] == [local("America/New_York", 2024, 11, 3, 1, 30, fold=f) for f in (0, 1)]
    quarter = compiled(on("schedule", minutes=[0, 15, 30, 45], timezone="America/New_York"))
    start = utc(2024, 11, 3, 5)
    assert epochs(quarter, start - 1, start + 2 * HOUR) == list(range(start, start + 2 * HOUR + 1, 15 * MIN))


def test_santiago_midnight_transitions() -> None:
    # Chile moves its clocks at local midnight: on 2024-09-08 00:00 -04 (04:00 UTC) becomes 01:00 -03, so
    # 00:30 does not exist; on 2024-04-07 00:00 -03 (03:00 UTC) falls back to 23:00 -04 the day before.
    schedule = compiled(on("schedule", hours=[0], minutes=[30], timezone="America/Santiago"))
    spring = epochs(schedule, utc(2024, 9, 6), utc(2024, 9, 10))
    assert spring == [utc(2024, 9, 6, 4, 30), utc(2024, 9, 7, 4, 30), utc(2024, 9, 9, 3, 30)]
    late = compiled(on("schedule", hours=[23], minutes=[30], timezone="America/Santiago"))
    autumn = epochs(late, utc(2024, 4, 6), utc(2024, 4, 9))
    # 23:30 -03 on the 5th and 6th, 23:30 -04 on the 6th again (after the fall back) and the 7th.
    assert autumn == [utc(2024, 4, 6, 2, 30), utc(2024, 4, 7, 2, 30), utc(2024, 4, 7, 3, 30), utc(2024, 4, 8, 3, 30)]


def test_day_after_a_short_day_is_not_skipped() -> None:
    # Long windows jump over non-matching days; the spring-forward day has 23 hours, so a 24-hour jump
    # from its midnight would land at 01:00 of the next day and miss its first hour.
    ny = compiled(on("schedule", months=[3], days=[11], hours=[0], minutes=[15], timezone="America/New_York"))
    assert epochs(ny, utc(2024, 3, 9), utc(2024, 3, 12)) == [utc(2024, 3, 11, 4, 15)]  # 00:15 EDT
    london = compiled(on("schedule", months=[4], days=[1], hours=[0], minutes=[0], timezone="Europe/London"))
    assert epochs(london, utc(2024, 3, 29), utc(2024, 4, 2)) == [utc(2024, 3, 31, 23)]  # 00:00 BST


def test_london_spring_forward_and_fall_back() -> None:
    schedule = compiled(on("schedule", hours=[1], minutes=[30], timezone="Europe/London"))
    # 2024-03-31: 01:00 GMT jumps to 02:00 BST, so 01:30 does not exist.
    spring = epochs(schedule, utc(2024, 3, 30), utc(2024, 4, 2))
    assert spring == [utc(2024, 3, 30, 1, 30), utc(2024, 4, 1, 0, 30)]
    # 2024-10-27: 02:00 BST falls back to 01:00 GMT; 01:30 is 00:30 UTC (BST) and 01:30 UTC (GMT).
    autumn = epochs(schedule, utc(2024, 10, 26), utc(2024, 10, 29))
    assert autumn == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1, 30),
                      utc(2024, 10, 28, 1, 30)]


# --- interval, single, precision, delay ---------------------------------------------------------------

def test_interval_fires_at_any_second_from_its_start() -> None:
    begin = utc(2025, 6, 1, 12, 0, 7)
    schedule = compiled(on("interval", start=begin, duration=20))
    assert epochs(schedule, begin - HOUR, begin - 1) == []
    assert epochs(schedule, begin - 1, begin) == [begin]
    got = epochs(schedule, begin - 100, begin + 2 * MIN)
    assert got == [begin + k * 20 for k in range(7)]  # 12:00:07, :27, :47, 12:01:07, ...
    assert epochs(schedule, begin + 1, begin + 20) == [begin + 20]
    assert epochs(schedule, begin + 20, begin + 39) == []
    assert [s.epoch for s in per_second(schedule, begin - 10, begin + 2 * MIN)] == got


def test_single_fires_once_in_its_minute() -> None:
    at = utc(2025, 6, 1, 12, 34, 37)
    schedule = compiled(on("single", epoch=at), on("single", epoch=at - 37), on("single", epoch=at + HOUR))
    slots = schedule.due(at - DAY, at + DAY)
    assert [(s.epoch, s.index, s.type) for s in slots] == [
        (utc(2025, 6, 1, 12, 34), 0, "single"), (utc(2025, 6, 1, 12, 34), 1, "single"),
        (utc(2025, 6, 1, 13, 34), 2, "single"),
    ]
    assert epochs(schedule, at - 37, at + 60) == []  # the window starts just after 12:34:00


def test_precision_turns_a_minute_into_seconds() -> None:
    schedule = compiled(on("schedule", minutes=[0]), on("precision", seconds=[50, 5, 20, 35]))
    hour = utc(2025, 6, 1, 12)
    assert epochs(schedule, hour - 1, hour + 2 * HOUR) == [
        hour + h * HOUR + s for h in (0, 1, 2) for s in (5, 20, 35, 50) if hour + h * HOUR + s <= hour + 2 * HOUR
    ]
    assert epochs(schedule, hour + 20, hour + 50) == [hour + 35, hour + 50]
    assert epochs(schedule, hour - 1, hour) == []  # second 0 is not listed
    single = compiled(on("single", epoch=hour + 10 * MIN), on("precision", seconds=[30]))
    assert epochs(single, hour, hour + HOUR) == [hour + 10 * MIN + 30]
    empty = compiled(on("schedule", minutes=[0]), on("precision", seconds=[]))
    assert epochs(empty, hour - 1, hour + 59) == [hour]


def test_delay_keeps_the_scheduled_epoch() -> None:
    schedule = compiled(on("schedule", minutes=[15]), on("delay", duration=120))
    [slot] = schedule.due(utc(2025, 6, 1, 12), utc(2025, 6, 1, 13))
    assert (slot.epoch, slot.delay, slot.start) == (utc(2025, 6, 1, 12, 15), 120, utc(2025, 6, 1, 12, 17))
    plain = compiled(on("schedule", minutes=[15]), {**on("delay", duration=120), "enabled": False})
    assert [s.delay for s in plain.due(utc(2025, 6, 1, 12), utc(2025, 6, 1, 13))] == [0]


# --- range and blackout ---------------------------------------------------------------------------------

def test_range_edges_are_inclusive() -> None:
    noon = utc(2025, 6, 1, 12)
    window = (noon - HOUR, noon + HOUR)
    every = on("schedule")
    inside = compiled(every, on("range", start=noon, end=noon + 10 * MIN))
    assert epochs(inside, *window) == list(range(noon, noon + 10 * MIN + 1, MIN))
    two = compiled(every, on("range", start=noon, end=noon), on("range", start=noon + 30 * MIN, end=noon + 31 * MIN))
    assert epochs(two, *window) == [noon, noon + 30 * MIN, noon + 31 * MIN]
    since = compiled(every, on("range", start=noon + 50 * MIN))
    assert epochs(since, *window) == list(range(noon + 50 * MIN, noon + HOUR + 1, MIN))
    until = compiled(every, on("range", end=noon - 50 * MIN))
    assert epochs(until, *window) == list(range(noon - 59 * MIN, noon - 50 * MIN + 1, MIN))
    off = compiled(every, {**on("range", start=noon, end=noon), "enabled": False})
    assert len(epochs(off, *window)) == 120


def test_blackout_edges_are_inclusive() -> None:
    noon = utc(2025, 6, 1, 12)
    schedule = compiled(on("schedule"), on("blackout", start=noon, end=noon + 10 * MIN))
    got = epochs(schedule, noon - 2 * MIN, noon + 12 * MIN)
    assert got == [noon - MIN, noon + 11 * MIN, noon + 12 * MIN]
    # Both work on whole minutes: a blackout ending at 12:10 also covers 12:10:30.
    interval = compiled(on("interval", start=noon - 30, duration=30), on("blackout", start=noon, end=noon + 10 * MIN))
    got = epochs(interval, noon - MIN, noon + 12 * MIN)
    assert got == [noon - MIN + 30, noon + 11 * MIN, noon + 11 * MIN + 30, noon + 12 * MIN]
    ranged = compiled(on("interval", start=noon - 30, duration=30), on("range", start=noon, end=noon))
    assert epochs(ranged, noon - MIN, noon + 2 * MIN) == [noon, noon + 30]
    per = [s.epoch for s in per_second(interval, noon - MIN, noon + 12 * MIN)]
    assert per == got


# --- compiled schedule properties and payload ------------------------------------------------------------

def test_schedule_properties() -> None:
    triggers = [
        on("manual", id="m"), on("catchup"), on("nth", every=3), on("startup", params={"a": 1}),
        on("magic", token="t1"), on("magic", token="t1", id="later"), {**on("magic", token="t2"), "enabled": False},
        on("keyboard", keys=["KeyK"]), on("quiet", ephemeral=True), on("plugin", plugin_id="gate", params={"q": 1}),
        on("delay", duration=30),
    ]
    schedule = compile_triggers(validate_triggers(triggers))
    assert not schedule.has_timing and schedule.due(0, 10 * DAY) == []
    assert schedule.manual is not None and (schedule.manual.index, schedule.manual.id) == (0, "m")
    assert schedule.catchup and schedule.nth_every == 3
    assert schedule.startup is not None and schedule.startup.index == 3 and dict(schedule.startup.params) == {"a": 1}
    assert sorted(schedule.magic) == ["t1"] and schedule.magic["t1"].index == 4
    assert [k.index for k in schedule.keyboard] == [7]
    assert (schedule.invisible, schedule.ephemeral, schedule.delay) == (False, True, 30)
    assert schedule.plugin is not None and schedule.plugin["plugin_id"] == "gate"
    bare = compiled({**on("schedule"), "enabled": False}, {**on("manual"), "enabled": False})
    assert not bare.has_timing and bare.manual is None and not bare.catchup and bare.nth_every is None
    assert bare.due(0, DAY) == []
    assert compiled(on("single", epoch=60)).has_timing and compiled(on("interval", start=0, duration=5)).has_timing


def test_slots_carry_their_trigger_payload() -> None:
    raw = [on("schedule", minutes=[0], params={"p": 1}, data={"d": [1]}, tags=["a"], id="n1"),
           on("schedule", minutes=[0], data=[1, 2]), on("schedule", minutes=[1])]
    schedule = compile_triggers(validate_triggers(raw))
    raw[0]["params"]["p"] = 2  # later changes to the event do not leak into the compiled schedule
    hour = utc(2025, 6, 1, 12)
    first, second = schedule.due(hour - 1, hour)
    assert (first.index, first.type, first.trigger_id, first.minute) == (0, "schedule", "n1", hour)
    assert dict(first.params) == {"p": 1} and first.data == {"d": [1]} and first.tags == ("a",)
    assert (second.index, dict(second.params), second.data, second.tags) == (1, {}, (1, 2), ())
    with pytest.raises(TypeError):
        first.params["p"] = 3  # type: ignore[index]
    assert hash(first) != hash(second) and first != second


# --- a long window equals the per-second ticks, and matches an independent oracle --------------------------

# Zones with DST at 02:00 (New York), 01:00 UTC (London), at local midnight (Santiago), by 30 minutes
# (Lord Howe), in the southern hemisphere (Sydney), and with :30 / :45 offsets; anchors are their
# transitions, a leap day and a new year.
ZONES = ["UTC", "America/New_York", "Europe/London", "America/Santiago", "Australia/Lord_Howe",
         "Australia/Sydney", "Asia/Kolkata", "Asia/Kathmandu"]
ANCHORS = [utc(2024, 3, 10, 7), utc(2024, 11, 3, 6), utc(2024, 3, 31, 1), utc(2024, 10, 27, 1),
           utc(2024, 4, 7, 3), utc(2024, 9, 8, 4), utc(2025, 4, 5, 16), utc(2025, 10, 4, 16),
           utc(2024, 2, 29, 23, 30), utc(2024, 12, 31, 23)]


def random_triggers(rng: random.Random, near: int) -> list[dict[str, Any]]:
    def sample(low: int, high: int) -> list[int]:
        return rng.sample(range(low, high + 1), rng.randint(1, min(8, high - low + 1)))

    triggers: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["schedule", "schedule", "interval", "single"])
        if kind == "schedule":
            trigger = on("schedule", timezone=rng.choice(ZONES))
            if rng.random() < 0.7:
                trigger["minutes"] = sample(0, 59)
            if rng.random() < 0.3:
                trigger["hours"] = sample(0, 23)
            if rng.random() < 0.2:
                trigger["weekdays"] = sample(0, 6)
            if rng.random() < 0.2:
                trigger["days"] = rng.sample([*range(1, 32), *range(-7, 0)], 8)
            triggers.append(trigger)
        elif kind == "interval":
            triggers.append(on("interval", start=near + rng.randint(-3 * HOUR, HOUR), duration=rng.randint(1, 900)))
        else:
            triggers.append(on("single", epoch=near + rng.randint(-3 * HOUR, 3 * HOUR)))
    kinds = {t["type"] for t in triggers}
    if "interval" not in kinds and rng.random() < 0.4:
        triggers.append(on("precision", seconds=sample(0, 59)))
    elif "interval" not in kinds and rng.random() < 0.3:
        triggers.append(on("delay", duration=rng.randint(1, 600)))
    if rng.random() < 0.3:
        triggers.append(on("range", start=near + rng.randint(-2 * HOUR, 0), end=near + rng.randint(0, 2 * HOUR)))
    if rng.random() < 0.3:
        start = near + rng.randint(-2 * HOUR, HOUR)
        triggers.append(on("blackout", start=start, end=start + rng.randint(0, HOUR)))
    return triggers


def test_long_windows_equal_the_per_second_ticks() -> None:
    rng = random.Random(20240310)
    for case in range(40):
        near = rng.choice(ANCHORS) + rng.randint(-HOUR, HOUR)
        triggers = random_triggers(rng, near)
        schedule = compiled(*triggers)
        start = near - rng.randint(0, 2 * HOUR)
        end = start + rng.randint(2, 3 * HOUR)
        assert schedule.due(start, end) == per_second(schedule, start, end), (case, triggers, start, end)


def oracle(trigger: dict[str, Any], first: int, last: int) -> list[int]:
    """UTC minutes in [first, last] whose wall clock matches, worked out with datetime alone."""
    zone = ZoneInfo(trigger.get("timezone") or "UTC")
    out = []
    for minute in range(first, last + 1, MIN):
        when = datetime.fromtimestamp(minute, zone)
        month_days = ((when.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day
        checks = {
            "years": [when.year], "months": [when.month], "days": [when.day, when.day - month_days - 1],
            "weekdays": [int(when.strftime("%w"))], "hours": [when.hour], "minutes": [when.minute],
        }
        if all(not trigger.get(k) or any(v in trigger[k] for v in values) for k, values in checks.items()):
            out.append(minute)
    return out


def test_schedule_matches_an_independent_oracle() -> None:
    rng = random.Random(7)
    for case in range(24):
        trigger = on("schedule", timezone=rng.choice(ZONES))
        for key, low, high in (("minutes", 0, 59), ("hours", 0, 23), ("weekdays", 0, 6), ("months", 1, 12)):
            if rng.random() < 0.5:
                trigger[key] = rng.sample(range(low, high + 1), rng.randint(1, 4))
        if rng.random() < 0.5:
            trigger["days"] = rng.sample([*range(1, 32), *range(-7, 0)], rng.randint(1, 6))
        length = rng.randint(HOUR, 8 * DAY)  # days long: exercises the jumps over non-matching days
        start = rng.choice(ANCHORS) - rng.randint(0, length)
        end = start + length
        expected = oracle(trigger, (start + 1) // MIN * MIN, end // MIN * MIN)
        assert epochs(compiled(trigger), start, end) == [m for m in expected if start < m <= end], (case, trigger)
