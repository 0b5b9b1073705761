"""The cron expression language of workers-a §6.2 (the reference's crate ``cron`` 0.15):
next fire times from a table of known answers (month ends, leap years, UTC across DST days,
the year field, steps over ranges, names, day-of-month AND day-of-week, shorthands), the
expressions it accepts and refuses, and ``next_after`` against a brute-force search."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.cron.grammar import CronSyntaxError
from brokers.cron.schedule import UNITS, Schedule


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def iso(t: int | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


NEXT = [
    # every second; a fraction of a second counts as after its second
    ("* * * * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:01"),
    ("* * * * * *", "2025-01-01T00:00:00.999", "2025-01-01T00:00:01"),
    ("* * * * * *", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),
    # the seed page's job, in 6 and in 7 fields
    ("0 */30 * * * *", "2025-01-01T00:10:00", "2025-01-01T00:30:00"),
    ("0 */30 * * * * *", "2025-01-01T00:30:00", "2025-01-01T01:00:00"),
    ("0 */30 * * * * *", "2025-01-01T23:59:00", "2025-01-02T00:00:00"),
    # month ends and leap years
    ("0 0 0 31 * ?", "2025-04-01T00:00:00", "2025-05-31T00:00:00"),
    ("0 0 0 31 * ?", "2025-01-31T00:00:00", "2025-03-31T00:00:00"),
    ("0 0 0 29 2 ?", "2025-01-01T00:00:00", "2028-02-29T00:00:00"),
    ("0 0 0 29 2 ?", "2096-03-01T00:00:00", None),  # 2100 is no leap year; years end there
    ("0 0 0 30 2 ?", "2025-01-01T00:00:00", None),
    ("0 0 0 28-31 * ?", "2025-02-28T00:00:01", "2025-03-28T00:00:00"),
    ("59 59 23 31 12 ? *", "2025-06-01T00:00:00", "2025-12-31T23:59:59"),
    ("0 0 0 1 * ?", "2024-02-29T12:00:00", "2024-03-01T00:00:00"),
    # UTC only: DST days in Europe (Mar 30 / Oct 26 2025) and the US (Mar 9 2025) change nothing
    ("0 30 2 * * *", "2025-03-30T00:00:00", "2025-03-30T02:30:00"),
    ("0 30 2 * * *", "2025-03-09T00:00:00", "2025-03-09T02:30:00"),
    ("0 0 * * * *", "2025-10-26T00:30:00", "2025-10-26T01:00:00"),
    ("0 0 * * * *", "2025-10-26T01:00:00", "2025-10-26T02:00:00"),
    # the year field
    ("0 0 0 1 1 ? 2099", "2025-01-01T00:00:00", "2099-01-01T00:00:00"),
    ("0 0 0 1 1 ? 2030-2040/5", "2025-06-01T00:00:00", "2030-01-01T00:00:00"),
    ("0 0 0 1 1 ? 2030-2040/5", "2030-01-01T00:00:00", "2035-01-01T00:00:00"),
    ("* * * * * * 2024", "2025-01-01T00:00:00", None),
    ("0 0 12 1 1 ? 2026,2028", "2026-01-01T12:00:00", "2028-01-01T12:00:00"),
    # steps over a start, a range, a named range
    ("10-40/5 * * * * *", "2025-01-01T00:00:10", "2025-01-01T00:00:15"),
    ("10-40/5 * * * * *", "2025-01-01T00:00:41", "2025-01-01T00:01:10"),
    ("0/10 * * * * *", "2025-01-01T00:00:55", "2025-01-01T00:01:00"),
    ("50/4 * * * * *", "2025-01-01T00:00:58", "2025-01-01T00:01:50"),  # 50, 54, 58 only
    ("0 0 0 1 feb-apr/2 ?", "2025-02-02T00:00:00", "2025-04-01T00:00:00"),
    ("0 0 */6 * * *", "2025-01-01T18:00:01", "2025-01-02T00:00:00"),
    ("0 0 0 ?/10 * ?", "2025-01-21T00:00:01", "2025-01-31T00:00:00"),  # 1, 11, 21, 31
    # day of week: 1 = Sunday .. 7 = Saturday; names; AND with the day of month
    ("0 0 0 * * 7", "2025-01-01T00:00:00", "2025-01-04T00:00:00"),
    ("0 0 0 * * 1", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),
    ("0 0 0 * * MON-FRI", "2025-01-04T00:00:00", "2025-01-06T00:00:00"),
    ("0 0 9-17 * * 1-5 *", "2025-01-04T18:00:00", "2025-01-05T09:00:00"),  # 1-5 = Sun..Thu
    ("0 0 9-17 * * 1-5 *", "2025-01-09T17:00:00", "2025-01-12T09:00:00"),
    ("0 0 0 ? Jan Mon", "2025-01-01T00:00:00", "2025-01-06T00:00:00"),
    ("0 0 0 13 * FRI", "2025-01-01T00:00:00", "2025-06-13T00:00:00"),  # intersection, not union
    ("0 0 0 1 * SUN", "2025-01-01T00:00:00", "2025-06-01T00:00:00"),
    ("0 0 12 ? JAN,JUL *", "2025-02-01T00:00:00", "2025-07-01T12:00:00"),
    ("0 0 0 * * Tues,thurs", "2025-01-01T00:00:00", "2025-01-02T00:00:00"),
    ("0 0 0 * * saturday", "2025-01-01T00:00:00", "2025-01-04T00:00:00"),
    # shorthands
    ("@yearly", "2025-06-01T00:00:00", "2026-01-01T00:00:00"),
    ("@monthly", "2025-01-31T12:00:00", "2025-02-01T00:00:00"),
    ("@weekly", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),
    ("@daily", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),
    ("@hourly", "2025-01-01T00:59:59.999", "2025-01-01T01:00:00"),
    (" @daily ", "2025-01-01T00:00:00", "2025-01-02T00:00:00"),
    # whitespace is free around numbers, lists and fields, as in the crate
    ("0,30  *\t* * *  *", "2025-01-01T00:00:00", "2025-01-01T00:00:30"),
    ("1 , 2 * * * * *", "2025-01-01T00:00:01", "2025-01-01T00:00:02"),
    ("******", "2025-01-01T00:00:00", "2025-01-01T00:00:01"),
]


@pytest.mark.parametrize("expr, after, expected", NEXT)
def test_next_fire_times(expr: str, after: str, expected: str | None) -> None:
    assert iso(Schedule.parse(expr).next_after(ts(after))) == expected


def test_a_run_of_next_times_walks_the_schedule() -> None:
    s = Schedule.parse("0 0 0 29 2 ?")
    t, got = ts("2023-01-01T00:00:00"), []
    while (t := s.next_after(t)) is not None:
        got.append(iso(t)[:4])
    assert got == [str(y) for y in range(2024, 2100, 4)]


# The crate's own schedule-level tests (parsing.rs) and those of issue #59.
ACCEPTED = ["* * * * * *", "0,20,40 * * * * *", "0-40 * * * * *", "0-5,58 * * * * *",
            "* * * * * MON,WED,FRI", "* * * * * MON-FRI", "* * * ? * *", "* * * * * ?",
            "* * * ? * Mon,Thu", "* * * 1,2 * ?", "* * * ? * ?", "1-5/59 * * * * *",
            "*/10 2 3 4 5 6", "* */30 * * * *", "* * */23 * * *", "* * * */30 * *",
            "* * * * */10 *", "1,2,3/5 * * * * *", "0 0 0 1 1 ? 2020-2040/10",
            "* * * * * Mon-Thurs/2", "* * * * February-November/2 *", "0 0 0 1 1 ? 2100"]
REFUSED = ["* * * *", "* * * * *", "0-65 * * * * *", "103,12 * * * * *", "0-5,102 * * * * *",
           "* * * * * MON,TURTLE", "* * * * * BEAR-OWL", "10-12/10-12 * * * * ?", "? * * * * *",
           "* ? * * * *", "* * ? * * *", "* * * * ? *", "* * * * * *foo *", "* * * * * * * foo",
           "@dailyBla", " @dailyBla ", "1-5/61 * * * * *", "*/61 2 3 4 5 6", "* */61 * * * *",
           "* * */25 * * *", "* * * */32 * *", "* * * * */13 *", "1,2,3/60 * * * * *",
           "0 0 0 1 1 ? 2020-2040/2200", "* * * * * 0", "* * * * * 8", "0 0 0 1 1 ? 1969",
           "0 0 0 L * ?", "0 0 0 * * 5#3", "0 0 0 ? * 6L", "@annually", "@midnight",
           "* * * * * * * *", "0 */5 * * *"]


@pytest.mark.parametrize("expr", ACCEPTED)
def test_accepted(expr: str) -> None:
    Schedule.parse(expr)


@pytest.mark.parametrize("expr", REFUSED)
def test_refused(expr: str) -> None:
    with pytest.raises(CronSyntaxError):
        Schedule.parse(expr)


def test_equal_sets_are_equal_schedules() -> None:
    assert Schedule.parse("0,30 * * * * *") == Schedule.parse("*/30 * * * * *")
    assert Schedule.parse("@daily") == Schedule.parse("0 0 0 * * *")
    assert Schedule.parse("@weekly") == Schedule.parse("0 0 0 ? * SUN")
    assert Schedule.parse("* * * ? * ?") == Schedule.parse("* * * * * *")
    assert Schedule.parse("0 0 0 * * 1-7") == Schedule.parse("0 0 0 * * *")
    assert Schedule.parse("0 0 0 * * 2") != Schedule.parse("0 0 0 * * 1")


# ---- next_after against a brute-force search ----------------------------------------------

def _values(draw, unit) -> list[int] | None:
    kind = draw(st.sampled_from(["all", "list", "range", "step"]))
    if kind == "all":
        return None
    lo, hi = unit.low, unit.high
    if kind == "list":
        return sorted(set(draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4))))
    a = draw(st.integers(lo, hi))
    b = draw(st.integers(a, hi))
    if kind == "range":
        return list(range(a, b + 1))
    return list(range(a, b + 1, draw(st.integers(1, max(1, hi - lo)))))


@st.composite
def expressions(draw) -> tuple[str, list[list[int] | None]]:
    fields = [_values(draw, unit) for unit in UNITS[:6]]  # the year stays open
    text = " ".join("*" if f is None else ",".join(map(str, f)) for f in fields)
    return text, fields


def brute_force(fields: list[list[int] | None], after: int, horizon_days: int = 366 * 9) -> int | None:
    def ok(k: int, v: int) -> bool:
        return fields[k] is None or v in fields[k]

    start = after + 1
    day0 = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    for n in range(horizon_days):
        d = (day0 + dt.timedelta(days=n)).date()
        if not (ok(4, d.month) and ok(3, d.day) and ok(5, d.isoweekday() % 7 + 1)):
            continue
        base = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp())
        for h in range(24):
            if not ok(2, h):
                continue
            for m in range(60):
                if not ok(1, m):
                    continue
                for s in range(60):
                    t = base + h * 3600 + m * 60 + s
                    if ok(0, s) and t >= start:
                        return t
    return "beyond horizon"  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(expressions(), st.integers(int(ts("2024-01-01T00:00:00")), int(ts("2030-12-31T00:00:00"))))
def test_next_after_is_the_first_matching_second(expr, after: int) -> None:
    text, fields = expr
    expected = brute_force(fields, after)
    got = Schedule.parse(text).next_after(after)
    if expected == "beyond horizon":  # e.g. Feb 30: nothing in nine years, maybe never
        assert got is None or got > after + 366 * 9 * 86400 - 86400
    else:
        assert got == expected, (text, iso(after))
