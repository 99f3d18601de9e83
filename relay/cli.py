"""The `relay` command: run the edge, the county API, the workers, or all on one machine."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from relay.config import Settings, load_settings
from relay.logging import setup_logging

log = logging.getLogger("relay.cli")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    return stop


def _county(settings: Settings, *, migrate: bool = True) -> Any:
    from relay.county.context import County
    from relay.county.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade(settings.resolved_database_url)
    return County(settings)


def cmd_edge(settings: Settings, args: argparse.Namespace) -> int:
    from relay.edge.agent import edge_status, run_edge

    if args.edge_command == "status":
        print(json.dumps(edge_status(settings), ensure_ascii=False, indent=2, default=str))
        return 0
    setup_logging(settings.log_level, process="edge")
    run_edge(settings, stop=_stop_on_signals())
    return 0


def cmd_county(settings: Settings, args: argparse.Namespace) -> int:
    if args.county_command == "fsck":
        return cmd_fsck(settings, args)
    import uvicorn

    from reader_portal.app import create_app

    setup_logging(settings.log_level, process="county")
    app = create_app(_county(settings, migrate=not args.no_migrate))
    uvicorn.run(app, host=settings.county_host, port=settings.county_port, log_config=None,
                access_log=False)
    return 0


def cmd_fsck(settings: Settings, args: argparse.Namespace) -> int:
    """Compare the object store with the index (relay.county.fsck); exit 1 unless clean."""
    from datetime import timedelta

    from relay.county.fsck import sweep

    setup_logging(settings.log_level, process="fsck")
    county = _county(settings, migrate=False)
    report = sweep(county.sessions, county.store, repair=args.repair,
                   grace=timedelta(minutes=args.grace_minutes))
    print(f"{report.objects} objects, {report.rows} index rows checked")
    for key in report.orphans:
        done = " (set aside under lost+found/)" if key in report.set_aside else \
            " (claimed by a retry meanwhile: kept)" if key in report.restored else ""
        print(f"orphan object: {key}{done}")
    for sop_uid, site, key in report.missing:
        print(f"MISSING OBJECT: sop {sop_uid} from {site}: {key}", file=sys.stderr)
    if report.orphans and not args.repair:
        print(f"{len(report.orphans)} orphan objects; run with --repair to set them aside")
    print("clean" if report.clean and (args.repair or not report.orphans) else "NOT CLEAN")
    return 0 if report.clean and (args.repair or not report.orphans) else 1


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from relay.county.jobs import QUEUES
    from relay.county.worker import register_tasks, start_audit_checkpoints, worker_argv

    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip()) if args.queues else QUEUES
    try:
        argv = worker_argv(settings, concurrency=args.concurrency, loglevel=settings.log_level, queues=queues)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, process="worker")
    county = _county(settings, migrate=False)
    register_tasks(county.celery, county)
    start_audit_checkpoints(settings, county)
    _publish_events_while_running(settings, county)
    _alert_critical_results_while_running(settings, county)
    _deliver_to_his_while_running(county)
    _fold_metrics_while_running(county)
    county.celery.worker_main(argv)
    return 0


def _publish_events_while_running(settings: Settings, county: Any) -> None:
    """Run the outbox publisher in the worker's main process once its pool is up
    (after the fork, so no child inherits the AMQP connection). Without RabbitMQ
    (embedded defaults) events stay in the outbox for the portal to read."""
    if not (settings.broker_url or "").startswith("amqp"):
        return
    from celery import signals

    from relay.county.events.publisher import EventPublisher

    stop = threading.Event()
    publisher = EventPublisher(settings.broker_url or "", county.sessions,
                               retention_hours=settings.outbox_retention_hours)

    def _start(**_kwargs: Any) -> None:
        threading.Thread(target=publisher.run, args=(stop,), name="events", daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def _alert_critical_results_while_running(settings: Settings, county: Any) -> None:
    """Run the critical-result alert and the assignment rounds in the worker's main process
    once its pool is up. Studies are assigned as they arrive by the ``assign`` queue; the
    rounds stay for reassignment of unopened studies and as the safety net for a message
    lost or refused (a study queued while nobody competent was on duty, a failed enqueue).
    Every worker process runs both (per-queue workers too): alert sends are claimed in the
    database, so each goes out once (relay.county.reports.alerts)."""
    from celery import signals

    from relay.county.reading.assign import run_assignment
    from relay.county.reports.alerts import run_alerts

    stop = threading.Event()

    def _start(**_kwargs: Any) -> None:
        for name, target in (("alerts", run_alerts), ("assignment", run_assignment)):
            threading.Thread(target=target, args=(settings, county.sessions, stop), name=name, daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def _deliver_to_his_while_running(county: Any) -> None:
    """Run the HIS delivery rounds (signed reports as ORU^R01 / DiagnosticReport) in the
    worker's main process once its pool is up, beside the alert rounds. Every worker runs
    them; each message is claimed in the database first (relay.county.his.delivery)."""
    from celery import signals

    from relay.county.his.delivery import run_his

    stop = threading.Event()

    def _start(**_kwargs: Any) -> None:
        threading.Thread(target=run_his, args=(county, stop), name="his", daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def _fold_metrics_while_running(county: Any) -> None:
    """Fold the /metrics counters' pending deltas in the worker's main process once its pool
    is up (a scrape only reads them, so the API can run on a read-only database role)."""
    from celery import signals

    from relay.county.metrics.folding import run_folding

    stop = threading.Event()

    def _start(**_kwargs: Any) -> None:
        threading.Thread(target=run_folding, args=(county.sessions, stop), name="metrics-fold", daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def cmd_mllp(settings: Settings, _args: argparse.Namespace) -> int:
    """The HL7 v2 (MLLP) listener for the HIS's orders and ADT: one process per county."""
    from zoneinfo import ZoneInfo

    from relay.county.orders.mllp import ListenerConfig, parse_bind, serve

    try:
        host, port = parse_bind(settings.his_mllp_bind)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, process="mllp")
    county = _county(settings, migrate=False)
    config = ListenerConfig(sessions=county.sessions, zone=ZoneInfo(settings.timezone),
                            max_frame_bytes=settings.his_mllp_max_frame_bytes,
                            idle_seconds=settings.his_mllp_idle_seconds)
    try:
        serve(config=config, host=host, port=port, stop=_stop_on_signals())
    finally:
        county.close()
    return 0


def cmd_db(settings: Settings, _args: argparse.Namespace) -> int:
    _county(settings, migrate=True)
    print("database is at the latest schema")
    return 0


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    from relay.county.auth import service
    from relay.county.db.engine import session_scope
    from relay.county.errors import RelayError
    from relay.dicom import body_parts
    from relay.dicom.vocab import Role

    if not args.password_stdin:
        print("use --password-stdin: passwords are never taken from the command line", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    county = _county(settings)
    try:
        with session_scope(county.sessions) as session:
            user = service.create_user(session=session, username=args.name, password=password,
                                       role=Role(args.role), site_name=args.site,
                                       display_name=args.display_name or "")
            user.competences, user.on_duty = (args.competences or "").upper(), bool(args.on_duty)
            user.body_regions = body_parts.canonical_list(args.body_regions or "")
            session.commit()
    except RelayError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    _audit_cli(county, "user.create", "user", user.username, f"role={user.role}")
    print(f"created user {user.username} ({user.role})")
    return 0


def cmd_sites(settings: Settings, args: argparse.Namespace) -> int:
    from relay.county.auth import service
    from relay.county.db.engine import session_scope
    from relay.county.errors import RelayError

    county = _county(settings)
    try:
        with session_scope(county.sessions) as session:
            if args.sites_command == "list":
                for site in service.list_sites(session=session):
                    state = f"revoked {site.revoked_at:%Y-%m-%d %H:%M}Z" if site.revoked_at else "active"
                    print(f"{site.name}\t{site.display_name}\t{state}")
                return 0
            if args.sites_command == "revoke":
                site = service.revoke_site(session=session, name=args.name)
                session.commit()
                _audit_cli(county, "site.revoke", "site", site.name)
                print(f"revoked site {site.name}: its edge credential is refused from now on")
                return 0
            site, token = service.create_site(session=session, name=args.name,
                                              display_name=args.display_name or "")
            session.commit()
    except RelayError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    _audit_cli(county, "site.create", "site", site.name)
    print(f"created site {site.name}; put this in the edge's RELAY_EDGE_SITE_TOKEN (shown once):")
    print(token)
    return 0


def _audit_cli(county: Any, action: str, object_type: str, object_id: str, detail: str = "") -> None:
    """Audit a change made from the shell; the actor is the operating-system user."""
    import getpass

    from relay.county.audit.service import Action, Entry, append

    append(county.sessions, Entry(actor=f"cli:{getpass.getuser()}", role="admin", action=Action(action),
                                  object_type=object_type, object_id=object_id, source="cli",
                                  detail=detail))


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Walk the chain and compare it with the signed checkpoints: the database's and the
    checkpoint folder's, or only those of ``--checkpoints FILE`` (e.g. an edge's copy)."""
    from relay.county.audit.checkpoint import load_anchors
    from relay.county.audit.service import verify

    county = _county(settings)
    files = [Path(f) for f in args.checkpoints] if args.checkpoints else None
    with county.sessions() as session:
        anchors = load_anchors(settings=settings, session=session, files=files)
        result = verify(session, anchors=anchors)
    for problem in result.problems[1:] if not result.ok else ():
        print(f"also: {problem}", file=sys.stderr)
    if not result.ok:
        where = f" at event {result.first_bad_id}" if result.first_bad_id is not None else ""
        print(f"AUDIT CHAIN BROKEN{where} (after {result.checked} good events): {result.reason}", file=sys.stderr)
        return 1
    print(f"audit chain intact: {result.checked} events verified")
    if result.checkpoints:
        print(f"anchored: {result.anchored} events match {result.checkpoints} signed checkpoints (newest "
              f"{result.latest_checkpoint_at:%Y-%m-%d %H:%M:%S}Z; from {', '.join(anchors.sources)}); "
              f"{result.checked - result.anchored} newer events are not in a checkpoint yet")
    else:
        print("warning: no signed checkpoint to compare with (the worker writes one every "
              f"{settings.audit_checkpoint_minutes:g} minutes): a cut of the newest events or a recomputed "
              "chain cannot be seen", file=sys.stderr)
    return 0


def cmd_verify_report(settings: Settings, args: argparse.Namespace) -> int:
    """Check a signed report against the county's key set: the signed JSON, or the SR /
    Encapsulated PDF / PDF the township received (their visible parts too). Trusted and
    offline with the exported key set and the pinned fingerprint of the county's key-set
    key; with --county, as trustworthy as that server (and said so)."""
    from relay.county.reports.verification import verify_file
    from relay.dicom.signing import KeySet, SignatureError, open_signed_key_set

    try:
        if args.keys:
            pin = args.pin or settings.county_keyset_pin
            if not pin:
                raise SignatureError("pin the county's key-set fingerprint: --pin FPR or RELAY_COUNTY_KEYSET_PIN "
                                     "(the county prints it with `relay keys fingerprint`; take it once over a "
                                     "channel you trust, not from the key set itself)")
            keys = open_signed_key_set(json.loads(Path(args.keys).read_text(encoding="utf-8")), pin=pin)
        else:
            if args.pin:
                raise SignatureError("--pin checks a key set file (--keys KEYSET); --county trusts the server "
                                     "instead and has no key set signature to check")
            keys = KeySet.from_json_obj(_fetch_keys(args.county))
            print(f"WARNING: this check trusts the keys served by {args.county}: whoever controls that server "
                  "(or the network to it) can vouch for a forged report. For a check that trusts only the "
                  "county's pinned key: relay verify-report FILE --keys KEYSET --pin FPR (relay keys export).",
                  file=sys.stderr)
        verified = verify_file(path=Path(args.file), public_keys=keys)
    except (SignatureError, OSError, ValueError) as exc:
        print(f"REPORT DOES NOT VERIFY: {exc}", file=sys.stderr)
        return 1
    doc, key = verified.report.document, verified.key
    print(f"report verifies ({verified.carrier}): study {doc.get('study_instance_uid')}, revision "
          f"{doc.get('revision')}, signed by {key.owner} ({key.owner_name}) at {doc.get('signed_at')} "
          f"with key {verified.report.key_id}"
          + (f" (key set of {keys.published_at})" if keys.published_at else ""))
    return 0


def _fetch_keys(county_url: str) -> Any:
    import httpx

    try:
        r = httpx.get(f"{county_url.rstrip('/')}/api/signing-keys", timeout=30)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot fetch the published keys from {county_url}: {exc}") from None
    return r.json()


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """The county's key-set key (outside the database) and the signed key set it makes."""
    from relay.county.reports import keyset

    path = settings.resolved_keyset_key_file
    try:
        private, created = keyset.load_or_create(path)
    except (keyset.KeySetKeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if created:
        print(f"made the county's key-set key in {path} (mode 0600): back it up, keep it off the "
              "database host if you can", file=sys.stderr)
    fingerprint = keyset.fingerprint(private)
    if args.keys_command == "fingerprint":
        print(fingerprint)
        return 0
    county = _county(settings)
    with county.sessions() as session:
        document, count = keyset.export(session=session, private=private)
    out = Path(args.out)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _audit_cli(county, "export", "signing_keys", fingerprint, f"{count} keys to {out.name}")
    print(f"wrote {count} signing keys to {out}, signed by the county key-set key {fingerprint}")
    return 0


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from relay.send import dicom_files, send_files

    files = dicom_files([Path(p) for p in args.paths])
    results = send_files(files, host=args.host or settings.edge_host,
                         port=args.port or settings.edge_port,
                         called_ae=args.called_ae or settings.edge_ae_title,
                         calling_ae=args.calling_ae, priority=1 if args.stat else 0)
    failed = [r for r in results if r.status != 0]
    for r in results:
        print(f"{r.path}: {'OK' if r.status == 0 else f'status {r.status!r}'}")
    return 1 if failed else 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from relay.up import run_up

    setup_logging(settings.log_level, process="up")
    return run_up(settings, demo=args.demo, stop=_stop_on_signals())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="edge + county API + worker on this machine (embedded defaults)")
    up.add_argument("--demo", action="store_true", help="create demo logins and send sample_dicom/")
    up.set_defaults(func=cmd_up)
    edge = sub.add_parser("edge", help="run the township edge agent")
    edge.add_argument("edge_command", nargs="?", choices=["run", "status"], default="run")
    edge.set_defaults(func=cmd_edge)
    county = sub.add_parser("county", help="run the county HTTP API and portal; `county fsck`: check the "
                            "object store against the index")
    county.add_argument("county_command", nargs="?", choices=["run", "fsck"], default="run")
    county.add_argument("--no-migrate", action="store_true",
                        help="do not upgrade the schema at start (when several replicas start)")
    county.add_argument("--repair", action="store_true",
                        help="fsck: set orphan objects aside under lost+found/ (their bytes are kept)")
    county.add_argument("--grace-minutes", type=float, default=60.0,
                        help="fsck: objects younger than this may be an ingest between its write and its "
                        "commit and are left alone (default 60)")
    county.set_defaults(func=cmd_county)
    worker = sub.add_parser("worker", help="run a county Celery worker")
    worker.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    worker.add_argument("--queues", default=None,
                        help="queues to serve, comma-separated, so each scales on its own: "
                        "ingest, render, assign, deliver (default: all four)")
    worker.set_defaults(func=cmd_worker)
    mllp = sub.add_parser("mllp", help="run the HL7 v2 (MLLP) listener for the HIS's orders and ADT "
                          "(RELAY_HIS_MLLP_BIND; one process per county)")
    mllp.set_defaults(func=cmd_mllp)
    db = sub.add_parser("db", help="database schema")
    db.add_argument("db_command", choices=["upgrade"])
    db.set_defaults(func=cmd_db)
    users = sub.add_parser("users", help="manage logins")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a login")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["admin", "radiologist", "technician"])
    create.add_argument("--site", help="the township site (required for a technician)")
    create.add_argument("--display-name")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    create.add_argument("--competences", help="a reader's modalities, e.g. CT,DX,ECG (default: all)")
    create.add_argument("--body-regions", help="a reader's body regions as BodyPartExamined names them, "
                        "e.g. HEAD,NECK (default: all)")
    create.add_argument("--on-duty", action="store_true",
                        help="manual on-duty switch: on duty whatever the roster says "
                        "(/portal/roster); without it the duty roster decides")
    create.set_defaults(func=cmd_users)
    sites = sub.add_parser("sites", help="manage township sites")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True)
    screate = sites_sub.add_parser("create", help="register a site and print its edge credential")
    screate.add_argument("name")
    screate.add_argument("--display-name")
    screate.set_defaults(func=cmd_sites)
    srevoke = sites_sub.add_parser("revoke", help="refuse a site's edge credential from now on")
    srevoke.add_argument("name")
    srevoke.set_defaults(func=cmd_sites)
    sites_sub.add_parser("list", help="list sites").set_defaults(func=cmd_sites)
    audit = sub.add_parser("audit", help="the audit trail")
    audit.add_argument("audit_command", choices=["verify"], help="check the hash chain end to end and "
                       "against the signed checkpoints")
    audit.add_argument("--checkpoints", action="append", metavar="FILE",
                       help="check against this checkpoint file instead (e.g. an edge's "
                       "spool/audit-checkpoints.jsonl); may be given more than once")
    audit.set_defaults(func=cmd_audit)
    vr = sub.add_parser("verify-report", help="verify a signed report offline; exit 1 if it does not")
    vr.add_argument("file", help="the signed report: its JSON, or the SR / Encapsulated PDF DICOM file or the PDF")
    source = vr.add_mutually_exclusive_group(required=True)
    source.add_argument("--keys", help="the county's signed key set, from `relay keys export` (offline, trusted "
                        "through --pin)")
    source.add_argument("--county", help="or fetch the keys from this county's API (trusts that server; says so)")
    vr.add_argument("--pin", help="fingerprint of the county's key-set key (`relay keys fingerprint`); "
                    "default RELAY_COUNTY_KEYSET_PIN")
    vr.set_defaults(func=cmd_verify_report)
    keys = sub.add_parser("keys", help="the county's key set of readers' signing keys, signed for townships")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    export = keys_sub.add_parser("export", help="write every signing key with owner, validity and revocation, "
                                 "signed by the county's key-set key")
    export.add_argument("--out", required=True, help="the file to write (give it to the townships)")
    export.set_defaults(func=cmd_keys)
    keys_sub.add_parser("fingerprint", help="print the key-set key's fingerprint, which townships pin once "
                        "(makes the key on first use)").set_defaults(func=cmd_keys)
    send = sub.add_parser("send", help="C-STORE DICOM files or folders to an edge (as a modality)")
    send.add_argument("paths", nargs="+")
    send.add_argument("--host")
    send.add_argument("--port", type=int)
    send.add_argument("--called-ae")
    send.add_argument("--calling-ae", default="RELAY_SEND")
    send.add_argument("--stat", action="store_true", help="send with C-STORE priority HIGH")
    send.set_defaults(func=cmd_send)
    return parser


def no_core_dumps() -> None:
    """A core dump of an edge or county process holds the instances and names in its memory:
    patient data written where nobody looks after it. Every relay process forbids them
    (soft and hard limit 0, so children inherit it); debugging a crash needs the limit
    raised outside, deliberately."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str] | None = None) -> int:
    no_core_dumps()
    args = build_parser().parse_args(argv)
    settings = load_settings()
    started = time.monotonic()
    code: int = args.func(settings, args)
    log.debug("%s finished in %.1fs", args.command, time.monotonic() - started)
    return code
