"""WADO-RS frames (PS3.18 9.4.1.2.4): the pixel data of chosen frames, as stored.

Native (uncompressed) pixel data is sliced per frame and sent as
application/octet-stream; encapsulated frames are sent in their own compressed form
with the transfer syntax named on each part (what OHIF's "wadors" loader decodes).
"""

from __future__ import annotations

import io
from typing import Annotated

import pydicom
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from pydicom.encaps import get_frame

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.dicomweb import multipart
from relay.county.dicomweb.endpoints import selected_instances
from relay.county.errors import BadRequest, NotFound, Unprocessable

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
    pixels = bytes(ds.PixelData)
    size = len(pixels) // count
    return [pixels[(n - 1) * size:n * size] for n in numbers]


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
                    accept: Annotated[str, Header()] = "multipart/related") -> StreamingResponse:
    """The requested frames' pixel data, one part per frame, in the stored transfer syntax."""
    (inst,) = selected_instances(session, principal, study, series, sop)
    frames, syntax, encapsulated = extract_frames(county.store.get(inst.object_key), _frame_numbers(frame_list))
    part_type = f"application/octet-stream; transfer-syntax={syntax}"
    if not encapsulated:
        part_type = "application/octet-stream"
    boundary = multipart.new_boundary()
    return StreamingResponse(multipart.stream_parts(frames, boundary=boundary, part_type=part_type),
                             media_type=multipart.content_type(boundary, "application/octet-stream"))
