"""What `relay up` sets up on one machine: the local edge's site, and demo logins.

Secrets made here are kept under the data folder (mode 0600) so that a second
`relay up` in the same folder reuses them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from relay.config import Settings
from relay.county.auth import service
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.errors import NotFound
from relay.dicom.vocab import Role

SAMPLE_DICOM = Path(__file__).resolve().parents[1] / "sample_dicom"

DEMO_USERS = [
    ("admin", Role.ADMIN, "管理员"),
    ("reader", Role.RADIOLOGIST, "诊断医师"),
    ("tech", Role.TECHNICIAN, "技师"),
]


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def ensure_edge_site(county: County, settings: Settings) -> str:
    """The credential of the local edge's site, registering the site on first use."""
    path = settings.data_dir / "edge-site-token"
    with session_scope(county.sessions) as session:
        try:
            site = service.get_site(session=session, name=settings.edge_site)
            if path.exists() and service.site_for_token(session=session, token=path.read_text()).id == site.id:
                return path.read_text()
            raise RuntimeError(
                f"site {settings.edge_site!r} exists but {path} does not hold its credential; "
                "set RELAY_EDGE_SITE_TOKEN")
        except NotFound:
            _, token = service.create_site(session=session, name=settings.edge_site,
                                           display_name="示范乡镇卫生院")
            session.commit()
    _write_secret(path, token)
    return token


def ensure_demo_users(county: County, settings: Settings) -> list[tuple[str, str, Role]]:
    """Demo logins (admin, reader, tech) with random passwords kept in demo-logins.json."""
    path = settings.data_dir / "demo-logins.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return [(u["username"], u["password"], Role(u["role"])) for u in saved]
    logins = []
    with session_scope(county.sessions) as session:
        for username, role, display in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            site = settings.edge_site if role is Role.TECHNICIAN else None
            service.create_user(session=session, username=username, password=password, role=role,
                                site_name=site, display_name=display)
            logins.append((username, password, role))
        session.commit()
    _write_secret(path, json.dumps([{"username": u, "password": p, "role": r.value}
                                    for u, p, r in logins], ensure_ascii=False))
    return logins
