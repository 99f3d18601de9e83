"""The HTTP contract between a township edge and the county: paths and headers.

Upload of one instance::

    POST {county_url}/api/ingest/instances
    Authorization: Bearer <site token issued by `relay sites create`>
    Content-Type: application/dicom
    X-Relay-SHA256: <lowercase hex SHA-256 of the body>
    X-Relay-Priority: stat | urgent | routine
    X-Relay-Calling-AE: <AE title of the modality that sent it to the edge>
    X-Relay-Received-At: <ISO 8601 UTC time the edge acknowledged the instance>
    <body: the DICOM Part 10 bytes exactly as the edge stored them>

Answers (JSON):

* 200 ``{"outcome": "stored" | "duplicate" | "quarantined", "sop_instance_uid": ...,
  "sha256": ...}`` -- the county holds the bytes durably (object written, index
  committed, follow-up work enqueued). Only now may the edge mark the instance sent.
  ``quarantined`` means the UID was already known with other bytes: the new bytes are
  kept aside for the administrator, and the edge is done with them too.
* 401/403 -- unknown or revoked site credential: the edge alarms and keeps the instance.
* 413 -- larger than the county accepts; 422 -- the body is not a usable DICOM
  instance or its SHA-256 does not match the header (corruption on the way): the
  edge keeps the instance and retries (with backoff), alarming.
* 5xx or no answer -- transient; the edge retries with backoff, forever.

Errors are RFC 9457 problem documents (``application/problem+json``).
"""

from __future__ import annotations

INGEST_PATH = "/api/ingest/instances"
HEADER_SHA256 = "X-Relay-SHA256"
HEADER_PRIORITY = "X-Relay-Priority"
HEADER_CALLING_AE = "X-Relay-Calling-AE"
HEADER_RECEIVED_AT = "X-Relay-Received-At"
DICOM_MEDIA_TYPE = "application/dicom"
