"""The edge's DICOM storage acceptor: a listening socket and one thread per
association (``relay.edge.association``); connections beyond ``max_associations``
are refused by ``relay.edge.overflow`` without a thread.

Why the edge owns this loop instead of pynetdicom's ``AE.start_server``, and what an
association does: docs/design/edge-association-loop.md.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext

from relay.edge.association import (  # re-exported: relay.edge.scp and the tests
    AcceptorPolicy as AcceptorPolicy,
    Association,
    Refusal as Refusal,
    StoreHandler as StoreHandler,
    StoreRequest as StoreRequest,
)
from relay.edge.overflow import Overflow
from relay.edge.pdu_codec import VERIFICATION as VERIFICATION  # re-exported

log = logging.getLogger(__name__)


class StoreServer:
    """Listen for associations in a background thread; one thread per association.

    ``server_address`` is the bound address (useful with port 0); ``shutdown()``
    stops accepting (running associations go on, see ``relay.edge.scp.stop_scp``);
    ``active_associations`` lists the running ones.
    """

    def __init__(self, address: tuple[str, int], *, policy: AcceptorPolicy,
                 handler: StoreHandler, refusal: Refusal | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.handler = handler
        self.refusal: Refusal = refusal or (lambda _ae, _address: None)
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._all: list[Association] = []
        self._admitted: set[Association] = set()
        self.supported_contexts: list[PresentationContext] = []
        for abstract in sorted(policy.abstract_syntaxes):
            context = PresentationContext()
            context.abstract_syntax = UID(abstract)
            context.transfer_syntax = [UID(ts) for ts in policy.transfer_syntaxes]
            self.supported_contexts.append(context)
        self._listener = socket.create_server(address, backlog=64, reuse_port=False)
        self._listener.settimeout(0.2)
        self._overflow = Overflow()
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="dicom-acceptor",
                                        daemon=True)
        self._thread.start()

    @property
    def active_associations(self) -> list[Association]:
        with self._lock:
            return [a for a in self._all if a.is_alive()]

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept failed")
                time.sleep(0.1)
                continue
            with self._lock:
                room = len(self._all) < self.policy.max_associations
                association = Association(self, sock, address) if room else None
                if association is not None:
                    self._all.append(association)
            if association is None:
                self._overflow.refuse(sock, f"{address[0]}:{address[1]}",
                                      plain=self.ssl_context is None)
                continue
            sock.settimeout(None)
            association.start()

    def _admit(self, association: Association) -> bool:
        with self._lock:
            if len(self._admitted) >= self.policy.max_associations:
                return False
            self._admitted.add(association)
            return True

    def _forget(self, association: Association) -> None:
        with self._lock:
            self._admitted.discard(association)
            if association in self._all:
                self._all.remove(association)

    def shutdown(self) -> None:
        """Stop accepting new associations and close the listening socket."""
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        self._overflow.close()
