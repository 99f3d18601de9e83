"""Study completeness: the forwarder sees a study only once it is quiet (sooner for
STAT) or has waited its maximum; later instances are additions; STAT escalates the
whole study (C-STORE HIGH, a rule, or the technician)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import TwelveLeadECGWaveformStorage  # type: ignore[attr-defined]

from relay.config import Settings
from relay.dicom.header import read_ids
from relay.dicom.vocab import IngestOutcome, Priority
from relay.edge.agent import study_policy
from relay.edge.completeness import StudyPhase, StudyPolicy, parse_stat_rules
from relay.edge.scp import start_scp, stop_scp
from relay.edge.clock import now_utc
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, ecg_dataset, part10_bytes
from tests.edge.helpers import journal_rows

POLICY = StudyPolicy(quiet_s=60.0, stat_quiet_s=5.0, max_wait_s=600.0)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool", policy=POLICY) as opened:
        yield opened


def _store(spool: Spool, study: str, *, priority: Priority = Priority.ROUTINE,
           seed: int = 0) -> int:
    data = part10_bytes(ct_dataset(study_uid=study, seed=seed))
    return spool.store(data, ids=read_ids(data), priority=priority, calling_ae="CT01",
                       peer="127.0.0.1:1").entry_id


def _after(seconds: float) -> datetime:
    return now_utc() + timedelta(seconds=seconds)


def test_a_study_is_not_ready_until_quiet(gated: Spool) -> None:
    study = generate_uid()
    _store(gated, study, seed=1)
    _store(gated, study, seed=2)

    assert gated.next_batch(10) == []
    assert gated.next_batch(10, now=_after(30)) == []
    assert len(gated.next_batch(10, now=_after(61))) == 2


def test_a_stat_study_is_ready_sooner(gated: Spool) -> None:
    routine, stat = generate_uid(), generate_uid()
    _store(gated, routine, seed=1)
    _store(gated, stat, priority=Priority.STAT, seed=2)

    batch = gated.next_batch(10, now=_after(6))
    assert [entry.study_uid for entry in batch] == [stat]


def test_max_wait_caps_the_wait_of_a_study_that_keeps_arriving(tmp_path: Path) -> None:
    policy = StudyPolicy(quiet_s=60.0, stat_quiet_s=5.0, max_wait_s=1.0)
    with Spool(tmp_path / "spool", policy=policy) as spool:
        study = generate_uid()
        _store(spool, study, seed=1)
        _store(spool, study, seed=2)  # still arriving: never quiet for 60 s here

        assert spool.next_batch(10) == []
        assert len(spool.next_batch(10, now=_after(2))) == 2


def test_an_instance_after_the_study_was_forwarded_is_a_late_addition(gated: Spool) -> None:
    study = generate_uid()
    first = _store(gated, study, seed=1)
    [entry] = gated.next_batch(10, now=_after(61))
    assert not entry.late
    gated.mark_sent(first, outcome=IngestOutcome.STORED)

    late_id = _store(gated, study, seed=2)
    [late] = gated.next_batch(10, now=_after(61))

    assert (late.entry_id, late.late) == (late_id, True)
    assert [row["late"] for row in journal_rows(gated.root)] == [0, 1]
    [row] = gated.studies(since=now_utc() - timedelta(hours=1))
    assert (row.instance_count, row.late_count) == (2, 1)


def test_cstore_priority_high_escalates_the_whole_study(gated: Spool) -> None:
    study = generate_uid()
    _store(gated, study, seed=1)
    _store(gated, study, priority=Priority.STAT, seed=2)

    assert {row["priority"] for row in journal_rows(gated.root)} == {"stat"}
    assert len(gated.next_batch(10, now=_after(6))) == 2


def test_the_technician_can_mark_a_study_stat(gated: Spool) -> None:
    study = generate_uid()
    _store(gated, study, seed=1)

    assert gated.mark_study_stat(study)
    assert not gated.mark_study_stat(generate_uid())  # unknown study
    [row] = gated.studies(since=now_utc() - timedelta(hours=1))
    assert (row.priority, row.stat_reason) == (Priority.STAT, "technician")
    assert len(gated.next_batch(10, now=_after(6))) == 1


def test_study_phases_follow_the_instances(gated: Spool) -> None:
    study = generate_uid()
    ids = [_store(gated, study, seed=n) for n in range(4)]
    since = now_utc() - timedelta(hours=1)
    assert gated.studies(since=since)[0].phase is StudyPhase.RECEIVING
    assert gated.studies(since=since, now=_after(61))[0].phase is StudyPhase.WAITING
    gated.mark_sent(ids[0], outcome=IngestOutcome.STORED)
    row = gated.studies(since=since)[0]
    assert (row.phase, row.percent_sent) == (StudyPhase.SENDING, 25)
    for entry_id in ids[1:]:
        gated.mark_sent(entry_id, outcome=IngestOutcome.STORED)
    assert gated.studies(since=since)[0].phase is StudyPhase.AT_COUNTY


def test_a_stat_rule_on_modality_makes_an_ecg_stat(edge_settings: Settings) -> None:
    settings = edge_settings.model_copy(update={
        "edge_stat_rules": "modality=ECG", "edge_study_quiet_s": 60.0})
    with Spool(settings.edge_spool_dir, policy=study_policy(settings)) as spool:
        server = start_scp(settings, spool)
        try:
            ae = AE(ae_title="ECG1")
            ae.add_requested_context(TwelveLeadECGWaveformStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="RELAY_EDGE")
            assert assoc.is_established
            assert assoc.send_c_store(ecg_dataset()).Status == 0
            assoc.release()
        finally:
            stop_scp(server, grace_s=1.0)
        [row] = spool.studies(since=now_utc() - timedelta(hours=1))
    assert (row.priority, row.stat_reason, row.modality) == (
        Priority.STAT, "rule:modality=ECG", "ECG")


def test_stat_rules_are_parsed_and_bad_ones_refused() -> None:
    assert [r.key for r in parse_stat_rules("modality=ECG, ae=er_ct")] == ["modality", "ae"]
    with pytest.raises(ValueError, match="bad rule"):
        parse_stat_rules("tag=foo")
