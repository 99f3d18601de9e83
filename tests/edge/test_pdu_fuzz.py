"""A short, deterministic pass of the edge's upper-layer fuzz (bench/fuzz_pdu.py: the
PDU header check, the PDV walk, the command-set codec, the association loop after
negotiation and the A-ASSOCIATE-RQ answer). Nothing may raise but the codec's declared
errors, nothing may hang, and what the encoder made must decode to the same. The long
run is `python -m bench.fuzz_pdu --minutes 10`."""

from __future__ import annotations

import logging

import pytest

from bench import fuzz_pdu
from bench.fuzz_pdu import DATASET, Findings, check_exchange, check_negotiation, run
from relay.edge import association
from relay.edge.pdu_codec import P_DATA_TF, encode_pdu, encode_pdv

EXAMPLES = 150
"""Examples per target: enough to reach stores and every abort path, small enough for
the suite (the count is fixed; how long it takes is not asserted)."""


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="relay.edge")


def _valid_store() -> bytes:
    command = fuzz_pdu._store_command("1.2.3.4")
    return encode_pdu(P_DATA_TF, encode_pdv(1, 0x03, command) + encode_pdv(1, 0x02, DATASET))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_fuzzed_codec_and_loop_raise_only_their_own_errors_and_never_hang() -> None:
    findings = Findings()
    run(EXAMPLES, random_seed=None, findings=findings, derandomize=True)

    assert findings.examples >= 6 * EXAMPLES
    assert dict(findings.crashes) == {} and dict(findings.hangs) == {}, findings.first
    assert findings.stores > 0  # the loop was driven as far as the store handler


def test_the_harness_reports_an_exception_the_loop_does_not_declare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a vacuous pass: a command decoder that raises ValueError is a crash."""
    def broken(_data: bytes) -> dict[int, bytes]:
        raise ValueError("a decoder bug")

    findings = Findings()
    check_exchange(_valid_store(), 7, findings)
    assert findings.stores == 1 and not findings.crashes
    monkeypatch.setattr(association, "decode_command", broken)
    check_exchange(_valid_store(), 7, findings)
    (key,) = findings.crashes
    assert key.startswith("Association._exchange: ValueError")


# Inputs the long run found (bench/fuzz_pdu.py, seeds 1..5): each was a crash until fixed.
FOUND = {
    # a presentation context item whose abstract syntax sub-item's length swallows its
    # transfer syntax sub-item: pynetdicom's negotiation raised IndexError
    "context-without-transfer-syntax": bytes.fromhex(
        "0001000052454c41595f4544474520202020202046555a5a20207320202020202020202000000000000000"
        "0000000000000000000000000000000000000000000000000000000010000015312e322e3834302e313030"
        "30382e332e312e312e31200000380100000030000030312e322e3834302e31303030382e352e312e342e31"
        "2e312e3240000013312e322e3834302e31303030382e312e322e3150000013510000040000400052000007"
        "312e322e332e34"),
}


@pytest.mark.parametrize("body", list(FOUND.values()), ids=list(FOUND))
def test_an_a_associate_rq_the_fuzz_broke_is_now_aborted_cleanly(body: bytes) -> None:
    findings = Findings()
    check_negotiation(body, findings)
    assert findings.examples == 1 and not findings.crashes and not findings.hangs
