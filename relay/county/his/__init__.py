"""Signed reports to the hospital's HIS/EMR: HL7 v2.5 ORU^R01 over MLLP and FHIR R4
DiagnosticReport, at least once, with the HIS's acknowledgement recorded (his_messages)."""
