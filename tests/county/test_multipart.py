"""multipart/related parsing as RFC 2046 reads it (issue 10, point 13): the CRLF before a
boundary belongs to the delimiter, a boundary inside a part's bytes that is not at a line
start is data, the preamble and epilogue are ignored, and the body streams in pieces."""

from __future__ import annotations

import io

import pytest

from relay.county.dicomweb import multipart
from relay.county.errors import RelayError

CT = "multipart/related; type=\"application/dicom\"; boundary=BOUND"


def body(*payloads: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for p in payloads:
        out += b"--BOUND\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    return out + b"--BOUND--\r\n" + epilogue


def test_a_boundary_inside_the_data_that_is_not_at_a_line_start_is_data():
    payload = b"DICM..--BOUND..more"
    assert multipart.parse_related(body(payload), CT) == [("application/dicom", payload)]


def test_a_payload_ending_in_crlf_keeps_it():
    payloads = [b"ends with a line break\r\n", b"\r\n", b""]
    assert [p for _, p in multipart.parse_related(body(*payloads), CT)] == payloads


def test_a_preamble_and_an_epilogue_are_ignored():
    parts = multipart.parse_related(body(b"one", b"two", preamble=b"This is a preamble\r\n",
                                         epilogue=b"and an epilogue --BOUND\r\n"), CT)
    assert [p for _, p in parts] == [b"one", b"two"]


def test_transport_padding_after_a_boundary_is_allowed():
    raw = b"--BOUND  \t\r\nContent-Type: application/dicom\r\n\r\nx\r\n--BOUND--"
    assert multipart.parse_related(raw, CT) == [("application/dicom", b"x")]


def test_a_body_without_its_closing_boundary_is_refused():
    raw = b"--BOUND\r\nContent-Type: application/dicom\r\n\r\ncut off here"
    with pytest.raises(RelayError) as caught:
        multipart.parse_related(raw, CT)
    assert caught.value.status in (400, 422)


def test_a_body_read_in_small_pieces_gives_the_same_parts():
    payloads = [bytes(range(256)) * 40 + b"--BOUND-not at a line start", b"\r\n--BOUN", b"z" * 70_000]
    raw = body(*payloads)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.src = io.BytesIO(raw)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            piece = self.src.read(min(len(b), 7))
            b[:len(piece)] = piece
            return len(piece)

    got = list(multipart.iter_related(Trickle(), CT, max_part_bytes=1 << 20))
    assert [p for _, p in got] == payloads


def test_a_part_over_the_cap_is_a_413():
    with pytest.raises(RelayError) as caught:
        list(multipart.iter_related(io.BytesIO(body(b"x" * 100)), CT, max_part_bytes=50))
    assert caught.value.status == 413
