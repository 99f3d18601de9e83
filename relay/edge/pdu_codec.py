"""The DICOM upper layer's bytes, as the edge's acceptor reads and writes them: PDU
and A-ABORT/A-ASSOCIATE-RJ codes (PS3.8), the command set (group 0000, Implicit VR
Little Endian, PS3.7) and the Part 10 file meta the edge prefixes to a received
dataset. Negotiation itself is pynetdicom's (``relay.edge.association``)."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLEMENTATION_UID = str(PYNETDICOM_IMPLEMENTATION_UID).encode()
IMPLEMENTATION_VERSION = str(PYNETDICOM_IMPLEMENTATION_VERSION).encode()

# PDU types (PS3.8 9.3)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
# A-ABORT reasons when the source is the service provider (PS3.8 9.3.8)
ABORT_UNRECOGNIZED_PDU, ABORT_UNEXPECTED_PDU, ABORT_INVALID_PARAMETER = 0x01, 0x02, 0x06
# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason
RJ_PERMANENT, RJ_TRANSIENT = 0x01, 0x02
RJ_SOURCE_USER, RJ_SOURCE_PROVIDER_PRESENTATION = 0x01, 0x03
RJ_USER_CONTEXT_NOT_SUPPORTED = 0x02
RJ_USER_CALLING_AE_NOT_RECOGNIZED = 0x03
RJ_PROVIDER_LOCAL_LIMIT = 0x02
# Presentation context result: acceptance (PS3.8 9.3.3.2)
PC_ACCEPTANCE = 0x00

C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
NO_DATASET = 0x0101
PRIORITY_MEDIUM = 0x0000

MAX_ASSOCIATE_PDU = 1 << 20
"""An A-ASSOCIATE-RQ is a few KB; anything bigger is not one."""
DEFAULT_MAX_PDU = 4 << 20
"""Maximum P-DATA-TF length the edge advertises unless configured (4 MiB): a CT or MR
slice still arrives in one PDU, and an association's read buffer stays bounded."""
DEFAULT_PEER_MAX_PDU = 16384
MAX_COMMAND_SET = 64 << 10
"""Longest command set the edge reassembles (64 KiB): a C-STORE-RQ's is a few hundred
bytes, and without a bound a peer that never sends the last fragment would grow it
until memory runs out."""
"""What the edge sends per PDU to a peer that declares 0 (unlimited) or nothing."""


class Abort(Exception):
    """The association must end with an A-ABORT (the reason is logged)."""

    def __init__(self, message: str, reason: int = ABORT_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason


class Closed(Exception):
    """The peer closed the connection."""


KNOWN_PDU_TYPES = frozenset({A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF,
                             A_RELEASE_RQ, A_RELEASE_RP, A_ABORT})


def encode_pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def pdu_header(header: bytes | bytearray, limit: int) -> tuple[int, int]:
    """Type and length of a PDU from its 6-byte header; raises Abort for an unknown type
    or a length over ``limit`` (checked before any of the body is read)."""
    kind, _, length = struct.unpack(">BBI", header)
    if kind not in KNOWN_PDU_TYPES:
        raise Abort(f"unrecognised PDU type 0x{kind:02x}", ABORT_UNRECOGNIZED_PDU)
    if length > limit:
        raise Abort(f"PDU of {length} bytes exceeds {limit}", ABORT_INVALID_PARAMETER)
    return int(kind), int(length)


def iter_pdvs(body: bytes | bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """(presentation context ID, message control header, fragment) of each PDV item of a
    P-DATA-TF body (PS3.8 9.3.5: one or more items), in order; raises Abort for an empty
    body and, when it is reached, at an item that is truncated or runs past the PDU."""
    view = memoryview(body)
    offset, end = 0, len(body)
    if not end:
        raise Abort("P-DATA-TF without a PDV", ABORT_INVALID_PARAMETER)
    while offset < end:
        if offset + 6 > end:
            raise Abort("truncated PDV", ABORT_INVALID_PARAMETER)
        length = int.from_bytes(view[offset:offset + 4], "big")
        if length < 2 or offset + 4 + length > end:
            raise Abort("PDV longer than its PDU", ABORT_INVALID_PARAMETER)
        yield view[offset + 4], view[offset + 5], view[offset + 6:offset + 4 + length]
        offset += 4 + length


def encode_pdv(context_id: int, control: int, fragment: bytes) -> bytes:
    """One PDV item: item length, presentation context ID, message control header."""
    return struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment


def _even(value: bytes, pad: bytes = b"\0") -> bytes:
    return value + pad if len(value) % 2 else value


def _element(group: int, elem: int, value: bytes) -> bytes:
    value = _even(value)
    return struct.pack("<HHI", group, elem, len(value)) + value


def encode_command(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """A command set (group 0000, Implicit VR LE) with its group length first."""
    body = b"".join(_element(0, elem, value) for elem, value in sorted(elements))
    return _element(0, 0x0000, struct.pack("<I", len(body))) + body


def decode_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements of a command set, by element number; raises Abort if malformed."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise Abort("truncated command set", ABORT_INVALID_PARAMETER)
        group, elem, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group != 0 or offset + length > len(data):
            raise Abort("malformed command set", ABORT_INVALID_PARAMETER)
        out[elem] = bytes(data[offset:offset + length])
        offset += length
    return out


def ascii_text(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace").strip()


def us_value(value: bytes | None, default: int = 0) -> int:
    return int(struct.unpack("<H", value[:2])[0]) if value and len(value) >= 2 else default


def _explicit(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element with a 2-byte length (UL, UI, SH)."""
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def file_meta_prefix(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, "DICM" and file meta, byte for byte what pynetdicom's
    ``encoded_dataset()`` writes through pydicom (a test compares the two); encoded
    here because pydicom's writer is a measurable share of the per-instance cost."""
    body = b"".join((
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
        _explicit(0x0002, 0x0002, b"UI", _even(sop_class_uid.encode())),
        _explicit(0x0002, 0x0003, b"UI", _even(sop_instance_uid.encode())),
        _explicit(0x0002, 0x0010, b"UI", _even(transfer_syntax.encode())),
        _explicit(0x0002, 0x0012, b"UI", _even(IMPLEMENTATION_UID)),
        _explicit(0x0002, 0x0013, b"SH", _even(IMPLEMENTATION_VERSION, b" ")),
    ))
    group_length = _explicit(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\0" * 128 + b"DICM" + group_length + body
