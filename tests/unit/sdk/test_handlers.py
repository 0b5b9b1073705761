"""How a handler's shape decides how it is called, and what its failure becomes (sdk.handlers)."""
from __future__ import annotations

import pytest

from sdk.errors import InvocationError
from sdk.handlers import HandlerSpec, check_provider, handler_error_body, is_async, metadata_mode, provider_method


def test_metadata_only_for_a_parameter_named_metadata():
    def one(data): ...
    def pos(data, metadata=None): ...
    def kw(data, *, metadata=None): ...
    def other(data, meta=None): ...
    def star(*args, **kwargs): ...
    assert [metadata_mode(f) for f in (one, pos, kw, other, star)] == ["none", "positional", "keyword", "none", "none"]


def test_spec_calls_with_or_without_metadata():
    assert HandlerSpec(lambda d: d).call(1, {"m": 1}) == 1
    assert HandlerSpec(lambda d, metadata: (d, metadata)).call(1, {"m": 1}) == (1, {"m": 1})
    assert HandlerSpec(lambda d, *, metadata=None: (d, metadata)).call(1, {"m": 1}) == (1, {"m": 1})


def test_async_functions_methods_and_callable_objects():
    async def a(data): ...
    def s(data): ...

    class Obj:
        async def __call__(self, data): ...
        async def register_trigger(self, t): ...
        def unregister_trigger(self, t): ...

    assert [is_async(f) for f in (a, s, Obj(), Obj().register_trigger, Obj().unregister_trigger)] == [
        True, False, True, True, False]
    assert HandlerSpec(a).is_async and not HandlerSpec(s).is_async


def test_provider_needs_both_methods():
    class Provider:
        def register_trigger(self, t): ...
        def unregister_trigger(self, t): ...

    class Half:
        def register_trigger(self, t): ...

    check_provider(Provider())
    with pytest.raises(TypeError, match="unregister_trigger"):
        check_provider(Half())
    p = Provider()
    assert provider_method(p, "register") == p.register_trigger
    assert provider_method(p, "unregister") == p.unregister_trigger


def test_a_raising_handler_is_invocation_failed_with_its_message_and_traceback():
    try:
        raise ValueError("bad")
    except ValueError as exc:
        body = handler_error_body(exc)
    assert body["code"] == "invocation_failed" and body["message"] == "bad"
    assert "ValueError: bad" in body["stacktrace"]


def test_a_raised_invocation_error_keeps_its_own_code_and_message():
    # a re-raise passes an inner call's failure on as it is, its code not folded into the message
    for code in ("invocation_failed", "out_of_stock", "TIMEOUT"):
        try:
            raise InvocationError(code, "no price for kite", "remote trace", function_id="shop::price")
        except InvocationError as exc:
            body = handler_error_body(exc)
        assert body["code"] == code and body["message"] == "no price for kite"
        assert "InvocationError" in body["stacktrace"]
