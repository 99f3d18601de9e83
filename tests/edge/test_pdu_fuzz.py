"""A short, deterministic pass of the edge's upper-layer fuzz (bench/fuzz_pdu.py: the
PDU header check, the PDV walk, the command-set codec, the association loop after
negotiation and the A-ASSOCIATE-RQ answer). Nothing may raise but the codec's declared
errors, nothing may hang, and what the encoder made must decode to the same. The long
run is `python -m bench.fuzz_pdu --minutes 10`."""

from __future__ import annotations

import logging

import pytest

from bench import fuzz_pdu
from bench.fuzz_pdu import DATASET, Findings, check_exchange, run
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
