"""The edge's second DICOM listener: one pynetdicom AE for every service that is not storage.

C-STORE stays on the edge's own association loop (relay.edge.acceptor: durability before
the response, bounded PDUs); it is not grown into a general DIMSE stack. Queries and
notifications (Modality Worklist C-FIND, Storage Commitment N-ACTION, ...) go to this AE on
``edge_services_port`` (0 = off) with AE title ``edge_services_ae_title`` (default the
edge's), the same calling-AE/address allow-list (``edge_allowed_aes``,
relay.edge.admission), association limit and timeouts.

A service is anything with two methods (:class:`DimseService`)::

    class MyService:
        def contexts(self) -> list[PresentationContext]: ...   # what the AE accepts (roles too)
        def handlers(self) -> list[EventHandler]: ...          # (evt.EVT_X, fn) or (evt.EVT_X, fn, [args])

``start_services(settings, [WorklistService(...), MyService(...)])`` builds the AE from the
list and starts it; the agent does this once. An intervention event (EVT_C_FIND,
EVT_N_ACTION, ...) may be bound by one service only (ValueError otherwise). Handlers
follow pynetdicom's rules (return or yield DIMSE statuses, never raise) and log
identifiers, never patient data; pynetdicom's own logging of request and response
identifiers is switched off here for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext, VerificationPresentationContexts
from pynetdicom.transport import ThreadedAssociationServer

from relay.config import EdgeSettings
from relay.edge.admission import AllowList

log = logging.getLogger(__name__)

EventHandler = tuple[evt.EventType, Callable[..., Any]] | tuple[evt.EventType, Callable[..., Any], list[Any]]
"""A pynetdicom ``evt_handlers`` entry."""

REJECT_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03


class DimseService(Protocol):
    """One DICOM service on the edge's services AE."""

    def contexts(self) -> list[PresentationContext]:
        """The presentation contexts (abstract syntax + transfer syntaxes) the AE accepts for it."""
        ...

    def handlers(self) -> list[EventHandler]:
        """Its pynetdicom event handlers."""
        ...


def _check_events(handlers: Sequence[EventHandler]) -> None:
    seen: set[str] = set()
    for entry in handlers:
        event = entry[0]
        if isinstance(event, evt.InterventionEvent):
            if event.name in seen:
                raise ValueError(f"two services handle {event.name}: pynetdicom calls only one")
            seen.add(event.name)


def build_ae(*, ae_title: str, services: Sequence[DimseService], settings: EdgeSettings) -> AE:
    """The AE with every service's contexts (and Verification, for C-ECHO) as an SCP."""
    _config.LOG_REQUEST_IDENTIFIERS = False  # they hold patient names and IDs
    _config.LOG_RESPONSE_IDENTIFIERS = False
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = settings.edge_max_associations
    ae.acse_timeout = settings.edge_acse_timeout_s
    ae.dimse_timeout = settings.edge_dimse_timeout_s
    ae.network_timeout = settings.edge_network_timeout
    ae.maximum_pdu_size = min(settings.edge_max_pdu, 1024 * 1024)
    known = set()
    for context in [*VerificationPresentationContexts, *(c for s in services for c in s.contexts())]:
        syntax = context.abstract_syntax
        if syntax is None or syntax in known:
            raise ValueError(f"a service context without an abstract syntax, or accepted twice: {syntax}")
        known.add(syntax)
        # Role selection as the service's context says (Storage Commitment's N-EVENT-REPORT on
        # the same association needs the SCP role accepted for the modality).
        ae.add_supported_context(syntax, context.transfer_syntax, scu_role=context.scu_role,
                                 scp_role=context.scp_role)
    return ae


def _admission(allow: AllowList) -> EventHandler:
    """EVT_REQUESTED: refuse a calling AE (or address) the allow-list does not know, with
    A-ASSOCIATE-RJ "calling AE title not recognised", as the storage listener does."""

    def handle(event: evt.Event) -> None:
        request = event.assoc.requestor.primitive  # ae_title is set only later, in negotiation
        calling = str(request.calling_ae_title if request is not None else "").strip()
        address = str(event.assoc.requestor.address)
        reason = allow.refusal(calling_ae=calling, address=address)
        if reason is not None:
            log.warning("services association refused ae=%s peer=%s: %s", calling, address, reason)
            event.assoc.acse.send_reject(REJECT_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
            event.assoc.kill()  # as pynetdicom's own rejection: lets the DUL send the RJ before the socket closes

    return (evt.EVT_REQUESTED, handle)


class ServicesServer:
    """The running services AE; ``port`` is the bound port, ``stop()`` ends it."""

    def __init__(self, ae: AE, server: ThreadedAssociationServer) -> None:
        self.ae = ae
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()


def start_services(settings: EdgeSettings, services: Sequence[DimseService], *, host: str | None = None,
                   port: int | None = None) -> ServicesServer:
    """Start the services AE in background threads on ``host:port`` (default the settings'
    edge_host and edge_services_port; port 0 here picks a free one, for tests). The agent
    calls it only when edge_services_port is not 0."""
    allow = AllowList.parse(settings.edge_allowed_aes)
    handlers: list[EventHandler] = [_admission(allow), *(h for s in services for h in s.handlers())]
    _check_events(handlers)
    ae = build_ae(ae_title=settings.edge_services_ae_title or settings.edge_ae_title, services=services,
                  settings=settings)
    address = (host if host is not None else settings.edge_host,
               port if port is not None else settings.edge_services_port)
    server = ae.start_server(address, block=False, evt_handlers=handlers)
    assert server is not None  # non-blocking: the server is returned
    started = ServicesServer(ae, server)
    log.info("DICOM services ae=%s at %s:%d: %s", ae.ae_title, address[0], started.port,
             ", ".join(type(s).__name__ for s in services) or "verification only")
    return started
