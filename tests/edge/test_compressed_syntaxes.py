"""Compressed instances go from a modality through the edge to the county unchanged, and
the county renders them (or says visibly that it cannot).

storescu proposes each file's exact syntax (-R and its -x option) to a real edge SCP;
the edge's forwarder uploads the spool to the real county app (uvicorn on PostgreSQL,
RabbitMQ and S3). The county's object must be the edge's bytes (same SHA-256) with the
dataset exactly as sent, and its preview service must produce a JPEG thumbnail or a
rendering failure the worklist shows. That each syntax is spooled as sent, byte for byte
on the wire, is tests/edge/test_interop_matrix.py's.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from PIL import Image
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.dsutils import split_dataset
from sqlalchemy import select

from relay.config import Settings
from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance
from relay.county.previews.service import render_instance
from relay.edge.forward import Forwarder
from relay.edge.spool import Spool
from tests.edge.conftest import RunningScp
from tests.edge.factories import dataset_part
from tests.edge.helpers import journal_rows, wait_until
from tests.edge.syntaxes import make_file, sop_instance_uid
from tests.edge.test_interop_matrix import run
from tests.factories import make_site
from tests.servers import free_port
from tests.county.test_index import index

SENT = {  # syntax -> the storescu option that proposes exactly it
    JPEGBaseline8Bit: "-xy", JPEGLosslessSV1: "-xs", JPEGLSLossless: "-xt",
    JPEG2000Lossless: "-xv", JPEG2000: "-xw", RLELossless: "-xr",
    DeflatedExplicitVRLittleEndian: "-xd",
}
FORWARD_TIMEOUT_S = 120.0


@contextmanager
def http_county(county) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The county app under uvicorn on a free loopback port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(county), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _forward(spool: Spool, settings: Settings) -> None:
    stop = threading.Event()
    forwarder = Forwarder(spool=spool, settings=settings)
    thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        sent = wait_until(lambda: all(r["sent_at"] for r in journal_rows(spool.root)),
                          timeout=FORWARD_TIMEOUT_S)
    finally:
        stop.set()
        spool.wake()
        thread.join(30)
    assert sent, [r["last_error"] for r in journal_rows(spool.root)]


def test_each_compressed_syntax_reaches_the_county_unchanged_and_renders_or_says_why(
    county, scp: RunningScp, edge_settings: Settings, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    files = {syntax: make_file(syntax, tmp_path / "sent") for syntax in SENT}
    for syntax, path in files.items():
        done = run("storescu", "-R", SENT[syntax], "-aec", "RELAY_EDGE", scp.host, str(scp.port), str(path))
        assert done.returncode == 0, done.stderr
    edge_rows = {r["sop_uid"]: r for r in journal_rows(scp.spool.root)}
    assert {edge_rows[sop_instance_uid(p)]["transfer_syntax_uid"] for p in files.values()} == set(SENT)

    _, token = make_site(county, "township-a")
    with http_county(county) as url:
        _forward(scp.spool, edge_settings.model_copy(update={
            "county_url": url, "edge_site_token": token, "edge_site": "township-a"}))

    outcomes: dict[str, str] = {}
    for syntax, path in files.items():
        uid = sop_instance_uid(path)
        with county.sessions() as s:
            held = s.execute(select(Instance).where(Instance.sop_uid == uid)).scalar_one()
        stored = county.store.get(held.object_key)
        assert hashlib.sha256(stored).hexdigest() == held.sha256 == edge_rows[uid]["sha256"]
        sent = dataset_part(path)
        if syntax == DeflatedExplicitVRLittleEndian:  # storescu pads the odd stream (matrix test)
            sent += b"\0" * (len(sent) % 2)
        (tmp_path / "held.dcm").write_bytes(stored)
        assert dataset_part(tmp_path / "held.dcm") == sent, syntax
        assert split_dataset(tmp_path / "held.dcm")[0].TransferSyntaxUID == syntax
        index(county, held.id)
        with session_scope(county.sessions) as s:
            result = render_instance(session=s, store=county.store, instance_id=held.id)
        assert result is not None
        if result.ok:
            thumbnail = Image.open(io.BytesIO(county.store.get(result.thumbnail_key)))
            assert thumbnail.format == "JPEG" and min(thumbnail.size) > 0
            outcomes[syntax] = "thumbnail"
        else:
            assert result.failure_kind and result.failure_reason  # the visible note's source
            outcomes[syntax] = f"cannot render: {result.failure_kind}"
    assert outcomes == {syntax: "thumbnail" for syntax in SENT}, outcomes
