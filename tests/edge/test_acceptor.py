"""The edge's own DICOM Upper Layer acceptor (relay.edge.acceptor) at the protocol
level: what pynetdicom's server used to guarantee and the rest of the edge relies on.
Real peers (pynetdicom's SCU, DCMTK) where they can say it; raw PDUs on a socket where
only a misbehaving or unusual peer can."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from relay.config import Settings
from relay.dicom.status import StoreStatus
from relay.edge.pdu_codec import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    encode_command,
)
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.edge.conftest import RunningScp
from tests.edge.factories import ct_dataset, write_part10
from tests.edge.helpers import journal_rows, wait_until

Dcmtk = Callable[..., Any]


# --- a raw peer ---------------------------------------------------------------------
def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def associate_rq(*, calling: str = "RAW_SCU", max_pdu: int = 16384,
                 contexts: tuple[tuple[int, str, str], ...] = ((1, CTImageStorage, ExplicitVRLittleEndian),)
                 ) -> bytes:
    header = struct.pack(">HH", 1, 0) + b"RELAY_EDGE".ljust(16) + calling.encode().ljust(16) + b"\0" * 32
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for context_id, abstract, syntax in contexts:
        items += _item(0x20, bytes([context_id, 0, 0, 0]) + _item(0x30, abstract.encode())
                       + _item(0x40, syntax.encode()))
    items += _item(0x50, _item(0x51, struct.pack(">I", max_pdu)))
    return _pdu(A_ASSOCIATE_RQ, header + items)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    kind, _, length = struct.unpack(">BBI", exact(6))
    return kind, exact(length)


def pdvs(body: bytes) -> list[tuple[int, int, bytes]]:
    out, offset = [], 0
    while offset < len(body):
        length = struct.unpack(">I", body[offset:offset + 4])[0]
        out.append((body[offset + 4], body[offset + 5], body[offset + 6:offset + 4 + length]))
        offset += 4 + length
    return out


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    return _pdu(P_DATA_TF, struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment)


def _even(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def store_command(sop_class: str, sop_instance: str, message_id: int = 7) -> bytes:
    return encode_command([(0x0002, _even(sop_class)), (0x0100, struct.pack("<H", 1)),
                           (0x0110, struct.pack("<H", message_id)), (0x0700, b"\0\0"),
                           (0x0800, struct.pack("<H", 0)), (0x1000, _even(sop_instance))])


def status_of(command: bytes) -> int:
    offset = 0
    while offset < len(command):
        _, elem, length = struct.unpack("<HHI", command[offset:offset + 8])
        if elem == 0x0900:
            return int(struct.unpack("<H", command[offset + 8:offset + 10])[0])
        offset += 8 + length
    raise AssertionError("no status in the response")


def dataset_bytes(path: Path) -> bytes:
    from pynetdicom.dsutils import split_dataset
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


# --- tests --------------------------------------------------------------------------
def test_response_is_split_into_pdus_the_peer_can_take_and_fragments_are_reassembled(
    scp: RunningScp, tmp_path: Path
) -> None:
    """A peer that takes 40-byte PDUs gets the C-STORE-RSP in many; a command and a
    dataset sent in many small PDVs arrive whole: the spooled file is the dataset sent."""
    ds = ct_dataset()
    dataset = dataset_bytes(write_part10(ds, tmp_path / "ct.dcm"))
    with socket.create_connection((scp.host, scp.port), timeout=10) as sock:
        sock.sendall(associate_rq(max_pdu=40))
        kind, _ = read_pdu(sock)
        assert kind == A_ASSOCIATE_AC
        command = store_command(CTImageStorage, ds.SOPInstanceUID)
        sock.sendall(p_data(1, 0x01, command[:10]) + p_data(1, 0x03, command[10:]))
        pieces = [dataset[i:i + 1000] for i in range(0, len(dataset), 1000)]
        for n, piece in enumerate(pieces):
            sock.sendall(p_data(1, 0x02 if n == len(pieces) - 1 else 0x00, piece))
        response = b""
        pdus = 0
        while True:
            kind, body = read_pdu(sock)
            assert kind == P_DATA_TF and len(body) <= 40
            pdus += 1
            (context_id, control, fragment), = pdvs(body)
            assert context_id == 1 and control & 0x01
            response += fragment
            if control & 0x02:
                break
        sock.sendall(_pdu(A_RELEASE_RQ, b"\0" * 4))
        assert read_pdu(sock)[0] == A_RELEASE_RP

    assert pdus > 3
    assert status_of(response) == StoreStatus.SUCCESS
    (row,) = journal_rows(scp.spool.root)
    stored = (scp.spool.root / row["path"]).read_bytes()
    assert stored.endswith(dataset) and row["sop_uid"] == ds.SOPInstanceUID
    assert row["sha256"] == hashlib.sha256(stored).hexdigest()


def test_spooled_bytes_equal_what_a_pynetdicom_scp_would_have_kept(
    scp: RunningScp, tmp_path: Path
) -> None:
    """Same Part 10 bytes (file meta included) as pynetdicom's encoded_dataset(), which
    the edge used before: an instance re-sent after an upgrade is a duplicate, not a
    conflict at the county."""
    received: list[bytes] = []

    def keep(event: Any) -> int:
        received.append(event.encoded_dataset())
        return 0

    reference = AE(ae_title="REFERENCE")
    reference.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = reference.start_server(("127.0.0.1", 0), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, keep)])
    try:
        ds = ct_dataset()
        for host, port, title in ((scp.host, scp.port, "RELAY_EDGE"),
                                  (*server.server_address[:2], "REFERENCE")):
            sender = AE(ae_title="CT01")
            sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = sender.associate(host, port, ae_title=title)
            assert assoc.is_established
            assert assoc.send_c_store(ds).Status == 0
            assoc.release()
    finally:
        server.shutdown()
    (row,) = journal_rows(scp.spool.root)
    assert (scp.spool.root / row["path"]).read_bytes() == received[0]


def test_associations_over_the_limit_are_rejected_transiently(
    edge_settings: Settings, spool: Spool
) -> None:
    edge_settings.edge_max_associations = 1
    server = start_scp(edge_settings, spool)
    port = int(server.server_address[1])
    try:
        first_ae = AE(ae_title="CT01")
        first_ae.add_requested_context(Verification)
        first = first_ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")
        assert first.is_established
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(associate_rq(contexts=((1, Verification, ExplicitVRLittleEndian),)))
            kind, body = read_pdu(sock)
        assert kind == A_ASSOCIATE_RJ
        assert body[1:4] == bytes([0x02, 0x03, 0x02])  # transient, provider, local limit
        first.release()
        assert wait_until(lambda: not server.active_associations, timeout=5)
        again = first_ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")
        assert again.is_established and again.send_c_echo().Status == 0
        again.release()
    finally:
        stop_scp(server, grace_s=1.0)


def test_a_pdu_bigger_than_the_edge_accepts_aborts_and_stores_nothing(
    edge_settings: Settings, spool: Spool
) -> None:
    edge_settings.edge_max_pdu = 8192
    server = start_scp(edge_settings, spool)
    try:
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(associate_rq())
            kind, body = read_pdu(sock)
            assert kind == A_ASSOCIATE_AC
            sock.sendall(_pdu(P_DATA_TF, b"\0" * 9000))
            assert read_pdu(sock)[0] == A_ABORT
        assert journal_rows(spool.root) == []
    finally:
        stop_scp(server, grace_s=1.0)


def test_dcmtk_with_small_pdus_stores_exactly(
    edge_settings: Settings, spool: Spool, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    """The edge advertises 4 KB PDUs: storescu splits each dataset into many; the
    spooled dataset is the file's, byte for byte."""
    edge_settings.edge_max_pdu = 4096
    server = start_scp(edge_settings, spool)
    try:
        path = write_part10(ct_dataset(), tmp_path / "ct.dcm")
        done = dcmtk("storescu", "-aec", "RELAY_EDGE", "127.0.0.1",
                     str(server.server_address[1]), str(path))
        assert done.returncode == 0, done.stderr
    finally:
        stop_scp(server, grace_s=1.0)
    (row,) = journal_rows(spool.root)
    assert (spool.root / row["path"]).read_bytes().endswith(dataset_bytes(path))


def test_an_idle_association_is_aborted_after_the_network_timeout(
    edge_settings: Settings, spool: Spool
) -> None:
    edge_settings.edge_network_timeout = 0.5
    server = start_scp(edge_settings, spool)
    try:
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(associate_rq())
            assert read_pdu(sock)[0] == A_ASSOCIATE_AC
            assert read_pdu(sock)[0] == A_ABORT  # nothing sent: the edge gives up
        assert wait_until(lambda: not server.active_associations, timeout=5)
    finally:
        stop_scp(server, grace_s=1.0)


def test_concurrent_associations_store_in_parallel(scp: RunningScp) -> None:
    """Four senders at once, ten instances each: every one acknowledged and journaled."""
    results: list[int] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        sender = AE(ae_title=f"CT0{n}")
        sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = sender.associate(scp.host, scp.port, ae_title="RELAY_EDGE")
        assert assoc.is_established
        for _ in range(10):
            status = assoc.send_c_store(ct_dataset())
            with lock:
                results.append(int(status.Status))
        assoc.release()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [0] * 40
    assert len(journal_rows(scp.spool.root)) == 40


@pytest.mark.parametrize("garbage", [b"\x01\x00\x00\x00\x00\x10" + b"\0" * 16,
                                     b"\x04\x00\x00\x00\x00\x02\x00\x00"])
def test_malformed_pdus_are_aborted(scp: RunningScp, garbage: bytes) -> None:
    with socket.create_connection((scp.host, scp.port), timeout=10) as sock:
        sock.sendall(garbage)
        assert read_pdu(sock)[0] == A_ABORT
    assert wait_until(lambda: not scp.server.active_associations, timeout=5)


def test_role_selection_is_answered_and_storage_works(scp: RunningScp) -> None:
    """A modality that proposes SCP/SCU role selection (as some do for every context)
    gets pynetdicom's negotiated answer and can store."""
    from pynetdicom import build_role

    sender = AE(ae_title="CT01")
    sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = sender.associate(scp.host, scp.port, ae_title="RELAY_EDGE",
                             ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=False)])
    assert assoc.is_established
    assert assoc.send_c_store(ct_dataset()).Status == 0
    assoc.release()
    assert len(journal_rows(scp.spool.root)) == 1


def test_an_unknown_application_context_is_rejected(scp: RunningScp) -> None:
    request = associate_rq().replace(b"1.2.840.10008.3.1.1.1", b"1.2.840.10008.3.1.1.9")
    with socket.create_connection((scp.host, scp.port), timeout=10) as sock:
        sock.sendall(request)
        kind, body = read_pdu(sock)
    assert kind == A_ASSOCIATE_RJ and body[1:4] == bytes([0x01, 0x01, 0x02])


# --- resource limits and the DIMSE timeout (issue 10, points 9 and 13) ---------------
def _assoc_threads(peers: list[socket.socket]) -> list[str]:
    """Live association threads of the edge serving these client sockets."""
    names = {"assoc-{}:{}".format(*sock.getsockname()[:2]) for sock in peers}
    return [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]


def _ac_max_pdu(body: bytes) -> int:
    """The Maximum Length item (0x51) of an A-ASSOCIATE-AC body."""
    offset = 68  # fixed header: protocol version, reserved, AE titles, reserved
    while offset < len(body):
        kind, length = body[offset], struct.unpack(">H", body[offset + 2:offset + 4])[0]
        if kind == 0x50:
            sub = offset + 4
            while sub < offset + 4 + length:
                sub_kind, sub_len = body[sub], struct.unpack(">H", body[sub + 2:sub + 4])[0]
                if sub_kind == 0x51:
                    return int(struct.unpack(">I", body[sub + 4:sub + 8])[0])
                sub += 4 + sub_len
        offset += 4 + length
    raise AssertionError("no maximum length in the A-ASSOCIATE-AC")


def _store_one(host: str, port: int) -> int:
    sender = AE(ae_title="CT01")
    sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = sender.associate(host, port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    status = int(assoc.send_c_store(ct_dataset()).Status)
    assoc.release()
    return status


def test_connections_over_the_limit_get_no_thread_of_their_own(
    edge_settings: Settings, spool: Spool
) -> None:
    """Ten connections that never speak against a limit of two: at most two association
    threads; one more that asks is answered A-ASSOCIATE-RJ (transient, local limit)."""
    edge_settings.edge_max_associations = 2
    server = start_scp(edge_settings, spool)
    idle = [socket.create_connection(server.server_address, timeout=10) for _ in range(10)]
    try:
        assert wait_until(lambda: len(_assoc_threads(idle)) == 2, timeout=10)
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(associate_rq())
            kind, body = read_pdu(sock)
            assert not _assoc_threads([sock])
        assert kind == A_ASSOCIATE_RJ and body[1:4] == bytes([0x02, 0x03, 0x02])
        assert len(_assoc_threads(idle)) == 2
    finally:
        for sock in idle:
            sock.close()
    try:
        assert wait_until(lambda: not server.active_associations, timeout=10)
        assert _store_one(*server.server_address) == 0
    finally:
        stop_scp(server, grace_s=1.0)


def test_the_edge_negotiates_a_finite_pdu_and_aborts_a_bigger_one_then_goes_on(
    edge_settings: Settings, spool: Spool
) -> None:
    """With the default settings the A-ASSOCIATE-AC names a finite maximum; a PDU that
    claims one byte more is aborted at its header (nothing stored) and the next
    association stores normally."""
    server = start_scp(edge_settings, spool)
    try:
        with socket.create_connection(server.server_address, timeout=5) as sock:
            sock.sendall(associate_rq())
            kind, body = read_pdu(sock)
            assert kind == A_ASSOCIATE_AC
            negotiated = _ac_max_pdu(body)
            assert negotiated == edge_settings.edge_max_pdu > 0
            sock.sendall(struct.pack(">BBI", P_DATA_TF, 0, negotiated + 1) + b"\0" * 64)
            assert read_pdu(sock)[0] == A_ABORT
        assert journal_rows(spool.root) == []
        assert _store_one(*server.server_address) == 0
        assert len(journal_rows(spool.root)) == 1
    finally:
        stop_scp(server, grace_s=1.0)


def test_an_association_idle_in_the_middle_of_a_c_store_is_aborted_after_the_dimse_timeout(
    edge_settings: Settings, spool: Spool
) -> None:
    """The C-STORE-RQ command arrives, its dataset never does: the edge aborts after
    ``edge_dimse_timeout_s`` (not the much longer idle network timeout), stores
    nothing, and goes on."""
    edge_settings.edge_network_timeout = 120.0
    edge_settings.edge_dimse_timeout_s = 0.5
    server = start_scp(edge_settings, spool)
    try:
        with socket.create_connection(server.server_address, timeout=30) as sock:
            sock.sendall(associate_rq())
            assert read_pdu(sock)[0] == A_ASSOCIATE_AC
            sock.sendall(p_data(1, 0x03, store_command(CTImageStorage, "1.2.3.4.5")))
            assert read_pdu(sock)[0] == A_ABORT
        assert journal_rows(spool.root) == []
        assert _store_one(*server.server_address) == 0
    finally:
        stop_scp(server, grace_s=1.0)
