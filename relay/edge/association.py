"""One DICOM association of the edge's storage acceptor: C-STORE and C-ECHO, from
A-ASSOCIATE-RQ to release or abort, in its own thread, with pynetdicom's
negotiation. The listening server is ``relay.edge.acceptor``; the bytes of PDUs and
command sets are ``relay.edge.pdu_codec``'s.

The loop reads PDUs straight off the socket, reassembles the PDVs, decodes the command
set, hands each C-STORE's Part 10 bytes (with the file meta pynetdicom's
``Event.encoded_dataset()`` writes, so SHA-256 identities match) to the store handler
and answers when it returns; anything malformed or unexpected is an A-ABORT. The allow
list, the association limit, the ACSE/network/DIMSE timeouts and the maximum PDU are
enforced here. Why the loop is the edge's own, and each step in detail:
docs/design/edge-association-loop.md.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC as A_ASSOCIATE_AC_PDU
from pynetdicom.pdu import A_ASSOCIATE_RJ as A_ASSOCIATE_RJ_PDU
from pynetdicom.pdu import A_ASSOCIATE_RQ as A_ASSOCIATE_RQ_PDU
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from relay.edge.pdu_codec import (
    ABORT_INVALID_PARAMETER,
    APPLICATION_CONTEXT,
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    DEFAULT_MAX_PDU,
    DEFAULT_PEER_MAX_PDU,
    MAX_ASSOCIATE_PDU,
    MAX_COMMAND_SET,
    NO_DATASET,
    PC_ACCEPTANCE,
    PRIORITY_MEDIUM,
    P_DATA_TF,
    RJ_PERMANENT,
    RJ_PROVIDER_LOCAL_LIMIT,
    RJ_SOURCE_PROVIDER_PRESENTATION,
    RJ_SOURCE_USER,
    RJ_TRANSIENT,
    RJ_USER_CALLING_AE_NOT_RECOGNIZED,
    RJ_USER_CONTEXT_NOT_SUPPORTED,
    Abort,
    Closed,
    encode_pdu,
    encode_pdv,
    iter_pdvs,
    pdu_header,
    ascii_text,
    us_value,
    encode_command,
    decode_command,
    file_meta_prefix,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One C-STORE as the handler sees it: the request's fields and the Part 10 bytes."""

    calling_ae: str
    called_ae: str
    peer: str
    """host:port of the sender."""
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    """The request's Priority (0 medium, 1 high, 2 low)."""
    transfer_syntax_uid: str
    data: bytes
    """Preamble, file meta and the dataset exactly as received."""
    sha256: str
    """SHA-256 of ``data``, computed while the fragments arrived."""
    move_originator_ae: str = ""


StoreHandler = Callable[[StoreRequest], int]
Refusal = Callable[[str, str], str | None]
"""(calling AE, source address) -> why the association is refused, or None."""


@dataclass(frozen=True, slots=True)
class AcceptorPolicy:
    """What the acceptor negotiates and how long it waits."""

    abstract_syntaxes: frozenset[str]
    transfer_syntaxes: Sequence[str]
    """Accepted transfer syntaxes in order of preference (the first proposed wins)."""
    max_pdu: int = DEFAULT_MAX_PDU
    """Maximum P-DATA-TF variable field the edge receives and advertises (> 0)."""
    acse_timeout_s: float = 30.0
    network_timeout_s: float = 60.0
    """Seconds an established association may be idle between messages (0: no limit)."""
    dimse_timeout_s: float = 60.0
    """Seconds the edge waits for the rest of a DIMSE message it has begun to receive."""
    max_associations: int = 16


@dataclass(slots=True)
class _Negotiated:
    calling_ae: str
    called_ae: str
    peer_max_pdu: int
    contexts: dict[int, str] = field(default_factory=dict)
    """Accepted presentation context ID -> transfer syntax UID."""


class AssociationHost(Protocol):
    """What an association needs of the server that accepted it (``StoreServer``)."""

    policy: AcceptorPolicy
    handler: StoreHandler
    refusal: Refusal
    ssl_context: ssl.SSLContext | None
    supported_contexts: list[PresentationContext]

    def _admit(self, association: Association) -> bool: ...

    def _forget(self, association: Association) -> None: ...


class Association(threading.Thread):
    """One TCP connection from a modality, from A-ASSOCIATE-RQ to release or abort."""

    def __init__(self, server: AssociationHost, sock: socket.socket, address: tuple[str, int]) -> None:
        super().__init__(name=f"assoc-{address[0]}:{address[1]}", daemon=True)
        self.server = server
        self.sock = sock
        self.address = address
        self.peer = f"{address[0]}:{address[1]}"
        self.calling_ae = ""
        self.is_established = False
        self.mid_message = False
        """A DIMSE message has begun to arrive (its DIMSE timeout runs)."""
        self._send_lock = threading.Lock()

    # -- socket I/O
    def _recv_exact(self, n: int) -> bytearray:
        buffer = bytearray(n)
        view = memoryview(buffer)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise Closed()
            got += k
        return buffer

    def _read_pdu(self, limit: int) -> tuple[int, bytearray]:
        kind, length = pdu_header(self._recv_exact(6), limit)
        return kind, self._recv_exact(length)

    def _phase(self) -> str:
        if not self.is_established:
            return "ACSE timeout"
        return "DIMSE timeout" if self.mid_message else "network timeout"

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def abort(self, reason: int = 0, *, source: int = 0x02) -> None:
        """Send A-ABORT (ignoring a dead socket) and close the connection."""
        try:
            self._send(encode_pdu(A_ABORT, bytes([0, 0, source, reason])))
        except OSError:
            pass
        self._close()

    def _close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- lifecycle
    def run(self) -> None:
        try:
            self._serve()
        except Closed:
            log.info("association from ae=%s peer=%s: connection closed by the peer",
                     self.calling_ae or "?", self.peer)
            self._close()
        except Abort as exc:
            log.warning("aborting association from ae=%s peer=%s: %s",
                        self.calling_ae or "?", self.peer, exc)
            self.abort(exc.reason)
        except (TimeoutError, socket.timeout):
            log.warning("association from ae=%s peer=%s timed out (%s); aborting",
                        self.calling_ae or "?", self.peer, self._phase())
            self.abort()
        except (OSError, ssl.SSLError) as exc:
            log.warning("association from ae=%s peer=%s failed: %s",
                        self.calling_ae or "?", self.peer, exc)
            self._close()
        except Exception:
            log.exception("association from ae=%s peer=%s: internal error",
                          self.calling_ae or "?", self.peer)
            self.abort()
        finally:
            self.server._forget(self)

    def _serve(self) -> None:
        policy = self.server.policy
        self.sock.settimeout(policy.acse_timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.ssl_context is not None:
            self.sock = self.server.ssl_context.wrap_socket(self.sock, server_side=True)
        kind, body = self._read_pdu(MAX_ASSOCIATE_PDU)
        if kind != A_ASSOCIATE_RQ:
            raise Abort(f"expected A-ASSOCIATE-RQ, got PDU 0x{kind:02x}")
        negotiated = self._negotiate(body)
        if negotiated is None:
            return
        self.is_established = True
        self.sock.settimeout(policy.network_timeout_s or None)
        self._exchange(negotiated)

    def _reject(self, result: int, source: int, reason: int, why: str) -> None:
        log.warning("rejected association from ae=%s peer=%s: %s", self.calling_ae, self.peer, why)
        primitive = A_ASSOCIATE()
        primitive.result, primitive.result_source, primitive.diagnostic = result, source, reason
        pdu = A_ASSOCIATE_RJ_PDU()
        pdu.from_primitive(primitive)
        self._send(pdu.encode())
        self._close()

    def _negotiate(self, body: bytearray) -> _Negotiated | None:
        """Answer the A-ASSOCIATE-RQ; the association's parameters, or None if rejected.
        The PDUs are decoded and encoded, and the presentation contexts and SCP/SCU
        roles negotiated, by pynetdicom's own functions, as its acceptor does."""
        policy = self.server.policy
        try:
            pdu = A_ASSOCIATE_RQ_PDU()
            pdu.decode(struct.pack(">BBI", A_ASSOCIATE_RQ, 0, len(body)) + bytes(body))
            request = pdu.to_primitive()
        except Exception as exc:
            raise Abort(f"undecodable A-ASSOCIATE-RQ: {type(exc).__name__}",
                        ABORT_INVALID_PARAMETER) from exc
        self.calling_ae = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        refusal = self.server.refusal(self.calling_ae, self.address[0])
        if refusal is not None:
            self._reject(RJ_PERMANENT, RJ_SOURCE_USER, RJ_USER_CALLING_AE_NOT_RECOGNIZED, refusal)
            return None
        if not self.server._admit(self):
            self._reject(RJ_TRANSIENT, RJ_SOURCE_PROVIDER_PRESENTATION, RJ_PROVIDER_LOCAL_LIMIT,
                         f"more than {policy.max_associations} associations at once")
            return None
        if str(request.application_context_name) != APPLICATION_CONTEXT.decode():
            self._reject(RJ_PERMANENT, RJ_SOURCE_USER, RJ_USER_CONTEXT_NOT_SUPPORTED,
                         "unsupported application context")
            return None
        user_items = list(request.user_information or [])
        peer_max = next((int(item.maximum_length_received or 0) for item in user_items
                         if isinstance(item, MaximumLengthNotification)), 0)
        roles = {item.sop_class_uid: (item.scu_role, item.scp_role) for item in user_items
                 if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
                 and item.sop_class_uid is not None}
        proposed = list(request.presentation_context_definition_list)
        for context in proposed:  # PS3.8 9.3.2.2; pynetdicom's negotiation assumes both
            if not context.abstract_syntax:
                raise Abort(f"presentation context {context.context_id} without an abstract "
                            "syntax", ABORT_INVALID_PARAMETER)
            if not context.transfer_syntax:
                raise Abort(f"presentation context {context.context_id} without a transfer "
                            "syntax", ABORT_INVALID_PARAMETER)
        results, reply_roles = negotiate_as_acceptor(proposed, self.server.supported_contexts,
                                                     roles or None)
        negotiated = _Negotiated(self.calling_ae, called, peer_max or DEFAULT_PEER_MAX_PDU)
        for context in results:
            if context.result == PC_ACCEPTANCE and context.context_id is not None:
                negotiated.contexts[context.context_id] = str(context.transfer_syntax[0])

        answer = A_ASSOCIATE()
        answer.application_context_name = UID(APPLICATION_CONTEXT.decode())
        answer.calling_ae_title = request.calling_ae_title
        answer.called_ae_title = request.called_ae_title
        answer.result, answer.result_source = 0x00, 0x01
        answer.presentation_context_definition_results_list = results
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = policy.max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        answer.user_information = [maximum, implementation, version, *reply_roles]
        accept = A_ASSOCIATE_AC_PDU()
        accept.from_primitive(answer)
        self._send(accept.encode())
        log.info("association accepted from ae=%s peer=%s contexts=%d/%d", self.calling_ae,
                 self.peer, len(negotiated.contexts), len(proposed))
        return negotiated

    def _exchange(self, negotiated: _Negotiated) -> None:
        """P-DATA until release or abort."""
        policy = self.server.policy
        limit = policy.max_pdu
        idle_timeout, dimse_timeout = policy.network_timeout_s or None, policy.dimse_timeout_s
        command = bytearray()
        command_context = 0
        message: _Message | None = None
        while True:
            if self.mid_message != bool(command or message):
                self.mid_message = not self.mid_message
                self.sock.settimeout(dimse_timeout if self.mid_message else idle_timeout)
            kind, body = self._read_pdu(limit)
            if kind == A_RELEASE_RQ:
                self._send(encode_pdu(A_RELEASE_RP, b"\0\0\0\0"))
                log.info("association from ae=%s peer=%s released", self.calling_ae, self.peer)
                self._close()
                return
            if kind == A_ABORT:
                log.warning("association from ae=%s peer=%s aborted by the peer",
                            self.calling_ae, self.peer)
                self._close()
                return
            if kind != P_DATA_TF:
                raise Abort(f"unexpected PDU 0x{kind:02x} during the association")
            for context_id, control, fragment in iter_pdvs(body):
                if context_id not in negotiated.contexts:
                    raise Abort(f"PDV on presentation context {context_id} not accepted",
                                ABORT_INVALID_PARAMETER)
                if control & 0x01:  # command fragment
                    if message is not None:
                        raise Abort("command fragment inside a dataset")
                    if command and context_id != command_context:
                        raise Abort(f"command fragments on presentation contexts "
                                    f"{command_context} and {context_id}")
                    command_context = context_id
                    command += fragment
                    if len(command) > MAX_COMMAND_SET:
                        raise Abort(f"command set longer than {MAX_COMMAND_SET} bytes",
                                    ABORT_INVALID_PARAMETER)
                    if control & 0x02:
                        fields = decode_command(bytes(command))
                        command = bytearray()
                        message = self._on_command(context_id, fields, negotiated)
                else:  # dataset fragment
                    if message is None or message.context_id != context_id:
                        raise Abort("dataset fragment without its command")
                    message.add(fragment)
                    if control & 0x02:
                        self._on_store(message, negotiated)
                        message = None

    def _on_command(self, context_id: int, fields: dict[int, bytes],
                    negotiated: _Negotiated) -> "_Message | None":
        """Handle a complete command; return the C-STORE awaiting its dataset, if any."""
        command_field = us_value(fields.get(0x0100))
        has_dataset = us_value(fields.get(0x0800), NO_DATASET) != NO_DATASET
        if command_field == C_ECHO_RQ and not has_dataset:
            log.info("C-ECHO from=%s peer=%s", self.calling_ae, self.peer)
            self._respond(context_id, negotiated, fields, 0x8030, 0x0000, instance=False)
            return None
        if command_field == C_STORE_RQ and has_dataset:
            sop_class = ascii_text(fields.get(0x0002))
            sop_instance = ascii_text(fields.get(0x1000))
            transfer_syntax = negotiated.contexts[context_id]
            if not sop_class or not sop_instance:
                raise Abort("C-STORE-RQ without its affected SOP class or instance",
                            ABORT_INVALID_PARAMETER)
            return _Message(context_id, fields, sop_class=sop_class, sop_instance=sop_instance,
                            transfer_syntax=transfer_syntax)
        raise Abort(f"unsupported DIMSE command 0x{command_field:04x}")

    def _on_store(self, message: "_Message", negotiated: _Negotiated) -> None:
        fields = message.fields
        request = StoreRequest(
            calling_ae=self.calling_ae, called_ae=negotiated.called_ae, peer=self.peer,
            sop_class_uid=message.sop_class, sop_instance_uid=message.sop_instance,
            priority=us_value(fields.get(0x0700), PRIORITY_MEDIUM),
            transfer_syntax_uid=message.transfer_syntax,
            data=message.data(), sha256=message.hasher.hexdigest(),
            move_originator_ae=ascii_text(fields.get(0x1030)),
        )
        status = self.server.handler(request)
        self._respond(message.context_id, negotiated, fields, 0x8001, status, instance=True)

    def _respond(self, context_id: int, negotiated: _Negotiated, fields: dict[int, bytes],
                 command_field: int, status: int, *, instance: bool) -> None:
        elements = [
            (0x0002, fields.get(0x0002, b"")),
            (0x0100, struct.pack("<H", command_field)),
            (0x0120, fields.get(0x0110, b"\0\0")[:2]),
            (0x0800, struct.pack("<H", NO_DATASET)),
            (0x0900, struct.pack("<H", status)),
        ]
        if instance:
            elements.append((0x1000, fields.get(0x1000, b"")))
        self._send_pdvs(context_id, encode_command(elements), negotiated.peer_max_pdu)

    def _send_pdvs(self, context_id: int, data: bytes, peer_max: int) -> None:
        """A command set in as many P-DATA-TF PDUs as the peer's maximum needs."""
        room = max(peer_max - 6, 1)  # PDV item header: length (4) + context + control
        chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
        out = []
        for n, chunk in enumerate(chunks):
            control = 0x03 if n == len(chunks) - 1 else 0x01
            out.append(encode_pdu(P_DATA_TF, encode_pdv(context_id, control, chunk)))
        self._send(b"".join(out))


class _Message:
    """A C-STORE whose dataset is arriving: fragments kept and hashed as they come."""

    __slots__ = ("context_id", "fields", "sop_class", "sop_instance", "transfer_syntax",
                 "parts", "hasher")

    def __init__(self, context_id: int, fields: dict[int, bytes], *, sop_class: str,
                 sop_instance: str, transfer_syntax: str) -> None:
        self.context_id = context_id
        self.fields = fields
        self.sop_class, self.sop_instance = sop_class, sop_instance
        self.transfer_syntax = transfer_syntax
        prefix = file_meta_prefix(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                                  transfer_syntax=transfer_syntax)
        self.parts: list[bytes | memoryview] = [prefix]
        self.hasher = hashlib.sha256(prefix)

    def add(self, fragment: memoryview) -> None:
        self.parts.append(fragment)
        self.hasher.update(fragment)

    def data(self) -> bytes:
        return b"".join(self.parts)
