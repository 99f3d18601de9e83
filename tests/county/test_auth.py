"""Logins, bearer tokens, and which routes need them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from relay.county.app import create_app
from relay.county.db.models import ApiToken
from relay.dicom.vocab import Role
from tests.factories import make_site, make_user


def login(client: TestClient, username: str, password: str):
    return client.post("/api/auth/token", data={"username": username, "password": password})


def test_password_login_gives_a_bearer_token_for_the_api(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        r = login(client, "reader1", password)
        assert r.status_code == 200 and r.json()["token_type"] == "bearer"
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert client.get("/api/worklist", headers=auth).status_code == 200
        assert client.get("/api/auth/me", headers=auth).json()["role"] == "radiologist"


def test_wrong_password_and_unknown_user_get_the_same_401(county):
    make_user(county, "reader1", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        wrong, unknown = login(client, "reader1", "nope-nope-nope"), login(client, "ghost", "x" * 10)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_data_routes_need_a_token_and_healthz_does_not(county):
    with TestClient(create_app(county)) as client:
        assert client.get("/api/worklist").status_code == 401
        assert client.get("/api/worklist", headers={"Authorization": "Bearer usr_forged"}).status_code == 401
        assert client.get("/healthz").json()["status"] == "ok"


def test_an_expired_token_is_refused(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        token = login(client, "reader1", password).json()["access_token"]
        with county.sessions() as s:
            s.execute(update(ApiToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
            s.commit()
        assert client.get("/api/worklist", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_site_credential_is_not_a_user_login(county):
    _, site_token = make_site(county)
    with TestClient(create_app(county)) as client:
        assert client.get("/api/worklist", headers={"Authorization": f"Bearer {site_token}"}).status_code == 401


def test_five_wrong_passwords_lock_the_login_even_against_the_right_one(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        for _ in range(5):
            assert login(client, "reader1", "guess-guess-guess").status_code == 401
        locked = login(client, "reader1", password)
        assert locked.status_code == 401 and "locked" in locked.json()["detail"]
        with county.sessions() as s:
            from relay.county.db.models import User
            user = s.query(User).filter_by(username="reader1").one()
            user.locked_until = datetime.now(UTC) - timedelta(seconds=1)  # the lock ends
            s.commit()
        assert login(client, "reader1", password).status_code == 200


def test_a_successful_login_resets_the_count_of_wrong_passwords(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        for _ in range(4):
            login(client, "reader1", "guess-guess-guess")
        assert login(client, "reader1", password).status_code == 200
        for _ in range(4):
            login(client, "reader1", "guess-guess-guess")
        assert login(client, "reader1", password).status_code == 200
