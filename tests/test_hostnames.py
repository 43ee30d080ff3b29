"""Where a connection's key may be sent: ActiveCampaign hosts, the allowlist, the sandbox."""

from __future__ import annotations

import pytest

from exporter.errors import ConfigError
from exporter.management.hostnames import (
    base_url,
    check_hostname,
    is_loopback_hostname,
    normalise_hostname,
)
from exporter.settings import HostPolicy

STRICT = HostPolicy()
SANDBOX = HostPolicy(allow_loopback_sandbox=True)


@pytest.mark.parametrize(
    "raw",
    [
        "acct.api-us1.com",
        "  ACCT.Api-US1.com  ",
        "acct.api-us1.com.",
        "https://acct.api-us1.com",
        "https://acct.api-us1.com/",
        "https://acct.api-us1.com/api/3/",
        "HTTPS://ACCT.API-US1.COM/api/3",
    ],
)
def test_pasted_forms_normalise_to_the_hostname(raw: str) -> None:
    host, _notes = normalise_hostname(raw, STRICT)
    assert host == "acct.api-us1.com"


def test_notes_say_what_was_stripped() -> None:
    host, notes = normalise_hostname("https://acct.api-us1.com/api/3/", STRICT)
    assert host == "acct.api-us1.com"
    assert any("https://" in n for n in notes)
    assert any("path" in n for n in notes)
    assert normalise_hostname("acct.api-us1.com", STRICT)[1] == []


def test_plain_http_is_accepted_but_https_is_always_used() -> None:
    host, notes = normalise_hostname("http://acct.api-us1.com", STRICT)
    assert host == "acct.api-us1.com"
    assert any("HTTPS" in n for n in notes)
    assert base_url(host) == "https://acct.api-us1.com"


def test_activehosted_accounts_are_accepted() -> None:
    assert normalise_hostname("shop.activehosted.com", STRICT)[0] == "shop.activehosted.com"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "acct api-us1.com",
        "user@acct.api-us1.com",
        "https://user:pw@acct.api-us1.com/",
        "acct.api-us1.com?x=1",
        "acct.api-us1.com#frag",
        "acct.api-us1.com:8443",
        "https://acct.api-us1.com:443/",
        "ftp://acct.api-us1.com",
        "api-us1.com",  # the apex is not an account host
        "evil.com",
        "acct.api-us1.com.evil.com",
        "evilapi-us1.com",
        "8.8.8.8",
        "10.0.0.5",
        "169.254.169.254",
        "[fd00::1]",
        "https://[2001:db8::1]/",
        "127.1",
        "0x7f.1",
        "acct.api-us1.cøm",
        "-bad.api-us1.com",
        "acct..api-us1.com",
    ],
)
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalise_hostname(raw, STRICT)
    assert info.value.field == "hostname"


def test_refusals_never_repeat_the_input() -> None:
    key = "a" * 72  # someone pasted the key into the hostname box
    with pytest.raises(ConfigError) as info:
        normalise_hostname(key, STRICT)
    assert key not in str(info.value)


def test_operator_allowlist_with_wildcards() -> None:
    policy = HostPolicy(allowlist=("*.eu.example-ac.com", "api.partner.net"))
    assert normalise_hostname("acct.eu.example-ac.com", policy)[0] == "acct.eu.example-ac.com"
    assert normalise_hostname("api.partner.net", policy)[0] == "api.partner.net"
    for refused in ("eu.example-ac.com", "x.api.partner.net", "partner.net"):
        with pytest.raises(ConfigError):
            normalise_hostname(refused, policy)


@pytest.mark.parametrize("raw", ["127.0.0.1:8765", "localhost:8765", "http://127.0.0.1:8765/"])
def test_loopback_is_refused_unless_the_sandbox_is_allowed(raw: str) -> None:
    with pytest.raises(ConfigError, match="sandbox"):
        normalise_hostname(raw, STRICT)
    host, notes = normalise_hostname(raw, SANDBOX)
    assert host.endswith(":8765")
    assert any("plain HTTP" in n for n in notes)
    assert base_url(host) == f"http://{host}"
    assert is_loopback_hostname(host)


def test_loopback_needs_a_port_and_other_ips_stay_refused_with_the_sandbox_on() -> None:
    with pytest.raises(ConfigError, match="port"):
        normalise_hostname("127.0.0.1", SANDBOX)
    with pytest.raises(ConfigError, match="IP"):
        normalise_hostname("192.168.1.10", SANDBOX)


def test_check_hostname_rejects_a_stored_host_the_policy_no_longer_allows() -> None:
    assert check_hostname("acct.api-us1.com", STRICT) == "acct.api-us1.com"
    assert check_hostname("127.0.0.1:9", SANDBOX) == "127.0.0.1:9"
    with pytest.raises(ConfigError):
        check_hostname("127.0.0.1:9", STRICT)
    with pytest.raises(ConfigError, match="normalised"):
        check_hostname("https://acct.api-us1.com", STRICT)


@pytest.mark.parametrize(
    "raw",
    [
        "acct.api-us1.com@evil.com",
        "https://acct.api-us1.com@evil.com/",
        "acct.api-us1.com\\@evil.com",
        "acct.api-us1.com%2f@evil.com",
        "acct.api-us1.com/.evil.com",
        "evil.com/acct.api-us1.com",
        "evil.com#acct.api-us1.com",
        "acct.api-us1.com\u3002evil.com",
        "acct.api-us1\u3002com",
        "acct.api-us1.com\x00.evil.com",
        "acct.api-us1.com .evil.com",
        "http://2130706433/",
        "[::ffff:127.0.0.1]",
    ],
)
def test_hostname_bypass_attempts_stay_refused(raw: str) -> None:
    """Regression (issue 15, "what held"): userinfo, encoded separators, look-alike dots and
    numeric hosts never turn into a host outside ActiveCampaign's."""
    try:
        host, _notes = normalise_hostname(raw, STRICT)
    except ConfigError as exc:
        assert exc.field == "hostname"
        return
    assert host.endswith((".api-us1.com", ".activehosted.com")), host
    assert "evil" not in host
