"""值班表: the duty roster page. Readers see the week and who is on duty; administrators
add and remove lines. All data through /api/roster with the session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from relay.county.auth.deps import CountyDep
from relay.dicom.vocab import Role
from reader_portal.pages import LangQuery, PageSessionDep, render, require_role

router = APIRouter(include_in_schema=False)
ROSTER_ROLES = (Role.ADMIN, Role.RADIOLOGIST)


@router.get("/portal/roster", response_class=HTMLResponse)
def roster_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """This week's shifts, who is on duty now, and (administrators) adding and removing lines."""
    require_role(who, *ROSTER_ROLES)
    return render(request, "roster.html", county=county, who=who, lang=lang, active="roster",
                  can_edit=who.principal.role is Role.ADMIN)
