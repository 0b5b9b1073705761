"""The message of a refused expression, as the reference words it: the crate ``cron`` 0.15
turns winnow 0.6's parse error into text (the input, a caret where parsing stopped, then the
cause), and the engine wraps it as ``Invalid cron expression '<expr>': <message>``. Where
the caret points follows winnow's backtracking (``grammar.py``); each case says why."""
from __future__ import annotations

import pytest

from brokers.cron.core import job_spec
from brokers.cron.grammar import CronSyntaxError
from brokers.cron.schedule import Schedule
from brokers.kit.errors import EngineError

CASES = [
    # five fields: the day-of-week field finds nothing at the end; no cause
    ("* * * * *", "* * * * *\n         ^\n"),
    ("0 */5 * * *", "0 */5 * * *\n           ^\n"),
    # eight fields: the seventh parses as a year, then eof fails where the eighth starts
    ("* * * * * * * *", "* * * * * * * *\n              ^\n"),
    # a value out of range: the field rewinds to its start, the cause is the crate's text
    ("60 * * * * *", "60 * * * * *\n^\nSeconds must be less than 59. ('60' specified.)"),
    ("* 60 * * * *", "* 60 * * * *\n  ^\nMinutes must be less than 59. ('60' specified.)"),
    ("* * 24 * * *", "* * 24 * * *\n    ^\nHours must be less than 23. ('24' specified.)"),
    ("* * * 0 * *", "* * * 0 * *\n      ^\nDays of Month must be greater than or equal to 1. ('0' specified.)"),
    ("* * * 32 * *", "* * * 32 * *\n      ^\nDays of Month must be less than 31. ('32' specified.)"),
    ("* * * * 13 *", "* * * * 13 *\n        ^\nMonths must be less than 12. ('13' specified.)"),
    ("* * * * * 0", "* * * * * 0\n          ^\nDays of Week must be greater than or equal to 1. ('0' specified.)"),
    ("* * * * * 8", "* * * * * 8\n          ^\nDays of Week must be less than 7. ('8' specified.)"),
    ("1,70 * * * * *", "1,70 * * * * *\n^\nSeconds must be less than 59. ('70' specified.)"),
    ("70/5 * * * * *", "70/5 * * * * *\n^\nSeconds must be less than 59. ('70' specified.)"),
    # ranges, steps, names
    ("40-10 * * * * *", "40-10 * * * * *\n^\nInvalid range for Seconds: 40-10"),
    ("0-65 * * * * *", "0-65 * * * * *\n^\nInvalid range for Seconds: 0-65"),
    ("*/0 * * * * *", "*/0 * * * * *\n^\nrange step cannot be zero"),
    ("*/61 * * * * *", "*/61 * * * * *\n^\nSeconds must be between 1 and 59. ('61' specified.)"),
    ("* * * * * SAT-SUN", "* * * * * SAT-SUN\n          ^\nInvalid named range for Days of Week: SAT-SUN"),
    ("* * * * * MON,TURTLE", "* * * * * MON,TURTLE\n          ^\n'TURTLE' is not a valid day of the week."),
    ("* * * * Foo *", "* * * * Foo *\n        ^\n'Foo' is not a valid month name."),
    ("MON * * * * *", "MON * * * * *\n^\nThe 'Seconds' field does not support using names. 'MON' specified."),
    ("0 0 0 L * ?", "0 0 0 L * ?\n      ^\nThe 'Days of Month' field does not support using names. 'L' specified."),
    # `?` outside the day fields: nothing parses at it
    ("? * * * * *", "? * * * * *\n^\n"),
    ("* * * * ? *", "* * * * ? *\n        ^\n"),
    # a step without a number: `*` parses alone, the next field cannot start at `/`
    ("*/x * * * * *", "*/x * * * * *\n ^\n"),
    # the year field is optional: any failure in it rewinds, and eof fails there, no cause
    ("0 0 0 1 1 ? 1969", "0 0 0 1 1 ? 1969\n            ^\n"),
    ("0 0 0 1 1 ? 2020-2040/2200", "0 0 0 1 1 ? 2020-2040/2200\n            ^\n"),
    ("0 0 0 * * 5#3", "0 0 0 * * 5#3\n           ^\n"),
    # shorthands must be the whole expression; unknown ones parse as nothing
    ("@dailyBla", "@dailyBla\n      ^\n"),
    ("@annually", "@annually\n^\n"),
    # a number too large for u32: its cause is lost to the later branches of `alt`
    ("99999999999 * * * * *", "99999999999 * * * * *\n^\n"),
    # with a newline, winnow names the line and column
    ("* * * *\n * *x", "parse error at line 2, column 5\n  |\n2 |  * *x\n  |     ^\n"),
    # the caret counts bytes on a single line
    ("é * * * * *", "é * * * * *\n^\n"),
    ("* é * * * *", "* é * * * *\n  ^\n"),
]


@pytest.mark.parametrize("expr, message", CASES)
def test_the_parser_message(expr: str, message: str) -> None:
    with pytest.raises(CronSyntaxError) as info:
        Schedule.parse(expr)
    assert str(info.value) == message


def test_the_registration_error_wraps_it() -> None:
    binding = {"id": "t1", "function_id": "f", "config": {"expression": "60 * * * * *"}}
    with pytest.raises(EngineError) as info:
        job_spec(binding)
    assert info.value.code == "trigger_registration_failed"
    assert info.value.message == ("Invalid cron expression '60 * * * * *': 60 * * * * *\n^\n"
                                  "Seconds must be less than 59. ('60' specified.)")


@pytest.mark.parametrize("config", [None, [], {}, {"expression": None}, {"expression": ""},
                                    {"expression": 5}, {"expression": ["* * * * * *"]}])
def test_a_missing_empty_or_non_string_expression_is_required(config) -> None:
    with pytest.raises(EngineError) as info:
        job_spec({"id": "t1", "function_id": "f", "config": config})
    assert (info.value.code, info.value.message) == ("trigger_registration_failed", "Cron expression is required")
