"""Authentication and routing: 403 before anything else, 404 for unknown routes."""

from __future__ import annotations

import requests

from tests.sandbox.conftest import Client, Env, Make


def test_missing_or_wrong_key_is_403_forbidden(make: Make) -> None:
    sandbox, client, _ = make(limits=True)
    url = f"{sandbox.base_url}/api/3/users/me"
    missing = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"Api-Token": "not-the-key"}, timeout=10)
    assert (missing.status_code, missing.json()) == (403, {"message": "Forbidden"})
    assert (wrong.status_code, wrong.json()) == (403, {"message": "Forbidden"})
    assert client.get("/users/me").status_code == 200


def test_rejected_keys_are_not_counted_nor_charged(make: Make) -> None:
    sandbox, client, _ = make(limits=True)
    stranger = Client(sandbox, key="wrong")
    for _ in range(10):
        assert stranger.get("/users/me").status_code == 403
    assert sandbox.request_counts() == {}
    # The budget of 5 is still whole for the account's own key.
    assert [client.get("/users/me").status_code for _ in range(5)] == [200] * 5


def test_unknown_routes_are_404(sb: Env) -> None:
    sandbox, client, _ = sb
    assert client.get("/no/such/thing").status_code == 404
    assert requests.get(f"{sandbox.base_url}/elsewhere", timeout=10).status_code == 404
    assert sandbox.request_counts() == {"GET (unknown)": 1}


def test_admin_routes_need_the_key(sb: Env) -> None:
    sandbox, client, _ = sb
    url = f"{sandbox.base_url}/_sandbox/stats"
    assert requests.get(url, timeout=10).status_code == 403
    ok = client.session.get(url, timeout=10)
    assert ok.status_code == 200 and ok.json()["contacts"] == 0
