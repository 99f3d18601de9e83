"""The OHIF viewer (its prebuilt release from npm) shows a stored CT from the county's
DICOMweb, in Debian's Chromium. OHIF's files and the county's /dicomweb are served on
one origin by the test (Playwright routes), which adds the reader's bearer token the
way a reverse proxy in front of both would."""

from __future__ import annotations

import io
import mimetypes
import os
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Route

from relay.dicom.vocab import Role
from tests.browser import chromium, screenshot_path
from tests.county.test_dicomweb import server, stored, user_token  # noqa: F401 (fixtures)

OHIF_DIST = Path(os.environ.get("RELAY_OHIF_DIST", Path(__file__).resolve().parents[1] / "ohif" / "dist"))
ORIGIN = "http://ohif.test"

APP_CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], showStudyList: true,
  investigationalUseDialog: { option: 'never' },
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'county',
    configuration: {
      friendlyName: 'county', name: 'county',
      qidoRoot: '%(root)s', wadoRoot: '%(root)s', wadoUriRoot: '%(root)s',
      qidoSupportsIncludeField: false, supportsFuzzyMatching: false, supportsWildcard: true,
      imageRendering: 'wadors', thumbnailRendering: 'wadors', enableStudyLazyLoad: true,
      supportsReject: false, staticWado: false, singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true }, omitQuotationForMultipartRequest: true,
    },
  }],
  defaultDataSourceName: 'county',
};
""" % {"root": f"{ORIGIN}/dicomweb"}


def _router(county_url: str, token: str, seen: list[str]):
    def handle(route: Route) -> None:
        path = route.request.url[len(ORIGIN):]
        if path.startswith("/dicomweb"):
            seen.append(path)
            headers = {**route.request.headers, "authorization": f"Bearer {token}"}
            route.fulfill(response=route.fetch(url=county_url + path, headers=headers))
            return
        name = path.split("?", 1)[0].lstrip("/")
        if name == "app-config.js":
            route.fulfill(body=APP_CONFIG, content_type="application/javascript")
            return
        file = OHIF_DIST / name
        if not name or not file.is_file():
            file = OHIF_DIST / "index.html"  # the single-page app's own routes (/viewer, ...)
        route.fulfill(body=file.read_bytes(),
                      content_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream")
    return handle


LARGEST_CANVAS = """() => {
  const all = [...document.querySelectorAll('canvas')].map(c => c.getBoundingClientRect());
  const big = all.sort((a, b) => b.width * b.height - a.width * a.height)[0];
  return big && big.width > 200 ? {x: big.x, y: big.y, width: big.width, height: big.height} : null;
}"""


def test_ohif_shows_a_stored_ct_from_the_county(server, county, samples, stored):  # noqa: F811
    assert (OHIF_DIST / "index.html").is_file(), \
        f"OHIF is not installed at {OHIF_DIST}: `bash tests/ohif/install.sh` (make test runs it)"
    token = user_token(server, county, "reader", Role.RADIOLOGIST)
    ct = [s for s in samples if s["modality"] == "CT"]
    seen: list[str] = []
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.route(f"{ORIGIN}/**", _router(server, token, seen))
        page.goto(f"{ORIGIN}/viewer?StudyInstanceUIDs={ct[0]['study_instance_uid']}")
        page.wait_for_function(LARGEST_CANVAS, timeout=60_000)
        page.wait_for_function("() => document.body.innerText.includes('头颅平扫')", timeout=30_000)
        # The first frame is decoded and drawn some time after the canvas exists (longer on a
        # loaded machine): look again until the skull shows, for at most a minute.
        for _ in range(60):
            box = page.evaluate(LARGEST_CANVAS)
            viewport = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("L"))
            if (viewport > 200).mean() > 0.02:
                break
            page.wait_for_timeout(1000)
        page.screenshot(path=str(screenshot_path("ohif-ct")))
    frames = [p for p in seen if "/frames/" in p]
    assert frames, (seen, errors[:5])  # pixel data came from the county's WADO-RS
    assert (viewport > 200).mean() > 0.02, errors[:5]  # the skull, white at OHIF's window
    assert viewport.std() > 30, errors[:5]
