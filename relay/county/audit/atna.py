"""The audit trail as DICOM audit messages (IHE ATNA; DICOM PS3.15 Annex A.5).

Each audit row becomes one ``AuditMessage`` of the A.5.1 schema: EventIdentification
(an EventID from the DCM coding scheme, the action code, time and outcome), the person
or edge who acted (ActiveParticipant, with their address), the relay as the audit
source (AuditSourceIdentification) and, when the row names one, the object acted on
(ParticipantObjectIdentification: a study by its Study Instance UID, a user, a site,
an export). Codes are those of PS3.15 A.5.3 and PS3.16 CID 400-405; an action this
module does not know is still exported, as Application Activity with the action's name
under the private coding scheme ``99RELAY``, so nothing recorded is left out.

Only what the row holds goes out: identifiers, never patient names (the audit rows
carry none).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC

from relay.county.db.models import AuditEvent

AUDIT_SOURCE_ID = "county-relay"
"""AuditSourceID of every message: the county relay (all replicas write one chain)."""
PRIVATE = "99RELAY"
"""Coding scheme designator of this product's private codes (PS3.16 8.2: 99 prefix)."""


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    scheme: str
    meaning: str


def dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


def rfc3881(code: str, meaning: str) -> Code:
    return Code(code, "RFC-3881", meaning)


USER_AUTHENTICATION = dcm("110114", "User Authentication")
DICOM_INSTANCES_ACCESSED = dcm("110103", "DICOM Instances Accessed")
PATIENT_RECORD = dcm("110110", "Patient Record")
SECURITY_ALERT = dcm("110113", "Security Alert")
EXPORT = dcm("110106", "Export")
APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
LOGIN = dcm("110122", "Login")
USER_SECURITY_ATTRIBUTES_CHANGED = dcm("110137", "User security attributes changed")
NODE_AUTHENTICATION = dcm("110126", "Node Authentication")
SOURCE_ROLE = dcm("110153", "Source Role ID")
DESTINATION_ROLE = dcm("110152", "Destination Role ID")
APPLICATION_ROLE = dcm("110150", "Application")


@dataclass(frozen=True, slots=True)
class EventKind:
    event_id: Code
    action_code: str
    """EventActionCode: C(reate), R(ead), U(pdate), D(elete), E(xecute)."""
    event_type: Code | None = None


EVENTS: dict[str, EventKind] = {
    "login": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "login.failed": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "study.retrieve": EventKind(DICOM_INSTANCES_ACCESSED, "R"),
    "study.open": EventKind(DICOM_INSTANCES_ACCESSED, "R"),
    "study.claim": EventKind(DICOM_INSTANCES_ACCESSED, "U"),
    "study.release": EventKind(DICOM_INSTANCES_ACCESSED, "U"),
    "user.create": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "user.update": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "site.create": EventKind(SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "site.revoke": EventKind(SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "export": EventKind(EXPORT, "R"),
    "signing_key.create": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "signing_key.revoke": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "site.technicians": EventKind(EXPORT, "R"),
}
"""Our actions (relay.county.audit.service.Action) -> their ATNA event. Report drafts,
signatures and addenda (``report.*``) are Patient Record events, created or updated."""

OUTCOMES = {"success": "0", "failure": "4", "denied": "4", "error": "8"}
"""EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure, 12 major failure."""


def event_kind(action: str) -> EventKind:
    if action in EVENTS:
        return EVENTS[action]
    if action.startswith("report."):
        return EventKind(PATIENT_RECORD, "C" if action.endswith(("draft", "create", "addendum")) else "U")
    return EventKind(APPLICATION_ACTIVITY, "E", Code(action, PRIVATE, action))


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme,
                                       "originalText": code.meaning})


def _participant_object(event: AuditEvent) -> tuple[dict[str, str], Code] | None:
    """(attributes, ParticipantObjectIDTypeCode) of what the row acted on, if it names something."""
    kind, ident = event.object_type, event.object_id
    if kind == "study" and ident:
        return {"ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"}, dcm("110180", "Study Instance UID")
    if kind == "user" and ident:
        return {"ParticipantObjectTypeCode": "1", "ParticipantObjectTypeCodeRole": "6"}, rfc3881("11", "User Identifier")
    if kind == "site" and ident:
        return {"ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "13"}, dcm("113877", "Device Name")
    if event.action == "export" or kind:
        return ({"ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "13" if kind == "audit" else "3"},
                Code(kind or "object", PRIVATE, kind or "object"))
    return None


def audit_message(event: AuditEvent, *, enterprise_site: str = "") -> ET.Element:
    """One audit row as a PS3.15 A.5.1 AuditMessage element."""
    kind = event_kind(event.action)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": kind.action_code,
        "EventDateTime": event.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "EventOutcomeIndicator": OUTCOMES.get(event.outcome, "4"),
    })
    _coded(ident, "EventID", kind.event_id)
    if kind.event_type is not None:
        _coded(ident, "EventTypeCode", kind.event_type)
    user = {"UserID": event.actor or "unknown", "UserIsRequestor": "true"}
    if event.role:
        user["AlternativeUserID"] = event.role
    if event.source and event.source != "cli":
        user.update(NetworkAccessPointID=event.source, NetworkAccessPointTypeCode="2")
    person = ET.SubElement(root, "ActiveParticipant", user)
    if kind.event_id == EXPORT:
        _coded(person, "RoleIDCode", DESTINATION_ROLE)
        relay = ET.SubElement(root, "ActiveParticipant", {"UserID": AUDIT_SOURCE_ID, "UserIsRequestor": "false"})
        _coded(relay, "RoleIDCode", SOURCE_ROLE)
    source = {"AuditSourceID": AUDIT_SOURCE_ID}
    if enterprise_site:
        source["AuditEnterpriseSiteID"] = enterprise_site
    ET.SubElement(ET.SubElement(root, "AuditSourceIdentification", source), "AuditSourceTypeCode",
                  {"csd-code": "4", "codeSystemName": "DCM", "originalText": "Application Server process"})
    obj = _participant_object(event)
    if obj is not None:
        attrs, id_type = obj
        element = ET.SubElement(root, "ParticipantObjectIdentification",
                                {"ParticipantObjectID": event.object_id or event.object_type, **attrs})
        _coded(element, "ParticipantObjectIDTypeCode", id_type)
        if event.detail:
            ET.SubElement(element, "ParticipantObjectDetail",
                          {"type": "detail", "value": base64.b64encode(event.detail.encode()).decode()})
        ET.SubElement(element, "ParticipantObjectDetail",
                      {"type": "relay-audit-hash", "value": base64.b64encode(event.hash.encode()).decode()})
    return root


def to_xml(event: AuditEvent, *, enterprise_site: str = "") -> str:
    return ET.tostring(audit_message(event, enterprise_site=enterprise_site), encoding="unicode")
