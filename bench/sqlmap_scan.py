"""Issue 13, row 18 at full size: sqlmap on every query parameter of every GET route of the
county app (from its OpenAPI document, plus the QIDO-RS keys), over HTTP on loopback, on a
fresh PostgreSQL database holding a signed study, with an administrator's bearer token;
first the positive control (a throwaway endpoint that pastes its parameter into SQL), which
must come out injectable. Prints one line per parameter and the totals
(tests/security/test_sqlmap.py scans four parameters in the suite).

    .venv/bin/python -m bench.sqlmap_scan --technique BEUT --level 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.common import fresh_database, serve_app
from reader_portal.app import create_app
from relay.config import Settings
from relay.county.context import County
from relay.county.db.models import Instance
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study
from tests.county.test_reports import login
from tests.factories import make_user
from tests.security.sqlmap import Target, scan, targets
from tests.security.test_sqlmap import vulnerable_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--technique", default="BEUT", help="sqlmap --technique (default BEUT)")
    parser.add_argument("--level", type=int, default=2, help="sqlmap --level (default 2)")
    parser.add_argument("--risk", type=int, default=1, help="sqlmap --risk (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per parameter at most")
    args = parser.parse_args()
    options = {"technique": args.technique, "level": args.level, "risk": args.risk, "timeout_s": args.timeout}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, fresh_database("relay_bench_sqlmap") as (url, _dsn):
        county = County(Settings(data_dir=Path(tmp) / "var", database_url=url))
        try:
            make_user(county, "dr.li", Role.RADIOLOGIST)
            with serve_app(vulnerable_app(url)) as base:
                control = scan(base, Target("/users", "name", "/users?name=dr.li"), headers={}, **options)
            print(f"positive control (string-formatted SQL): injectable={control.injectable}", flush=True)
            app = create_app(county)
            with TestClient(app) as client:
                uid = signed_study(client, county)
                headers = login(client, county, "boss", Role.ADMIN)
            with county.sessions() as s:
                instance = s.execute(select(Instance).where(Instance.study_uid == uid)).scalars().first()
            ids = {"study_uid": uid, "study": uid, "series_uid": instance.series_uid, "series": instance.series_uid,
                   "sop": instance.sop_uid, "frame": "1"}
            found = targets(app, ids)
            results = []
            with serve_app(app) as base:
                for target in found:
                    verdict = scan(base, target, headers=headers, **options)
                    results.append(verdict)
                    print(f"{target.path:<70} {target.parameter:<18} baseline {verdict.baseline_status} "
                          f"tested {verdict.tested!s:<5} injectable {verdict.injectable}", flush=True)
        finally:
            county.close()
    injectable = [v for v in results if v.injectable]
    untested = [v for v in results if not v.tested or v.baseline_status != 200]
    print(f"parameters {len(results)} on {len({v.target.path for v in results})} routes: injectable "
          f"{len(injectable)}, not tested or baseline not 200 {len(untested)}; positive control injectable "
          f"{control.injectable}; technique {args.technique} level {args.level} risk {args.risk}; "
          f"{time.monotonic() - started:.0f} s")
    return 0 if control.injectable and not injectable else 1


if __name__ == "__main__":
    sys.exit(main())
