"""WADO-RS frames (PS3.18 9.4.1.2.4): the pixel data of chosen frames, as stored.

Native (uncompressed) pixel data is sliced per frame and sent as
application/octet-stream; encapsulated frames are sent in their own compressed form
with the transfer syntax named on each part (what OHIF's "wadors" loader decodes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pydicom
from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse
from pydicom.encaps import get_frame

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.dicomweb import multipart
from relay.county.dicomweb.endpoints import selected_instances
from relay.county.errors import BadRequest, NotAcceptable, NotFound, Unprocessable

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise BadRequest("frame numbers must be integers separated by commas") from None
    if not numbers or min(numbers) < 1:
        raise BadRequest("frames are numbered from 1")
    return numbers


def _native_frames(ds: pydicom.Dataset, numbers: list[int], count: int) -> list[bytes]:
    """Frames of native pixel data: rows x columns x samples pixels each, from the start
    (the trailing pad byte is no frame's). BitsAllocated=1 frames are packed bits, so a
    frame starts wherever the previous one ended, inside a byte too: each is cut at its bit
    offset and sent packed from bit 0, ceil(pixels / 8) bytes."""
    pixels = bytes(ds.PixelData)
    per_frame = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    if bits == 1:
        unpacked = np.unpackbits(np.frombuffer(pixels, np.uint8), bitorder="little")
        if len(unpacked) < count * per_frame:
            raise Unprocessable("the pixel data is shorter than its frames")
        return [np.packbits(unpacked[(n - 1) * per_frame:n * per_frame], bitorder="little").tobytes()
                for n in numbers]
    size = per_frame * bits // 8
    if len(pixels) < count * size:
        raise Unprocessable("the pixel data is shorter than its frames")
    return [pixels[(n - 1) * size:n * size] for n in numbers]


OCTET = "application/octet-stream"
NATIVE_SYNTAX = "1.2.840.10008.1.2.1"
"""What native frames are sent as: Explicit VR Little Endian (PS3.18 8.7.3.3.2)."""


@dataclass(frozen=True, slots=True)
class _Range:
    media: str
    params: dict[str, str]
    q: float


def _accept_ranges(header: str) -> list[_Range]:
    found = []
    for item in (part for part in header.split(",") if part.strip()):
        media, *raw = (piece.strip() for piece in item.split(";"))
        params = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in raw)}
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        found.append(_Range(media.lower(), params, q))
    return found


def _syntax_fits(wanted: str | None, syntax: str, encapsulated: bool) -> bool:
    if wanted in (None, "", "*"):
        return True
    return wanted == syntax or (not encapsulated and wanted == NATIVE_SYNTAX)


def negotiate(header: str, *, syntax: str, encapsulated: bool, n_frames: int) -> bool:
    """Whether to answer multipart (True) or one bare application/octet-stream body (False),
    from the Accept header; 406 when nothing the caller accepts can be sent (the county
    sends frames as stored: application/octet-stream, never transcoded)."""
    for r in sorted(_accept_ranges(header or "multipart/related"), key=lambda r: -r.q):
        if r.q <= 0 or not _syntax_fits(r.params.get("transfer-syntax"), syntax, encapsulated):
            continue
        if r.media in ("*/*", "multipart/*") or (
                r.media == "multipart/related" and r.params.get("type", OCTET).lower() in (OCTET, "*/*")):
            return True
        if r.media in (OCTET, "application/*") and n_frames == 1:
            return False
    raise NotAcceptable(f"frames are sent as {OCTET} in their stored transfer syntax {syntax} "
                        f"(multipart/related; type=\"{OCTET}\"), which the Accept header does not allow")


def extract_frames(data: bytes, numbers: list[int]) -> tuple[list[bytes], str, bool]:
    """(frame bytes, transfer syntax UID, encapsulated?) of the requested frames."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise Unprocessable("the instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if max(numbers) > count:
        raise NotFound(f"the instance has {count} frames")
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        return _native_frames(ds, numbers, count), str(syntax), False
    return [get_frame(ds.PixelData, n - 1, number_of_frames=count) for n in numbers], str(syntax), True


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}")
def retrieve_frames(study: str, series: str, sop: str, frame_list: str, principal: PrincipalDep,
                    session: SessionDep, county: CountyDep,
                    accept: Annotated[str, Header()] = "multipart/related") -> Response:
    """The requested frames' pixel data, one part per frame, in the stored transfer syntax
    (or, for one frame and ``Accept: application/octet-stream``, the bare bytes)."""
    (inst,) = selected_instances(session, principal, study, series, sop)
    frames, syntax, encapsulated = extract_frames(county.store.get(inst.object_key), _frame_numbers(frame_list))
    if not negotiate(accept, syntax=syntax, encapsulated=encapsulated, n_frames=len(frames)):
        return Response(frames[0], media_type=OCTET if not encapsulated else f"{OCTET}; transfer-syntax={syntax}")
    part_type = f"application/octet-stream; transfer-syntax={syntax}"
    if not encapsulated:
        part_type = "application/octet-stream"
    boundary = multipart.new_boundary()
    return StreamingResponse(multipart.stream_parts(frames, boundary=boundary, part_type=part_type),
                             media_type=multipart.content_type(boundary, "application/octet-stream"))
