"""Which hosts a connection's API key may be sent to.

A connection's hostname decides where the app sends its ActiveCampaign key, so it is checked
strictly: only ActiveCampaign's own API hosts (``*.api-us1.com``, ``*.activehosted.com``) and
the operator's allowlist are accepted. IP literals, ports and anything that is not a plain
hostname are refused, so nobody can point a connection at a host they control (or at an
address inside the app's network) and collect the key. The one exception is the loopback
sandbox, allowed only when :attr:`HostPolicy.allow_loopback_sandbox` is on; it is spoken to over
plain HTTP. Everything else always uses HTTPS.

Error messages never repeat the input: someone may have pasted their key into the wrong box.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from exporter.activecampaign.client import base_url_for_host
from exporter.errors import ConfigError
from exporter.settings import HostPolicy

FIELD = "hostname"
ACTIVECAMPAIGN_DOMAINS = ("api-us1.com", "activehosted.com")
"""Every subdomain of these is an ActiveCampaign API host."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _refuse(message: str) -> ConfigError:
    return ConfigError(message, field=FIELD)


def normalise_hostname(raw: str, policy: HostPolicy) -> tuple[str, list[str]]:
    """The REST endpoint hostname from what the user typed or pasted, and notes on changes.

    Accepts ``acct.api-us1.com`` and a pasted ``https://acct.api-us1.com/api/3/`` (the scheme and
    path are stripped, and a note says so). Returns ``host`` or, for the loopback sandbox,
    ``host:port``. Raises :class:`ConfigError` (field ``hostname``) for anything else.
    """
    text = raw.strip()
    notes: list[str] = []
    if not text:
        raise _refuse("is required: the REST endpoint hostname, e.g. youraccount.api-us1.com")
    if any(ch.isspace() for ch in text):
        raise _refuse("must not contain spaces")
    if not text.isascii():
        raise _refuse("must be an ASCII hostname")
    scheme = ""
    if "://" in text:
        scheme, _, _rest = text.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise _refuse("only a hostname (or an https:// address) is accepted")
    parts = urlsplit(text if scheme else "//" + text)
    if "@" in parts.netloc:
        raise _refuse("must not contain a user name or password (user@host)")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise _refuse("must not contain a query string or fragment (? or #)")
    try:
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        raise _refuse("has an invalid port") from None
    if not host:
        raise _refuse("is not a hostname")
    if scheme:
        notes.append(f"removed '{scheme}://': enter the hostname only")
    if parts.path not in ("", "/"):
        notes.append("removed the path after the hostname (such as /api/3): it is not needed")

    if _is_loopback(host):
        return _loopback(host, port, policy, notes)
    if port is not None:
        raise _refuse("must not include a port: ActiveCampaign is always reached on HTTPS (443)")
    _check_not_ip(host)
    _check_syntax(host)
    if not is_allowed_host(host, policy):
        raise _refuse(
            "is not an ActiveCampaign API host (*.api-us1.com or *.activehosted.com); "
            "copy it from ActiveCampaign Settings → Developer, or ask the operator to add it "
            "to EXPORTER_HOSTNAME_ALLOWLIST"
        )
    if scheme == "http":
        notes.append("the connection always uses HTTPS, never plain http://")
    return host, notes


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES


def _loopback(
    host: str, port: int | None, policy: HostPolicy, notes: list[str]
) -> tuple[str, list[str]]:
    if not policy.allow_loopback_sandbox:
        raise _refuse(
            "loopback addresses are only allowed for the local sandbox "
            "(EXPORTER_ALLOW_LOOPBACK_SANDBOX is off)"
        )
    if port is None:
        raise _refuse("the loopback sandbox needs its port, e.g. 127.0.0.1:8765")
    notes.append("loopback sandbox: spoken to over plain HTTP")
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}", notes


def _check_not_ip(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise _refuse("IP addresses are not accepted: use your account's API hostname")
    # Resolvers accept forms such as "127.1" or "0x7f.1" as IPv4; no real TLD is numeric.
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        raise _refuse("IP addresses are not accepted: use your account's API hostname")


def _check_syntax(host: str) -> None:
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise _refuse("is not a valid hostname")


def _matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def is_allowed_host(host: str, policy: HostPolicy) -> bool:
    """Whether a (normalised, non-loopback) hostname may receive a key."""
    builtin = tuple(f"*.{d}" for d in ACTIVECAMPAIGN_DOMAINS)
    return any(_matches(host, p) for p in builtin + tuple(policy.allowlist))


def is_loopback_hostname(hostname: str) -> bool:
    """Whether a stored hostname (``host`` or ``host:port``) names the loopback sandbox."""
    parts = urlsplit("//" + hostname)
    return _is_loopback(parts.hostname or "")


def base_url(hostname: str) -> str:
    """``https://host``, or ``http://127.0.0.1:PORT`` for the loopback sandbox: the client's
    own rule (one place decides when plain HTTP is allowed)."""
    return base_url_for_host(hostname)


def check_hostname(hostname: str, policy: HostPolicy) -> str:
    """Re-check a stored hostname before a key is sent to it (the store may have been edited,
    or the policy changed since it was saved). Returns it unchanged or raises ConfigError."""
    normalised, _notes = normalise_hostname(hostname, policy)
    if normalised != hostname:
        raise _refuse("is not in normalised form; save the connection again")
    return normalised
