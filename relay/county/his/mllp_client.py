"""Send one HL7 v2 message over MLLP and read the HIS's ACK.

Framing: 0x0B, the message, 0x1C 0x0D. One connection per message (an HIS's listener
is often single-threaded; a held connection would block the HIS's own senders). The ACK
counts only when its MSA-2 is our MSH-10: an ACK for another message is no ACK.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

START, END = b"\x0b", b"\x1c\x0d"
MAX_ACK_BYTES = 1 << 20
"""An ACK larger than this is not an ACK (a misconfigured peer streaming at us)."""
ACCEPTED = ("AA", "CA")
REJECTED = ("AE", "AR", "CE", "CR")


class MllpError(Exception):
    """No usable answer: refused, reset, silent past the timeout, or not an ACK."""


@dataclass(frozen=True, slots=True)
class Ack:
    code: str
    """MSA-1: AA/CA accepted, AE/AR/CE/CR refused."""
    control_id: str
    """MSA-2: the MSH-10 it acknowledges."""
    text: str
    """MSA-3 and the ERR segment's location and code, for the administrator (never logged)."""


def send(host: str, port: int, message: bytes, *, timeout_s: float) -> bytes:
    """Frame and send ``message``, return the answer's bytes (unframed); MllpError otherwise."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(START + message + END)
            return _read_frame(sock)
    except TimeoutError as exc:
        raise MllpError(f"no answer within {timeout_s:g}s") from exc
    except OSError as exc:
        raise MllpError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc


def _read_frame(sock: socket.socket) -> bytes:
    buffer = b""
    while END not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise MllpError("the HIS closed the connection without an ACK")
        buffer += chunk
        if len(buffer) > MAX_ACK_BYTES:
            raise MllpError("answer larger than an ACK")
    start = buffer.find(START)
    if start < 0:
        raise MllpError("answer is not MLLP framed")
    return buffer[start + 1:buffer.index(END, start)]


def parse_ack(raw: bytes, *, codec: str) -> Ack:
    """MSA-1, MSA-2 and the refusal's text of an ACK; MllpError if it has no MSA."""
    text = raw.decode(codec, errors="replace")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        raise MllpError("answer has no MSH segment")
    sep = segments[0][3]
    fields = {s[:3]: s.split(sep) for s in reversed(segments)}
    msa = fields.get("MSA")
    if msa is None or len(msa) < 3:
        raise MllpError("answer has no MSA-1/MSA-2")
    err = fields.get("ERR", [])
    detail = [msa[3] if len(msa) > 3 else "", *(err[1:4])]
    return Ack(code=msa[1].strip().upper(), control_id=msa[2].strip(),
               text=" ".join(part for part in detail if part)[:300])
