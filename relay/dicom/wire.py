"""The HTTP contract between a township edge and the county: paths and headers.

The edge forwards in *bundles* (below): many instances per upload, compressed,
resumable in chunks. The single-instance upload stays for simple clients and tools.

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


# --- Bundles: many instances per upload, compressed, resumable in chunks -------------
#
# A township link is slow (2-20 Mbit/s), far (50-300 ms) and cut often. One request
# per instance wastes a round trip each; one huge request restarts from zero after a
# cut. So the edge packs instances into a *bundle*, compresses it, and uploads it in
# chunks that the county keeps; after a cut the edge asks how much arrived and
# resumes from there (at most one chunk is re-sent).
#
# Bundle body, before encoding: for each instance, a frame
#     4 bytes  big-endian length L of the JSON header
#     L bytes  UTF-8 JSON {"sop_uid", "sha256", "size", "priority", "calling_ae",
#                          "received_at", "late"}  (the single-upload facts, plus "late":
#                          the instance arrived after its study was forwarded)
#     size bytes  the DICOM Part 10 bytes exactly as the edge stored them
# Encoding: "zstd" (one zstandard frame of the whole body; lossless, bit-exact) or
# "identity". SHA-256 values: of each instance's bytes (frame header) and of the
# encoded bundle as uploaded (bundle sha256).
#
# 1. POST {BUNDLES_PATH}  JSON {"bundle_id": "<uuid4, chosen by the edge>", "size": <encoded
#    bytes>, "sha256": "<of encoded bytes>", "encoding": "zstd"|"identity",
#    "priority": "stat"|"urgent"|"routine", "instances": [{"sop_uid", "sha256", "size"}]}
#    -> 200 {"bundle_id", "received": <bytes the county holds>, "state": "open"|"complete",
#    "results": [...] or null}. Idempotent: posting the same bundle_id again returns its
#    progress (a different size/sha256 for a known id is 409).
# 2. PATCH {BUNDLES_PATH}/{bundle_id}  headers Upload-Offset: <n>, Content-Type:
#    application/offset+octet-stream; body: bytes [n, n+len) of the encoded bundle,
#    len <= MAX_CHUNK_BYTES -> 204 with Upload-Offset: <n+len> once the chunk is durable
#    at the county. An offset other than the held "received" -> 409 with the held
#    Upload-Offset header (the edge resumes from it).
# 3. GET {BUNDLES_PATH}/{bundle_id} -> 200, the same JSON as 1 (progress after a cut).
# 4. POST {BUNDLES_PATH}/{bundle_id}/complete  (all bytes received) -> the county checks
#    the bundle sha256, decodes, checks each instance's sha256 and its header against the
#    announced list, and ingests each one with the single-upload rules (store, index,
#    commit, enqueue) -> 200 {"bundle_id", "state": "complete", "results": [{"sop_uid",
#    "sha256", "outcome": "stored"|"duplicate"|"quarantined"}]}. Only now may the edge mark
#    those instances sent. Idempotent: completing again returns the same results.
#    422 if the bytes do not match (the county discards the staged chunks; the edge
#    rebuilds the bundle from its spool and starts over).
# Chunks are staged in the object store, progress in the index: any API replica can
# take any chunk.

BUNDLES_PATH = "/api/ingest/bundles"
HEADER_UPLOAD_OFFSET = "Upload-Offset"
CHUNK_MEDIA_TYPE = "application/offset+octet-stream"
MAX_CHUNK_BYTES = 8 * 1024 * 1024
"""Largest chunk the county accepts, in bytes: a cut re-sends at most this much."""
MAX_BUNDLE_BYTES = 1024 * 1024 * 1024
"""Largest encoded bundle the county accepts, in bytes (1 GiB): a large multi-frame
instance travels alone in its own bundle."""
FRAME_HEADER_LEN_BYTES = 4
