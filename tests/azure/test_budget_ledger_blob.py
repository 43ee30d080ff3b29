"""The account's budget ledger in blob storage (Azurite), as the Functions app keeps it: the
service's ETag conditions refuse a stale write, the loser reads again, and workers in threads
stay within every window together; a server's wait told to one holds back the others."""

from __future__ import annotations

import pytest

from tests.azure.support import fresh_blob_store
from tests.test_budget_ledger import (
    check_a_lost_write_reserves_again,
    check_a_wait_told_to_one_worker_holds_back_another,
    check_threads_share_one_budget,
)

pytestmark = pytest.mark.azurite


def test_a_write_that_lost_to_another_worker_reserves_again_in_blob_storage(azurite: str) -> None:
    with fresh_blob_store(azurite) as store:
        check_a_lost_write_reserves_again(store)


def test_threads_share_one_budget_through_a_blob(azurite: str) -> None:
    with fresh_blob_store(azurite) as store:
        check_threads_share_one_budget(store, workers=3, n=15)


def test_a_wait_told_to_one_worker_holds_back_another_through_a_blob(azurite: str) -> None:
    with fresh_blob_store(azurite) as store:
        check_a_wait_told_to_one_worker_holds_back_another(store)
