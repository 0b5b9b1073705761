"""The URL guard (workers-b §3.4): the reference's refusals and private ranges, the
allowlist globs, and the one-lookup pick of the address to connect to."""
from __future__ import annotations

import ipaddress

import pytest

from brokers.http_functions import guard
from brokers.http_functions.config import Security, parse, security
from brokers.kit.errors import EngineError

STRICT = Security()
OPEN = Security(require_https=False, block_private_ips=False)
LOCAL = Security(url_allowlist=("localhost", "127.0.0.1"), require_https=False, block_private_ips=False)


def reason(url: str, security: Security = STRICT, resolved: list[str] | None = ["93.184.216.34"]) -> str | None:
    try:
        target = guard.parse_target(url, security)
        guard.pick_address(target, resolved, security)
    except EngineError as exc:
        assert exc.code == "url_validation_failed"
        return exc.message
    return None


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "255.255.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9", "0.0.0.0",
    "::1", "fd00::1", "fc00::1", "fe80::1", "::", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
    "::ffff:169.254.169.254"])
def test_private_addresses(ip: str) -> None:
    assert guard.is_private(ipaddress.ip_address(ip))


@pytest.mark.parametrize("ip", [
    "8.8.8.8", "1.1.1.1", "100.64.0.1", "224.0.0.1", "0.1.2.3", "198.18.0.1", "172.32.0.1",
    "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_as_the_reference_has_them(ip: str) -> None:
    assert not guard.is_private(ipaddress.ip_address(ip))


def test_the_reference_refusals_word_for_word() -> None:
    assert reason("not a url at all") == "Invalid URL"
    assert reason("https://") == "Invalid URL"
    assert reason("https://example.com:99999/") == "Invalid URL"
    assert reason("http://example.com/path") == "HTTPS is required"
    assert reason("ftp://example.com/", STRICT) == "HTTPS is required"
    assert reason("https://10.0.0.1/") == "Private IP blocked"
    assert reason("https://172.16.0.1") == "Private IP blocked"
    assert reason("https://192.168.1.1") == "Private IP blocked"
    assert reason("https://169.254.169.254/latest/meta-data") == "Private IP blocked"
    assert reason("https://[::1]:8443/") == "Private IP blocked"
    assert reason("https://[::ffff:127.0.0.1]/") == "Private IP blocked"
    assert reason("https://nonexistent.invalid", resolved=None) == "DNS lookup failed"
    assert reason("https://8.8.8.8/api") is None


def test_a_hostname_is_blocked_when_any_address_is_private() -> None:
    assert reason("https://rebind.example", resolved=["127.0.0.1"]) == "Private IP blocked"
    assert reason("https://mixed.example", resolved=["93.184.216.34", "10.0.0.5"]) == "Private IP blocked"
    assert reason("https://ok.example", resolved=["93.184.216.34"]) is None


def test_the_allowlist_matches_the_host_only_with_globs() -> None:
    sec = Security(url_allowlist=("api.example.com", "*.hooks.example", "h?st.example", "[ab].example"),
                   block_private_ips=False)
    assert reason("https://api.example.com/v1", sec) is None
    assert reason("https://x.hooks.example/", sec) is None
    assert reason("https://hooks.example/", sec) == "URL not in allowlist"
    assert reason("https://host.example", sec) is None
    assert reason("https://b.example", sec) is None
    assert reason("https://evil.com/", sec) == "URL not in allowlist"
    # the reference's own config test: an entry with a scheme never matches a host
    assert reason("https://example.com", Security(url_allowlist=("https://example.com",))) == "URL not in allowlist"
    # IPv6 hosts keep their brackets when matched
    assert reason("http://[::1]:80/", Security(url_allowlist=("[[]::1]",), require_https=False,
                                                 block_private_ips=False)) is None


def test_allowlist_127_with_private_ips_blocked_still_refuses_loopback() -> None:
    sec = Security(url_allowlist=("127.0.0.1",), require_https=False)
    assert reason("http://127.0.0.1/test", sec) == "Private IP blocked"
    assert reason("http://127.0.0.1:8080/test", LOCAL) is None


def test_the_pick_is_the_first_validated_address_and_the_target_keeps_the_name() -> None:
    target = guard.parse_target("https://user:pw@Hooks.Example:8443/notify?x=1", STRICT)
    ip = guard.pick_address(target, ["93.184.216.34", "93.184.216.35"], STRICT)
    assert str(ip) == "93.184.216.34"
    assert (target.host, target.port, target.path) == ("hooks.example", 8443, "/notify?x=1")
    assert target.host_header == "hooks.example:8443"
    assert target.url_for(ip) == "https://93.184.216.34:8443/notify?x=1"
    assert guard.parse_target("http://h.example/", OPEN).host_header == "h.example"
    v6 = guard.parse_target("http://[2001:db8::1]:81/", OPEN)
    assert v6.host_header == "[2001:db8::1]:81" and v6.url_for(v6.ip) == "http://[2001:db8::1]:81/"


def test_without_block_private_ips_a_lookup_is_still_the_address_used() -> None:
    target = guard.parse_target("http://localhost:9/x", LOCAL)
    assert str(guard.pick_address(target, ["127.0.0.1"], LOCAL)) == "127.0.0.1"
    with pytest.raises(EngineError, match="dns error") as info:  # no check asked for the lookup
        guard.pick_address(target, [], LOCAL)
    assert info.value.code == "http_request_failed"


def test_config_defaults_are_strict_and_unknown_keys_refused() -> None:
    from brokers.kit.schema import ConfigError
    assert security(parse(None, "w")) == Security(("*",), True, True)
    assert parse({"security": {"url_allowlist": []}}, "w")["security"]["url_allowlist"] == ["*"]
    assert security(parse({"security": {"url_allowlist": ["localhost", "127.0.0.1"], "block_private_ips": False,
                                        "require_https": False}}, "w")) == LOCAL
    with pytest.raises(ConfigError, match=r"w\.security\.allow: unknown key"):
        parse({"security": {"allow": []}}, "w")
    with pytest.raises(ConfigError, match=r"w\.timeout: unknown key"):
        parse({"timeout": 3}, "w")
    with pytest.raises(ConfigError, match="unclosed"):
        parse({"security": {"url_allowlist": ["[invalid"]}}, "w")
