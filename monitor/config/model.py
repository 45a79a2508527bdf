"""The whole configuration document and the rules that span sections."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from monitor.config.alerting import AlertingConfig, ReceiverConfig
from monitor.config.common import (
    DEFAULT_LISTEN,
    REPLICA_PATTERN,
    FieldError,
    Model,
    Name,
    article,
    basic_token,
    is_secret_header,
    parse_listen,
    safe_url,
)
from monitor.config.fleet import PeersConfig, ShardConfig, peers_shorthand
from monitor.config.heartbeat import HeartbeatConfig
from monitor.config.maintenance import MaintenanceConfig
from monitor.config.observability import LogConfig, MetricsConfig
from monitor.config.probes import ProbeConfig
from monitor.config.targets import TargetConfig
from monitor.config.web import ServerTLSConfig
from monitor.durations import format_duration
from monitor.scenario.registry import SCENARIOS
from monitor.shard import assignment, ordinal, probes_of
from monitor.slo.model import SLOConfig


class Config(Model):
    # Address of /metrics and the other endpoints, HOST:PORT (`--listen` overrides it); read at start only.
    listen: str = DEFAULT_LISTEN
    # Fleet identity: where this daemon probes from, and which replica it is.
    location: Name | None = None
    # This daemon's name in a fleet (default $SYNTHETIC_MONITOR_REPLICA, $POD_NAME, $HOSTNAME, else the host name): /status, check, the member tag of the runs a probe creates; never an alert label.
    replica: Annotated[str, Field(pattern=REPLICA_PATTERN)] | None = None
    shard: ShardConfig | None = None
    peers: Annotated[PeersConfig | None, BeforeValidator(peers_shorthand)] = None
    # The monitor's own log lines.
    log: LogConfig = LogConfig()
    # The monitor's own histograms.
    metrics: MetricsConfig = MetricsConfig()
    tls: ServerTLSConfig | None = None
    # The services probed. With no file: the targets the environment names.
    targets: list[TargetConfig] = Field(min_length=1)
    # Which scenario runs against which target, how often. A file listing targets but no probes gets the default probes of each target.
    probes: list[ProbeConfig] = Field(min_length=1)
    # The daemon's own alert engine and the receivers it pushes to.
    alerting: AlertingConfig = AlertingConfig()
    # Service level objectives: defaults for every probe (`synthetic-monitor slo rules`, `slo report`).
    slo: SLOConfig = SLOConfig()
    maintenance: list[MaintenanceConfig] = []
    heartbeat: HeartbeatConfig | None = None
    # Skip every probe whose scenario writes (load_config drops them).
    read_only: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        targets: dict[str, TargetConfig] = {}
        for index, target in enumerate(self.targets):
            if target.name in targets:
                raise FieldError(f"targets[{index}].name", f"duplicate target name {target.name!r}")
            targets[target.name] = target
        seen: set[str] = set()
        for index, probe in enumerate(self.probes):
            if probe.name in seen:
                raise FieldError(f"probes[{index}].name", f"duplicate probe name {probe.name!r}")
            seen.add(probe.name)
            probe_target = targets.get(probe.target)
            if probe_target is None:
                raise FieldError(
                    f"probes[{index}].target", f"no target named {probe.target!r} (targets: {', '.join(targets)})"
                )
            wanted = SCENARIOS[probe.scenario].target_kind
            if probe_target.kind != wanted:
                raise FieldError(
                    f"probes[{index}].scenario",
                    f"scenario {probe.scenario!r} needs {article(wanted)} {wanted} target, {probe.target!r} is {probe_target.kind}",
                )
        for index, window in enumerate(self.maintenance):
            for key, names, known in (("probes", window.probes, seen), ("targets", window.targets, targets)):
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise FieldError(f"maintenance[{index}].{key}", f"no {key[:-1]} named {unknown[0]!r}")
        if self.location is not None and "location" in self.alerting.labels:
            raise FieldError("alerting.labels.location", "set by the top-level `location` key, not here")
        if self.shard is not None and self.shard.index is None:
            member = ordinal(self.replica or "")
            if member is None:
                raise FieldError(
                    "shard.index",
                    f"not set, and the replica name {self.replica!r} has no StatefulSet ordinal suffix (-N)",
                )
            if member >= self.shard.count:
                raise FieldError(
                    "shard.index", f"ordinal {member} of {self.replica!r} is not below count {self.shard.count}"
                )
            self.shard.index = member
        return self

    @property
    def fleet(self) -> bool:
        """More than one daemon shares the work or the verdict."""
        return self.shard is not None or self.peers is not None

    def assignment(self) -> dict[str, list[int]]:
        """Every configured probe with the shard members that run it ([0] when not sharded)."""
        if self.shard is None:
            return {p.name: [0] for p in self.probes}
        return assignment([p.name for p in self.probes], self.shard.count, self.shard.replicas_per_probe)

    def own_probes(self) -> list[ProbeConfig]:
        """The probes this daemon runs: all of them, or its shard's."""
        if self.shard is None:
            return list(self.probes)
        assert self.shard.index is not None
        mine = set(
            probes_of(self.shard.index, [p.name for p in self.probes], self.shard.count, self.shard.replicas_per_probe)
        )
        return [p for p in self.probes if p.name in mine]

    def target(self, name: str) -> TargetConfig:
        return next(t for t in self.targets if t.name == name)

    def secret_values(self) -> set[str]:
        """Every secret this config holds, for the log redactor."""
        found: set[str] = set()
        auths = [t.auth for t in self.targets] + [r.auth for r in self.alerting.receivers]
        for auth in auths:
            if auth is None:
                continue
            for secret in (auth.password, auth.token):
                if secret is not None and secret.get_secret_value():
                    found.add(secret.get_secret_value())
            if auth.basic is not None:
                found.add(basic_token(*auth.basic))
        endpoints: list[TargetConfig | ReceiverConfig] = [*self.targets, *self.alerting.receivers]
        for endpoint in endpoints:
            parts = urlsplit(endpoint.url)
            if parts.password:
                found.update({parts.password, unquote(parts.password)})
                found.add(basic_token(unquote(parts.username or ""), unquote(parts.password)))
            for name, value in endpoint.headers.items():
                # A value from a file is remembered by monitor.http.secrets, rotated ones too.
                if isinstance(value, str) and value and is_secret_header(name):
                    found.add(value)
                    # "Bearer xyz" / "Basic xyz": the credential alone may be quoted back too.
                    scheme, _, credential = value.partition(" ")
                    if credential.strip() and scheme.lower() in ("bearer", "basic", "token", "apikey"):
                        found.add(credential.strip())
        peer_auth = self.peers.basic_auth if self.peers is not None else None
        if peer_auth is not None and peer_auth.password:
            found.update({peer_auth.password, basic_token(peer_auth.username, peer_auth.password)})
        return found

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for `config show`: secrets masked, durations spelled."""
        data = self.model_dump(mode="json", exclude_none=True)
        for endpoint in [*data["targets"], *data["alerting"]["receivers"]]:
            endpoint["url"] = safe_url(endpoint["url"])
            endpoint["headers"] = {
                k: "**********" if is_secret_header(k) else v for k, v in endpoint.get("headers", {}).items()
            }
        for probe, model in zip(data["probes"], self.probes):
            for key in ("interval", "timeout", "step_timeout"):
                if key in probe:
                    probe[key] = format_duration(getattr(model, key))
        for key in ("startup_grace", "resend_interval", "latency_threshold"):
            data["alerting"][key] = format_duration(getattr(self.alerting, key)) if getattr(self.alerting, key) else 0
        if self.shard is not None:
            data["shard"]["probes"] = [p.name for p in self.own_probes()]
        if self.peers is not None:
            data["peers"]["timeout"] = format_duration(self.peers.timeout)
        if self.heartbeat is not None:
            data["heartbeat"]["url"] = self.heartbeat.where()  # its path is the check's secret
        return data
