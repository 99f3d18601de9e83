"""The technicians of a township, for its edge's login cache.

A township's edge lets its technicians log in to the local page with their county
accounts, also while the WAN is down; so the edge keeps a copy of their Argon2id hashes,
fetched with its site credential. Only the site's own technicians are sent, and a
disabled one is sent without a hash (``active`` false) so the edge forgets the password.
The list has a digest (its ETag): an edge that already holds it gets 304, and only a
list that actually left the county is audited.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.db.models import Site, User
from relay.dicom.vocab import Role


@dataclass(frozen=True, slots=True)
class Technician:
    """One login of the site, as the edge caches it."""

    username: str
    display_name: str
    password_hash: str
    """Argon2id (PHC string); empty when ``active`` is false."""
    active: bool


def for_site(*, session: Session, site: Site) -> list[Technician]:
    """Every technician bound to ``site``, by username."""
    users = session.execute(select(User).where(User.role == Role.TECHNICIAN.value, User.site_id == site.id)
                            .order_by(User.username)).scalars()
    return [Technician(username=u.username, display_name=u.display_name or u.username,
                       password_hash=u.password_hash if u.disabled_at is None else "",
                       active=u.disabled_at is None) for u in users]


def digest(technicians: list[Technician]) -> str:
    """A strong ETag of the list: it changes with any name, hash or state."""
    canonical = json.dumps([asdict(t) for t in technicians], ensure_ascii=False, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest() + '"'


def is_site_technician(*, session: Session, site: Site, username: str) -> bool:
    """Whether ``username`` is a technician of ``site`` (disabled ones too: an acknowledgement
    made before the account was disabled still counts)."""
    found = session.execute(select(User.id).where(User.username == username, User.role == Role.TECHNICIAN.value,
                                                  User.site_id == site.id)).scalar_one_or_none()
    return found is not None
