"""值班表: the duty roster page. Readers see the week and who is on duty; administrators
add and remove lines; they and the leads (值班组长) see the critical results still waiting
for the township. All data through /api/roster with the session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from relay.county.auth.deps import CountyDep, SessionDep
from relay.county.reading.roster import holds_lead_line
from relay.dicom.vocab import Role
from reader_portal.pages import LangQuery, PageSessionDep, render, require_role

router = APIRouter(include_in_schema=False)
ROSTER_ROLES = (Role.ADMIN, Role.RADIOLOGIST)


@router.get("/portal/roster", response_class=HTMLResponse)
def roster_page(request: Request, who: PageSessionDep, county: CountyDep, session: SessionDep,
                lang: LangQuery = None) -> HTMLResponse:
    """This week's shifts, who is on duty now, and (administrators) adding and removing lines.
    Administrators and readers holding a lead line also see the open critical results."""
    require_role(who, *ROSTER_ROLES)
    admin = who.principal.role is Role.ADMIN
    return render(request, "roster.html", county=county, who=who, lang=lang, active="roster", can_edit=admin,
                  can_see_critical=admin or holds_lead_line(session=session, username=who.principal.username))
