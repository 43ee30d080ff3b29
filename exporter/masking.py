"""Masking personal data and secrets before anything reaches a log line."""

from __future__ import annotations


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@e***.com``. Keeps logs useful without the address."""
    local, sep, domain = email.partition("@")
    if not sep:
        return (email[:1] + "***") if email else ""
    host, dot, tld = domain.rpartition(".")
    masked_domain = f"{host[:1]}***.{tld}" if dot else f"{domain[:1]}***"
    return f"{local[:1]}***@{masked_domain}"


def mask_secret(value: str) -> str:
    """Never show any part of a secret; say only how long it is."""
    return f"<secret: {len(value)} chars>" if value else "<empty secret>"
