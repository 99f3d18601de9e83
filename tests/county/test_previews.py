"""Rendering after indexing: thumbnails, ECG numbers, and notes for what cannot render."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select

from relay.county.auth.service import Principal
from relay.county.db.engine import session_scope
from relay.county.db.models import RenderResult
from relay.county.previews.service import render_instance
from relay.county.worklist.service import worklist
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site


def render(county, instance_id):
    with session_scope(county.sessions) as s:
        return render_instance(session=s, store=county.store, instance_id=instance_id)


def test_an_ecg_gets_its_measured_rate_and_a_paper_thumbnail_and_an_image_its_thumbnail(county, samples):
    site_id, _ = make_site(county)
    ecg = next(s for s in samples if s["modality"] == "ECG")
    ct = next(s for s in samples if s["modality"] == "CT")
    ecg_id = ingest(county, Path(ecg["abspath"]).read_bytes(), site_id=site_id)
    ct_id = ingest(county, Path(ct["abspath"]).read_bytes(), site_id=site_id)
    ecg_result = render(county, ecg_id)
    measured = json.loads(ecg_result.ecg_json)
    assert abs(measured["heart_rate_bpm"] - 72) < 2 and measured["device"]["heart_rate_bpm"] == 72
    paper = Image.open(io.BytesIO(county.store.get(ecg_result.thumbnail_key)))
    assert paper.format == "JPEG" and paper.size[0] > paper.size[1]  # landscape, like the paper
    thumb = render(county, ct_id)
    assert thumb.ok and county.store.get(thumb.thumbnail_key)[:2] == b"\xff\xd8"  # a JPEG


def test_rendering_twice_keeps_one_result(county):
    site_id, _ = make_site(county)
    iid = ingest(county, encode(make_dataset()), site_id=site_id)
    render(county, iid)
    render(county, iid)
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(RenderResult)) == 1


def test_a_study_that_cannot_render_still_reaches_the_reader_with_a_note(county):
    site_id, _ = make_site(county)
    iid = ingest(county, encode(make_dataset(Rows=512, Columns=512)), site_id=site_id)
    index(county, iid)
    result = render(county, iid)
    assert not result.ok and result.failure_kind == "truncated"
    reader = Principal(user_id=1, username="r", role=Role.RADIOLOGIST, site_id=None)
    with county.sessions() as s:
        (item,) = worklist(session=s, principal=reader)
    assert item.notes and "cannot render" in item.notes[0]


def test_rendering_dead_lettered_at_its_cap_shows_cannot_render_until_an_admin_retry_renders_it(county):
    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from relay.county.dead_letters import attempts
    from relay.county.jobs import RENDER_TASK
    from relay.county.worker import INDEX_MAX_ATTEMPTS
    from tests.county.test_delivery import run_task
    from tests.county.test_reports import login

    site_id, _ = make_site(county)
    iid = ingest(county, encode(make_dataset()), site_id=site_id)
    index(county, iid)
    with session_scope(county.sessions) as s:  # every attempt so far failed (say, a worker died on it)
        for _ in range(INDEX_MAX_ATTEMPTS):
            attempts.begin(session=s, task=RENDER_TASK, key=str(iid), cap=INDEX_MAX_ATTEMPTS)
    run_task(county, RENDER_TASK, iid)  # one more delivery: past the cap
    reader = Principal(user_id=1, username="r", role=Role.RADIOLOGIST, site_id=None)
    with county.sessions() as s:
        result = s.execute(select(RenderResult)).scalar_one()
        (item,) = worklist(session=s, principal=reader)
    assert (result.ok, result.failure_kind) == (False, "gave_up")
    assert item.notes == [f"无法显示图像 / cannot render: rendering failed {INDEX_MAX_ATTEMPTS} times "
                          "and was stopped; an administrator can retry it"]
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        (dead,) = client.get("/api/dead-letters", headers=admin).json()
        assert client.post(f"/api/dead-letters/{dead['id']}/retry", headers=admin).status_code == 202
    run_task(county, RENDER_TASK, iid)  # the worker takes the re-enqueued task
    with county.sessions() as s:
        result = s.execute(select(RenderResult)).scalar_one()
        (item,) = worklist(session=s, principal=reader)
    assert result.ok and result.thumbnail_key and item.notes == []
