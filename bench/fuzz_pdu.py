"""Property-based fuzz of the edge's DICOM upper layer: the PDU header check, the PDV
item walk and the command-set codec (``relay.edge.pdu_codec``), the association loop
that uses them after negotiation (``Association._exchange``) and the A-ASSOCIATE-RQ
answer (``Association._negotiate``), driven by Hypothesis.

Properties: nothing raises but the codec's declared errors (``Abort``, and ``Closed``
when the input runs out); nothing hangs (each example runs in a thread joined with a
bound, on a bounded input); what the encoder made decodes to the same thing, and a PDV
walk re-encodes to the bytes it read. Findings are collected, not raised, so one run
counts them all. tests/edge/test_pdu_fuzz.py runs a short deterministic pass in the suite.

    .venv/bin/python -m bench.fuzz_pdu [--examples 20000] [--minutes 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import struct
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext

from relay.edge.association import AcceptorPolicy, Association, StoreRequest, _Negotiated
from relay.edge.pdu_codec import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    KNOWN_PDU_TYPES,
    P_DATA_TF,
    Abort,
    Closed,
    decode_command,
    encode_command,
    encode_pdu,
    encode_pdv,
    iter_pdvs,
    pdu_header,
)

HANG_S = 10.0
"""Seconds one example may run before it counts as a hang (each takes well under a
millisecond; the margin is for a loaded machine)."""
MAX_PDU = 1 << 16
"""The maximum PDU of the fuzzed association: small, so generated PDUs also exceed it."""
CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CONTEXTS = {1: ExplicitVRLittleEndian, 3: ImplicitVRLittleEndian}


@dataclass
class Findings:
    """Crashes (an exception that is not the codec's) and hangs, by signature."""

    examples: int = 0
    stores: int = 0
    """C-STOREs the fuzzed association loop completed and handed to its handler (depth)."""
    crashes: Counter[str] = field(default_factory=Counter)
    hangs: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    """Signature -> the first input (hex, cut) and traceback that showed it."""

    def crash(self, target: str, data: bytes, exc: BaseException) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else "?"
        key = f"{target}: {type(exc).__name__} at {where}"
        self.crashes[key] += 1
        self.first.setdefault(key, f"{data[:256].hex()}\n{''.join(traceback.format_exception(exc))}")

    def hang(self, target: str, data: bytes) -> None:
        key = f"{target}: no end within {HANG_S:.0f} s"
        self.hangs[key] += 1
        self.first.setdefault(key, data[:256].hex())


# --- a socket made of bytes --------------------------------------------------------
class FeedSocket:
    """What ``Association`` needs of a socket: reads come from ``data`` in chunks of at
    most ``chunk`` bytes (so PDUs arrive split), writes are kept; the end of ``data`` is
    the peer closing the connection."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.offset, self.chunk = data, 0, max(1, chunk)
        self.sent: list[bytes] = []

    def recv_into(self, view: memoryview, n: int) -> int:
        take = self.data[self.offset:self.offset + min(n, self.chunk)]
        view[:len(take)] = take
        self.offset += len(take)
        return len(take)

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def settimeout(self, _value: float | None) -> None: ...

    def setsockopt(self, *_args: Any) -> None: ...

    def shutdown(self, _how: int) -> None: ...

    def close(self) -> None: ...


class FuzzHost:
    """The server side an association needs (``AssociationHost``), with a store handler
    that checks what it is handed."""

    def __init__(self) -> None:
        self.policy = AcceptorPolicy(abstract_syntaxes=frozenset({CT, VERIFICATION}),
                                     transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                                     max_pdu=MAX_PDU, max_associations=1)
        self.ssl_context = None
        self.supported_contexts: list[PresentationContext] = []
        for abstract in sorted(self.policy.abstract_syntaxes):
            context = PresentationContext()
            context.abstract_syntax = abstract
            context.transfer_syntax = list(self.policy.transfer_syntaxes)
            self.supported_contexts.append(context)
        self.stored = 0

    def handler(self, request: StoreRequest) -> int:
        if hashlib.sha256(request.data).hexdigest() != request.sha256:
            raise AssertionError("the SHA-256 handed to the handler is not that of its bytes")
        if not request.data.startswith(b"\0" * 128 + b"DICM"):
            raise AssertionError("the Part 10 bytes handed to the handler lack their preamble")
        self.stored += 1
        return 0x0000

    def refusal(self, _calling_ae: str, _address: str) -> str | None:
        return None

    def _admit(self, _association: Association) -> bool:
        return True

    def _forget(self, _association: Association) -> None: ...


def _association(data: bytes, chunk: int) -> Association:
    return Association(FuzzHost(), FeedSocket(data, chunk), ("127.0.0.1", 104))  # type: ignore[arg-type]


def _bounded(target: str, data: bytes, findings: Findings, run: Callable[[], None]) -> None:
    """Run one example in a thread; record an undeclared exception or a hang."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            run()
        except (Abort, Closed):
            pass
        except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
            failure.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(HANG_S)
    findings.examples += 1
    if thread.is_alive():
        findings.hang(target, data)
    elif failure:
        findings.crash(target, data, failure[0])


# --- targets -------------------------------------------------------------------------
def check_header(data: bytes, findings: Findings) -> None:
    def run() -> None:
        kind, length = pdu_header(data[:6].ljust(6, b"\0"), MAX_PDU)
        if kind not in KNOWN_PDU_TYPES or length > MAX_PDU:
            raise AssertionError("pdu_header let through what it must refuse")
    _bounded("pdu_header", data, findings, run)


def check_pdvs(body: bytes, findings: Findings) -> None:
    def run() -> None:
        items = list(iter_pdvs(body))
        again = b"".join(encode_pdv(c, m, bytes(f)) for c, m, f in items)
        if again != body:
            raise AssertionError("a PDV walk does not re-encode to the bytes it read")
    _bounded("iter_pdvs", body, findings, run)


def check_command(data: bytes, findings: Findings) -> None:
    def run() -> None:
        fields = decode_command(data)
        if sum(8 + len(v) for v in fields.values()) > len(data):
            raise AssertionError("decoded more bytes than the command set holds")
    _bounded("decode_command", data, findings, run)


def check_command_round_trip(elements: dict[int, bytes], findings: Findings) -> None:
    encoded = encode_command(sorted(elements.items()))

    def run() -> None:
        decoded = decode_command(encoded)
        padded = {k: v + b"\0" * (len(v) % 2) for k, v in elements.items()}
        if decoded.pop(0x0000) != struct.pack("<I", len(encoded) - 12) or decoded != padded:
            raise AssertionError("decode_command(encode_command(x)) != x")
    _bounded("command round trip", encoded, findings, run)


def check_exchange(stream: bytes, chunk: int, findings: Findings) -> None:
    """The association loop after negotiation (contexts 1 and 3 accepted) on ``stream``."""
    association = _association(stream, chunk)
    negotiated = _Negotiated("FUZZ", "RELAY_EDGE", 16384, dict(CONTEXTS))
    _bounded("Association._exchange", stream, findings, lambda: association._exchange(negotiated))
    findings.stores += association.server.stored  # type: ignore[attr-defined]


def check_negotiation(body: bytes, findings: Findings) -> None:
    """``_negotiate`` on an A-ASSOCIATE-RQ body (without its 6-byte header)."""
    association = _association(b"", 1)

    def negotiate() -> None:
        association._negotiate(bytearray(body))
    _bounded("Association._negotiate", body, findings, negotiate)


# --- strategies ----------------------------------------------------------------------
def _even(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) % 2)


def _store_command(sop_instance: str, field_: int = 0x0001, dataset: int = 0x0000) -> bytes:
    return encode_command([(0x0002, _even(CT)), (0x0100, struct.pack("<H", field_)),
                           (0x0110, struct.pack("<H", 1)), (0x0800, struct.pack("<H", dataset)),
                           (0x1000, _even(sop_instance))])


DATASET = b"\x08\x00\x16\x00UI\x1a\x00" + _even(CT).ljust(26, b"\0") + b"\x08\x00\x18\x00UI\x08\x001.2.3.4\0"
_commands = st.one_of(
    st.builds(_store_command, st.sampled_from(["1.2.3.4", "1.2.3.4.5", ""])),
    st.builds(_store_command, st.just("1.2.3"), st.sampled_from([0x0001, 0x0030, 0x0020, 0x8001, 0x0130]),
              st.sampled_from([0x0000, 0x0101, 0x1234])),
    st.binary(max_size=64),
)
_fragments = st.one_of(_commands, st.just(DATASET), st.binary(max_size=256),
                       st.builds(lambda b, i: b[:i], _commands, st.integers(0, 40)))
_controls = st.one_of(st.sampled_from([0x00, 0x01, 0x02, 0x03]), st.integers(0, 255))
_context_ids = st.one_of(st.sampled_from([1, 3]), st.integers(0, 255))


@st.composite
def _pdv(draw: st.DrawFn) -> bytes:
    item = encode_pdv(draw(_context_ids), draw(_controls), draw(_fragments))
    if draw(st.integers(0, 9)) == 0:  # a lying item length
        item = struct.pack(">I", draw(st.integers(0, 1 << 17))) + item[4:]
    return item


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


@st.composite
def _valid_message(draw: st.DrawFn) -> bytes:
    """A well-formed C-STORE (command then dataset) or C-ECHO, in fragments of a drawn
    size, several PDVs to a PDU or one each."""
    context = draw(st.sampled_from([1, 3]))
    if draw(st.booleans()):
        cmd, data = _store_command(draw(st.sampled_from(["1.2.3.4", "1.2.3.4.5"]))), DATASET
    else:
        cmd, data = _store_command("", 0x0030, 0x0101), b""
    size = draw(st.integers(1, 64))
    pdvs = [encode_pdv(context, 0x01 | (2 if n == len(parts) - 1 else 0), piece)
            for parts in [_pieces(cmd, size)] for n, piece in enumerate(parts)]
    if data:
        pdvs += [encode_pdv(context, 2 if n == len(parts) - 1 else 0, piece)
                 for parts in [_pieces(data, size)] for n, piece in enumerate(parts)]
    if draw(st.booleans()):
        return encode_pdu(P_DATA_TF, b"".join(pdvs))
    return b"".join(encode_pdu(P_DATA_TF, pdv) for pdv in pdvs)


@st.composite
def _flipped(draw: st.DrawFn) -> bytes:
    """A well-formed message with a few bytes changed."""
    data = bytearray(draw(_valid_message()))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def _pdu(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 13))
    if choice >= 12:
        return draw(_valid_message())
    if choice >= 10:
        return draw(_flipped())
    if choice <= 5:
        pdu = encode_pdu(P_DATA_TF, b"".join(draw(st.lists(_pdv(), max_size=4))))
    elif choice == 6:
        pdu = encode_pdu(A_RELEASE_RQ, b"\0" * 4)
    elif choice == 7:
        pdu = encode_pdu(A_ABORT, b"\0\0\0\0")
    elif choice == 8:
        pdu = encode_pdu(draw(st.integers(0, 255)), draw(st.binary(max_size=32)))
    else:
        return draw(st.binary(max_size=64))
    if draw(st.integers(0, 9)) == 0:  # a lying PDU length
        pdu = pdu[:2] + struct.pack(">I", draw(st.integers(0, 1 << 18))) + pdu[6:]
    return pdu


STREAMS = st.one_of(
    st.lists(_pdu(), max_size=8).map(b"".join),
    st.tuples(st.lists(_valid_message(), min_size=1, max_size=3), st.lists(_pdu(), max_size=4))
    .map(lambda parts: b"".join(parts[0] + parts[1])),
    st.binary(max_size=512),
)


def _associate_body() -> bytes:
    def item(kind: int, value: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(value)) + value
    header = struct.pack(">HH", 1, 0) + b"RELAY_EDGE".ljust(16) + b"FUZZ".ljust(16) + b"\0" * 32
    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, CT.encode()) + item(0x40, ExplicitVRLittleEndian.encode()))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return header + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user


ASSOCIATE_BODY = _associate_body()


@st.composite
def _mutated_associate(draw: st.DrawFn) -> bytes:
    body = bytearray(ASSOCIATE_BODY)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.integers(0, 2))
        if action == 0 and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == 1:
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del body[at:at + draw(st.integers(1, 8))]
    return bytes(body)


_elements = st.dictionaries(st.integers(1, 0xFFFF), st.binary(max_size=40), max_size=8)


# --- runs ----------------------------------------------------------------------------
def run(examples: int, *, random_seed: int | None, findings: Findings, derandomize: bool = False) -> None:
    """``examples`` Hypothesis examples for each target, findings collected."""
    config = settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                      suppress_health_check=list(HealthCheck), print_blob=False)

    def seeded(test: Callable[..., None]) -> Callable[..., None]:
        wrapped = config(test)
        return seed(random_seed)(wrapped) if random_seed is not None and not derandomize else wrapped

    @seeded
    @given(st.binary(max_size=12))
    def headers(data: bytes) -> None:
        check_header(data, findings)

    @seeded
    @given(st.one_of(st.lists(_pdv(), max_size=6).map(b"".join), st.binary(max_size=300)))
    def pdvs(body: bytes) -> None:
        check_pdvs(body, findings)

    @seeded
    @given(st.one_of(_commands, st.binary(max_size=200)))
    def commands(data: bytes) -> None:
        check_command(data, findings)

    @seeded
    @given(_elements)
    def round_trip(elements: dict[int, bytes]) -> None:
        check_command_round_trip(elements, findings)

    @seeded
    @given(STREAMS, st.sampled_from([1, 2, 5, 64, 1 << 20]))
    def exchange(stream: bytes, chunk: int) -> None:
        check_exchange(stream, chunk, findings)

    @seeded
    @given(_mutated_associate())
    def negotiation(body: bytes) -> None:
        check_negotiation(body, findings)

    for target in (headers, pdvs, commands, round_trip, exchange, negotiation):
        target()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per target per round")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="keep running rounds (new seed each) for this long; 0: one round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the loop logs every abort; the findings are the output
    warnings.simplefilter("ignore")  # pydicom warns about every mangled UID
    findings = Findings()
    started = time.monotonic()
    rounds = 0
    while True:
        run(args.examples, random_seed=args.seed + rounds, findings=findings)
        rounds += 1
        if time.monotonic() - started >= args.minutes * 60:
            break
    minutes = (time.monotonic() - started) / 60
    print(f"fuzz_pdu: {findings.examples} examples in {rounds} rounds, {minutes:.1f} min, "
          f"seeds {args.seed}..{args.seed + rounds - 1}; C-STOREs completed by fuzzed streams: "
          f"{findings.stores}")
    print(f"crashes: {sum(findings.crashes.values())}  hangs: {sum(findings.hangs.values())}")
    for key, count in [*findings.crashes.items(), *findings.hangs.items()]:
        print(f"\n{count} x {key}\n{findings.first[key]}")
    return 1 if findings.crashes or findings.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
