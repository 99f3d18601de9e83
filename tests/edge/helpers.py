"""Helpers shared by the edge tests (kept out of conftest so they can be imported)."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context

from relay.edge.journal import JOURNAL_NAME


def journal_rows(spool_root: Path) -> list[dict[str, Any]]:
    """All journal rows, read through a connection of its own (what is committed)."""
    conn = sqlite3.connect(spool_root / JOURNAL_NAME)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM instances ORDER BY id")]
    finally:
        conn.close()


def acknowledged(spool_root: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """SOP Instance UID -> (its journal row, SHA-256 of its spooled file as on disk now):
    taken before and after a test to show acknowledged instances were not touched."""
    return {row["sop_uid"]: (row, hashlib.sha256((spool_root / row["path"]).read_bytes()).hexdigest())
            for row in journal_rows(spool_root)}


def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def association_answer(port: int, calling_ae: str, *, called_ae: str = "RELAY_EDGE") -> bytes:
    """Send an A-ASSOCIATE-RQ (Verification) from ``calling_ae`` over a plain socket and
    return the PDU the edge answers with (header and body).

    For checking rejections: pynetdicom's requestor can report a fast A-ASSOCIATE-RJ as an
    abort (its ACSE thread tests ``socket._is_connected`` after the DUL thread has already
    read the RJ and closed the connection; seen under CPU load), so the edge's answer is
    read here off the wire instead."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title, request.called_ae_title = calling_ae, called_ae
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    request.presentation_context_definition_list = [context]
    max_length, implementation = MaximumLengthNotification(), ImplementationClassUIDNotification()
    max_length.maximum_length_received = 16384
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    request.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(pdu.encode())
        answer = b""
        while len(answer) < 6 or len(answer) < 6 + struct.unpack(">I", answer[2:6])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer
