"""The portal's pages carry no inline code: every script is a file under
reader_portal/static (linted by `make lint-js`) or a JSON data block, and no element has an
on* handler attribute, so the pages work under a CSP without 'unsafe-inline'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[1] / "reader_portal" / "templates"
STATIC = TEMPLATES.with_name("static")
SCRIPT = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_a_template_loads_scripts_from_static_and_passes_data_as_json(template):
    html = re.sub(r"\{#.*?#\}", "", (TEMPLATES / template).read_text(encoding="utf-8"), flags=re.DOTALL)
    for attrs in SCRIPT.findall(html):
        src = re.search(r'src="/portal/static/([\w.]+)"', attrs)
        if src:
            assert (STATIC / src.group(1)).is_file(), (template, src.group(1))
        else:
            assert 'type="application/json"' in attrs, (template, attrs)
    assert not re.search(r"<[^>]+\son[a-z]+=", html), template
