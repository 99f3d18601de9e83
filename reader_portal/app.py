"""Compose the county API with the portal pages: the ASGI app `relay county` serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from relay.county.app import create_app as create_county_app
from relay.county.context import County
from relay.county.render.image import CT_PRESETS
from reader_portal.i18n import strings

_templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def create_app(county: County) -> FastAPI:
    """The county API plus the portal pages under /portal."""
    app = create_county_app(county)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/portal/")

    @app.get("/portal/", response_class=HTMLResponse, include_in_schema=False)
    def worklist_page(request: Request, lang: Annotated[str | None, Query()] = None) -> HTMLResponse:
        chosen, t = strings(lang or request.cookies.get("lang"))
        other = "en" if chosen == "zh-CN" else "zh-CN"
        response = _templates.TemplateResponse(
            request, "worklist.html", {"t": t, "lang": chosen, "other_lang": other,
                                       "zone": county.settings.timezone})
        response.set_cookie("lang", chosen, samesite="lax")
        return response

    @app.get("/portal/studies/{study_uid}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(study_uid: str, request: Request,
                   lang: Annotated[str | None, Query()] = None) -> HTMLResponse:
        """The reader's study page: series, viewer, priors and the report. The page holds no
        data itself; it reads everything through the JSON API with the reader's bearer token."""
        chosen, t = strings(lang or request.cookies.get("lang"))
        other = "en" if chosen == "zh-CN" else "zh-CN"
        presets = {"CT": [{"key": p.key, "label": p.label(chosen), "center": p.center, "width": p.width}
                          for p in CT_PRESETS]}
        response = _templates.TemplateResponse(
            request, "study.html", {"t": t, "lang": chosen, "other_lang": other, "study_uid": study_uid,
                                    "presets": presets, "zone": county.settings.timezone})
        response.set_cookie("lang", chosen, samesite="lax")
        return response

    return app
