"""The login lockout holds under concurrent guesses (issue 10, point 13): however many
wrong passwords arrive at once, at most ``max_failures`` of them are tried (real PostgreSQL,
one session per thread)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from relay.county.auth import service
from relay.county.db.models import User
from relay.county.errors import Unauthorized
from relay.dicom.vocab import Role
from tests.factories import make_user

GUESSES = 16


def test_concurrent_wrong_passwords_never_get_past_the_cap(county):
    make_user(county, "reader1", Role.RADIOLOGIST)
    lockout = service.Lockout(max_failures=5, minutes=15)
    start = threading.Barrier(GUESSES)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        with county.sessions() as session:
            start.wait(timeout=60)
            try:
                service.authenticate(session=session, username="reader1", password=f"wrong-{i}", lockout=lockout)
                outcomes.append("in")
            except service.LoginLocked:
                outcomes.append("locked")
            except Unauthorized:
                outcomes.append("tried")  # the password was checked and was wrong

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(GUESSES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == GUESSES
    assert outcomes.count("tried") <= 5, outcomes
    assert outcomes.count("locked") >= GUESSES - 5
    with county.sessions() as session:
        user = session.execute(select(User).where(User.username == "reader1")).scalar_one()
        assert user.locked_until is not None
    with county.sessions() as session, pytest.raises(service.LoginLocked):
        service.authenticate(session=session, username="reader1", password="correct-horse-1", lockout=lockout)


def test_the_right_password_before_the_cap_resets_the_count(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    lockout = service.Lockout(max_failures=3, minutes=15)
    for _ in range(2):
        with county.sessions() as session, pytest.raises(Unauthorized):
            service.authenticate(session=session, username="reader1", password="nope-nope-nope", lockout=lockout)
    with county.sessions() as session:
        service.authenticate(session=session, username="reader1", password=password, lockout=lockout)
        session.commit()
    for _ in range(2):
        with county.sessions() as session, pytest.raises(Unauthorized) as caught:
            service.authenticate(session=session, username="reader1", password="nope-nope-nope", lockout=lockout)
        assert not isinstance(caught.value, service.LoginLocked)


def test_a_correct_password_as_the_last_allowed_attempt_logs_in(county):
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    lockout = service.Lockout(max_failures=3, minutes=15)
    for _ in range(2):
        with county.sessions() as session, pytest.raises(Unauthorized):
            service.authenticate(session=session, username="reader1", password="nope-nope-nope", lockout=lockout)
    with county.sessions() as session:
        assert service.authenticate(session=session, username="reader1", password=password,
                                    lockout=lockout).username == "reader1"
        session.commit()
    with county.sessions() as session:
        assert session.execute(select(User.locked_until).where(User.username == "reader1")).scalar_one() is None


def test_the_lockout_counts_on_sqlite_as_relay_up_runs_it(tmp_path):
    from relay.config import Settings
    from relay.county.context import County
    from relay.county.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    embedded = County(Settings(data_dir=tmp_path / "var", database_url=url, broker_url=None))
    try:
        password = make_user(embedded, "reader1", Role.RADIOLOGIST)
        lockout = service.Lockout(max_failures=2, minutes=15)
        for _ in range(2):
            with embedded.sessions() as session, pytest.raises(Unauthorized):
                service.authenticate(session=session, username="reader1", password="nope-nope-nope", lockout=lockout)
        with embedded.sessions() as session, pytest.raises(service.LoginLocked):
            service.authenticate(session=session, username="reader1", password=password, lockout=lockout)
    finally:
        embedded.close()
