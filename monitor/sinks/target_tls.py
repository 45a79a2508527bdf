"""`synthetic_target_tls_earliest_cert_expiry_seconds{target}` and
`synthetic_target_tls_info{target,issuer,subject,serial}`: the certificate an https target
presented to the probe (blackbox_exporter's probe_ssl_earliest_cert_expiry, per target).

Fed by `ProbeResult.certificate`, read by the transport on the probe's own connection.
One series each per target; a new certificate replaces the info series (no stale
second one), and neither exists before a probe of the target has seen a certificate.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from monitor.certificates import PeerCertificate


class TargetCertificates:
    """The certificate last seen per target, kept in step with the two gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.expiry = Gauge(
            "synthetic_target_tls_earliest_cert_expiry_seconds",
            "Unix time of the earliest notAfter in the certificate chain the target presented.",
            ["target"],
            registry=registry,
        )
        self.info = Gauge(
            "synthetic_target_tls_info",
            "Always 1; the labels name the leaf certificate the target presented.",
            ["target", "issuer", "subject", "serial"],
            registry=registry,
        )
        self._seen: dict[str, PeerCertificate] = {}

    def observe(self, target: str, certificate: PeerCertificate | None) -> None:
        if certificate is None:
            return
        previous = self._seen.get(target)
        if previous == certificate:
            return
        if previous is not None:
            self.info.remove(target, previous.issuer, previous.subject, previous.serial)
        self._seen[target] = certificate
        self.expiry.labels(target).set(certificate.earliest_not_after)
        self.info.labels(target, certificate.issuer, certificate.subject, certificate.serial).set(1)

    def forget(self, target: str) -> None:
        """Drop a target's series (no probe of it is configured any more)."""
        previous = self._seen.pop(target, None)
        if previous is not None:
            self.expiry.remove(target)
            self.info.remove(target, previous.issuer, previous.subject, previous.serial)
