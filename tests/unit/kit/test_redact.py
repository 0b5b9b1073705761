"""kit.redact: secret values and secret-looking tokens masked, call payloads elided; and
kit.log's handler applying it in both formats."""
from __future__ import annotations

import io
import json
import logging

import pytest

from brokers.kit import log as logsetup
from brokers.kit import redact
from brokers.kit.redact import ELIDED, MASK, Redactor

TOKEN = "tok-5f1c0e9a7b2d4c6e"
HMAC = "hm-0123456789abcdef"
API = "ak-aaaabbbbccccdddd"
ODD = "s3cr3t-under-a-plain-name"
ENV = {"PROVIDER_API_TOKEN": TOKEN, "HOOK_HMAC_SECRET": HMAC, "HOOK_API_KEY": API,
       "UPSTREAM_CREDS": ODD, "KEYMAP": "us", "FEATURE_KEY_ENABLED": "true",
       "DB_PASSWORD": "correct horse battery", "HOME": "/home/someone-long-enough"}


@pytest.fixture
def r() -> Redactor:
    return Redactor(ENV)


def test_values_of_secret_looking_variables_are_masked(r: Redactor) -> None:
    line = f"calling with {TOKEN} and {HMAC} and {API} and pw correct horse battery"
    out = r.text(line)
    for secret in (TOKEN, HMAC, API, "correct horse battery"):
        assert secret not in out
    assert out.count(MASK) == 4


def test_short_flags_and_other_variables_are_not_secrets(r: Redactor) -> None:
    assert r.text("layout us, enabled true, home /home/someone-long-enough") == \
        "layout us, enabled true, home /home/someone-long-enough"


def test_a_variable_named_by_an_auth_spec_is_masked_whatever_its_name(r: Redactor) -> None:
    assert ODD in r.text(f"x {ODD}")  # not secret by its name
    r.note_auth({"type": "bearer", "token_key": "UPSTREAM_CREDS"})
    assert r.text(f"x {ODD}") == f"x {MASK}"


def test_an_auth_spec_seen_in_a_log_argument_is_noted(r: Redactor) -> None:
    rec = logging.LogRecord("t", logging.DEBUG, __file__, 1, "registered %s then %s",
                            ({"id": "f", "invocation": {"auth": {"type": "hmac", "secret_key": "UPSTREAM_CREDS"}}},
                             ODD), None)
    r.record(rec)
    assert ODD not in rec.getMessage() and "UPSTREAM_CREDS" in rec.getMessage()


def test_auth_ref_objects_are_noted_too(r: Redactor) -> None:
    from brokers.http_functions.core import AuthRef
    r.note_auth(AuthRef("api_key", "UPSTREAM_CREDS", "X-Key"))
    assert ODD not in r.text(ODD)


@pytest.mark.parametrize("line, kept", [
    ("Authorization: Bearer abc.def-ghi", "Authorization: "),
    ("authorization=Basic dXNlcjpwYXNz", "authorization="),
    ("headers {'authorization': 'Bearer zzz', 'x': 'y'}", "'x': 'y'"),
    ('{"Authorization": "Bearer zzz", "x": "y"}', '"x": "y"'),
    ("[('content-type', 'application/json'), ('x-iii-signature', 'sha256=" + "ab" * 32 + "')]",
     "application/json"),
    ("sent Bearer eyJhbGciOi.eyJzdWIi.sig", "sent Bearer "),
    ("sig sha256=" + "0f" * 32 + " done", " done"),
    ("GET https://h/x?token=abc123&page=2", "page=2"),
    ("x-api-key: k-12345", "x-api-key: "),
    ("password=hunter2 user=bob", "user=bob"),
])
def test_secret_looking_tokens_are_masked(r: Redactor, line: str, kept: str) -> None:
    out = r.text(line)
    assert MASK in out and kept in out
    for leaked in ("abc.def-ghi", "dXNlcjpwYXNz", "zzz", "ab" * 32, "eyJzdWIi", "0f" * 32,
                   "abc123", "k-12345", "hunter2"):
        assert leaked not in out
    assert r.text(out) == out  # idempotent


def test_auth_var_names_are_not_masked(r: Redactor) -> None:
    line = "auth {'type': 'bearer', 'token_key': 'PROVIDER_API_TOKEN'}"
    assert r.text(line) == line


def test_payloads_are_elided_from_arguments(r: Redactor) -> None:
    msg = {"type": "invokefunction", "function_id": "f", "data": {"card": "4111"},
           "nested": [{"payload": "p-secret", "keep": 1}], "result": [1, 2]}
    rec = logging.LogRecord("t", logging.DEBUG, __file__, 1, "frame %r body %s", (msg, b"\x00" * 17), None)
    r.record(rec)
    text = rec.getMessage()
    assert "4111" not in text and "p-secret" not in text and "[1, 2]" not in text
    assert text.count(ELIDED) == 3 and "'function_id': 'f'" in text and "'keep': 1" in text
    assert "<17 bytes>" in text
    assert msg["data"] == {"card": "4111"}  # the caller's object is not touched


def test_mapping_args_and_bad_format_strings(r: Redactor) -> None:
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, "%(who)s sent %(data)s", ({"who": TOKEN, "data": 1},), None)
    r.record(rec)
    assert rec.getMessage() == f"{MASK} sent 1"
    bad = logging.LogRecord("t", logging.INFO, __file__, 1, "%d items %s", ("x", TOKEN), None)
    r.record(bad)
    assert TOKEN not in bad.getMessage() and "%d items" in bad.getMessage()


def test_exceptions_are_masked(r: Redactor) -> None:
    try:
        raise RuntimeError(f"upstream said Bearer {TOKEN}")
    except RuntimeError:
        import sys
        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    r.record(rec)
    assert TOKEN not in rec.exc_text and "RuntimeError" in rec.exc_text


def test_longest_secret_first() -> None:
    r = Redactor({"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefgh-ijkl"})
    assert r.text("abcdefgh-ijkl") == MASK


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_log_handler_redacts_in_both_formats(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_BEARER_TOKEN", TOKEN)
    redact.reset()
    try:
        out = io.StringIO()
        logsetup.setup("debug", fmt, "unit", stream=out, signals=False)
        logger = logging.getLogger("brokers.unit")
        logger.debug("call %s with %s -> Authorization: Bearer %s", "f", {"data": {"x": "PAYLOAD-42"}}, TOKEN)
        try:
            raise ValueError(f"had {TOKEN}\nsecond line")
        except ValueError:
            logger.exception("boom %s", TOKEN)
        text = out.getvalue()
        assert TOKEN not in text and "PAYLOAD-42" not in text
        if fmt == "json":
            lines = text.splitlines()
            assert len(lines) == 2
            first, second = (json.loads(line) for line in lines)
            assert first["level"] == "debug" and first["process"] == "unit" and ELIDED in first["msg"]
            assert "ValueError" in second["exc"]
    finally:
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                           if not getattr(h, "_iii_handler", False)]
        redact.reset()


def test_setup_twice_keeps_one_handler() -> None:
    try:
        logsetup.setup("info", "json", "a", stream=io.StringIO(), signals=False)
        logsetup.setup("info", "text", "b", stream=io.StringIO(), signals=False)
        assert sum(getattr(h, "_iii_handler", False) for h in logging.getLogger().handlers) == 1
    finally:
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                           if not getattr(h, "_iii_handler", False)]


def test_stack_dump_names_threads_and_tasks() -> None:
    import asyncio
    from brokers.kit import signals

    async def sleeper() -> None:
        await asyncio.sleep(10)

    async def main() -> str:
        task = asyncio.create_task(sleeper(), name="the-sleeper")
        await asyncio.sleep(0)
        text = signals.dump_stacks()
        task.cancel()
        return text

    text = asyncio.run(main())
    assert "(main)" in text and "the-sleeper" in text and "sleeper" in text
