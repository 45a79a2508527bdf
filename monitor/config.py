"""Configuration: one YAML file (or none) plus the environment, validated by pydantic.

Every problem becomes a `ConfigError` whose message is one line naming the field, e.g.
`probes[1].timeout: 40s exceeds the interval 30s`. Secrets live in `SecretStr` so they
never print; `*_file` keys are read here, once, so a missing secret file is a config
error at start-up rather than a failing probe.
"""

from __future__ import annotations

import base64
import math
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.durations import format_duration, parse_duration
from monitor.probes import KINDS, SCENARIOS, scenarios_of
from monitor.shard import assignment, ordinal, probes_of
from monitor.slo.model import ProbeSLOConfig, SLOConfig

DEFAULT_LISTEN = "0.0.0.0:9356"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_TIMEOUT_SHARE = 0.8
# A run may last its deadline plus its cleanup reserve (probes/base.py); that must end
# within this share of the interval, so the next run is never skipped for an overrun
# (a skipped run during an outage would look like SyntheticMonitorStalled).
RUN_SHARE_LIMIT = 0.9
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"
REPLICA_PATTERN = r"^[A-Za-z0-9_.-]{1,253}$"  # a pod or host name; also an MLflow tag value


class ConfigError(Exception):
    """A configuration problem, already phrased for the user on one line."""


class FieldError(ValueError):
    """A ValueError that knows which sub-field it is about, for a precise location."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _duration(value: object) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {_safe_url(value)!r}")
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"has an invalid port: {_safe_url(value)!r}") from None
    return value.rstrip("/")


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"not a valid HTTP header name: {value[:40]!r}")
    return value


def _header_value(value: str) -> str:
    """CR or LF in a value would end the header on the wire and let the rest of the value
    pass for headers (or a body) of its own: refused here, before anything is sent."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("header value holds a CR, LF or NUL character (one line of text only)")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


def _basic_token(username: str, password: str) -> str:
    """The base64 `user:password` of a basic-auth header: a server may quote it back."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _safe_url(value: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", value)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuthConfig(Model):
    """Basic auth (username + password) or a bearer token; values inline or from files."""

    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    token: SecretStr | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _resolve(self) -> AuthConfig:
        if self.password_file is not None:
            if self.password is not None:
                raise FieldError("password_file", "set password or password_file, not both")
            self.password = SecretStr(_read_secret("password_file", self.password_file))
        if self.token_file is not None:
            if self.token is not None:
                raise FieldError("token_file", "set token or token_file, not both")
            self.token = SecretStr(_read_secret("token_file", self.token_file))
        if self.token is not None and any(c in self.token.get_secret_value() for c in "\r\n\0"):
            # It is sent raw in `Authorization: Bearer ...`; the value itself is never shown.
            raise FieldError(
                "token_file" if self.token_file is not None else "token",
                "the token holds a CR, LF or NUL character (one line of text only)",
            )
        if self.token is not None and self.username is not None:
            raise FieldError("token", "set either username/password or token, not both")
        if self.password is not None and self.username is None:
            raise FieldError("username", "a password needs a username")
        return self

    @property
    def basic(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return self.username, self.password.get_secret_value() if self.password else ""

    @property
    def bearer(self) -> str | None:
        return self.token.get_secret_value() if self.token else None


def _read_secret(field: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FieldError(field, f"cannot read {path}: {exc.strerror or exc}") from None


class TLSClientConfig(Model):
    verify: bool = True
    ca_file: Path | None = None

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        if value is not None:
            # Loaded here, as the client will load it: a file that is not a PEM certificate
            # is a config error naming the field, not a traceback at start or on reload.
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"{value} is not a PEM CA certificate file ({_ssl_reason(exc)})") from None
        return value


def _known_kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown kind {value!r}; known: {', '.join(KINDS)}")
    return value


class TargetConfig(Model):
    name: Name
    kind: Annotated[str, AfterValidator(_known_kind)]
    url: Annotated[str, BeforeValidator(lambda v: v if not isinstance(v, str) else v.strip())]
    auth: AuthConfig | None = None
    tls: TLSClientConfig = TLSClientConfig()
    headers: dict[HeaderName, HeaderValue] = {}
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)

    _check_url = field_validator("url")(classmethod(lambda cls, v: _check_url(v)))


class ProbeConfig(Model):
    name: Name
    target: str
    scenario: str
    interval: Duration = 30.0
    timeout: Duration | None = None
    step_timeout: Duration | None = None
    options: Any = None
    slo: ProbeSLOConfig | None = None

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; known: {', '.join(sorted(SCENARIOS))}")
        return value

    @model_validator(mode="after")
    def _deadline_and_options(self) -> ProbeConfig:
        options_model = SCENARIOS[self.scenario].options_model
        raw = self.options if self.options is not None else {}
        if not isinstance(raw, BaseModel):
            if not isinstance(raw, dict):
                raise FieldError("options", f"must be a mapping, got {type(raw).__name__}")
            try:
                self.options = options_model.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise FieldError("options." + _loc(first["loc"]), _message(first)) from None
        self._check_deadline()
        return self

    def _cleanup_reserve(self, timeout: float) -> float:
        step_timeout = min(self.step_timeout or timeout, timeout)
        return SCENARIOS[self.scenario].cleanup_reserve(self.options, step_timeout)

    def _check_deadline(self) -> None:
        """Deadline + cleanup reserve <= 90 % of the interval; the default deadline is fitted to it."""
        limit = self.interval * RUN_SHARE_LIMIT
        if self.timeout is None:
            self.timeout = self._default_timeout(limit)
        elif self.timeout > self.interval:
            raise FieldError(
                "timeout",
                f"{format_duration(self.timeout)} exceeds the interval {format_duration(self.interval)}"
                " (a run must end before the next one starts)",
            )
        else:
            reserve = self._cleanup_reserve(self.timeout)
            if self.timeout + reserve > limit + 1e-9:
                cleanup = f" plus its cleanup budget {format_duration(reserve)}" if reserve else ""
                raise FieldError(
                    "timeout",
                    f"{format_duration(self.timeout)}{cleanup} exceeds 90% of the interval"
                    f" {format_duration(self.interval)} ({format_duration(limit)}): the run, cleanup included,"
                    " must end before the next one starts",
                )
        if self.step_timeout is not None and self.step_timeout > self.timeout:
            self.step_timeout = self.timeout

    def _default_timeout(self, limit: float) -> float:
        """80 % of the interval, or less so that the cleanup reserve still fits (reserve grows with it)."""
        timeout = self.interval * DEFAULT_TIMEOUT_SHARE
        if timeout + self._cleanup_reserve(timeout) <= limit:
            return timeout
        low, high = 0.0, timeout
        for _ in range(40):  # bisection: the reserve is a non-decreasing step function of the deadline
            middle = (low + high) / 2
            if middle + self._cleanup_reserve(middle) <= limit:
                low = middle
            else:
                high = middle
        return low

    @property
    def deadline(self) -> float:
        assert self.timeout is not None
        return self.timeout


class ReceiverConfig(Model):
    """Where the daemon's own alert engine pushes notifications (one worker per receiver)."""

    kind: Literal["alertmanager", "webhook"]
    url: str
    name: Name | None = None
    timeout: Duration = 5.0
    headers: dict[HeaderName, HeaderValue] = {}
    auth: AuthConfig | None = None
    # Webhook consumers that only want problems can turn resolved notices off;
    # Alertmanager always gets them (it needs endsAt to close the alert early).
    send_resolved: bool = True
    # Webhooks only: a still-firing alert is notified again after this long (Alertmanager's
    # default). Ignored for Alertmanager receivers: they get the resend_interval re-sends
    # and repeat by their own routes (not an error: `config show` output must validate).
    repeat_interval: Duration = 4 * 3600.0

    _check_url = field_validator("url")(classmethod(lambda cls, v: _check_url(v)))

    @property
    def label(self) -> str:
        return self.name or self.kind


ALERT_LABEL_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels the engine sets itself; an extra label must not shadow them.
RESERVED_ALERT_LABELS = frozenset({"alertname", "target", "probe", "severity", "dependency"})


class AlertingConfig(Model):
    enabled: bool = True
    failure_threshold: int = Field(default=2, ge=1)
    success_threshold: int = Field(default=2, ge=1)
    startup_grace: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 60.0
    resend_interval: Duration = 60.0
    latency_threshold: Duration = 5.0
    labels: dict[str, str] = {}
    runbook_url: str | None = None
    generator_url: str | None = None
    state_file: Path | None = None
    # A saved state older than this is not trusted (its alerts are resolved at start);
    # default 10 x resend_interval.
    state_max_age: Duration | None = None
    queue_size: int = Field(default=1000, ge=1)
    # Per notification batch: first retry after retry_backoff, doubling up to
    # retry_backoff_max, giving up after retry_attempts tries (a later re-send covers it).
    retry_backoff: Duration = 0.5
    retry_backoff_max: Duration = 30.0
    retry_attempts: int = Field(default=5, ge=1, le=20)
    # How long a receiver's worker gathers notifications into one request: in a wide
    # outage each receiver gets a few requests, not one per alert.
    batch_wait: Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=60)] = 1.0
    receivers: list[ReceiverConfig] = []

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ALERT_LABEL_PATTERN.match(name):
                raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
            if name in RESERVED_ALERT_LABELS:
                raise ValueError(f"label {name!r} is set by the alert engine itself")
        return value

    @field_validator("runbook_url", "generator_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value.strip())

    @model_validator(mode="after")
    def _unique_receivers(self) -> AlertingConfig:
        seen: set[str] = set()
        for index, receiver in enumerate(self.receivers):
            if receiver.label in seen:
                raise FieldError(
                    f"receivers[{index}].name",
                    f"duplicate receiver {receiver.label!r} (give each receiver a distinct name)",
                )
            seen.add(receiver.label)
        if self.retry_backoff_max < self.retry_backoff:
            raise FieldError("retry_backoff_max", "must not be smaller than retry_backoff")
        return self

    @property
    def state_ttl(self) -> float:
        return self.state_max_age if self.state_max_age is not None else 10 * self.resend_interval


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class MetricsConfig(Model):
    buckets: list[float] = Field(default=list(DEFAULT_BUCKETS), min_length=1)

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= 0 for b in value) or sorted(set(value)) != value:
            raise ValueError("must be positive and strictly increasing")
        return value


class ServerTLSConfig(Model):
    """The endpoints' own certificate. Kept working for existing configs; the exporter
    convention is `--web.config.file` (tls_server_config), which also re-reads files."""

    cert_file: Path
    key_file: Path

    @model_validator(mode="after")
    def _loads(self) -> ServerTLSConfig:
        for key in ("cert_file", "key_file"):
            if not os.access(getattr(self, key), os.R_OK):
                raise FieldError(key, f"cannot read {getattr(self, key)}")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise FieldError("cert_file", f"the certificate and key do not load: {_ssl_reason(exc)}") from None
        return self


def _ssl_reason(exc: BaseException) -> str:
    """The short reason of an ssl error ("NO_CERTIFICATE_OR_CRL_FOUND"), not its repr."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(reason).split())[:200]


class ShardConfig(Model):
    """`count` members share the probes, each probe runs on `replicas_per_probe` of them."""

    count: int = Field(ge=1, le=1000)
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


def _peers_shorthand(value: object) -> object:
    return {"urls": value} if isinstance(value, list) else value


class PeersConfig(Model):
    """Other daemons asked for their latest result before a critical page (quorum)."""

    urls: list[str] = []
    # A headless Service `name:port`, resolved through DNS to every pod address.
    service: str | None = None
    scheme: Literal["http", "https"] = "http"
    timeout: Duration = 1.0
    min_locations: int = Field(default=2, ge=1)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_url(v.strip()) for v in value]

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


class Config(Model):
    listen: str = DEFAULT_LISTEN
    # Fleet identity: where this daemon probes from, and which replica it is.
    location: Name | None = None
    replica: Annotated[str, Field(pattern=REPLICA_PATTERN)] | None = None
    shard: ShardConfig | None = None
    peers: Annotated[PeersConfig | None, BeforeValidator(_peers_shorthand)] = None
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    tls: ServerTLSConfig | None = None
    targets: list[TargetConfig] = Field(min_length=1)
    probes: list[ProbeConfig] = Field(min_length=1)
    alerting: AlertingConfig = AlertingConfig()
    slo: SLOConfig = SLOConfig()

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
                    f"scenario {probe.scenario!r} needs a {wanted} target, {probe.target!r} is {probe_target.kind}",
                )
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
                found.add(_basic_token(*auth.basic))
        endpoints: list[TargetConfig | ReceiverConfig] = [*self.targets, *self.alerting.receivers]
        for endpoint in endpoints:
            parts = urlsplit(endpoint.url)
            if parts.password:
                found.update({parts.password, unquote(parts.password)})
                found.add(_basic_token(unquote(parts.username or ""), unquote(parts.password)))
            for name, value in endpoint.headers.items():
                if value and is_secret_header(name):
                    found.add(value)
                    # "Bearer xyz" / "Basic xyz": the credential alone may be quoted back too.
                    scheme, _, credential = value.partition(" ")
                    if credential.strip() and scheme.lower() in ("bearer", "basic", "token", "apikey"):
                        found.add(credential.strip())
        return found

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for `config show`: secrets masked, durations spelled."""
        data = self.model_dump(mode="json", exclude_none=True)
        for endpoint in [*data["targets"], *data["alerting"]["receivers"]]:
            endpoint["url"] = _safe_url(endpoint["url"])
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
        return data


# Header names whose values are credentials; any other header (X-Env: prod) is not a
# secret, and redacting its value would blank that word in every log line and alert.
_SECRET_HEADER = re.compile(r"(?i)(auth|token|secret|passw|api[-_]?key|cookie|session|credential|signature)")


def is_secret_header(name: str) -> bool:
    """True for a header whose value is a credential (Authorization, X-Api-Key, Cookie, ...)."""
    return bool(_SECRET_HEADER.search(name))


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port 0-65535, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def default_probes(targets: list[dict[str, Any]], *, standalone: bool = False) -> list[dict[str, Any]]:
    """The probes a target gets when the config lists targets but no probes: one per
    scenario of its kind that declares a default probe (`<target>_<suffix>`)."""
    probes: list[dict[str, Any]] = []
    for target in targets:
        name, kind = target.get("name"), target.get("kind")
        for scenario in scenarios_of(str(kind)):
            default = scenario.default_probe
            if default is None:
                continue
            probe: dict[str, Any] = {
                "name": f"{name}_{default.suffix}",
                "target": name,
                "scenario": scenario.name,
                "interval": default.interval,
                "timeout": default.timeout,
            }
            if standalone and default.standalone_options is not None:
                probe["options"] = dict(default.standalone_options)
            probes.append(probe)
    return probes


def default_document(env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration with no file: each kind's usual port-forward address, or the environment's."""
    targets = [
        {
            "name": kind.standalone.name,
            "kind": kind.name,
            "url": env.get(kind.standalone.url_env) or kind.standalone.url,
        }
        for kind in KINDS.values()
        if kind.standalone is not None
    ]
    return {"targets": targets, "probes": default_probes(targets, standalone=True)}


def _apply_env(document: dict[str, Any], env: Mapping[str, str]) -> None:
    """Credentials Kubernetes injects as env vars (named by each kind), for targets whose file gives none."""
    for target in document.get("targets") or []:
        if not isinstance(target, dict) or target.get("auth") is not None:
            continue
        kind = KINDS.get(str(target.get("kind")))
        names = kind.credential_env if kind is not None else None
        if names is None:
            continue
        user, password, token = (env.get(n) for n in names)
        # MLflow's own precedence: username+password means basic auth, else a token.
        if user and password:
            target["auth"] = {"username": user, "password": password}
        elif token:
            target["auth"] = {"token": token}
        elif user:
            target["auth"] = {"username": user, "password": ""}


def _apply_identity(document: dict[str, Any], env: Mapping[str, str]) -> None:
    """Location and replica name from what Kubernetes injects, unless the file sets them."""
    if document.get("location") is None and env.get("SYNTHETIC_MONITOR_LOCATION"):
        document["location"] = env["SYNTHETIC_MONITOR_LOCATION"]
    if document.get("replica") is None:
        # The downward API's pod name; HOSTNAME is the pod name in Kubernetes too.
        for name in ("SYNTHETIC_MONITOR_REPLICA", "POD_NAME", "HOSTNAME"):
            # An odd HOSTNAME (a shell's, not Kubernetes') must not break a lone daemon's config.
            if env.get(name) and (name != "HOSTNAME" or re.fullmatch(REPLICA_PATTERN, env[name])):
                document["replica"] = env[name]
                break


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate; raises ConfigError with a one-line message."""
    env = os.environ if env is None else env
    path = path or env.get("SYNTHETIC_MONITOR_CONFIG") or None
    if path is None:
        document: Any = default_document(env)
        source = "default configuration"
    else:
        document = _read_yaml(Path(path))
        source = str(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (listen, targets, probes, ...)")
    if "targets" in document and "probes" not in document and isinstance(document["targets"], list):
        document["probes"] = default_probes([t for t in document["targets"] if isinstance(t, dict)])
    _apply_env(document, env)
    _apply_identity(document, env)
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = _loc(first["loc"])
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError) and cause.field:
            location = f"{location}.{cause.field}" if location else cause.field
            message = cause.message
        else:
            message = _message(first)
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {location + ': ' if location else ''}{message}{suffix}") from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if document is None:
        raise ConfigError(f"{path}: the config file is empty")
    return document


def _loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before", "function-wrap")) or part == "[key]":
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldError):
        return f"{cause.field}: {cause.message}" if cause.field else cause.message
    kind = error.get("type")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required but missing"
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    secret = any(str(part) in ("password", "token") for part in error.get("loc", ()))
    if kind not in ("value_error",) and not isinstance(value, (dict, list)) and value is not None and not secret:
        shown = repr(value)
        message += f" (got {shown if len(shown) < 60 else shown[:57] + '...'})"
    return message
