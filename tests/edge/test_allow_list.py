"""Association control: the calling-AE allow-list with source addresses, and the
limit on concurrent associations. An AE refused by the list gets A-ASSOCIATE-RJ
(permanent, service user, "calling AE title not recognised"); one over the limit
gets a transient rejection (local limit exceeded)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from relay.config import Settings
from relay.edge.admission import AllowList
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.edge.helpers import association_answer

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def port(edge_settings: Settings, spool: Spool) -> Iterator[int]:
    settings = edge_settings.model_copy(
        update={"edge_allowed_aes": "CT01@127.0.0.1, DR01@10.9.9.9, ECG1"})
    server = start_scp(settings, spool)
    try:
        yield int(server.server_address[1])
    finally:
        stop_scp(server, grace_s=1.0)


def _associate(port: int, calling_ae: str) -> Association:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")


def _assert_rejected_calling_ae_not_recognised(answer: bytes) -> None:
    # A-ASSOCIATE-RJ: rejected permanent, service user, calling AE title not recognised
    assert answer[:1] == b"\x03", answer[:1]
    assert (answer[7], answer[8], answer[9]) == (0x01, 0x01, 0x03)


def test_an_unknown_calling_ae_is_rejected(port: int) -> None:
    _assert_rejected_calling_ae_not_recognised(association_answer(port, "UNKNOWN"))


def test_an_allowed_ae_from_its_address_is_accepted(port: int) -> None:
    for title in ("CT01", "ECG1"):  # ECG1: any address
        assoc = _associate(port, title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()


def test_an_allowed_ae_from_the_wrong_address_is_rejected(port: int) -> None:
    _assert_rejected_calling_ae_not_recognised(association_answer(port, "DR01"))


def test_dcmtk_sees_the_rejection(port: int, dcmtk: Dcmtk) -> None:
    done = dcmtk("echoscu", "-aet", "NOBODY", "-aec", "RELAY_EDGE", "127.0.0.1", str(port))
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr


def test_an_empty_allow_list_accepts_anyone() -> None:
    assert AllowList.parse(" ").refusal(calling_ae="ANY", address="1.2.3.4") is None
    with pytest.raises(ValueError):
        AllowList.parse("A_TITLE_LONGER_THAN_16")


def test_associations_beyond_the_limit_are_rejected_as_transient(
    edge_settings: Settings, spool: Spool
) -> None:
    settings = edge_settings.model_copy(update={"edge_max_associations": 1})
    server = start_scp(settings, spool)
    port = int(server.server_address[1])
    try:
        first = _associate(port, "CT01")
        assert first.is_established
        second = association_answer(port, "CT02")
        # A-ASSOCIATE-RJ: rejected transient, service provider (presentation), local limit exceeded
        assert second[:1] == b"\x03" and (second[7], second[8], second[9]) == (0x02, 0x03, 0x02)
        first.release()
    finally:
        stop_scp(server, grace_s=1.0)
