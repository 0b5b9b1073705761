"""The cron expression grammar of the reference (Rust crate ``cron`` 0.15 on ``winnow`` 0.6):
text in, fields of specifiers out, or the reference's parser message.

Why a grammar of our own and not ``croniter``: the language differs (seconds first, a
year field, day-of-week 1-7 with 1 = Sunday, ``?``, day-of-month AND day-of-week), and a
rejected expression reaches the user as ``Invalid cron expression '<expr>': <message>``,
whose message is winnow's rendering of where parsing stopped. So the grammar below is the
crate's, combinator for combinator (``parsing.rs``), with winnow's backtracking rules, which
decide the position the message points at:

  * a failed token (``*``, ``/``, digits, letters) leaves the input where it was; ``alt``
    restarts every branch at its start and, when all fail, keeps the LAST branch's error
    and position; ``separated`` stops before a separator not followed by an item; ``opt``
    rewinds; ``try_map`` rewinds to its start and carries the map's error as the cause;
  * whitespace (space, tab, CR, LF) is optional around every number, name and field, so
    ``1 , 2`` is a list and fields need no space between them (``******`` parses);
  * a parse that succeeds but leaves input is the final ``eof``'s failure, with no cause.

Invariants: ``parse`` returns ``(kind, fields)`` with ``kind`` ``"long"`` and seven fields
(the year field ``None`` when absent), or ``"short"`` and the shorthand's name; any other
outcome is ``CronSyntaxError`` whose ``str()`` is the crate's full message. Validation of
values (ranges, names) happens in ``schedule.py`` through ``field_check``, the crate's
``try_map`` step, so that its errors get the same rewinding and rendering.
"""
from __future__ import annotations

from typing import Any, Callable

U32_MAX = 2**32 - 1
SPACE = " \t\r\n"
SHORTHANDS = ("@yearly", "@monthly", "@weekly", "@daily", "@hourly")

Spec = tuple
"""``("all",)``, ``("point", n)``, ``("range", a, b)``, ``("named_range", a, b)``,
``("named", name)`` or ``("period", spec, step)``."""
Parser = Callable[[str, int], tuple[Any, int]]


class Backtrack(Exception):
    """A failed parser: the position it left the input at, and the cause (a map error)."""

    def __init__(self, pos: int, cause: str | None = None) -> None:
        super().__init__(pos, cause)
        self.pos = pos
        self.cause = cause


class CronSyntaxError(ValueError):
    """An expression the reference's parser rejects; ``str()`` is its message."""


class FieldError(Exception):
    """Raised by a field check (``try_map``): the crate's value error text."""


# ---- tokens ----------------------------------------------------------------------------

def _ws(s: str, i: int) -> tuple[None, int]:
    while i < len(s) and s[i] in SPACE:
        i += 1
    return None, i


def _take(pred: Callable[[str], bool]) -> Parser:
    def take(s: str, i: int) -> tuple[str, int]:
        j = i
        while j < len(s) and pred(s[j]):
            j += 1
        if j == i:
            raise Backtrack(i)
        return s[i:j], j
    return take


_digits = _take(lambda c: "0" <= c <= "9")
_letters = _take(lambda c: "a" <= c <= "z" or "A" <= c <= "Z")


def _lit(text: str) -> Parser:
    def lit(s: str, i: int) -> tuple[str, int]:
        if s.startswith(text, i):
            return text, i + len(text)
        raise Backtrack(i)
    return lit


def _padded(p: Parser) -> Parser:
    """winnow's ``delimited(multispace0, p, multispace0)``."""
    def padded(s: str, i: int) -> tuple[Any, int]:
        _, i = _ws(s, i)
        value, i = p(s, i)
        _, i = _ws(s, i)
        return value, i
    return padded


def _ordinal(s: str, i: int) -> tuple[int, int]:
    start = i
    text, i = _padded(_digits)(s, i)
    value = int(text)
    if value > U32_MAX:  # u32::from_str in a try_map: rewinds, says why
        raise Backtrack(start, "number too large to fit in target type")
    return value, i


_name = _padded(_letters)


# ---- combinators -----------------------------------------------------------------------

def _alt(*parsers: Parser) -> Parser:
    def alt(s: str, i: int) -> tuple[Any, int]:
        error: Backtrack | None = None
        for p in parsers:
            try:
                return p(s, i)
            except Backtrack as exc:
                error = exc  # winnow's ContextError.or keeps the later error
        assert error is not None
        raise error
    return alt


def _pair(first: Parser, sep: str, second: Parser, make: Callable[[Any, Any], Spec]) -> Parser:
    def pair(s: str, i: int) -> tuple[Spec, int]:
        a, i = first(s, i)
        _, i = _lit(sep)(s, i)
        b, i = second(s, i)
        return make(a, b), i
    return pair


def _map(p: Parser, f: Callable[[Any], Any]) -> Parser:
    def mapped(s: str, i: int) -> tuple[Any, int]:
        value, i = p(s, i)
        return f(value), i
    return mapped


def _separated1(p: Parser, sep: str) -> Parser:
    def separated(s: str, i: int) -> tuple[list, int]:
        value, i = p(s, i)
        out = [value]
        while True:
            mark = i
            try:
                _, i = _lit(sep)(s, i)
                value, i = p(s, i)
            except Backtrack:
                return out, mark
            out.append(value)
    return separated


# ---- the crate's grammar (parsing.rs) ---------------------------------------------------

_all = _map(_lit("*"), lambda _: ("all",))
_any = _map(_lit("?"), lambda _: ("all",))  # `?` is `*` where it is allowed
_range = _pair(_ordinal, "-", _ordinal, lambda a, b: ("range", a, b))
_named_range = _pair(_name, "-", _name, lambda a, b: ("named_range", a, b))
_specifier = _alt(_all, _range, _map(_ordinal, lambda n: ("point", n)), _named_range)
_specifier_with_any = _alt(_any, _specifier)
_named_point = _map(_name, lambda n: ("named", n))
_root = _alt(_pair(_specifier, "/", _ordinal, lambda a, b: ("period", a, b)), _specifier, _named_point)
_root_with_any = _alt(_pair(_specifier_with_any, "/", _ordinal, lambda a, b: ("period", a, b)),
                      _specifier_with_any, _named_point)


def _field(root: Parser, check: Callable[[list[Spec]], Any]) -> Parser:
    """A comma list of specifiers, checked as the crate's ``try_map(T::from_field)``."""
    listed = _padded(_alt(_separated1(root, ","), _map(root, lambda spec: [spec])))

    def field(s: str, i: int) -> tuple[Any, int]:
        start = i
        specs, i = listed(s, i)
        try:
            return check(specs), i
        except FieldError as exc:
            raise Backtrack(start, str(exc)) from None
    return field


def _eof(s: str, i: int) -> tuple[None, int]:
    if i != len(s):
        raise Backtrack(i)
    return None, i


def _shorthand(s: str, i: int) -> tuple[tuple[str, str], int]:
    name, i = _padded(_alt(*(_lit(word) for word in SHORTHANDS)))(s, i)
    return ("short", name), i


def parse(text: str, checks: list[Callable[[list[Spec]], Any]]) -> tuple[str, Any]:
    """``text`` parsed with ``checks[k]`` validating field ``k`` (seconds .. years)."""
    with_any = (3, 5)  # day of month, day of week
    fields = [_field(_root_with_any if k in with_any else _root, check) for k, check in enumerate(checks)]

    def longhand(s: str, i: int) -> tuple[tuple[str, list], int]:
        out = []
        for p in fields[:6]:
            value, i = p(s, i)
            out.append(value)
        try:  # the optional year field: any failure (a bad year too) rewinds to eof
            year, i = fields[6](s, i)
        except Backtrack:
            year = None
        _, i = _eof(s, i)
        return ("long", out + [year]), i

    try:
        result, i = _alt(_shorthand, longhand)(text, 0)
        _eof(text, i)
    except Backtrack as exc:
        raise CronSyntaxError(render(text, exc.pos, exc.cause)) from None
    return result


def render(text: str, pos: int, cause: str | None) -> str:
    """winnow 0.6's ``ParseError`` display: the input, a caret under the byte offset where
    parsing stopped, then the cause (empty when there is none)."""
    data = text.encode()
    offset = len(text[:pos].encode())
    if b"\n" not in data:
        out = f"{text}\n{' ' * offset}^\n"
    else:
        line, col = _position(data, offset)
        content = data.split(b"\n")[line].decode("utf-8", "replace")
        gutter = " " * len(str(line + 1))
        out = (f"parse error at line {line + 1}, column {col + 1}\n{gutter} |\n"
               f"{line + 1} | {content}\n{gutter} | {' ' * col}^\n")
    return out + (cause or "")


def _position(data: bytes, index: int) -> tuple[int, int]:
    """winnow's ``translate_position``: (line, column) of a byte offset, columns in chars."""
    safe = min(index, len(data) - 1)
    extra = index - safe
    line_start = data.rfind(b"\n", 0, safe) + 1
    line = data[:line_start].count(b"\n")
    try:
        column = len(data[line_start:safe + 1].decode()) - 1
    except UnicodeDecodeError:
        column = safe - line_start
    return line, column + extra
