"""Loading: YAML file or the no-file defaults, environment overrides, one-line errors naming the field."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from monitor.config.common import REPLICA_PATTERN, ConfigError, FieldError, error_message, field_path
from monitor.config.model import Config
from monitor.scenario.registry import KINDS, SCENARIOS, scenarios_of


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
    """The configuration with no file: each kind's usual port-forward address, or the environment's;
    a kind whose standalone target is `only_when_set` is probed only when its variable names it."""
    targets = [
        {
            "name": kind.standalone.name,
            "kind": kind.name,
            "url": env.get(kind.standalone.url_env) or kind.standalone.url,
        }
        for kind in KINDS.values()
        if kind.standalone is not None and (env.get(kind.standalone.url_env) or not kind.standalone.only_when_set)
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
        # The usual client precedence: username+password means basic auth, else a token.
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


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    read_only: bool = False,
) -> Config:
    """Read, merge and validate; raises ConfigError with a one-line message. `read_only`
    (or the file's `read_only: true`) drops every probe whose scenario writes."""
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
    if read_only:
        document["read_only"] = True
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        problems = [f"{source}: {_problem(error)}" for error in exc.errors()]
        more = len(problems) - 1
        suffix = (
            f" (and {more} more problem{'s' if more > 1 else ''}: `config validate --all` lists them)" if more else ""
        )
        raise ConfigError(problems[0] + suffix, problems) from None
    return without_writes(config, source) if config.read_only else config


def _problem(error: Any) -> str:
    """One validation error as `location: message`."""
    location = field_path(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError) and cause.field:
        location = f"{location}.{cause.field}" if location else cause.field
        message = cause.message
    else:
        message = error_message(error, Config)
    return f"{location + ': ' if location else ''}{message}"


def without_writes(config: Config, source: str) -> Config:
    """The config minus the probes whose scenario writes (read-only mode)."""
    kept = [p for p in config.probes if not SCENARIOS[p.scenario].writes]
    if not kept:
        raise ConfigError(f"{source}: read_only: every configured probe writes, so none is left to run")
    config.probes = kept
    return config


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
