"""The certificate a target's server presented, read on the probe's own TLS connection.

The transport calls `peer_certificate` once per new connection, right after its handshake
(no extra handshake, nothing on a reused connection). Python 3.13 hands out the chain the
server sent (`SSLObject.get_unverified_chain`); 3.11 and 3.12 give only the leaf
(`getpeercert(binary_form=True)`), so there the earliest expiry is the leaf's: the one
that usually expires first (intermediates live for years). DER is decoded by
`cryptography`, since the stdlib decodes a certificate only when it verified it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the exporter and the report need: the earliest expiry in the presented chain
    (Unix time), how many certificates were seen, and the leaf's issuer, subject, serial."""

    earliest_not_after: float
    issuer: str
    subject: str
    serial: str
    chain_length: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "earliest_not_after": self.earliest_not_after,
            "issuer": self.issuer,
            "subject": self.subject,
            "serial": self.serial,
            "chain_length": self.chain_length,
        }


def _der_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The DER certificates the server presented: the chain where Python has it, else the leaf."""
    unverified = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
    if unverified is not None:
        chain = [c for c in unverified() or () if isinstance(c, bytes)]  # DER bytes, as ssl.py returns them
        if chain:
            return chain
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def peer_certificate(ssl_object: ssl.SSLObject | None) -> PeerCertificate | None:
    """The presented chain, summarised; None without TLS or when nothing decodes (never raises:
    a certificate the monitor cannot read must not fail the probe that was served)."""
    if ssl_object is None:
        return None
    # Imported on the first TLS connection: cryptography is ~8 MB of RSS a daemon probing
    # only plain-HTTP targets never needs.
    from cryptography import x509

    try:
        certificates = [x509.load_der_x509_certificate(der) for der in _der_chain(ssl_object)]
    except (ValueError, ssl.SSLError):
        return None
    if not certificates:
        return None
    leaf = certificates[0]
    return PeerCertificate(
        earliest_not_after=min(c.not_valid_after_utc.timestamp() for c in certificates),
        issuer=leaf.issuer.rfc4514_string(),
        subject=leaf.subject.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        chain_length=len(certificates),
    )
