"""One owner for a bundle's upload progress (relay.edge.bundle_progress): the offset
trusted for resuming and the outbox's durable copy for the page move together, and a
failure makes the next resume ask the county."""

from __future__ import annotations

from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.bundle_progress import BundleProgress
from relay.edge.bundle_outbox import BundleOutbox, uploaded_bytes
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, part10_bytes


def _one_bundle(spool: Spool) -> tuple[BundleOutbox, str, int]:
    data = part10_bytes(ct_dataset(seed=1))
    stored = spool.store(data, ids=read_ids(data), priority=Priority.ROUTINE,
                         calling_ae="CT1", peer="127.0.0.1:1")
    outbox = BundleOutbox(spool.root)
    bundle, _ = outbox.build(spool.next_batch(5), priority=Priority.ROUTINE,
                             encoding="identity")
    assert bundle is not None
    return outbox, bundle.bundle_id, stored.entry_id


def test_a_confirmed_offset_is_trusted_and_shown_until_a_failure(spool: Spool) -> None:
    outbox, bundle_id, entry_id = _one_bundle(spool)
    progress = BundleProgress(outbox)
    try:
        assert progress.resume_point(bundle_id) == (None, False)  # announce first
        progress.announced(bundle_id)
        progress.confirmed(bundle_id, 100)
        assert progress.resume_point(bundle_id) == (100, True)
        assert uploaded_bytes(spool.root)[entry_id] > 0  # the page sees the same offset

        progress.doubt(bundle_id)  # a cut: ask the county, no need to announce again
        assert progress.resume_point(bundle_id) == (None, True)
        progress.doubt(bundle_id, unknown=True)  # the county forgot it: announce again
        assert progress.resume_point(bundle_id) == (None, False)

        progress.confirmed(bundle_id, 200)
        progress.forget(bundle_id)
        assert progress.resume_point(bundle_id) == (None, False)
    finally:
        outbox.close()
