"""Audit entries for orders and patients the HIS changed (identifiers only, never names)."""

from __future__ import annotations

from relay.county.audit.service import Action, Entry
from relay.county.orders.service import UpsertOutcome, UpsertResult

_ACTIONS = {UpsertOutcome.CREATED: Action.ORDER_CREATE, UpsertOutcome.UPDATED: Action.ORDER_UPDATE,
            UpsertOutcome.CANCELLED: Action.ORDER_CANCEL}


def order_entry(result: UpsertResult, *, actor: str, source: str, detail: str = "") -> Entry | None:
    """The entry for a stored order, or None when nothing changed (a repeated message)."""
    action = _ACTIONS.get(result.outcome)
    if action is None:
        return None
    row = result.row
    text = f"revision={row.revision} accession={row.accession_number}" + (f" {detail}" if detail else "")
    return Entry(actor=actor, role="his", action=action, object_type="order",
                 object_id=f"{row.placer_order_number}^{row.placer_issuer}", source=source, detail=text)


def patient_entry(action: Action, *, patient_pk: int, actor: str, source: str, detail: str) -> Entry:
    """A patient update or merge, named by the county's row number (not the patient ID)."""
    return Entry(actor=actor, role="his", action=action, object_type="patient", object_id=f"patient:{patient_pk}",
                 source=source, detail=detail)
