"""GET and POST /api/edges/orders: a township edge's copy of its orders, and the orders its
registration page (登记) made (site credential; wire form in relay.dicom.orders).

GET answers the site's orders of the sync window with a strong ETag (the digest of the
list), 304 on If-None-Match, gzip when the edge accepts it. POST takes one registered
order: it must be the calling site's (``site`` and ``placer_issuer = site:<name>``, else
403), come from the registration page (``source``), and name the technician who
registered it in ``extra.registered_by`` (a technician of the site, else 422); the audit
entry is under that technician. A POST of an order the county holds is a retry: the
answer is the county's order, unchanged; the same numbers with another Study Instance UID
is another exam under a reused number (409), never merged into the first.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Header, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.county.audit.service import Action, Entry, append
from relay.county.auth.deps import CountyDep, SessionDep, SiteDep
from relay.county.db.models import Order as OrderRow
from relay.county.db.models import Site
from relay.county.edges.technicians import is_site_technician
from relay.county.errors import REQUEST_ID_HEADER, Conflict, Forbidden, Unprocessable, problem, request_id
from relay.county.orders.service import OrderError, UpsertOutcome, orders_for_site, row_to_order, upsert_order
from relay.dicom.orders import ORDERS_PATH, Order, OrderSource, OrderStatus
from relay.dicom.vocab import Role

log = logging.getLogger(__name__)
router = APIRouter(tags=["edges"])

GZIP_MIN_BYTES = 1024
"""Answers smaller than this go uncompressed (gzip would barely help)."""
REGISTERED_BY = "registered_by"
"""``extra`` key of a registered order: the username of the technician who registered it."""


class OrderProblem(Unprocessable):
    """A 422 naming the order field that is wrong."""

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(f"{field}: {detail}" if field and not detail.startswith(field) else detail)
        self.field = field


def digest(wire: list[dict[str, Any]]) -> str:
    canonical = json.dumps(wire, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest() + '"'


@router.get(ORDERS_PATH, responses={304: {"description": "The edge already holds this list (If-None-Match)."}})
def site_orders(site: SiteDep, session: SessionDep,
                if_none_match: Annotated[str | None, Header()] = None,
                accept_encoding: Annotated[str | None, Header()] = None) -> Response:
    """This site's orders of the sync window (cancelled and completed ones included, so the
    edge drops them from its worklist), with their ETag."""
    wire = [o.to_wire() for o in orders_for_site(session, site)]
    etag = digest(wire)
    headers = {"ETag": etag, "Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    body = json.dumps({"orders": wire, "etag": etag}, ensure_ascii=False).encode()
    if len(body) >= GZIP_MIN_BYTES and "gzip" in (accept_encoding or "").lower():
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    log.info("orders site=%s sent n=%d bytes=%d", site.name, len(wire), len(body))
    return Response(body, media_type="application/json", headers=headers)


def _parse(data: object, site: Site) -> Order:
    if not isinstance(data, dict):
        raise OrderProblem("the body is not an order object", field="")
    try:
        order = Order.from_wire(data)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        raise OrderProblem(message, field=message.split(" ", 1)[0] if " is " in message else "") from exc
    if order.site != site.name or order.placer_issuer != f"site:{site.name}":
        raise Forbidden(f"an edge registers orders for its own site only (site {site.name!r}, "
                        f"placer_issuer 'site:{site.name}')")
    if order.source != OrderSource.REGISTRATION.value:
        raise OrderProblem("an edge's order must come from its registration page", field="source")
    return order


def _registered_by(session: Session, site: Site, order: Order) -> str:
    by = order.extra.get(REGISTERED_BY)
    if not isinstance(by, str) or not is_site_technician(session=session, site=site, username=by):
        raise OrderProblem(f"extra.{REGISTERED_BY} must name a technician of this site", field=f"extra.{REGISTERED_BY}")
    return by


def _held(session: Session, order: Order) -> OrderRow | None:
    return session.execute(select(OrderRow).where(OrderRow.placer_order_number == order.placer_order_number,
                                                  OrderRow.placer_issuer == order.placer_issuer)).scalar_one_or_none()


def _store(session: Session, order: Order, zone: ZoneInfo) -> tuple[UpsertOutcome, OrderRow]:
    """Upsert, or return what is held when it is a retry of a registration the county has
    moved on from (completed or cancelled there: a retry must not put it back)."""
    held = _held(session, order)
    if held is not None:
        if held.study_instance_uid and held.study_instance_uid != order.study_instance_uid:
            raise Conflict(f"order {order.placer_order_number!r} exists with another Study Instance UID: "
                           "the number was reused for another exam")
        if held.status != OrderStatus.SCHEDULED.value:
            return UpsertOutcome.UNCHANGED, held
    try:
        result = upsert_order(session, order, zone=zone)
    except OrderError as exc:
        raise OrderProblem(str(exc), field=exc.field) from exc
    return result.outcome, result.row


@router.post(ORDERS_PATH)
def register_order(data: Annotated[dict[str, Any], Body()], request: Request, site: SiteDep, session: SessionDep,
                   county: CountyDep) -> Response:
    """One order made at the township's registration page (idempotent on placer number +
    issuer): {"outcome": created|unchanged|updated, "order": <the county's order>}. A bad
    order is a 422 problem whose ``field`` names the order field."""
    try:
        order = _parse(data, site)
        by = _registered_by(session, site, order)
        try:
            outcome, row = _store(session, order, ZoneInfo(county.settings.timezone))
            session.commit()
        except IntegrityError:  # the same order arrived twice at once: the other one stored it
            session.rollback()
            outcome, row = _store(session, order, ZoneInfo(county.settings.timezone))
            session.commit()
    except OrderProblem as exc:
        session.rollback()
        rid = request_id(request)
        log.info("registered order refused site=%s field=%s [%s]", site.name, exc.field, rid)
        return problem(exc.status, exc.title, exc.detail, {REQUEST_ID_HEADER: rid}, instance=request.url.path,
                       request_id=rid, field=exc.field)
    if outcome in (UpsertOutcome.CREATED, UpsertOutcome.UPDATED):
        action = Action.ORDER_CREATE if outcome is UpsertOutcome.CREATED else Action.ORDER_UPDATE
        append(county.sessions, Entry(actor=by, role=Role.TECHNICIAN.value, action=action, object_type="order",
                                      object_id=f"{order.placer_issuer}|{order.placer_order_number}",
                                      source=f"site:{site.name}",
                                      detail=f"accession={order.accession_number} revision={row.revision} "
                                             f"source=registration"))
    log.info("registered order site=%s accession=%s outcome=%s", site.name, order.accession_number, outcome.value)
    body = {"outcome": outcome.value, "order": row_to_order(row, site.name).to_wire()}
    return Response(json.dumps(body, ensure_ascii=False), media_type="application/json")
