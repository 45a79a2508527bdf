"""`shard:` and `peers:`: more than one daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from monitor.config.common import Duration, FieldError, Model, check_url, read_secret


class ShardConfig(Model):
    """`count` members share the probes, each probe runs on `replicas_per_probe` of them."""

    # Members of the fleet.
    count: int = Field(ge=1, le=1000)
    # Members each probe runs on (rendezvous hashing on the probe name).
    replicas_per_probe: int = Field(default=1, ge=1)
    # Default: the StatefulSet ordinal, the number at the end of the replica (pod) name.
    index: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _within(self) -> ShardConfig:
        if self.replicas_per_probe > self.count:
            raise FieldError("replicas_per_probe", f"{self.replicas_per_probe} exceeds count {self.count}")
        if self.index is not None and self.index >= self.count:
            raise FieldError("index", f"{self.index} is not a member of 0..{self.count - 1}")
        return self


def peers_shorthand(value: object) -> object:
    return {"urls": value} if isinstance(value, list) else value


class PeerTLSConfig(Model):
    """Prometheus' `tls_config` names: how to trust a peer and prove who we are to it."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> PeerTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise FieldError(
                "cert_file" if self.cert_file is None else "key_file", "cert_file and key_file go together"
            )
        for field in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, field)
            if path is not None and not path.is_file():
                raise FieldError(field, f"{path} is not a readable file")
        return self


class PeerBasicAuth(Model):
    """Prometheus' `basic_auth` names; the password only from a file (never in the config)."""

    username: str = Field(min_length=1)
    password_file: Path
    _password: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _read(self) -> PeerBasicAuth:
        self._password = read_secret("password_file", self.password_file)
        return self

    @property
    def password(self) -> str:
        return self._password


class PeersConfig(Model):
    """Other daemons asked for their latest verdicts before a critical page (quorum)."""

    # Peers' base URLs (a plain list under `peers:` means these).
    urls: list[str] = []
    # A headless Service `name:port`, resolved through DNS to every pod address.
    service: str | None = None
    # Scheme for the addresses `service` resolves to.
    scheme: Literal["http", "https"] = "http"
    # How long to wait for a peer's /status; a silent peer is unknown, never a vote.
    timeout: Duration = 1.0
    # Failing locations needed for a critical page (or all that answer, when fewer).
    min_locations: int = Field(default=2, ge=1)
    tls_config: PeerTLSConfig | None = None
    basic_auth: PeerBasicAuth | None = None

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for v in value:
            if urlsplit(v.strip()).netloc.rpartition("@")[1]:
                # A password in a URL ends up in /status, `config show` and alert texts.
                raise ValueError(
                    "credentials in a peer URL are refused: use peers.basic_auth (username, password_file)"
                )
        return [check_url(v.strip()) for v in value]

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"must be NAME:PORT of a headless Service, got {value!r}")
        return value

    @model_validator(mode="after")
    def _some(self) -> PeersConfig:
        if not self.urls and self.service is None:
            raise FieldError("urls", "give peer urls or a headless service name")
        return self
