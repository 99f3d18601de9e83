"""The edge's settings: DICOM SCP, spool, completeness, technician page, forwarding."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from relay.config.common import CommonSettings


class EdgeSettings(CommonSettings):
    """Configuration of one township edge."""

    # --- edge --------------------------------------------------------------------
    edge_host: str = Field("127.0.0.1", description="Address the edge DICOM SCP binds.")
    edge_port: int = Field(11112, description="TCP port of the edge DICOM SCP.")
    edge_ae_title: str = Field("RELAY_EDGE", description="AE title of the edge SCP.")
    edge_site: str = Field(
        "demo-township", description="Name of this township site, as registered at the county."
    )
    edge_site_token: str | None = Field(
        None,
        description="Credential issued by the county for this site (`relay sites create`). "
        "Required to forward.",
    )
    county_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL of the county API the edge forwards to. Use https:// in "
        "production: the site credential and patient data cross the WAN.",
    )
    edge_county_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the county's HTTPS certificate, when it "
        "is a private CA (a 医共体 intranet); default: the system's CAs. Verification is "
        "never switched off.",
    )
    edge_heartbeat_s: float = Field(
        60.0,
        description="Seconds between heartbeats to the county (spool depth, oldest unsent, "
        "goodput, disk, version, clock); the county calls an edge silent after 10 minutes.",
    )
    edge_max_pdu: int = Field(
        4 * 1024 * 1024, ge=4096, le=64 * 1024 * 1024,
        description="Maximum P-DATA-TF PDU length the edge SCP advertises and accepts, in "
        "bytes; a longer PDU aborts the association before it is read. Default 4 MiB: a CT "
        "or MR slice still fits one PDU (per-PDU overhead stays negligible) while each "
        "association's read buffer is bounded. 4096-64 MiB; 'unlimited' (0) is no longer "
        "offered, because it let any peer make the edge allocate 256 MiB per PDU.",
    )
    edge_network_timeout: float = Field(
        60.0, description="Seconds of silence on an association before the edge aborts it."
    )
    edge_acse_timeout_s: float = Field(
        30.0,
        description="Seconds the edge waits for association messages (request, release); "
        "a connection that sent garbage holds an association slot this long "
        "(pynetdicom's default, 30).",
    )
    edge_dimse_timeout_s: float = Field(
        60.0, gt=0,
        description="Seconds the edge waits for the rest of a DIMSE message it has begun to "
        "receive (a C-STORE's dataset after its command, the next fragment); longer and the "
        "association is aborted, the instance unanswered (the sender retries it). pynetdicom's "
        "30 doubled for slow township links and large instances. Idle time between messages "
        "is edge_network_timeout.",
    )
    edge_max_associations: int = Field(
        16, ge=1,
        description="Concurrent connections the edge serves, each with its thread (a "
        "connection holds its place from its first byte, also before it associates); more "
        "are answered A-ASSOCIATE-RJ transient (local limit exceeded) by one shared thread, "
        "without one of their own. A township has a handful of modalities; 16 bounds threads "
        "and memory on a small PC.",
    )
    edge_allowed_aes: str = Field(
        "",
        description="Calling AE titles allowed to associate, comma separated, each "
        "optionally pinned to a source address: 'CT01@192.168.1.20,DR01,ECG1@10.0.0.5'. "
        "Empty (the default, for first setup) accepts any AE and logs a warning at start. "
        "AE titles are not authentication: they only stop misdirected sends.",
    )
    edge_min_free_bytes: int = Field(
        1024**3,
        description="Free bytes the spool's file system must keep; below it the edge "
        "answers C-STORE with 0xA700 (out of resources) before writing and raises an "
        "alarm. Default 1 GiB: room for the journal, logs and the OS on a small PC, and "
        "for instances already in flight. 0 disables the byte watermark.",
    )
    edge_spool_slots: int = Field(
        256,
        ge=0,
        description="Spool files the edge makes ahead of time (a background thread, never "
        "below edge_min_free_bytes), so that storing an instance is one data flush instead of "
        "creating a file: ~0.6 ms instead of ~2 ms per 512 KB CT slice on the virtual disk "
        "the project is measured on (relay.edge.slots; bench.slots_ab). Default 256: one typical CT series "
        "(256 MiB of disk with the default slot size); a longer burst uses new files for the "
        "rest while the pool refills. 0 turns the pool off.",
    )
    edge_spool_slot_kib: int = Field(
        1024,
        ge=64,
        description="Size of one ahead-of-time spool file, KiB. Instances larger than this "
        "(DX/CR, multi-frame) are written as new files, where the flush is a small part of "
        "their cost. Default 1 MiB: a 512x512 CT or MR slice with its header.",
    )
    edge_min_free_percent: float = Field(
        0.0,
        description="Free share of the spool's file system (0-100) the edge must keep, in "
        "addition to edge_min_free_bytes; 0 (default) disables it.",
    )
    edge_study_quiet_s: float = Field(
        60.0,
        description="Seconds without a new instance after which a routine study is "
        "ready to forward. Default 60: a modality sends a series back to back (ms apart) "
        "and the next series of the same exam within a minute, so a minute of silence "
        "means the exam is sent, and a minute is nothing against a routine read (hours).",
    )
    edge_study_stat_quiet_s: float = Field(
        5.0,
        description="Quiet seconds for a STAT study: short, because minutes count and a "
        "late instance still goes as an addition. Default 5.",
    )
    edge_study_max_wait_s: float = Field(
        600.0,
        description="Seconds after a study's first instance after which it is forwarded "
        "even if instances still trickle in (later ones go as additions). Default 600 "
        "(10 min): caps the delay a slow or stuck modality can add.",
    )
    edge_stat_rules: str = Field(
        "",
        description="Rules that make a study STAT, comma separated 'key=value' with key "
        "modality or ae, e.g. 'modality=ECG,ae=ER_CT'. Default empty: only C-STORE "
        "priority HIGH and the technician's button make a study STAT.",
    )
    edge_status_host: str = Field(
        "127.0.0.1",
        description="Address of the technician's status page; loopback by default because "
        "the page shows patient names. Another address (the township LAN) needs TLS "
        "(edge_status_tls_cert) and edge_status_allowed_hosts; without TLS the edge logs a "
        "security warning at start.",
    )
    edge_status_allowed_hosts: str = Field(
        "",
        description="Host names and addresses the page answers to (the browser's Host header), "
        "comma separated, e.g. 'edge-a.local,192.168.1.10'; any other Host gets 421, which "
        "defeats DNS rebinding. Default empty: the bind address plus localhost, 127.0.0.1 and ::1.",
    )
    edge_status_tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) for HTTPS on the technician's page; with it the "
        "session cookie is Secure. Default none: plain HTTP, fine on loopback only.",
    )
    edge_status_tls_key: Path | None = Field(None, description="PEM private key of edge_status_tls_cert.")
    edge_status_session_idle_minutes: float = Field(
        30.0, gt=0, le=30,
        description="Minutes without a click after which a technician's page login ends (the "
        "page's own 10 s refresh does not count). At most 30: the PC at a township desk is "
        "shared. Default 30.",
    )
    edge_technicians_poll_s: float = Field(
        300.0, gt=0,
        description="Seconds between fetches of this site's technician logins from the county "
        "(GET /api/edges/technicians; unchanged lists cost a 304). The copy is kept on disk, so "
        "login works while the WAN is down. Default 5 min: a new or disabled account reaches "
        "the township within minutes.",
    )
    edge_ack_retry_s: float = Field(
        15.0, gt=0,
        description="Seconds between attempts to deliver journaled acknowledgements to the county "
        "while it cannot be reached (a new acknowledgement is sent at once). Default 15, like "
        "the report poll.",
    )
    edge_order_sync_s: float = Field(
        10.0, gt=0,
        description="Seconds between fetches of this site's orders from the county (GET "
        "/api/edges/orders; an unchanged list costs a 304, a few hundred bytes) and between uploads "
        "of orders registered on the page while the county cannot be reached (a new one is sent at "
        "once; a failing one backs off, doubling up to 5 min). Default 10: an order placed in the HIS "
        "is on the modality's worklist within about ten seconds (README benchmarks); 50 townships "
        "cost the county 5 requests a second.",
    )
    edge_site_code: str = Field(
        "", pattern=r"^[A-Z0-9]{0,4}$",
        description="Short code (1-4 capital letters or digits) that starts the accession numbers "
        "the registration page makes ('<code>-YYMMDD-NNNN', 16 characters at most, the SH limit). "
        "Give every township its own code; default empty: 4 hex digits of the SHA-256 of edge_site.",
    )
    edge_services_port: int = Field(
        11113, ge=0, le=65535,
        description="TCP port of the edge's second DICOM listener (relay.edge.dimse_services), which "
        "serves the Modality Worklist (C-FIND) and other non-storage services with pynetdicom's own "
        "association handling. 0 turns it off. Default 11113, next to the C-STORE port 11112.",
    )
    edge_services_ae_title: str = Field(
        "", max_length=16,
        description="AE title of that listener; default empty: the same as edge_ae_title (modalities "
        "are usually configured with one title for the edge).",
    )
    edge_mwl_default_charset: str = Field(
        "GB18030", pattern=r"^(GB18030|GBK|ISO_IR 192)$",
        description="Specific Character Set of worklist answers when the query names none: "
        "'GB18030' (default: what Chinese modalities expect), 'GBK' or 'ISO_IR 192' (UTF-8). A query "
        "naming GB18030, GBK or ISO_IR 192 is answered in it; any other in this default.",
    )
    edge_status_port: int = Field(
        8081,
        description="TCP port of the technician's status page (http://127.0.0.1:8081). "
        "-1 disables the page; 0 picks a free port (tests).",
    )
    edge_tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) for DICOM TLS on the modality side (PS3.15 B.1). "
        "Default none: plain DICOM, as most township modalities speak. With it set, the edge "
        "accepts only TLS associations.",
    )
    edge_tls_key: Path | None = Field(None, description="PEM private key of edge_tls_cert.")
    edge_tls_client_ca: Path | None = Field(
        None,
        description="PEM CA bundle: when set, a modality must present a certificate signed by "
        "it (mutual TLS), which is real authentication, unlike calling AE titles.",
    )
    edge_report_destinations: str = Field(
        "",
        description="Where signed reports go at the township, comma-separated AE@host:port "
        "(e.g. TOWNPACS@127.0.0.1:4242). Empty: reports are kept at the edge and shown on the "
        "technician's page only.",
    )
    edge_commitment_policy: str = Field(
        "spool", pattern="^(spool|county)$",
        description="When the edge tells a modality an instance is committed (DICOM Storage "
        "Commitment, N-EVENT-REPORT): 'spool' (default) once it is durably in this edge's "
        "spool, as C-STORE Success already promises, so the modality can free its disk within "
        "seconds; 'county' only once the county confirmed it holds the bytes (journal state "
        "sent), for modalities that delete at once and sites that want the WAN crossed first.",
    )
    edge_commitment_policy_by_ae: str = Field(
        "",
        description="Policy per calling AE title overriding edge_commitment_policy, comma "
        "separated AE=policy, e.g. 'CT01=county,DR02=spool'. Default empty: every AE uses "
        "edge_commitment_policy.",
    )
    edge_commitment_wait_s: float = Field(
        86400.0, gt=0,
        description="Seconds a 'county' commitment waits for its instances to reach the county; "
        "those still not there then fail with 0x0110 (processing failure), so the modality "
        "keeps its copy and may ask again. Default 24 h: longer than any WAN outage the spool "
        "is sized for, shorter than modalities keep a transaction open.",
    )
    edge_commitment_peers: str = Field(
        "",
        description="Where modalities take storage commitment reports on a new association, "
        "comma separated [CALLING=]AE@host:port, e.g. 'CT01@192.168.1.20:104' or, for a "
        "modality that listens under another AE title than it calls with, "
        "'CT01=CT01_SC@192.168.1.20:104'. A modality not listed "
        "gets its report only on the association of its request while that is open; "
        "otherwise the report waits (logged) until an address is configured. Default empty.",
    )
    edge_commitment_poll_s: float = Field(
        5.0, gt=0,
        description="Seconds between checks of open commitments: the journal for 'county' "
        "policy items, and reports due for a retry. Default 5: a commitment follows its "
        "instances' arrival at the county within seconds at the cost of one small query.",
    )
    edge_commitment_retry_min_s: float = Field(
        10.0, gt=0,
        description="First delay, in seconds, before a storage commitment report the modality "
        "did not accept (unreachable, refused, no answer) is sent again; doubling from here.",
    )
    edge_commitment_retry_max_s: float = Field(
        600.0, gt=0,
        description="Longest delay, in seconds, between attempts to deliver a storage "
        "commitment report. Reports are retried until the modality accepts one: a modality "
        "switched off overnight gets its reports within 10 minutes of coming back.",
    )
    edge_report_poll_s: float = Field(
        15.0, gt=0, description="Seconds between checks for new signed reports at the county; "
        "also the first retry delay of a report step that failed (fetch, store at one "
        "destination, confirm).")
    edge_report_retry_max_s: float = Field(
        300.0, gt=0,
        description="Longest wait, in seconds, before a failed report step is tried again "
        "(each report and destination backs off on its own, doubling from edge_report_poll_s). "
        "Default 5 min: a PACS that was down gets its reports within minutes of coming back, "
        "while a long outage costs one connection attempt per round.")
    edge_retention_hours: float = Field(
        72.0,
        description="Hours an instance's file stays in the edge spool after the county "
        "confirmed it (then deleted; its journal row stays). Default 3 days: room to "
        "re-examine a transfer, while a busy township's disk does not fill. Negative keeps "
        "files forever.",
    )
    forward_retry_min: float = Field(
        1.0, description="First retry delay after a failed upload, in seconds."
    )
    forward_retry_max: float = Field(
        300.0,
        description="Longest retry delay, in seconds. Uploads are retried forever: an "
        "acknowledged instance is never given up.",
    )
    forward_timeout: float = Field(
        120.0,
        description="Seconds an upload may wait on each step (connect, each read, each "
        "write) before it is abandoned and retried; httpx applies it per step, not to the "
        "whole request, so a slow but moving upload is not cut off.",
    )
    forward_streams: int = Field(
        2, ge=1, le=16,
        description="Bundles uploaded at once (parallel HTTP streams), default 2: while one "
        "stream waits a round trip for a chunk's answer or a bundle's completion, the other "
        "keeps the link busy. More rarely helps on one township line.",
    )
    forward_chunk_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=8 * 1024 * 1024,
        description="Bytes per PATCH chunk of a bundle upload, default 4 MiB (at most the "
        "wire's 8 MiB). A cut re-sends at most one chunk, and a STAT bundle waits behind at "
        "most one routine chunk (4 MiB is ~1.7 s at 20 Mbit/s): lower it on slow links.",
    )
    forward_bundle_max_bytes: int = Field(
        32 * 1024 * 1024, ge=1,
        description="Raw (before compression) instance bytes per bundle, default 32 MiB: big "
        "enough that the two round trips per bundle (create, complete) cost < 2 % of the "
        "transfer at 20 Mbit/s, small enough to rebuild quickly after a 422. An instance "
        "larger than this travels alone.",
    )
    forward_bundle_max_instances: int = Field(
        1000, ge=1,
        description="Instances per bundle, default 1000: bounds the JSON of the create "
        "request and the county's per-bundle work when instances are tiny (ECGs, SR).",
    )
    forward_encoding: str = Field(
        "zstd", pattern="^(zstd|identity)$",
        description="Bundle encoding on the wire: 'zstd' (default; lossless, bit-exact, "
        "~2.3x on CT) or 'identity' (for already-compressed transfer syntaxes or a CPU-starved "
        "edge PC).",
    )
    forward_rate_limit_bps: float | None = Field(
        None, gt=0,
        description="Upload cap for the whole site, in bits per second, shared by all "
        "streams; default none (unlimited). Set it so the township's own traffic (HIS, "
        "video consults) keeps a share of the line.",
    )
    forward_routine_window: str | None = Field(
        None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="Local time window 'HH:MM-HH:MM' (in `timezone`; may wrap midnight, e.g. "
        "'22:00-06:00') outside which routine bundles are not sent; STAT and urgent always "
        "go. Default none: routine goes any time.",
    )

    # --- at the township: the county's key set -------------------------------------
    county_keyset_pin: str | None = Field(
        None,
        description="At a township: the fingerprint (sha256:…) of the county's key-set key, "
        "pinned once, against which `relay verify-report --keys KEYSET` checks the key set; "
        "`--pin` overrides it.",
    )

    # --- derived values ------------------------------------------------------------
    @property
    def edge_spool_dir(self) -> Path:
        return (self.data_dir / "edge").resolve()
