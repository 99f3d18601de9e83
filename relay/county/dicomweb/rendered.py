"""WADO-RS rendered resources (PS3.18 9.5): an instance or frame as PNG/JPEG, and thumbnails.

Rendered on request: a CT frame takes milliseconds. Thumbnails (of an instance, of a
series: its middle instance, of a study: its first series) are the JPEGs the render
task stored, rendered on request only when none is stored. ECG waveform instances render as
standard paper (25 mm/s, 10 mm/mV). A failure is a 422 problem saying why ("cannot
render: truncated pixel data"), never a crash, so the viewer can show that note.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.context import County
from relay.county.db.models import Instance
from relay.county.dicomweb import repository
from relay.county.dicomweb.endpoints import selected_instances, visible_study
from relay.county.errors import BadRequest, NotFound, RelayError
from relay.county.previews.service import thumbnail_of
from relay.county.render import RenderError, render_ecg_png, render_jpeg, render_png
from relay.dicom.sop import is_waveform

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

class CannotRender(RelayError):
    status, title = 422, "Cannot render"


def _window(value: str | None) -> tuple[float, float] | None:
    """``window=center,width`` (PS3.18 8.3.5.1.3 also has a function; linear is assumed)."""
    if not value:
        return None
    try:
        center, width = (float(v) for v in value.split(",")[:2])
    except ValueError:
        raise BadRequest("window must be 'center,width'") from None
    return center, width


def _render(data: bytes, *, sop_class: str, frame: int, window: tuple[float, float] | None,
            accept: str, lang: str) -> tuple[bytes, str]:
    try:
        if is_waveform(sop_class):
            return render_ecg_png(data, lang=lang), "image/png"
        if "jpeg" in accept and "png" not in accept:
            return render_jpeg(data, frame=frame, window=window), "image/jpeg"
        return render_png(data, frame=frame, window=window), "image/png"
    except RenderError as exc:
        raise CannotRender(f"cannot render: {exc}") from exc


async def _respond(county: County, session: object, principal: object, ids: tuple[str, str, str],
                   *, frame: int, window: str | None, accept: str, lang: str) -> Response:
    (inst,) = selected_instances(session, principal, *ids)  # type: ignore[arg-type]
    data = await run_in_threadpool(county.store.get, inst.object_key)
    body, media = await run_in_threadpool(lambda: _render(
        data, sop_class=inst.sop_class_uid, frame=frame, window=_window(window), accept=accept, lang=lang))
    return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
async def rendered_instance(
    study: str, series: str, sop: str, principal: PrincipalDep, session: SessionDep, county: CountyDep,
    window: Annotated[str | None, Query(description="center,width")] = None,
    lang: Annotated[str, Query()] = "zh-CN", accept: Annotated[str, Header()] = "image/png",
) -> Response:
    """The instance's first frame (or an ECG's paper) as PNG, or JPEG if asked."""
    return await _respond(county, session, principal, (study, series, sop), frame=0, window=window,
                          accept=accept, lang=lang)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered")
async def rendered_frame(
    study: str, series: str, sop: str, frame: int, principal: PrincipalDep, session: SessionDep,
    county: CountyDep, window: Annotated[str | None, Query(description="center,width")] = None,
    accept: Annotated[str, Header()] = "image/png",
) -> Response:
    """One frame (numbered from 1, as in DICOMweb) of a multi-frame instance."""
    if frame < 1:
        raise BadRequest("frames are numbered from 1")
    return await _respond(county, session, principal, (study, series, sop), frame=frame - 1,
                          window=window, accept=accept, lang="zh-CN")


def _thumbnail(county: County, session: Session, inst: Instance | None) -> Response:
    if inst is None:
        raise NotFound("the series has no indexed instances")
    try:
        body = thumbnail_of(session=session, store=county.store, instance=inst)
    except RenderError as exc:
        raise CannotRender(f"cannot render: {exc}") from exc
    return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail")
def instance_thumbnail(study: str, series: str, sop: str, principal: PrincipalDep,
                       session: SessionDep, county: CountyDep) -> Response:
    """A small JPEG of the instance (an ECG's paper): the one stored at rendering, else made now."""
    (inst,) = selected_instances(session, principal, study, series, sop)
    return _thumbnail(county, session, inst)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(study: str, series: str, principal: PrincipalDep, session: SessionDep,
                     county: CountyDep) -> Response:
    """The thumbnail of the series' middle instance by InstanceNumber, for series lists."""
    visible_study(session, principal, study)
    return _thumbnail(county, session, repository.middle_instance(session, study_uid=study, series_uid=series))


@router.get("/studies/{study}/thumbnail")
def study_thumbnail(study: str, principal: PrincipalDep, session: SessionDep, county: CountyDep) -> Response:
    """The thumbnail of the study's first series (by SeriesNumber)."""
    found = visible_study(session, principal, study)
    series = repository.first_series_uid(session, found)
    if series is None:
        raise NotFound("the study has no indexed instances")
    return _thumbnail(county, session, repository.middle_instance(session, study_uid=study, series_uid=series))
