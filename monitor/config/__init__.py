"""Configuration: one YAML file (or none) plus the environment, validated by pydantic.

One module per section (targets, probes, alerting, fleet, ...); the whole document is
`model.Config` and loading is `load.load_config`. Every problem becomes a `ConfigError`
whose message is one line naming the field, e.g. `probes[1].timeout: 40s exceeds the
interval 30s`. Secrets live in `SecretStr` so they never print; `*_file` keys are read
at load, so a missing secret file is a config error at start-up, not a failing probe.
"""

from monitor.config.alerting import AlertingConfig, ReceiverConfig
from monitor.config.common import (
    DEFAULT_BUCKETS,
    DEFAULT_LISTEN,
    ConfigError,
    FieldError,
    is_secret_header,
    parse_listen,
    ssl_reason,
)
from monitor.config.fleet import PeersConfig, ShardConfig
from monitor.config.heartbeat import HeartbeatConfig
from monitor.config.load import default_document, default_probes, load_config
from monitor.config.model import Config
from monitor.config.observability import LogConfig, MetricsConfig
from monitor.config.probes import ProbeConfig
from monitor.config.targets import AuthConfig, TargetConfig, TLSClientConfig
from monitor.config.web import ServerTLSConfig

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_LISTEN",
    "AlertingConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "FieldError",
    "HeartbeatConfig",
    "LogConfig",
    "MetricsConfig",
    "PeersConfig",
    "ProbeConfig",
    "ReceiverConfig",
    "ServerTLSConfig",
    "ShardConfig",
    "TLSClientConfig",
    "TargetConfig",
    "default_document",
    "default_probes",
    "is_secret_header",
    "load_config",
    "parse_listen",
    "ssl_reason",
]
