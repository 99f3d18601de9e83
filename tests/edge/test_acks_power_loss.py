"""An acknowledgement is on the disk when the page answers: cut the power right after the
303 (tests/powerfs.py keeps only what was fsynced) and it is still there, pending, naming
the technician, with the journal created by this very acknowledgement's first start."""

from __future__ import annotations

from pathlib import Path

from relay.config import Settings
from relay.edge.acks import AckJournal, AckState
from relay.edge.admission import Alarms
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from tests.edge.test_power_loss import mount_disk
from tests.edge.test_status_page_security import DELIVERY, _a_report
from tests.edge.techpage import cached_technician, form_token, logged_in


def test_an_acknowledgement_survives_a_power_cut_right_after_the_page_answered(
    edge_settings: Settings, spool: Spool, tmp_path: Path
) -> None:
    _a_report(edge_settings)
    power = tmp_path / "power"
    with mount_disk(power, "var") as fs:
        acks = AckJournal(fs.mount / "var" / "edge")  # the first start: the journal is new
        page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                          settings=edge_settings, technicians=cached_technician(spool.root), acks=acks)
        page.start()
        try:
            with logged_in(f"http://127.0.0.1:{page.port}") as client:
                token = form_token(client.get("/").text)
                assert client.post(f"/reports/{DELIVERY}/ack", data={"csrf": token}).status_code == 303
                fs.cut_power()
        finally:
            page.stop()
    ack = AckJournal(power / "disk" / "var" / "edge").get(DELIVERY)
    assert ack is not None and (ack.state, ack.username) == (AckState.PENDING, "tech.li")
