"""KeyVaultSecretProvider through the real SecretClient, against the local HTTPS Key Vault stub."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from exporter.adapters.keyvault import (
    CONTENT_TYPE,
    DEFAULT_TAGS,
    OWNER_TAG,
    READ_ROLE,
    WRITE_ROLE,
    KeyVaultSecretProvider,
    secret_name,
)
from exporter.errors import ConfigError, SecretError
from exporter.management.secrets import SecretProvider
from exporter.settings import FunctionSettings
from tests.keyvault_stub import (
    KEYVAULT_SCOPE,
    FakeCredential,
    KeyVaultStub,
    keyvault_stub,  # noqa: F401  (pytest fixture)
    make_secret_client,
)

CANARY = "canary-3f9c1d7e-ac-key-must-never-be-seen"
TTL = 60.0
OWNER = "prod"
"""The connection the secrets written in these tests belong to."""


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def stub(keyvault_stub: tuple[str, Path, KeyVaultStub]) -> KeyVaultStub:  # noqa: F811
    return keyvault_stub[2]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(stub: KeyVaultStub, clock: FakeClock) -> KeyVaultSecretProvider:
    return KeyVaultSecretProvider(stub.secret_client(), ttl_seconds=TTL, clock=clock)


def test_is_a_secret_provider(provider: KeyVaultSecretProvider) -> None:
    assert isinstance(provider, SecretProvider)


# --- reading, writing, caching ------------------------------------------------------------------


def test_set_then_get_round_trips_through_the_vault(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub, clock: FakeClock
) -> None:
    provider.set("keyvault:ac-prod", "key-1", owner=OWNER)

    assert stub.value("ac-prod") == "key-1"
    assert stub.content_type("ac-prod") == CONTENT_TYPE
    assert stub.tags("ac-prod") == {**DEFAULT_TAGS, OWNER_TAG: OWNER}
    before = stub.hits("GET", "ac-prod")  # set() looked for an existing secret first
    fresh = KeyVaultSecretProvider(stub.secret_client(), clock=clock)
    assert fresh.get("keyvault:ac-prod") == "key-1"
    assert stub.hits("GET", "ac-prod") == before + 1


def test_the_sdk_met_the_challenge_and_asked_for_the_vault_scope(stub: KeyVaultStub) -> None:
    credential = FakeCredential()
    provider = KeyVaultSecretProvider(stub.secret_client(credential=credential))
    stub.seed("ac-prod", "key-1")

    assert provider.get("ac-prod") == "key-1"

    assert [(r.method, r.authorized, r.status) for r in stub.requests] == [
        ("GET", False, 401),
        ("GET", True, 200),
    ]
    assert credential.scopes == [KEYVAULT_SCOPE]


def test_get_is_cached_within_the_ttl_and_reread_after_it(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub, clock: FakeClock
) -> None:
    stub.seed("ac-prod", "key-1")

    assert [provider.get("keyvault:ac-prod") for _ in range(3)] == ["key-1"] * 3
    clock.advance(TTL - 0.5)
    assert provider.get("keyvault:ac-prod") == "key-1"
    assert stub.hits("GET", "ac-prod") == 1

    stub.seed("ac-prod", "key-2")
    clock.advance(1.0)
    assert provider.get("keyvault:ac-prod") == "key-2"
    assert stub.hits("GET", "ac-prod") == 2


def test_invalidate_makes_the_next_get_reread_the_vault(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    """CachedReRead: the engine invalidates after ActiveCampaign's 403 (the key was rotated)."""
    stub.seed("ac-prod", "old-key")
    assert provider.get("ac-prod") == "old-key"
    stub.seed("ac-prod", "rotated-key")
    assert provider.get("ac-prod") == "old-key"  # still cached: nobody said it changed

    provider.invalidate("keyvault:ac-prod")

    assert provider.get("ac-prod") == "rotated-key"
    assert stub.hits("GET", "ac-prod") == 2


def test_set_writes_a_new_version_and_the_cache_shows_it(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    provider.set("ac-prod", "key-1", owner=OWNER)
    assert provider.get("ac-prod") == "key-1"
    provider.set("ac-prod", "key-2", owner=OWNER)

    assert len(set(stub.versions("ac-prod"))) == 2
    assert provider.get("ac-prod") == "key-2"
    # Only each set()'s ownership check read the vault: both values came from the cache.
    assert stub.hits("GET", "ac-prod") == 2


def test_names_are_case_insensitive_and_share_one_cache_entry(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    stub.seed("AC-Prod", "key-1")

    assert provider.get("keyvault:AC-Prod") == "key-1"
    assert provider.get("ac-prod") == "key-1"
    assert stub.hits("GET") == 1


def test_ttl_zero_disables_the_cache(stub: KeyVaultStub, clock: FakeClock) -> None:
    provider = KeyVaultSecretProvider(stub.secret_client(), ttl_seconds=0, clock=clock)
    stub.seed("ac-prod", "key-1")

    provider.get("ac-prod")
    provider.get("ac-prod")

    assert stub.hits("GET", "ac-prod") == 2


def test_negative_ttl_is_a_config_error(stub: KeyVaultStub) -> None:
    with pytest.raises(ConfigError, match="TTL"):
        KeyVaultSecretProvider(stub.secret_client(), ttl_seconds=-1)


def test_concurrent_gets_agree_and_then_share_the_cache(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    stub.seed("ac-prod", "key-1")
    results: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            results.append(provider.get("ac-prod"))
        except SecretError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first_round = stub.hits("GET", "ac-prod")
    for _ in range(8):
        read()

    assert errors == []
    assert results == ["key-1"] * 16
    assert 1 <= first_round <= 8
    assert stub.hits("GET", "ac-prod") == first_round


# --- errors -------------------------------------------------------------------------------------


def test_a_missing_secret_is_a_secret_error_naming_it(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    with pytest.raises(SecretError) as caught:
        provider.get("keyvault:ac-missing")

    message = str(caught.value)
    assert "secret 'ac-missing' not found in vault" in message
    assert stub.url in message


@pytest.mark.parametrize(
    ("operation", "role"),
    [
        (lambda p: p.get("ac-prod"), READ_ROLE),
        (lambda p: p.set("ac-prod", CANARY, owner=OWNER), WRITE_ROLE),
        (lambda p: p.delete("ac-prod", owner=OWNER), WRITE_ROLE),
    ],
    ids=["get", "set", "delete"],
)
def test_403_is_a_secret_error_naming_the_missing_role(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub, operation: Any, role: str
) -> None:
    stub.seed("ac-prod", CANARY)
    stub.forbidden = True

    with pytest.raises(SecretError) as caught:
        operation(provider)

    message = str(caught.value)
    assert f"'{role}' role" in message
    assert "ac-prod" in message
    assert "[Forbidden: Caller is not authorized" in message  # Key Vault's own words, kept
    assert CANARY not in message


def test_a_credential_failure_points_at_the_managed_identity(stub: KeyVaultStub) -> None:
    class NoIdentity:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise ClientAuthenticationError("ManagedIdentityCredential: no identity assigned")

    provider = KeyVaultSecretProvider(stub.secret_client(credential=NoIdentity()))
    stub.seed("ac-prod", "key-1")

    with pytest.raises(SecretError, match=r"managed identity \(AZURE_CLIENT_ID\)") as caught:
        provider.get("ac-prod")
    assert "no identity assigned" in str(caught.value)


def test_an_unreachable_vault_is_a_secret_error(tmp_path: Path, stub: KeyVaultStub) -> None:
    client = make_secret_client("https://127.0.0.1:1", stub.cert_path)
    provider = KeyVaultSecretProvider(client)
    try:
        with pytest.raises(
            SecretError, match=re.escape("could not reach Key Vault https://127.0.0.1:1")
        ):
            provider.get("ac-prod")
    finally:
        client.close()


def test_errors_do_not_chain_the_sdk_exception(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    """The SDK exception of a failed write holds the request, whose body is the key."""
    stub.forbidden = True
    with pytest.raises(SecretError) as caught:
        provider.set("ac-prod", CANARY, owner=OWNER)

    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


# --- delete -------------------------------------------------------------------------------------


def test_delete_removes_the_secret_and_the_cache_entry(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    stub.seed("ac-prod", "key-1", tags={OWNER_TAG: OWNER})
    assert provider.get("ac-prod") == "key-1"

    provider.delete("keyvault:ac-prod", owner=OWNER)

    assert stub.value("ac-prod") is None
    assert stub.hits("DELETE", "ac-prod") == 1
    with pytest.raises(SecretError, match="not found"):
        provider.get("ac-prod")


def test_delete_of_an_absent_secret_is_not_an_error(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    provider.delete("ac-never-existed", owner=OWNER)

    assert stub.hits("GET", "ac-never-existed") == 1  # the ownership check found nothing
    assert stub.hits("DELETE", "ac-never-existed") == 0


def test_reusing_a_soft_deleted_name_says_what_to_do(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    provider.set("ac-prod", "key-1", owner=OWNER)
    provider.delete("ac-prod", owner=OWNER)

    with pytest.raises(SecretError, match=r"deleted but recoverable.*recover or purge"):
        provider.set("ac-prod", "key-2", owner=OWNER)


def test_without_soft_delete_a_deleted_name_can_be_reused(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    stub.soft_delete = False
    provider.set("ac-prod", "key-1", owner=OWNER)
    provider.delete("ac-prod", owner=OWNER)
    provider.set("ac-prod", "key-2", owner=OWNER)

    assert stub.value("ac-prod") == "key-2"


# --- references ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["keyvault:a", "A-1", "keyvault:" + "x" * 127, "ac-prod-2"])
def test_valid_references(ref: str) -> None:
    assert secret_name(ref) == ref.removeprefix("keyvault:")


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "keyvault:",
        "keyvault:ac_prod",
        "ac prod",
        "x" * 128,
        "keyvault:ac/prod",
        "keyvault:clé",
        "env:AC_KEY",
        "file:/etc/ac-key",
        "keyvault:keyvault:ac",
    ],
)
def test_invalid_references_are_config_errors(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub, ref: str
) -> None:
    for operation in (provider.get, provider.invalidate):
        with pytest.raises(ConfigError):
            operation(ref)
    with pytest.raises(ConfigError):
        provider.delete(ref, owner=OWNER)
    with pytest.raises(ConfigError):
        provider.set(ref, "key-1", owner=OWNER)
    assert stub.requests == []


@pytest.mark.parametrize("ref", ["a3f" * 24, "keyvault:" + "0123456789abcdef" * 4])
def test_a_pasted_api_key_is_refused_without_echoing_it(ref: str) -> None:
    with pytest.raises(ConfigError, match="looks like an API key") as caught:
        secret_name(ref)

    assert ref.removeprefix("keyvault:") not in str(caught.value)


# --- the canary ---------------------------------------------------------------------------------


def _texts(exc: BaseException) -> list[str]:
    """Every text an exception shows: str, repr, formatted traceback, down the whole chain."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def test_the_canary_value_never_reaches_an_exception_or_a_log_record(
    stub: KeyVaultStub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # root: our loggers and azure.* alike
    provider = KeyVaultSecretProvider(stub.secret_client(), clock=clock)
    errors: list[SecretError] = []

    def expect_error(operation: Any) -> None:
        with pytest.raises(SecretError) as caught:
            operation()
        errors.append(caught.value)

    provider.set("ac-canary", CANARY, owner=OWNER)
    assert KeyVaultSecretProvider(stub.secret_client()).get("ac-canary") == CANARY
    stub.forbidden = True
    provider.invalidate("ac-canary")
    expect_error(lambda: provider.get("ac-canary"))
    expect_error(lambda: provider.set("ac-canary", CANARY, owner=OWNER))
    stub.forbidden = False
    provider.delete("ac-canary", owner=OWNER)
    # 409: deleted but recoverable
    expect_error(lambda: provider.set("ac-canary", CANARY, owner=OWNER))
    expect_error(lambda: provider.get("ac-canary"))  # 404

    for error in errors:
        for text in _texts(error):
            assert CANARY not in text
    azure_records = [r for r in caplog.records if r.name.startswith("azure")]
    assert azure_records, "the azure SDK's loggers were not captured: the check would be vacuous"
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in (record.exc_text or "")


def test_the_canary_check_catches_body_logging(
    stub: KeyVaultStub, caplog: pytest.LogCaptureFixture
) -> None:
    """Proof the check above can fail: the SDK's network trace (off in our clients) logs bodies."""
    caplog.set_level(logging.DEBUG)
    provider = KeyVaultSecretProvider(stub.secret_client(logging_enable=True))

    provider.set("ac-canary", CANARY, owner=OWNER)

    assert any(CANARY in record.getMessage() for record in caplog.records)


# --- the factory at the edge --------------------------------------------------------------------


def test_from_settings_builds_a_client_for_the_configured_vault() -> None:
    settings = FunctionSettings(
        blob_service_uri=None,
        storage_connection_string=None,
        keyvault_url="https://exporter-kv.vault.azure.net/",
        managed_identity_client_id="11111111-2222-3333-4444-555555555555",
    )

    provider = KeyVaultSecretProvider.from_settings(settings)

    assert provider.vault_url == "https://exporter-kv.vault.azure.net"


def test_from_settings_without_a_vault_url_is_a_config_error() -> None:
    settings = FunctionSettings(
        blob_service_uri=None,
        storage_connection_string=None,
        keyvault_url=None,
        managed_identity_client_id=None,
    )

    with pytest.raises(ConfigError, match="EXPORTER_KEYVAULT_URL"):
        KeyVaultSecretProvider.from_settings(settings)


# --- the stub itself (others build on it) -------------------------------------------------------


def test_stub_serves_the_sdk_delete_poller_versions_and_purge(stub: KeyVaultStub) -> None:
    client = stub.secret_client()
    first = client.set_secret("ac-prod", "key-1").properties.version
    client.set_secret("ac-prod", "key-2")
    assert client.get_secret("ac-prod", version=first).value == "key-1"

    stub.deleted_visible_after = 2
    poller = client.begin_delete_secret("ac-prod", _polling_interval=0)
    assert poller.result().recovery_id is not None
    poller.wait(timeout=30)
    assert poller.done()
    assert stub.hits("GET", "ac-prod") == 1 + 3  # one versioned read, three polls

    client.purge_deleted_secret("ac-prod")
    client.set_secret("ac-prod", "key-3")
    assert stub.value("ac-prod") == "key-3"


# --- ownership: the app changes only the secrets it created for a connection -------------------


def test_a_written_secret_is_tagged_with_its_connection(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    provider.set("ac-prod-0a1b2c3d", "key-1", owner="prod")
    assert (stub.tags("ac-prod-0a1b2c3d") or {})[OWNER_TAG] == "prod"
    provider.set("ac-prod-0a1b2c3d", "key-2", owner="prod")
    assert stub.value("ac-prod-0a1b2c3d") == "key-2"


def test_an_operator_secret_may_be_read_but_never_overwritten_or_deleted(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    stub.seed("operator-ac-key", "operator-value", tags={"owner": "ops"})
    assert provider.get("keyvault:operator-ac-key") == "operator-value"
    with pytest.raises(SecretError, match="did not create it"):
        provider.set("keyvault:operator-ac-key", "attacker-value", owner="prod")
    with pytest.raises(SecretError, match="did not create it"):
        provider.delete("keyvault:operator-ac-key", owner="prod")
    assert stub.value("operator-ac-key") == "operator-value"
    assert stub.versions("operator-ac-key") and len(stub.versions("operator-ac-key")) == 1
    assert stub.hits("DELETE") == 0 and stub.hits("PUT") == 0


def test_another_connections_secret_is_not_overwritten_or_deleted(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    provider.set("ac-shop-0a1b2c3d", "shop-key", owner="shop")
    with pytest.raises(SecretError, match="connection 'prod'"):
        provider.set("ac-shop-0a1b2c3d", "other-key", owner="prod")
    with pytest.raises(SecretError):
        provider.delete("ac-shop-0a1b2c3d", owner="prod")
    assert stub.value("ac-shop-0a1b2c3d") == "shop-key"
    provider.delete("ac-shop-0a1b2c3d", owner="shop")
    assert stub.value("ac-shop-0a1b2c3d") is None


def test_a_secret_written_before_owner_tags_is_still_its_connections(
    provider: KeyVaultSecretProvider, stub: KeyVaultStub
) -> None:
    """Secrets from earlier versions carry only managed-by under a name made for the
    connection: those stay the connection's; managed-by under any other name does not."""
    legacy = {"managed-by": "activecampaign-segment-exporter"}
    stub.seed("ac-prod-0a1b2c3d", "old", tags=legacy)
    provider.set("ac-prod-0a1b2c3d", "new", owner="prod")
    assert stub.value("ac-prod-0a1b2c3d") == "new"
    stub.seed("shared-key", "shared", tags=legacy)
    with pytest.raises(SecretError):
        provider.set("shared-key", "new", owner="prod")
    assert stub.value("shared-key") == "shared"
