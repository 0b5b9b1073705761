"""A parsed cron expression and its fire times (workers-a §6.2): pure, UTC, whole seconds.

``Schedule.parse(text)`` accepts what the reference's crate ``cron`` 0.15 accepts, with its
messages: six or seven fields ``second minute hour day-of-month month day-of-week [year]``
or one of ``@yearly @monthly @weekly @daily @hourly``; seconds 0-59, minutes 0-59, hours
0-23, days of month 1-31, months 1-12 (or ``jan``..``december``), days of week 1-7 with
1 = Sunday (or ``sun``..``saturday``), years 1970-2100. ``*``, ``?`` (day fields only),
``a-b``, ``a,b``, steps ``x/n`` over ``*``, a start (``10/5`` = 10, 15, .. to the maximum)
or a range; names and named ranges where the unit has names. A five-field crontab fails.

``next_after(t)`` is the earliest fire time strictly after ``t`` (epoch seconds; a
fraction counts as after its second), or None when none is left (the year field ends at
2100): the smallest second at or after ``floor(t) + 1`` whose every field matches, the
day of month AND the day of week (their intersection, not Vixie cron's union). There is no
time zone: UTC has no DST gaps or repeats, so every matching second exists exactly once.

Invariants: a ``Schedule`` is immutable; equal expressions give equal schedules (``==``
compares the matched sets, as the crate does); ``next_after`` never returns a time <= t.
"""
from __future__ import annotations

import calendar
import datetime as dt
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable

from brokers.cron.grammar import FieldError, Spec, parse

EPOCH_DAY = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Unit:
    """One field's unit as the crate names and bounds it."""

    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    bad_name: str = ""
    """The crate's text for an unknown name of a unit that has names."""


def _names(*groups: tuple[str, ...]) -> dict[str, int]:
    return {word: n for n, words in enumerate(groups, 1) for word in words}


MONTHS = _names(("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
                ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
                ("sep", "september"), ("oct", "october"), ("nov", "november"), ("dec", "december"))
DAYS = _names(("sun", "sunday"), ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "wednesday"),
              ("thu", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"))
UNITS = (Unit("Seconds", 0, 59), Unit("Minutes", 0, 59), Unit("Hours", 0, 23),
         Unit("Days of Month", 1, 31), Unit("Months", 1, 12, MONTHS, "'{}' is not a valid month name."),
         Unit("Days of Week", 1, 7, DAYS, "'{}' is not a valid day of the week."),
         Unit("Years", 1970, 2100))
_SHORT = {  # (second, minute, hour, day of month, month, day of week) of each shorthand
    "@yearly": ((0,), (0,), (0,), (1,), (1,), None), "@monthly": ((0,), (0,), (0,), (1,), None, None),
    "@weekly": ((0,), (0,), (0,), None, None, (1,)), "@daily": ((0,), (0,), (0,), None, None, None),
    "@hourly": ((0,), (0,), None, None, None, None),
}


# ---- values (the crate's TimeUnitField) --------------------------------------------------

def _validate(unit: Unit, n: int) -> int:
    if n < unit.low:
        raise FieldError(f"{unit.name} must be greater than or equal to {unit.low}. ('{n}' specified.)")
    if n > unit.high:  # sic: "less than" the maximum it accepts, as the crate words it
        raise FieldError(f"{unit.name} must be less than {unit.high}. ('{n}' specified.)")
    return n


def _by_name(unit: Unit, name: str) -> int:
    if unit.names is None:
        raise FieldError(f"The '{unit.name}' field does not support using names. '{name}' specified.")
    n = unit.names.get(name.lower())
    if n is None:
        raise FieldError(unit.bad_name.format(name))
    return n


def _specifier(unit: Unit, spec: Spec) -> list[int]:
    kind = spec[0]
    if kind == "all":
        return list(range(unit.low, unit.high + 1))
    if kind == "point":
        return [spec[1]]
    if kind == "range":
        a, b = spec[1], spec[2]
        if not (unit.low <= a <= unit.high and unit.low <= b <= unit.high and a <= b):
            raise FieldError(f"Invalid range for {unit.name}: {a}-{b}")
        return list(range(a, b + 1))
    a, b = _by_name(unit, spec[1]), _by_name(unit, spec[2])  # named_range
    if not (unit.low <= a <= unit.high and unit.low <= b <= unit.high and a <= b):
        raise FieldError(f"Invalid named range for {unit.name}: {spec[1]}-{spec[2]}")
    return list(range(a, b + 1))


def _root(unit: Unit, spec: Spec) -> list[int]:
    if spec[0] == "named":
        return [_by_name(unit, spec[1])]
    if spec[0] != "period":
        return _specifier(unit, spec)
    start, step = spec[1], spec[2]
    if step == 0:
        raise FieldError("range step cannot be zero")
    if step > unit.high:
        raise FieldError(f"{unit.name} must be between 1 and {unit.high}. ('{step}' specified.)")
    if start[0] == "point":  # `10/5`: from 10 to the unit's maximum
        base = list(range(_validate(unit, start[1]), unit.high + 1))
    else:
        base = _specifier(unit, start)
    return base[::step]


def _check(unit: Unit) -> Callable[[list[Spec]], tuple[int, ...] | None]:
    """The crate's ``from_field``: a lone ``*`` is every value (None), else the sorted set."""
    def check(specs: list[Spec]) -> tuple[int, ...] | None:
        if specs == [("all",)]:
            return None
        values: set[int] = set()
        for spec in specs:
            values.update(_validate(unit, n) for n in sorted(set(_root(unit, spec))))
        return tuple(sorted(values))
    return check


_CHECKS = [_check(u) for u in UNITS]


# ---- the schedule --------------------------------------------------------------------------

class Schedule:
    """The matched values of each field, and the search for the next fire time."""

    __slots__ = ("text", "_sorted", "_ok")

    def __init__(self, text: str, fields: list[tuple[int, ...] | None]) -> None:
        self.text = text
        self._sorted = tuple(tuple(range(u.low, u.high + 1)) if f is None else f
                             for u, f in zip(UNITS, fields))
        self._ok = tuple(frozenset(values) for values in self._sorted)

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """Raises ``grammar.CronSyntaxError`` with the crate's message."""
        kind, value = parse(text, _CHECKS)
        if kind == "short":
            return cls(text, [*_SHORT[value], None])
        return cls(text, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self._sorted == other._sorted

    def __hash__(self) -> int:
        return hash(self._sorted)

    def __repr__(self) -> str:
        return f"Schedule({self.text!r})"

    def next_after(self, t: float) -> int | None:
        """The first fire time strictly after ``t`` (epoch seconds, UTC), or None."""
        start = int(t // 1) + 1
        days, tod = divmod(start, 86400)
        d = dt.date.fromordinal(EPOCH_DAY + days)
        y, mo, day = d.year, d.month, d.day
        hms = (tod // 3600, tod // 60 % 60, tod % 60)
        secs, mins, hours, doms, months, dows, years = self._sorted
        ok_dow, ok_year, ok_month = self._ok[5], self._ok[6], self._ok[4]
        while True:
            if y not in ok_year:
                i = bisect_left(years, y)
                if i == len(years):
                    return None
                y, mo, day, hms = years[i], 1, 1, (0, 0, 0)
            if mo not in ok_month:
                i = bisect_left(months, mo)
                if i == len(months):
                    y, mo, day, hms = y + 1, 1, 1, (0, 0, 0)
                    continue
                mo, day, hms = months[i], 1, (0, 0, 0)
            i = bisect_left(doms, day)
            if i == len(doms) or doms[i] > calendar.monthrange(y, mo)[1]:
                y, mo, day, hms = (y + 1, 1, 1, (0, 0, 0)) if mo == 12 else (y, mo + 1, 1, (0, 0, 0))
                continue
            if doms[i] != day:
                day, hms = doms[i], (0, 0, 0)
            # date.isoweekday(): Monday 1 .. Sunday 7; the crate numbers Sunday 1 .. Saturday 7
            if dt.date(y, mo, day).isoweekday() % 7 + 1 in ok_dow:
                at = _time_from(hms, hours, mins, secs)
                if at is not None:
                    return (dt.date(y, mo, day).toordinal() - EPOCH_DAY) * 86400 + at
            day, hms = day + 1, (0, 0, 0)


def _time_from(hms: tuple[int, int, int], hours: tuple[int, ...], mins: tuple[int, ...],
               secs: tuple[int, ...]) -> int | None:
    """Seconds into the day of the first matching time at or after ``hms``, or None."""
    h0, m0, s0 = hms
    for h in hours[bisect_left(hours, h0):]:
        for m in mins[bisect_left(mins, m0 if h == h0 else 0):]:
            lo = s0 if (h, m) == (h0, m0) else 0
            i = bisect_left(secs, lo)
            if i < len(secs):
                return h * 3600 + m * 60 + secs[i]
        # no minute left in this hour: the next hour starts from minute 0
    return None
