"""A corpus of malformed and out-of-place PDUs against a running edge (PS3.8 upper
layer, PS3.7 command sets). Each case must end its association with an A-ABORT (or,
for a release in the middle of a dataset, the A-RELEASE-RP), store nothing of its own,
leave the instances already acknowledged exactly as they were (bytes and journal rows),
log no internal error, and not keep a DCMTK storescu sending at the same time from
storing everything. Waits are bounded: the edge's timeouts are two seconds here.

Non-storage DIMSE requests (C-FIND, C-MOVE, C-GET, N-ACTION, ...) on a storage context
are aborted, as pynetdicom's storage SCP did before the edge had its own loop: no such
service is negotiated on this port, so there is no response the requestor could expect.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
)

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
    encode_pdu,
    encode_pdv,
)
from tests.edge.conftest import DCMTK_TIMEOUT_S, RunningScp
from tests.edge.factories import ct_dataset, dataset_part, write_part10
from tests.edge.helpers import acknowledged, journal_rows, wait_until
from tests.edge.test_acceptor import associate_rq, read_pdu, status_of, store_command

EDGE_TIMEOUT_S = 2.0
"""The edge's ACSE, network and DIMSE timeouts in these tests (seconds)."""
ANSWER_TIMEOUT_S = 30.0
"""How long the raw peer waits for the edge's answer: bounded, and far beyond the edge's
own timeouts, so a case that is not answered fails instead of hanging."""
RAW_AE = "RAW_SCU"
CT, MR = 1, 3
"""Presentation context IDs the raw peer proposes: CT and MR storage (both accepted),
and 5 for C-FIND (rejected: not a storage SOP class)."""
FIND = 5

CONTEXTS = ((CT, CTImageStorage, ExplicitVRLittleEndian), (MR, MRImageStorage, ExplicitVRLittleEndian),
            (FIND, PatientRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian))


def pdata(*pdvs: bytes) -> bytes:
    return encode_pdu(P_DATA_TF, b"".join(pdvs))


def command(field: int, *, sop_class: str = CTImageStorage, dataset: bool = False,
            extra: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """A command set with Command Field ``field`` (PS3.7 E.1)."""
    uid = sop_class.encode() + (b"\0" if len(sop_class) % 2 else b"")
    elements = [(0x0002, uid), (0x0100, struct.pack("<H", field)), (0x0110, struct.pack("<H", 9)),
                (0x0800, struct.pack("<H", 0x0000 if dataset else 0x0101)), *extra]
    return encode_command(elements)


@dataclass(frozen=True)
class Case:
    name: str
    why: str
    """What the edge's log line for this association says (the reason it ended)."""
    before_association: bytes = b""
    """Sent instead of an A-ASSOCIATE-RQ (when not empty)."""
    after_association: Callable[[bytes, bytes], bytes] | None = None
    """(C-STORE-RQ command, dataset) -> bytes sent once the association is accepted."""
    ends_with: int = A_ABORT


def _store(cmd: bytes, data: bytes) -> bytes:
    return pdata(encode_pdv(CT, 0x03, cmd), encode_pdv(CT, 0x02, data))


def _associate_rq_with(context_item: bytes) -> bytes:
    """An A-ASSOCIATE-RQ whose one presentation context item is ``context_item``."""
    rq = associate_rq()
    header, items = rq[6:74], rq[74:]
    start = items.index(b"\x20\x00")
    length = struct.unpack(">H", items[start + 2:start + 4])[0]
    body = header + items[:start] + context_item + items[start + 4 + length:]
    return encode_pdu(A_ASSOCIATE_RQ, body)


def _pdu_of_type(kind: int) -> Callable[[bytes, bytes], bytes]:
    return lambda _command, _dataset: encode_pdu(kind, b"\0" * 4)


def _sub_item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


_EMPTY_CMD = b""
CASES = [
    # --- lengths
    Case("pdu-length-past-its-bytes", "timed out",
         after_association=lambda c, d: struct.pack(">BBI", P_DATA_TF, 0, len(c) + 6 + 500)
         + encode_pdv(CT, 0x03, c)),
    Case("pdu-length-short-of-its-pdv", "truncated PDV",
         after_association=lambda c, d: struct.pack(">BBI", P_DATA_TF, 0, 3) + encode_pdv(CT, 0x03, c)),
    Case("pdu-length-short-so-the-rest-reads-as-the-next-pdu", "unrecognised PDU type 0x00",
         after_association=lambda c, d: (lambda body: struct.pack(">BBI", P_DATA_TF, 0, len(c) + 6)
                                         + body)(encode_pdv(CT, 0x03, c) + encode_pdv(CT, 0x02, d))),
    Case("pdv-length-past-its-pdu", "PDV longer than its PDU",
         after_association=lambda c, d: pdata(struct.pack(">IBB", len(c) + 500, CT, 0x03) + c)),
    Case("pdv-length-zero", "PDV longer than its PDU", after_association=lambda c, d: pdata(struct.pack(">IBB", 0, CT, 0x03) + c)),
    Case("pdv-length-one", "PDV longer than its PDU", after_association=lambda c, d: pdata(struct.pack(">IBB", 1, CT, 0x03) + c)),
    Case("pdv-header-truncated", "truncated PDV", after_association=lambda c, d: encode_pdu(P_DATA_TF, b"\0\0\0\x10")),
    Case("p-data-without-any-pdv", "P-DATA-TF without a PDV", after_association=lambda c, d: encode_pdu(P_DATA_TF, b"")),
    Case("empty-command-set", "unsupported DIMSE command 0x0000", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, _EMPTY_CMD))),
    Case("associate-rq-over-a-mebibyte", "exceeds 1048576",
         before_association=struct.pack(">BBI", A_ASSOCIATE_RQ, 0, (1 << 20) + 1) + b"\0" * 64),
    Case("associate-rq-shorter-than-its-items", "undecodable A-ASSOCIATE-RQ",
         before_association=(lambda rq: rq[:2] + struct.pack(">I", 80) + rq[6:86])(associate_rq())),
    Case("presentation-context-without-a-transfer-syntax", "without a transfer syntax",
         before_association=_associate_rq_with(_sub_item(0x20, bytes([1, 0, 0, 0])
                                                         + _sub_item(0x30, b"1.2.3.4.5.6")))),
    Case("presentation-context-without-an-abstract-syntax", "without an abstract syntax",
         before_association=_associate_rq_with(_sub_item(0x20, bytes([1, 0, 0, 0])
                                                         + _sub_item(0x40, ExplicitVRLittleEndian.encode())))),
    # --- unknown and out-of-place PDU types
    *(Case(f"unknown-pdu-type-0x{kind:02x}", f"unrecognised PDU type 0x{kind:02x}",
           after_association=_pdu_of_type(kind)) for kind in (0x00, 0x08, 0x09, 0x7F, 0xFF)),
    Case("unknown-pdu-type-before-association", "unrecognised PDU type 0x0a", before_association=encode_pdu(0x0A, b"\0" * 4)),
    Case("p-data-before-a-associate", "expected A-ASSOCIATE-RQ, got PDU 0x04", before_association=pdata(encode_pdv(CT, 0x03, b"\0" * 12))),
    Case("a-release-rq-before-a-associate", "expected A-ASSOCIATE-RQ, got PDU 0x05", before_association=encode_pdu(A_RELEASE_RQ, b"\0" * 4)),
    Case("a-associate-rp-before-a-associate", "expected A-ASSOCIATE-RQ, got PDU 0x06", before_association=encode_pdu(A_RELEASE_RP, b"\0" * 4)),
    Case("second-a-associate-rq", "unexpected PDU 0x01", after_association=lambda c, d: associate_rq()),
    Case("a-associate-ac-from-the-requestor", "unexpected PDU 0x02", after_association=lambda c, d: encode_pdu(A_ASSOCIATE_AC, b"\0" * 68)),
    Case("a-associate-rj-from-the-requestor", "unexpected PDU 0x03", after_association=lambda c, d: encode_pdu(A_ASSOCIATE_RJ, b"\0\1\1\1")),
    Case("a-release-rp-unasked", "unexpected PDU 0x06", after_association=lambda c, d: encode_pdu(A_RELEASE_RP, b"\0" * 4)),
    # --- presentation contexts
    Case("pdv-on-a-rejected-context", "presentation context 5 not accepted", after_association=lambda c, d: pdata(encode_pdv(FIND, 0x03, c))),
    Case("pdv-on-a-context-never-proposed", "presentation context 7 not accepted", after_association=lambda c, d: pdata(encode_pdv(7, 0x03, c))),
    Case("pdv-on-an-even-context-id", "presentation context 2 not accepted", after_association=lambda c, d: pdata(encode_pdv(2, 0x03, c))),
    Case("dataset-on-another-context-than-its-command", "dataset fragment without its command",
         after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, c), encode_pdv(MR, 0x02, d))),
    Case("command-fragments-on-two-contexts", "command fragments on presentation contexts",
         after_association=lambda c, d: pdata(encode_pdv(MR, 0x01, c[:20]), encode_pdv(CT, 0x03, c[20:]))),
    # --- commands other than C-STORE / C-ECHO on the storage port
    Case("c-find-rq", "unsupported DIMSE command 0x0020", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0020, dataset=True)),
                                                            encode_pdv(CT, 0x02, d[:64]))),
    Case("c-move-rq", "unsupported DIMSE command 0x0021", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0021, dataset=True)))),
    Case("c-get-rq", "unsupported DIMSE command 0x0010", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0010, dataset=True)))),
    Case("c-cancel-rq", "unsupported DIMSE command 0x0fff", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0FFF)))),
    Case("n-action-rq", "unsupported DIMSE command 0x0130", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0130)))),
    Case("n-create-rq", "unsupported DIMSE command 0x0140", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0140)))),
    Case("n-event-report-rq", "unsupported DIMSE command 0x0100", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0100)))),
    Case("c-store-rsp-from-the-requestor", "unsupported DIMSE command 0x8001", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x8001)))),
    Case("c-echo-rq-with-a-dataset", "unsupported DIMSE command 0x0030", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0030, dataset=True)))),
    Case("c-store-rq-without-a-dataset", "unsupported DIMSE command 0x0001", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, command(0x0001)))),
    Case("c-store-rq-without-its-sop-instance", "without its affected SOP class or instance", after_association=lambda c, d: pdata(
        encode_pdv(CT, 0x03, command(0x0001, dataset=True)), encode_pdv(CT, 0x02, d))),
    Case("command-without-a-command-field", "unsupported DIMSE command 0x0000",
         after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, encode_command([(0x0002, b"1.2\0")])))),
    # --- malformed command sets
    Case("command-set-element-header-truncated", "truncated command set", after_association=lambda c, d: pdata(encode_pdv(CT, 0x03, c[:-3] + c[:5]))),
    Case("command-set-element-past-its-end", "malformed command set", after_association=lambda c, d: pdata(
        encode_pdv(CT, 0x03, c + struct.pack("<HHI", 0, 0x0900, 400) + b"\0\0"))),
    Case("command-set-outside-group-0000", "malformed command set", after_association=lambda c, d: pdata(
        encode_pdv(CT, 0x03, c + struct.pack("<HHI", 8, 0x0018, 4) + b"1.2\0"))),
    # --- message order
    Case("dataset-before-its-command", "dataset fragment without its command", after_association=lambda c, d: pdata(encode_pdv(CT, 0x02, d))),
    Case("second-command-before-the-dataset-finished", "command fragment inside a dataset", after_association=lambda c, d: pdata(
        encode_pdv(CT, 0x03, c), encode_pdv(CT, 0x00, d[:100]), encode_pdv(CT, 0x03, c))),
    Case("command-that-never-ends", "command set longer than", after_association=lambda c, d: b"".join(
        pdata(encode_pdv(CT, 0x01, b"\0" * 16000)) for _ in range(80))),
    Case("a-release-rq-in-the-middle-of-a-dataset", "released", ends_with=A_RELEASE_RP, after_association=lambda c, d: pdata(
        encode_pdv(CT, 0x03, c), encode_pdv(CT, 0x00, d[:100])) + encode_pdu(A_RELEASE_RQ, b"\0" * 4)),
    Case("garbage-after-a-stored-instance", "unrecognised PDU type 0x47", after_association=lambda c, d: _store(c, d) + b"GET / HTTP/1.1\r\n"),
]


@pytest.fixture(autouse=True)
def short_timeouts(edge_settings: Settings) -> None:
    edge_settings.edge_acse_timeout_s = EDGE_TIMEOUT_S
    edge_settings.edge_network_timeout = EDGE_TIMEOUT_S
    edge_settings.edge_dimse_timeout_s = EDGE_TIMEOUT_S


@pytest.fixture
def already_acknowledged(scp: RunningScp) -> dict[str, Any]:
    """Two instances stored and acknowledged before the malformed peer speaks."""
    ae = AE(ae_title="GOOD_SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(scp.host, scp.port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    for seed in (1, 2):
        assert assoc.send_c_store(ct_dataset(seed=seed)).Status == StoreStatus.SUCCESS
    assoc.release()
    return acknowledged(scp.spool.root)


def _answers(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every PDU the edge sends until it closes the connection."""
    out: list[tuple[int, bytes]] = []
    while True:
        try:
            out.append(read_pdu(sock))
        except (EOFError, ConnectionResetError):
            return out


def _storescu_in_parallel(scp: RunningScp, folder: Path) -> tuple[subprocess.Popen[str], list[Path]]:
    folder.mkdir()
    files = [write_part10(ct_dataset(seed=10 + n), folder / f"ct{n}.dcm") for n in range(5)]
    process = subprocess.Popen(["storescu", "-aet", "PARALLEL", "-aec", "RELAY_EDGE", scp.host,
                                str(scp.port), *map(str, files)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, files


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_malformed_peer_is_aborted_and_harms_nothing(
    scp: RunningScp, already_acknowledged: dict[str, Any], case: Case, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = ct_dataset(seed=99)
    data = dataset_part(write_part10(ds, tmp_path / "raw.dcm"))
    cmd = store_command(CTImageStorage, ds.SOPInstanceUID)
    with caplog.at_level(logging.INFO, logger="relay.edge"), \
            socket.create_connection((scp.host, scp.port), timeout=ANSWER_TIMEOUT_S) as sock:
        if case.before_association:
            sock.sendall(case.before_association)
        else:
            sock.sendall(associate_rq(calling=RAW_AE, contexts=CONTEXTS))
            kind, _ = read_pdu(sock)
            assert kind == A_ASSOCIATE_AC
            assert case.after_association is not None
            try:
                sock.sendall(case.after_association(cmd, data))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the edge aborted before it had read everything: the answer says so
        parallel, parallel_files = _storescu_in_parallel(scp, tmp_path / "parallel")
        answers = _answers(sock)
        own = [sock.getsockname()[:2]]
    output, _ = parallel.communicate(timeout=DCMTK_TIMEOUT_S)

    assert answers and answers[-1][0] == case.ends_with, [kind for kind, _ in answers]
    peer = "peer={}:{}".format(*own[0])
    ended = [r.getMessage() for r in caplog.records if peer in r.getMessage()
             and (r.levelno >= logging.WARNING or "released" in r.getMessage())]
    assert any(case.why in line for line in ended), ended
    assert wait_until(lambda: not [t for t in scp.server.active_associations
                                   if (t.address[0], t.address[1]) in own], timeout=10)
    assert parallel.returncode == 0, output
    rows = journal_rows(scp.spool.root)
    stored_by_raw = [r for r in rows if r["calling_ae"] == RAW_AE]
    if case.name == "garbage-after-a-stored-instance":
        (stored,) = stored_by_raw  # acknowledged before the garbage, and kept
        assert status_of(answers[0][1][6:]) == StoreStatus.SUCCESS
        assert (scp.spool.root / stored["path"]).read_bytes().endswith(data)
    else:
        assert stored_by_raw == []
    assert {r["sop_uid"] for r in rows if r["calling_ae"] == "PARALLEL"} == {
        _uid(path) for path in parallel_files}
    after = acknowledged(scp.spool.root)
    assert {uid: after[uid] for uid in already_acknowledged} == already_acknowledged
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert scp.server._thread.is_alive()


def _uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)

