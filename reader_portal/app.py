"""Compose the county API with the portal pages: the ASGI app `relay county` serves."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from relay.county.app import create_app as create_county_app
from relay.county.auth.deps import CountyDep, SessionDep
from relay.county.context import County
from relay.county.dicomweb import repository as dicomweb_repository
from relay.county.dicomweb.endpoints import audit_opening, site_scope
from relay.county.errors import NotFound
from relay.county.render.image import CT_PRESETS
from relay.county.worklist import service as worklist_service
from reader_portal import admin, pages
from reader_portal.login import router as login_router
from reader_portal.roster_page import router as roster_page_router
from reader_portal.pages import LangQuery, PageSessionDep, render


def create_app(county: County) -> FastAPI:
    """The county API plus the portal pages under /portal (login with a session cookie)."""
    app = create_county_app(county)
    pages.install(app)
    admin.install(app)
    app.include_router(login_router)
    app.include_router(roster_page_router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/portal/")

    @app.get("/portal/", response_class=HTMLResponse, include_in_schema=False)
    def worklist_page(request: Request, who: PageSessionDep, county: CountyDep, session: SessionDep,
                      lang: LangQuery = None) -> HTMLResponse:
        """The worklist, STAT first; a technician sees only their township's studies. The
        filters live in the query string (bookmarkable); ``refresh`` = seconds between polls."""
        sites, modalities = worklist_service.filter_choices(session=session, principal=who.principal)
        return render(request, "worklist.html", county=county, who=who, lang=lang, active="worklist",
                      sites=sites, modalities=modalities)

    @app.get("/portal/studies/{study_uid}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(study_uid: str, request: Request, who: PageSessionDep, county: CountyDep, session: SessionDep,
                   lang: LangQuery = None) -> HTMLResponse:
        """The reader's study page: series, viewer, priors and the report. The page holds no
        data itself; it reads everything through the JSON API with the session cookie. Its
        opening is audited here, once, with the study's series and instance counts (the
        viewer's metadata and image requests that follow add no rows). A study the caller may
        not see (another township's, for a technician) is a 404, like one that does not exist."""
        if dicomweb_repository.study(session, study_uid, site_scope(who.principal)) is None:
            raise NotFound("no such study")
        audit_opening(county, request, who.principal, session, study_uid, "study page")
        chosen, _, _ = pages.language(request, lang)
        presets = {"CT": [{"key": p.key, "label": p.label(chosen), "center": p.center, "width": p.width}
                          for p in CT_PRESETS]}
        return render(request, "study.html", county=county, who=who, lang=lang, active="",
                      study_uid=study_uid, presets=presets)

    return app
