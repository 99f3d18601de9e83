"""Issue 13, row 13 at full size: the suite's hostile instances plus N random ones (UIDs and
names drawn from path, shell and control characters, 1-300 characters) sent to an edge over
C-STORE (pynetdicom, spool without slots, so every file is named after its UID) and to a
county's ingest API (fresh PostgreSQL, local object folder). Prints, for each side, the
instances sent, refused, stored, files written outside the spool or the store's folder, keys
outside the prefixes, stored instances with a non-UID, and whether the first instance is
intact (tests/security/test_hostile_inputs.py runs the fixed cases in the suite).

    .venv/bin/python -m bench.hostile_fuzz --random 2000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from bench.common import fresh_database
from relay.config import Settings
from relay.county.app import create_app
from relay.county.context import County
from relay.dicom import wire
from relay.dicom.keys import check_uid
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.factories import make_site, sha256
from tests.security.hostile import _raw, cases
from tests.security.test_hostile_inputs import ABORTED, REFUSED_STATUSES, SAFE_KEY, _send_pynetdicom, files_under

ALPHABET = "0123456789....//\\;$()|&`'\"<>*?~ \t\n\r\x00\x1b%{}[]!#=^-_"


def _hostile_text(rng: random.Random) -> str:
    n = rng.choice([1, 2, 5, 20, 64, 65, 100, 300])
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def instances(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    made = [(c.name, c.build()) for c in cases()]
    for i in range(n):
        keyword = rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientName"])
        value = _hostile_text(rng)
        if keyword == "PatientName":  # a name may also hold any character of UTF-8
            value += rng.choice(["张三", "\u202e", "\u200b", "李\u0000四"])
            made.append((f"random-{i}-{keyword}", _raw(SpecificCharacterSet="ISO_IR 192", PatientName=value)))
        else:
            try:
                made.append((f"random-{i}-{keyword}", _raw(**{keyword: value})))
            except (AttributeError, ValueError):  # pydicom cannot write a file meta for it (blank UID)
                continue
    return made


def _valid(uid: str) -> bool:
    try:
        check_uid(uid)
    except ValueError:
        return False
    return True


def edge_side(items: list[tuple[str, bytes]], tmp: Path) -> dict[str, object]:
    settings = Settings(data_dir=tmp / "edge-var", edge_host="127.0.0.1", edge_port=0, edge_ae_title="RELAY_EDGE",
                        county_url="http://127.0.0.1:9", edge_site_token="x", edge_spool_slots=0)
    counts = {"sent": 0, "refused": 0, "stored": 0, "not sendable": 0, "aborted": 0, "odd status": 0}
    aborted: list[str] = []
    with Spool(settings.edge_spool_dir) as spool:
        server = start_scp(settings, spool)
        port = server.server_address[1]
        try:
            first = _raw()
            assert _send_pynetdicom(port, first) == 0
            (good,) = list((spool.root / "objects").rglob("*.dcm"))
            good_bytes = good.read_bytes()
            before = files_under(tmp)
            for name, data in items:
                status = _send_pynetdicom(port, data)
                counts["sent"] += 1
                if status == ABORTED:
                    aborted.append(name)
                key = ("not sendable" if status is None else "aborted" if status == ABORTED else "stored" if status == 0
                       else "refused" if status in REFUSED_STATUSES else "odd status")
                counts[key] += 1
        finally:
            stop_scp(server, grace_s=1.0)
        after = files_under(tmp)
        outside = [p for p in after if p not in before and not p.is_relative_to(spool.root)]
        bad_names = [p for p in after if p.is_relative_to(spool.root / "objects")
                     and not _valid(p.name[:-len(".0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.dcm")])]
        rows = spool._conn.execute("SELECT sop_uid, study_uid, series_uid FROM instances").fetchall()
        invalid = [r for r in rows if not all(_valid(str(u)) for u in r)]
        intact = good.read_bytes() == good_bytes
    if aborted:
        print(f"edge: associations aborted without a response for {aborted[:10]}")
    return {**counts, "files outside the spool": len(outside), "spool files with a non-UID name": len(bad_names),
            "stored with a non-UID": len(invalid), "first instance intact": intact}


def county_side(items: list[tuple[str, bytes]], tmp: Path) -> dict[str, object]:
    counts = {"sent": 0, "refused": 0, "stored": 0, "odd status": 0}
    with fresh_database("relay_bench_hostile") as (url, _dsn):
        county = County(Settings(data_dir=tmp / "county-var", database_url=url))
        try:
            _, token = make_site(county, "township-fuzz")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": wire.DICOM_MEDIA_TYPE}
            with TestClient(create_app(county)) as client:
                first = _raw()
                assert client.post(wire.INGEST_PATH, content=first,
                                   headers={**headers, wire.HEADER_SHA256: sha256(first)}).status_code == 200
                keys_before = {o.key for o in county.store.list("")}
                before = files_under(tmp)
                for _name, data in items:
                    answer = client.post(wire.INGEST_PATH, content=data, headers={**headers, wire.HEADER_SHA256: sha256(data)})
                    counts["sent"] += 1
                    ok_problem = answer.headers.get("content-type", "").startswith("application/problem+json")
                    key = ("stored" if answer.status_code == 200 else
                           "refused" if 400 <= answer.status_code < 500 and ok_problem else "odd status")
                    counts[key] += 1
            keys = {o.key for o in county.store.list("")}
            after = files_under(tmp)
            good_key = next(k for k in keys_before if k.endswith(f"/{sha256(first)}.dcm"))
            intact = county.store.get(good_key) == first
        finally:
            county.close()
    outside = [p for p in after if p not in before and not p.is_relative_to(tmp / "county-var")]
    return {**counts, "files outside the data folder": len(outside),
            "keys outside the prefixes": len([k for k in keys if not SAFE_KEY.match(k)]),
            "first instance intact": intact}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=2000, help="random hostile instances besides the fixed cases")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    items = instances(args.random, args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        edge = edge_side(items, Path(tmp))
        county = county_side(items, Path(tmp))
    for side, result in (("edge C-STORE", edge), ("county ingest API", county)):
        print(f"{side}: " + ", ".join(f"{k} {v}" for k, v in result.items()))
    print(f"{len(items)} instances ({args.random} random, seed {args.seed}); {time.monotonic() - started:.0f} s")
    bad = (edge["files outside the spool"] or edge["stored with a non-UID"] or edge["spool files with a non-UID name"]
           or county["files outside the data folder"] or county["keys outside the prefixes"] or edge["odd status"]
           or county["odd status"] or not edge["first instance intact"] or not county["first instance intact"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
