"""A day of a township: 120 orders (申请单) and their studies through the real ingest and index
path, and how the county matched them.

Real servers, as in production: PostgreSQL (a fresh database of this run, dropped at the
end), RabbitMQ (a queue prefix of this run, deleted at the end), SeaweedFS's S3 gateway
(started here). The county app under uvicorn takes every instance over HTTP on
``POST /api/ingest/instances`` with the township's credential; a ``python -m relay worker``
process indexes them from RabbitMQ, which is where the matching runs (the hook the worker
binds). Orders are stored with ``relay.county.orders.service.upsert_order`` with the county's
time zone, as the HL7, FHIR and registration ways in call it.

The day (seeded, reproducible): 120 orders of one township, Chinese names, pinyin in 70 % of
them, DX/CR/CT/US/ECG; one study per order, of which

- most carry the MWL's Accession Number and identity (GB18030 names),
- 12 were typed at the modality without the MWL (no Accession Number: patient + modality + date),
- 12 orders arrive after their study (registered late),
- 12 (10 %) have an identity problem: 4 typos in the Chinese name (1 typed by hand), 2 typed
  by hand with another ordered patient's ID (same modality, same day), 6 pinyin-only names
  (``WANG^XIAOMING``; 3 orders with pinyin, 3 without),

plus 6 studies (5 %) without an order: emergencies without an ID, the township's own IDs,
and an extra exam of an ordered patient in another modality the same day.

"wrong" counts a study linked to an order that is not its own, a study linked although its
identity differs from the order's (a typo merged), or a study without an order linked to
one: it must be 0.

    PYTHONPATH=$PWD .venv/bin/python -m bench.orders_day [--seed 20261208] [--orders 120]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from bench.common import REPO, fresh_database, serve_app
from relay.config import Settings
from relay.county.auth import service as auth
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance, Order as OrderRow, Study
from relay.county.orders.service import upsert_order
from relay.dicom import wire
from relay.dicom.orders import Order
from reader_portal.app import create_app

AMQP_URL = os.environ.get("RELAY_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_ID = uuid.uuid4().hex[:8]
ZONE = ZoneInfo("Asia/Shanghai")
DAY = "20261208"
SITE = "township-qingshan"
INDEX_DEADLINE_S = 600.0
"""Longest wait for the worker to index the day; a bound, not a target."""
SURNAMES = [("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
            ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"), ("徐", "Xu"), ("孙", "Sun")]
GIVEN = [("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("强", "Qiang"),
         ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"), ("勇", "Yong"), ("艳", "Yan"), ("杰", "Jie"),
         ("明", "Ming"), ("超", "Chao"), ("霞", "Xia"), ("平", "Ping"), ("刚", "Gang"), ("华", "Hua"),
         ("红", "Hong"), ("秀", "Xiu"), ("兰", "Lan"), ("英", "Ying"), ("建", "Jian"), ("国", "Guo")]
MODALITIES = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1",
              "CT": "1.2.840.10008.5.1.4.1.1.2", "US": "1.2.840.10008.5.1.4.1.1.6.1",
              "ECG": "1.2.840.10008.5.1.4.1.1.9.1.1"}
PROCEDURES = {"DX": "胸部正位", "CR": "腰椎正侧位", "CT": "头颅CT平扫", "US": "腹部彩超", "ECG": "常规十二导联心电图"}


@dataclass
class Case:
    kind: str
    """Row of the table the study is counted in."""
    order: Order | None
    """Its true order (None: a study without one)."""
    dataset: Dataset
    identity_differs: bool = False
    """The DICOM identity differs from the order's (a typo): linking it would merge two identities."""
    late: bool = False


def _person(rng: random.Random) -> tuple[str, str]:
    (sur, sur_py), given = rng.choice(SURNAMES), rng.sample(GIVEN, rng.choice((1, 2)))
    return f"{sur}^{''.join(g for g, _ in given)}", f"{sur_py}^{''.join(p for _, p in given)}"


def _dataset(*, name: str, pid: str, sex: str, birth: str, accession: str, modality: str, charset: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = MODALITIES[modality], generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = name, pid, sex, birth
    ds.AccessionNumber, ds.Modality, ds.StudyDate, ds.StudyTime = accession, modality, DAY, "093000"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


def _typo(name: str, rng: random.Random) -> str:
    sur, given = name.split("^")
    wrong = rng.choice([g for g, _ in GIVEN if g not in given])
    return f"{sur}^{given[:-1]}{wrong}"


def the_day(rng: random.Random, n_orders: int) -> list[Case]:
    """The orders and studies of one day (see the module docstring)."""
    cases: list[Case] = []
    kinds = (["typo"] * 3 + ["typo, typed by hand"] * 1 + [ANOTHER_ID] * 2 + ["pinyin only, order has pinyin"] * 3
             + ["pinyin only, order without pinyin"] * 3 + ["typed by hand (no MWL)"] * 12
             + ["order after the study"] * 12)
    kinds += ["MWL (accession)"] * (n_orders - len(kinds))
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        name, pinyin = _person(rng)
        modality = rng.choices(list(MODALITIES), weights=[30, 10, 20, 20, 20])[0]
        has_pinyin = kind == "pinyin only, order has pinyin" or (
            kind != "pinyin only, order without pinyin" and rng.random() < 0.7)
        order = Order(placer_order_number=f"ZY{DAY}{i:04d}", placer_issuer="HIS.QS", accession_number=f"QS{i:05d}",
                      site=SITE, patient_id=f"QS{100000 + i}", patient_id_issuer="HIS.QS", patient_name=name,
                      patient_name_pinyin=pinyin if has_pinyin else "", patient_sex=rng.choice("MF"),
                      patient_birth_date=f"{rng.randint(1935, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                      modality=modality, procedure_description=PROCEDURES[modality],
                      scheduled_at=f"2026-12-08T{8 + i % 9:02d}:{i % 60:02d}:00+08:00")
        by_hand = "by hand" in kind
        shown, charset, differs = name, "GB18030", False
        if kind.startswith("typo"):
            shown, differs = _typo(name, rng), True
        elif kind.startswith("pinyin only"):
            shown, charset = pinyin.upper(), "ISO_IR 100"
        ds = _dataset(name=shown, pid=order.patient_id, sex=order.patient_sex, birth=order.patient_birth_date,
                      accession="" if by_hand else order.accession_number, modality=modality, charset=charset)
        cases.append(Case(kind, order, ds, identity_differs=differs, late=kind == "order after the study"))
    _borrow_ids(cases)
    return cases + _without_orders(rng, cases, max(1, round(n_orders * 0.05)))


ANOTHER_ID = "another patient's ID, typed by hand"


def _borrow_ids(cases: list[Case]) -> None:
    """The technician typed another patient's ID (one with an order of the same modality today)
    and no Accession Number: patient + modality + date finds that patient's order."""
    donors = iter([c for c in cases if c.kind == "MWL (accession)" and c.order is not None])
    for case in (c for c in cases if c.kind == ANOTHER_ID):
        donor, own = next(donors).order, case.order
        assert donor is not None and own is not None
        own.modality, own.procedure_description = donor.modality, donor.procedure_description
        case.dataset = _dataset(name=own.patient_name, pid=donor.patient_id, sex=own.patient_sex,
                                birth=own.patient_birth_date, accession="", modality=donor.modality,
                                charset="GB18030")
        case.identity_differs = True


def _without_orders(rng: random.Random, cases: list[Case], n: int) -> list[Case]:
    """Emergencies without an ID, the township's own IDs, and an extra exam (another modality)
    of a patient who has an order today."""
    out = []
    for j in range(n):
        if j % 3 == 0:
            ds = _dataset(name="急诊^患者", pid="", sex="", birth="", accession="", modality="CT", charset="GB18030")
        elif j % 3 == 1:
            name, _ = _person(rng)
            ds = _dataset(name=name, pid=f"LOCAL{j:03d}", sex="M", birth="19700101", accession="", modality="DX",
                          charset="GB18030")
        else:
            other = next(c.order for c in cases if c.order is not None and c.order.modality != "ECG"
                         and c.kind == "MWL (accession)")
            assert other is not None
            ds = _dataset(name=other.patient_name, pid=other.patient_id, sex=other.patient_sex,
                          birth=other.patient_birth_date, accession="", modality="ECG", charset="GB18030")
        out.append(Case("no order (emergency, own ID, extra exam)", None, ds))
    return out


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _post(http: httpx.Client, data: bytes) -> None:
    http.post(wire.INGEST_PATH, content=data, headers={wire.HEADER_SHA256: hashlib.sha256(data).hexdigest(),
                                                       "Content-Type": wire.DICOM_MEDIA_TYPE}).raise_for_status()


@contextmanager
def worker(settings: Settings, tmp: Path) -> Iterator[Path]:
    """``python -m relay worker --concurrency 2`` on this run's database, queues and bucket."""
    log_path = tmp / "worker.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    environ |= {"RELAY_DATABASE_URL": settings.database_url or "", "RELAY_BROKER_URL": settings.broker_url or "",
                "RELAY_STORE_URL": settings.store_url or "", "RELAY_QUEUE_PREFIX": settings.queue_prefix,
                "RELAY_DATA_DIR": str(tmp / "worker-var"), "RELAY_LOG_LEVEL": "WARNING",
                "RELAY_TIMEZONE": "Asia/Shanghai"}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "relay", "worker", "--concurrency", "2"], cwd=REPO,
                                env=environ, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield log_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the worker started here
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_indexed(county: County, want: int, log_path: Path) -> None:
    deadline = time.monotonic() + INDEX_DEADLINE_S
    while time.monotonic() < deadline:
        with county.sessions() as s:
            done = s.execute(select(func.count(Instance.id)).where(Instance.indexed_at.is_not(None))).scalar_one()
        if done >= want:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{want} instances not indexed in {INDEX_DEADLINE_S:.0f} s; worker log:\n"
                       f"{log_path.read_text(errors='replace')[-3000:]}")


def _place(county: County, orders: list[Order]) -> None:
    with session_scope(county.sessions) as s:
        for o in orders:
            upsert_order(s, o, zone=ZONE)
            s.commit()


def _outcome(case: Case, study: Study, linked: str | None) -> str:
    """matched / noted / flagged / unmatched / wrong for one study."""
    mine = case.order.placer_order_number if case.order else None
    if study.order_match in ("accession", "uid", "demographics", "manual"):
        if linked != mine or case.identity_differs:
            return "wrong"
        return "noted" if study.order_conflict else "matched"
    if study.order_match == "conflict":
        return "flagged"
    return "unmatched"


def run(args: argparse.Namespace) -> tuple[dict[str, Counter[str]], float, float]:
    from tests.servers import start_seaweedfs

    rng = random.Random(args.seed)
    cases = the_day(rng, args.orders)
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp_s, fresh_database("relay_orders") as (url, _):
        tmp = Path(tmp_s)
        seaweed = start_seaweedfs(tmp / "seaweedfs")
        settings = Settings(data_dir=tmp / "var", database_url=url, broker_url=AMQP_URL, store_url=seaweed.s3_url,
                            queue_prefix=f"relayorders{RUN_ID}", log_level="WARNING", timezone="Asia/Shanghai")
        county = County(settings)
        try:
            with session_scope(county.sessions) as s:
                _, token = auth.create_site(session=s, name=SITE, display_name="青山镇卫生院")
                s.commit()
            _place(county, [c.order for c in cases if c.order is not None and not c.late])
            with serve_app(create_app(county)) as base, worker(settings, tmp) as log_path, \
                    httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                warm = _bytes(_dataset(name="预热^实例", pid="", sex="", birth="", accession="", modality="DX",
                                       charset="GB18030"))
                _post(http, warm)  # the worker is up and consuming before the clock starts
                _wait_indexed(county, 1, log_path)
                t0 = time.perf_counter()
                for case in cases:
                    _post(http, _bytes(case.dataset))
                uploaded = time.perf_counter() - t0
                _wait_indexed(county, len(cases) + 1, log_path)
                _place(county, [c.order for c in cases if c.order is not None and c.late])
                elapsed = time.perf_counter() - t0
            return _tally(county, cases), elapsed, uploaded
        finally:
            county.close()
            _delete_queues(settings)
            seaweed.stop()


def _tally(county: County, cases: list[Case]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = {}
    with county.sessions() as s:
        placer = dict(s.execute(select(OrderRow.id, OrderRow.placer_order_number)).all())
        for case in cases:
            study = s.execute(select(Study).where(Study.study_uid == str(case.dataset.StudyInstanceUID))).scalar_one()
            linked = placer.get(study.order_pk) if study.order_pk is not None else None
            table.setdefault(case.kind, Counter())[_outcome(case, study, linked)] += 1
    return table


def _delete_queues(settings: Settings) -> None:
    import pika

    from relay.county.jobs import QUEUES, queue_name

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        for kind in QUEUES:
            ch = conn.channel()
            try:
                ch.queue_delete(queue_name(settings, kind))
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        conn.close()


COLUMNS = [("matched", "matched automatically"), ("noted", "linked, with a note"), ("flagged", "flagged (conflict)"),
           ("unmatched", "unmatched"), ("wrong", "wrong")]


ROWS = ["MWL (accession)", "typed by hand (no MWL)", "order after the study", "pinyin only, order has pinyin",
        "pinyin only, order without pinyin", "typo", "typo, typed by hand", ANOTHER_ID,
        "no order (emergency, own ID, extra exam)"]


def report(table: dict[str, Counter[str]], elapsed: float, uploaded: float) -> None:
    print(f"\n$ {' '.join(['python', '-m', 'bench.orders_day', *sys.argv[1:]])}")
    head = ["studies", *[label for _, label in COLUMNS]]
    print(f"\n| case | {' | '.join(head)} |\n| --- |{' ---: |' * len(head)}")
    total: Counter[str] = Counter()
    for kind in sorted(table, key=ROWS.index):
        counts = table[kind]
        total.update(counts)
        print(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts[k]) for k, _ in COLUMNS) + " |")
    print(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[k]}**" for k, _ in COLUMNS) + " |")
    print(f"\n{sum(total.values())} instances POSTed one after another in {uploaded:.1f} s; all indexed (and "
          f"matched) by `relay worker --concurrency 2`, late orders placed: {elapsed:.1f} s after the first upload")
    if total["wrong"]:
        raise SystemExit(f"{total['wrong']} studies linked wrongly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261208)
    parser.add_argument("--orders", type=int, default=120)
    args = parser.parse_args()
    report(*run(args))


if __name__ == "__main__":
    main()
