"""`shard:` and `peers:`: more than one daemon."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from monitor.config.common import Duration, FieldError, Model, check_url


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


class PeersConfig(Model):
    """Other daemons asked for their latest result before a critical page (quorum)."""

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

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
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
