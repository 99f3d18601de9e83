"""Compose the county API with the portal pages: the ASGI app `relay county` serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from relay.county.app import create_app as create_county_app
from relay.county.context import County
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

    return app
